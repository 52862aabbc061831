"""`make demo`'s headless form, `dynamo-cdc demo --once`, works from an empty folder: the
local AWS, the demo tables, a workload and one pass of the pipeline through Dagster, with the
lake in a folder or on the demo's local S3."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynamo_cdc import catalog, read_table
from dynamo_cdc.catalog import VIEWS
from dynamo_cdc.lake import Lake
from tests.e2e.helpers import warning_lines

pytestmark = [pytest.mark.e2e, pytest.mark.iceberg]


# A user's real AWS settings: the demo must neither use nor pass on any of them (its local AWS
# takes the demo's own key only, so a child signing with these would fail the run).
USER_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAUSERSENTINEL0002",
    "AWS_SECRET_ACCESS_KEY": "user-secret-sentinel-demo",
    "AWS_SESSION_TOKEN": "user-token-sentinel-demo",
    "DYNAMO_CDC_AWS_ACCESS_KEY_ID": "AKIAUSERSENTINEL0003",
    "DYNAMO_CDC_AWS_SECRET_ACCESS_KEY": "user-secret-sentinel-demo-2",
}


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_demo_once_runs_the_pipeline_for_both_demo_tables(tmp_path: Path, kind: str) -> None:
    lake = tmp_path / "lake"
    root = str(lake) if kind == "folder" else "s3://demo-lake/lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMO_CDC_", "DAGSTER_"))}
    env.update(USER_AWS)
    proc = subprocess.run(
        [sys.executable, "-m", "dynamo_cdc.cli", "demo", "--once", "--lake-root", root],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    for table in ("orders", "app-events.v1"):
        assert f"{table}: ok" in proc.stdout
        if kind == "s3":
            continue  # the demo's local S3 stopped with it; its runs' success is the proof
        for view in ("snapshot", "changes", "current"):
            assert read_table(str(lake), table, view).num_rows > 0, (table, view, output[-3000:])
        # sync --once left the Iceberg tables (on by default) up to date with the lake
        tables = {v: catalog.load_table(Lake(str(lake)), table, v) for v in VIEWS}
        current = tables["current"].scan().to_arrow()
        assert current.num_rows == read_table(str(lake), table).num_rows
        changes = tables["changes"].scan().to_arrow()
        assert changes.num_rows == read_table(str(lake), table, "changes").num_rows
        # the demo's snapshot holds a column of nulls, which pyiceberg 0.12 cannot scan in a
        # format-2 table (docs/iceberg.md): its registration is checked file by file instead
        registered = {df.file_path for df in catalog._live_files(tables["snapshot"])}
        assert registered == {
            f"file://{lake}/{r}"
            for r in Lake(str(lake)).list(f"{table}/snapshot")
            if r.endswith(".parquet")
        }
    assert "read_parquet" in proc.stdout  # a DuckDB query to copy
    assert not any((tmp_path / ".demo").glob("**/*.tmp"))
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert not [v for v in USER_AWS.values() if v.encode() in path.read_bytes()], path
    assert not [v for v in USER_AWS.values() if v in output]


@pytest.fixture(scope="module")
def busy_port_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """`make demo` where another program holds the UI port: (its stdout lines, its Dagster log),
    after its UI answered and was asked whether to show the community dialog."""
    tmp_path = tmp_path_factory.mktemp("busy-demo")
    import json
    import signal
    import socket
    import threading
    import time
    import urllib.request

    from tests.e2e.helpers import wait_until

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMO_CDC_", "DAGSTER_"))}
    env["DYNAMO_CDC_SENSOR_INTERVAL_SECONDS"] = "5"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "dynamo_cdc.cli", "demo", "--ui-port", str(taken)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
        reader.start()
        try:

            def url() -> str | None:
                assert proc.poll() is None, "".join(lines)
                found = [ln.split("Dagster UI: ", 1)[1].strip() for ln in lines if "UI: http" in ln]
                return found[0] if found else None

            served = wait_until(url, timeout=240, interval=1, what="the demo's UI URL")
            assert f"Port {taken} is busy" in "".join(lines)
            assert served != f"http://127.0.0.1:{taken}"
            lines.append(f"(test) served at {served}, busy {taken}\n")
            body = json.dumps({"query": "{ shouldShowNux }"}).encode()
            request = urllib.request.Request(
                f"{served}/graphql", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as resp:
                nux = json.loads(resp.read())["data"]["shouldShowNux"]
            lines.append(f"(test) shouldShowNux {nux}\n")
            time.sleep(20)  # sensor ticks and their runs write to the log
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=10)
    log = (tmp_path / ".demo" / "dagster.log").read_text()
    assert "Telemetry:" not in log
    return lines, (tmp_path / ".demo" / "dagster.log").read_text()


def test_demo_on_a_busy_ui_port_prints_the_url_it_serves_without_the_community_dialog(
    busy_port_demo: tuple[list[str], str],
) -> None:
    lines, log = busy_port_demo
    text = "".join(lines)
    assert "Port " in text and "is busy" in text
    assert "(test) shouldShowNux False" in text
    assert "Telemetry:" not in log
    assert "Traceback" not in text


def test_the_demo_log_holds_no_dagster_beta_supersession_or_deprecation_warning(
    busy_port_demo: tuple[list[str], str],
) -> None:
    _, log = busy_port_demo
    assert warning_lines(log) == []
