"""The real UI: ``dagster dev`` on the local AWS. GraphQL shows that each table's stream sensor
ticked and its runs succeeded; headless Chromium shows each table's assets and sensor."""

import json
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dynamo_cdc.config import dagster_safe_name
from dynamo_cdc.local.demo import DEMO_TABLES
from tests.e2e.helpers import ARTIFACTS, REPO, VENV_BIN, wait_until

pytestmark = pytest.mark.e2e

TABLES = ["orders", "app-events.v1"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_signals() -> None:
    # Background processes here may start with SIGINT/SIGTERM ignored; dagster dev must obey.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(proc: subprocess.Popen) -> None:
    """Stop dagster dev (the leader of its own session) and its children by its pid."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind, if any
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


class UI:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        assert "errors" not in doc, doc["errors"]
        return doc["data"]


def _ui_env(local_aws, tmp: Path) -> dict[str, str]:
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_project" / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNAMO_CDC_")}
    tables = tmp / "tables.csv"
    tables.write_text("".join(f"{name}\n" for name in DEMO_TABLES))
    env.update(
        DAGSTER_HOME=str(home),
        DYNAMO_CDC_TABLES=str(tables),
        DYNAMO_CDC_ENDPOINT_URL=local_aws.endpoint_url,
        DYNAMO_CDC_LAKE_ROOT=str(tmp / "lake"),
        DYNAMO_CDC_SENSOR_INTERVAL_SECONDS="5",
        DYNAMO_CDC_SENSOR_BUDGET_SECONDS="5",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONPATH=str(REPO),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


@contextmanager
def _serve(command: list[str], env: dict[str, str], log: Path) -> Iterator[UI]:
    """Run a Dagster UI command on a free 127.0.0.1 port until it answers; stop it by pid."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_restore_signals,
            start_new_session=True,
        )
    handle = UI(f"http://127.0.0.1:{port}", log)
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{command[:2]} exited:\n{log.read_text()[-4000:]}")
            try:
                return "version" in handle.graphql("{ version }")
            except OSError:
                return False

        wait_until(answers, timeout=90, what="the Dagster UI")
        yield handle
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def ui(local_aws, tmp_path_factory) -> Iterator[UI]:
    tmp = tmp_path_factory.mktemp("ui")
    # what `make demo` runs (`dagster dev` is superseded by it)
    command = [str(VENV_BIN / "dg"), "dev", "-w", str(REPO / "workspace.yaml")]
    with _serve(command, _ui_env(local_aws, tmp), tmp / "dagster-dev.log") as handle:
        yield handle


def test_dg_dev_serves_the_same_definitions(local_aws, tmp_path):
    """`dg dev` (the dg CLI, reading pyproject's [tool.dg]) loads the same code location."""
    with _serve(
        [str(VENV_BIN / "dg"), "dev"], _ui_env(local_aws, tmp_path), tmp_path / "dg.log"
    ) as dg:
        data = dg.graphql("{ assetNodes { assetKey { path } } }")
    keys = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
    for table in TABLES:
        for kind in ("table", "snapshot", "changes", "current"):
            assert f"dynamodb/{dagster_safe_name(table)}/{kind}" in keys


SENSOR_QUERY = """
query ($name: String!) {
  sensorOrError(sensorSelector: {repositoryLocationName: "dynamo_cdc",
                                 repositoryName: "__repository__", sensorName: $name}) {
    ... on Sensor { sensorState { status ticks(limit: 20) { status error { message } } } }
    ... on PythonError { message }
  }
  runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $name}]}) {
    ... on Runs { results { runId status } }
  }
}
"""


def test_each_stream_sensor_ticked_and_its_runs_succeeded(ui):
    for table in TABLES:
        name = f"{dagster_safe_name(table)}_stream_sensor"

        def succeeded(name=name):
            data = ui.graphql(SENSOR_QUERY, {"name": name})
            state = data["sensorOrError"]["sensorState"]
            assert state["status"] == "RUNNING"
            errors = [t["error"]["message"] for t in state["ticks"] if t["error"]]
            assert not errors, errors
            runs = data["runsOrError"]["results"]
            failed = [r for r in runs if r["status"] == "FAILURE"]
            assert not failed, f"{name}: failed runs {failed}; see {ui.log}"
            return [r for r in runs if r["status"] == "SUCCESS"]

        assert wait_until(succeeded, timeout=150, interval=3, what=f"a successful {name} run")


def test_the_asset_graph_shows_each_tables_assets_and_sensor(ui):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            for table in TABLES:
                group = dagster_safe_name(table)
                page.goto(f"{ui.url}/locations/dynamo_cdc/asset-groups/{group}")
                for kind in ("table", "snapshot", "changes", "current"):
                    page.get_by_text(kind, exact=True).first.wait_for(timeout=60_000)
                # Dagster's "join the community" first-visit dialog is off (nux in dagster.yaml)
                with pytest.raises(PlaywrightTimeout):
                    page.get_by_role("button", name="Skip").wait_for(timeout=3_000)
                page.get_by_text("Loading...").first.wait_for(state="hidden", timeout=60_000)
                page.screenshot(path=str(ARTIFACTS / f"asset-graph-{group}.png"))
            page.goto(f"{ui.url}/asset-groups")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(ARTIFACTS / "asset-graph.png"), full_page=True)
            page.goto(f"{ui.url}/locations/dynamo_cdc/sensors")
            for table in TABLES:
                name = f"{dagster_safe_name(table)}_stream_sensor"
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "sensors.png"))
        finally:
            browser.close()


def test_no_community_dialog_telemetry_banner_or_warning_greets_the_user(ui):
    # last in this file: the log then holds the sensors' ticks and runs too
    assert ui.graphql("{ shouldShowNux }")["shouldShowNux"] is False
    log = ui.log.read_text()
    assert "Telemetry:" not in log  # the banner dagster dev prints when telemetry is on
    for warning in ("BetaWarning", "SupersessionWarning", "DeprecationWarning"):
        assert warning not in log, log[-3000:]
