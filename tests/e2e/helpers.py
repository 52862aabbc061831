"""Helpers shared by the end-to-end tests."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from dynamo_cdc import codec
from dynamo_cdc.config import dagster_safe_name
from dynamo_cdc.lake import Lake

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).parent / "artifacts"


def run_dagster(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run the ``dagster`` CLI; fail the test with its output when it fails."""
    proc = subprocess.run(
        [str(VENV_BIN / "dagster"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"dagster {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def wait_until(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


INSTANCES = ["sqlite", "postgres"]


def instance_home(
    kind: str, home: Path, request: pytest.FixtureRequest, env: dict[str, str]
) -> None:
    """Fill ``home`` (a new DAGSTER_HOME) with the instance settings of ``kind``: the project's
    SQLite ``dagster.yaml`` (one step per pool), or the production deploy/dagster.yaml over a
    fresh database of the session's PostgreSQL server (its ``DAGSTER_PG_*`` go into ``env``)."""
    home.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        shutil.copy(REPO / "dagster_project" / "dagster.yaml", home / "dagster.yaml")
        return
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env.update(request.getfixturevalue("postgres").new_instance_env())


STREAM_SENSOR_QUERY = """
query ($name: String!, $changes: AssetKeyInput!) {
  sensorOrError(sensorSelector: {repositoryLocationName: "dynamo_cdc",
                                 repositoryName: "__repository__", sensorName: $name}) {
    ... on Sensor { sensorState { status ticks(limit: 20) { status error { message } } } }
    ... on PythonError { message }
  }
  runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $name}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
  assetOrError(assetKey: $changes) {
    ... on Asset {
      assetMaterializations(limit: 20) {
        partition runId metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""


def stream_sensor_batches(graphql, table: str, log: object) -> list[dict]:
    """The micro-batches ``table``'s stream sensor recorded (over a webserver's ``graphql``):
    materializations of its ``changes`` without a run, with the batch's metadata. Fails when
    the sensor is not running, a recent tick failed, or it launched a run for anything but real
    work (the first snapshot, a compaction, a heal); ``log`` names where to look then."""
    name = f"{dagster_safe_name(table)}_stream_sensor"
    changes = {"path": ["dynamodb", dagster_safe_name(table), "changes"]}
    data = graphql(STREAM_SENSOR_QUERY, {"name": name, "changes": changes})
    state = data["sensorOrError"]["sensorState"]
    assert state["status"] == "RUNNING"
    errors = [t["error"]["message"] for t in state["ticks"] if t["error"]]
    assert not errors, errors
    runs = data["runsOrError"]["results"]
    kinds = [t["value"] for r in runs for t in r["tags"] if t["key"] == "dynamo_cdc/kind"]
    # only real work is a run (the first snapshot, a compaction once an hour closes)
    assert set(kinds) <= {"first_snapshot", "compaction", "heal"}, f"{name}: runs {runs}; {log}"
    events = data["assetOrError"]["assetMaterializations"]
    return [
        e
        for e in events
        if e["runId"] == ""
        and {"batch_id", "batch_rows", "shard_ranges", "path"}
        <= {m["label"] for m in e["metadataEntries"]}
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def restore_signals() -> None:
    # Background processes here may start with SIGINT/SIGTERM ignored; dagster dev must obey.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_session(proc: subprocess.Popen) -> None:
    """Stop a Dagster process (the leader of its own session) and its children by its pid."""
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


def dagster_process_env(endpoint_url: str, lake_root: str, home: Path, **extra: str) -> dict:
    """The environment of a Dagster child process on the local AWS: this one without any
    ``DYNAMO_CDC_*`` or ``DAGSTER_*`` variable, plus the endpoint, the lake, DAGSTER_HOME, the
    demo tables' list (written into DAGSTER_HOME: no table list means no tables), fake
    credentials and ``extra``."""
    from dynamo_cdc.local.demo import DEMO_TABLES

    home.mkdir(parents=True, exist_ok=True)
    tables = home / "tables.csv"
    tables.write_text("".join(f"{name}\n" for name in DEMO_TABLES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMO_CDC_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DYNAMO_CDC_TABLES=str(tables),
        DYNAMO_CDC_ENDPOINT_URL=endpoint_url,
        DYNAMO_CDC_LAKE_ROOT=lake_root,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


# Dagster's own: loading a project through Components hands our asset checks to the repository
# as AssetsDefinitions, and Dagster's conversion back (repository_data.py,
# get_asset_checks_defs_by_key) passes its beta `execution_type` parameter, which warns. No call
# of ours is involved (dagster 1.13.27); any other warning still fails the tests below.
DAGSTER_INTERNAL_WARNING = "Parameter `execution_type` of function `AssetsDefinition.__init__`"


def warning_lines(log: str) -> list[str]:
    """Lines of ``log`` naming a Beta, Supersession or Deprecation warning, less Dagster's own
    (``DAGSTER_INTERNAL_WARNING``)."""
    kinds = ("BetaWarning", "SupersessionWarning", "DeprecationWarning")
    return [
        line
        for line in log.splitlines()
        if any(w in line for w in kinds) and DAGSTER_INTERNAL_WARNING not in line
    ]


def lake_dataset(lake: Lake, rel: str) -> ds.Dataset:
    """The Parquet files under ``rel`` in ``lake`` (a folder or s3://), hive partitions read."""
    fs, base = lake.arrow_filesystem()
    return ds.dataset(f"{base}/{rel}", filesystem=fs, format="parquet", partitioning="hive")


def live_items(clients, table: str) -> set[str]:
    """The table's items (a consistent Scan) as canonical DynamoDB JSON texts."""
    items = clients.dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {codec.item_to_json_text(codec.normalize_stream_item(i)) for i in items}


def landed_items(rows) -> set[str]:
    """The ``_item`` column of a pyarrow Table as canonical DynamoDB JSON texts."""
    return {
        codec.item_to_json_text(codec.item_from_json_text(t))
        for t in rows.column("_item").to_pylist()
    }
