"""``dagster asset materialize`` on the local AWS: a snapshot partition and a changes hour, read
back from the lake; and two changes runs of one table launched at once never overlap. Each test
that writes the lake runs on a local folder and on an s3:// lake, and on each kind of Dagster
instance (tests/e2e/conftest.py's ``instance_and_lake``)."""

import json
import subprocess
import uuid
from datetime import UTC, datetime

import pytest

from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import hour_partition_key, pool_name
from tests.e2e.conftest import PAIRWISE, instance_and_lake
from tests.e2e.helpers import REPO, VENV_BIN, lake_dataset, landed_items, live_items, run_dagster

pytestmark = pytest.mark.e2e

MODULE = ["-m", "dagster_project.location"]  # the example project, its defs.yaml


@instance_and_lake(*PAIRWISE)
def test_snapshot_of_today_materializes_from_the_cli_and_reads_back(clients, dagster_env, lake):
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    config = {
        "ops": {"dynamodb__orders__snapshot": {"config": {"workers": 1, "poll_seconds": 0.2}}}
    }
    run_dagster(
        [
            "asset",
            "materialize",
            *MODULE,
            "--select",
            "dynamodb/orders/snapshot",
            "--partition",
            today,
            "--config-json",
            json.dumps(config),
        ],
        dagster_env,
    )
    folder = lake.table_path("orders", "snapshot", f"export_date={today}")
    table = lake_dataset(lake, folder).to_table()
    assert landed_items(table) == live_items(clients, "orders")
    lineage = json.loads(lake.read_bytes(f"{folder}/_lineage.json") or b"{}")
    assert lineage["item_count"] == table.num_rows


@instance_and_lake(("sqlite", "folder"))  # an error before any write or storage difference
def test_a_snapshot_before_the_pitr_window_fails_naming_the_earliest_time(dagster_env):
    proc = subprocess.run(
        [
            str(VENV_BIN / "dagster"),
            "asset",
            "materialize",
            *MODULE,
            "--select",
            "dynamodb/orders/snapshot",
            "--partition",
            "2025-01-01",
        ],
        cwd=REPO,
        env=dagster_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "earliest restorable time" in proc.stdout + proc.stderr


@instance_and_lake(*PAIRWISE)
def test_a_changes_hour_materializes_from_the_cli_and_reads_back(clients, dagster_env, lake):
    keys = [f"e2e-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for k in keys:
        clients.dynamodb.put_item(
            TableName="app-events.v1", Item={"event_id": {"S": k}, "kind": {"S": "e2e"}}
        )
    hour = hour_partition_key(datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
    config = {"ops": {"dynamodb__app_devents_pv1__changes": {"config": {"capture": {}}}}}
    run_dagster(
        [
            "asset",
            "materialize",
            *MODULE,
            "--select",
            "dynamodb/app_devents_pv1/changes",
            "--partition",
            hour,
            "--config-json",
            json.dumps(config),
        ],
        dagster_env,
    )
    rows = lake_dataset(lake, lake.table_path("app-events.v1", "changes")).to_table()
    landed = set(rows.column("event_id").to_pylist())
    assert len(landed) == rows.num_rows
    landed_keys = {json.loads(t)["event_id"]["S"] for t in rows.column("_keys").to_pylist()}
    assert set(keys) <= landed_keys


# Dagster's pool lets both runs hold its one slot at times, on SQLite more often than on
# PostgreSQL (docs/production.md), so the lake's lock is what makes them take turns: both kinds
# of it (an flock, an S3 lease) on SQLite, and the production profile.
@instance_and_lake(("sqlite", "folder"), ("sqlite", "s3"), ("postgres", "s3"))
def test_two_changes_runs_of_one_table_launched_at_once_never_capture_at_once(
    clients, dagster_env, lake
):
    """Both runs are in the table's pool, but Dagster's slot claim is not atomic across
    processes, on SQLite nor on PostgreSQL (two runs started within a few ms can both get the
    one slot: a read, then an UPDATE that does not re-check the slot is free; measured in
    docs/production.md), so their steps may overlap.
    The capture itself holds the table's lock in the lake: the two captures take turns and
    every record lands once, whatever Dagster did."""
    items = [
        {"PutRequest": {"Item": {"customer_id": {"S": f"c-{i % 50}"}, "order_id": {"S": f"o-{i}"}}}}
        for i in range(2500)
    ]
    for i in range(0, len(items), 25):
        clients.dynamodb.batch_write_item(RequestItems={"orders": items[i : i + 25]})
    hours = ["2026-01-01-00:00", "2026-01-01-01:00"]
    config = {"ops": {"dynamodb__orders__changes": {"config": {"capture": {}}}}}
    # Create the instance's storage and the table's pool first: two processes racing to create
    # a fresh SQLite schema ("table ... already exists"), or a new pool's limit on PostgreSQL
    # (the second run fails: docs/production.md, section 7), are Dagster set-up races, not
    # what this test pins.
    for setup in (["migrate"], ["concurrency", "set", pool_name(TableSpec(name="orders")), "1"]):
        subprocess.run(
            [str(VENV_BIN / "dagster"), "instance", *setup],
            cwd=REPO,
            env=dagster_env,
            check=True,
            capture_output=True,
        )
    procs = [
        subprocess.Popen(
            [
                str(VENV_BIN / "dagster"),
                "asset",
                "materialize",
                *MODULE,
                "--select",
                "dynamodb/orders/changes",
                "--partition",
                hour,
                "--config-json",
                json.dumps(config),
            ],
            cwd=REPO,
            env=dagster_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for hour in hours
    ]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    windows = _capture_windows(dagster_env, "dynamodb__orders__changes")
    assert len(windows) == 2
    (s1, e1), (s2, e2) = sorted(windows)
    assert e1 <= s2, f"two captures held the table's lock at once: {windows}"
    rows = lake_dataset(lake, lake.table_path("orders", "changes")).to_table(columns=["event_id"])
    assert rows.num_rows == len(set(rows.column("event_id").to_pylist())) >= 2500


def _capture_windows(env: dict[str, str], step_key: str) -> list[tuple[float, float]]:
    """The ``capture_locked_between`` metadata of every materialization ``step_key`` made, read
    from the instance of ``env`` (its DAGSTER_HOME and, on PostgreSQL, DAGSTER_PG_*)."""
    import dagster as dg

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            if key.startswith("DAGSTER_"):
                mp.setenv(key, value)
        with dg.DagsterInstance.get() as instance:
            out = []
            for run in instance.get_runs():
                for record in instance.all_logs(run.run_id):
                    event = record.dagster_event
                    if record.step_key != step_key or not event:
                        continue
                    if event.event_type_value != "ASSET_MATERIALIZATION":
                        continue
                    metadata = event.event_specific_data.materialization.metadata
                    start, end = metadata["capture_locked_between"].value
                    out.append((start, end))
            return out
