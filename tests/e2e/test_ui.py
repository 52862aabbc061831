"""The real UI: ``dagster dev`` on the local AWS. GraphQL shows that each table's stream sensor
ticked and the daemon recorded the change partitions it reported as materialized, with their
metadata and without a run; headless Chromium shows each table's assets and sensor."""

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dynamo_cdc.config import dagster_safe_name
from tests.e2e.helpers import (
    ARTIFACTS,
    REPO,
    VENV_BIN,
    dagster_process_env,
    free_port,
    instance_home,
    restore_signals,
    stop_session,
    stream_sensor_batches,
    wait_until,
    warning_lines,
)

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


def _ui_env(local_aws, tmp: Path, request: pytest.FixtureRequest) -> dict:
    home = tmp / "dagster_home"
    env = dagster_process_env(
        local_aws.endpoint_url,
        str(tmp / "lake"),
        home,
        DYNAMO_CDC_SENSOR_INTERVAL_SECONDS="5",
        DYNAMO_CDC_SENSOR_BUDGET_SECONDS="5",
    )
    instance_home("sqlite", home, request, env)
    return env


@contextmanager
def _serve(command: list[str], env: dict[str, str], log: Path) -> Iterator[UI]:
    """Run a Dagster UI command on a free 127.0.0.1 port until it answers; stop it by pid."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=restore_signals,
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
        stop_session(proc)


@pytest.fixture(scope="module")
def ui(local_aws, tmp_path_factory, request) -> Iterator[UI]:
    """``dagster dev`` on the project's SQLite instance (what ``make demo`` serves; the same
    checks on PostgreSQL with deploy/dagster.yaml, as separately deployed services, are in
    tests/e2e/test_services.py)."""
    tmp = tmp_path_factory.mktemp("ui")
    # what `make demo` runs (`dagster dev` is superseded by it)
    command = [str(VENV_BIN / "dg"), "dev", "-w", str(REPO / "workspace.yaml")]
    env = _ui_env(local_aws, tmp, request)
    with _serve(command, env, tmp / "dagster-dev.log") as handle:
        yield handle


def test_dg_dev_serves_the_same_definitions(local_aws, tmp_path, request):
    """`dg dev` (the dg CLI, reading pyproject's [tool.dg]) loads the same code location."""
    with _serve(
        [str(VENV_BIN / "dg"), "dev"], _ui_env(local_aws, tmp_path, request), tmp_path / "dg.log"
    ) as dg:
        data = dg.graphql("{ assetNodes { assetKey { path } } }")
    keys = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
    for table in TABLES:
        for kind in ("table", "snapshot", "changes", "current"):
            assert f"dynamodb/{dagster_safe_name(table)}/{kind}" in keys


def test_each_stream_sensor_records_its_batches_as_materializations_without_a_run(ui):
    for table in TABLES:
        batches = wait_until(
            lambda table=table: stream_sensor_batches(ui.graphql, table, ui.log),
            timeout=150,
            interval=3,
            what=f"a batch materialization from {table}'s stream sensor",
        )
        assert all(b["partition"] for b in batches)


MATERIALIZED_QUERY = """
query ($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 1) { runId partition } }
  }
}
"""


def test_a_new_table_gets_its_first_snapshot_and_current_without_a_click(ui):
    """Nobody launches anything here: the stream sensor asks for the first snapshot, and the
    automation condition refreshes ``current`` once it has landed."""
    for table in TABLES:
        for kind in ("snapshot", "current"):
            key = {"path": ["dynamodb", dagster_safe_name(table), kind]}

            def materialized(key=key):
                data = ui.graphql(MATERIALIZED_QUERY, {"key": key})
                events = data["assetOrError"]["assetMaterializations"]
                return [e for e in events if e["runId"]]

            wait_until(materialized, timeout=300, interval=5, what=f"{table} {kind} materialized")


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
    assert warning_lines(log) == [], log[-3000:]
