"""Gap healing on the local AWS: what the stream lost comes back from PITR incremental exports,
capture resumes, and ``current`` equals a Scan again."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from dynamo_cdc import read_table
from dynamo_cdc.aws import Clients
from dynamo_cdc.errors import StreamGapError
from dynamo_cdc.heal import backfill_changes_hour, export_windows, heal_gap
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess
from dynamo_cdc.mirror import refresh_current
from tests.integration.test_mirror_on_local_aws import Env, capture_all, mirror, scan, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def env(local_aws: LocalAwsProcess, clients: Clients, bucket: str) -> Env:
    return Env(local_aws, clients, bucket)


def put(env: Env, table: str, pk: str, v: str) -> None:
    env.clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "v": {"N": v}})


def delete(env: Env, table: str, pk: str) -> None:
    env.clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": pk}})


def test_a_checkpoint_behind_the_trim_horizon_is_healed_by_incremental_export(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    env.advance(60)  # PITR was enabled a minute before the writes, as in real life
    for i in range(5):
        put(env, table, f"a{i}", "1")
    snapshot(env, lake, table)
    env.advance(5)
    put(env, table, "d", "1")  # captured, then deleted inside the lost window
    capture_all(env, lake, table)
    env.advance(60)
    put(env, table, "a1", "2")  # lost: trimmed before capture runs again
    delete(env, table, "a2")
    put(env, table, "b1", "1")
    delete(env, table, "d")
    env.advance(25 * 3600)
    put(env, table, "c1", "1")  # still in the stream
    put(env, table, "a3", "3")
    with pytest.raises(StreamGapError) as err:
        capture_all(env, lake, table)

    healed = heal_gap(env.clients, lake, table, err.value, bucket=env.bucket, poll_seconds=0.05)
    capture_all(env, lake, table)
    refresh_current(lake, table)

    assert healed.action == "incremental_export" and healed.checkpoint_reset
    assert healed.removes_added == 1  # "d": created and deleted inside the window
    assert mirror(lake, table) == scan(env, table)
    changes = read_table(lake.root, table, "changes")
    exported = changes.filter(pc.equal(changes.column("source"), "export"))
    assert sorted(exported.column("event_name").to_pylist()) == [
        "INSERT",
        "MODIFY",
        "REMOVE",
        "REMOVE",
    ]


def test_a_key_created_and_deleted_in_the_first_second_of_pitr_is_not_resurrected_by_a_heal(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    """Stream times are whole seconds: in PITR's first second, a stream row cannot tell whether
    its write came before PITR began (the key is in the export's start state) or after (a key
    created and deleted inside the window, which the export leaves out). The heal takes a
    fresh snapshot there."""
    now = env.now()
    env.local_aws.control.set_clock(math.floor(now) + 1.05)  # early in a second
    table = make_table()  # PITR on, in this second
    put(env, table, "d", "1")  # in the same second, most likely
    lake = Lake(str(tmp_path / "lake"))
    capture_all(env, lake, table)
    snapshot(env, lake, table)
    delete(env, table, "d")
    put(env, table, "e", "1")
    env.advance(25 * 3600)
    with pytest.raises(StreamGapError) as err:
        capture_all(env, lake, table)

    heal_gap(env.clients, lake, table, err.value, bucket=env.bucket, poll_seconds=0.05)
    capture_all(env, lake, table)
    refresh_current(lake, table)

    assert mirror(lake, table) == scan(env, table)


def test_a_re_enabled_stream_is_healed_and_capture_follows_the_new_stream(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    ddb = env.clients.dynamodb
    env.advance(60)
    for i in range(5):
        put(env, table, f"a{i}", "1")
    snapshot(env, lake, table)
    capture_all(env, lake, table)
    env.advance(20 * 60)
    ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    put(env, table, "lost", "1")  # no stream is recording
    delete(env, table, "a0")
    ddb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    put(env, table, "new", "1")
    env.advance(2)
    with pytest.raises(StreamGapError) as err:
        capture_all(env, lake, table)
    assert err.value.reason == "stream_arn_changed"

    healed = heal_gap(env.clients, lake, table, err.value, bucket=env.bucket, poll_seconds=0.05)
    capture_all(env, lake, table)
    refresh_current(lake, table)

    assert len(healed.windows) == 1
    assert mirror(lake, table) == scan(env, table)


def test_a_table_deleted_and_created_again_is_healed_with_no_row_of_its_old_life_in_current(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    env.advance(60)
    for i in range(5):
        put(env, table, f"old{i}", "1")
    snapshot(env, lake, table)
    put(env, table, "old5", "1")  # changes of the old table's last minutes, captured
    delete(env, table, "old0")
    capture_all(env, lake, table)
    refresh_current(lake, table)
    history = read_table(lake.root, table, "changes").num_rows
    env.clients.dynamodb.delete_table(TableName=table)
    env.advance(2)  # deleting and creating a table take seconds on AWS
    make_table(name=table)  # a new stream ARN
    put(env, table, "old1", "2")
    put(env, table, "new", "1")
    with pytest.raises(StreamGapError) as err:
        capture_all(env, lake, table)
    assert err.value.reason == "stream_arn_changed"

    healed = heal_gap(env.clients, lake, table, err.value, bucket=env.bucket, poll_seconds=0.05)
    capture_all(env, lake, table)
    refresh_current(lake, table)

    assert healed.action == "snapshot"  # PITR of the new table starts after the old one's end
    assert mirror(lake, table) == scan(env, table)
    assert read_table(lake.root, table, "changes").num_rows == history + 2  # history stays


def test_backfilling_an_hour_writes_its_net_changes_as_export_rows(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    now = datetime.fromtimestamp(env.now(), tz=UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    env.advance((hour + timedelta(minutes=10) - now).total_seconds())
    put(env, table, "x", "1")
    put(env, table, "x", "2")
    env.advance(3600)

    result = backfill_changes_hour(
        env.clients, lake, table, hour, bucket=env.bucket, poll_seconds=0.05
    )
    again = backfill_changes_hour(
        env.clients, lake, table, hour, bucket=env.bucket, poll_seconds=0.05
    )

    assert result.files == again.files and len(result.files) == 1
    assert f"hour={hour:%H}" in result.files[0]
    rows = read_table(lake.root, table, "changes")
    assert rows.num_rows == 1  # the re-run overwrote the same file
    assert rows.column("_new_image").to_pylist() == ['{"pk":{"S":"x"},"v":{"N":"2"}}']
    assert rows.column("event_name").to_pylist() == ["INSERT"]


def test_export_windows_are_whole_seconds_between_15_minutes_and_24_hours():
    t = datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    now = t + timedelta(days=3)

    short = export_windows(t, t + timedelta(minutes=1), now=now)
    long = export_windows(t, t + timedelta(hours=30), now=now)
    late = export_windows(now - timedelta(minutes=2), now, now=now)

    assert short == [(t.replace(microsecond=0), t.replace(microsecond=0) + timedelta(minutes=15))]
    assert [e - s for s, e in long] == [timedelta(hours=24), timedelta(hours=6, seconds=1)]
    assert late == [
        (now.replace(microsecond=0) - timedelta(minutes=15), now.replace(microsecond=0))
    ]
    assert all(s.microsecond == 0 and e.microsecond == 0 for s, e in long)


def test_a_gap_met_by_the_sensor_heals_through_one_dagster_run(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    import dagster as dg

    from dynamo_cdc.config import TableSpec
    from dynamo_cdc.dagster.assets import build_changes_asset
    from dynamo_cdc.dagster.sensors import stream_tick
    from dynamo_cdc.stream import ReadBudget

    table = make_table()
    spec = TableSpec(table)  # on_gap=heal is the default
    lake = Lake(str(tmp_path / "lake"))
    changes = build_changes_asset(spec, date(2025, 1, 1))
    ddb = env.clients.dynamodb

    def tick() -> dg.SensorResult:
        return stream_tick(
            spec,
            None,
            env.clients,
            lake,
            op_name=changes.op.name,
            budget=ReadBudget(max_seconds=10),
            clock=env.now,  # the local AWS clock, which this test moves
        )

    env.advance(60)
    for i in range(5):
        put(env, table, f"a{i}", "1")
    snapshot(env, lake, table)
    tick()
    env.advance(20 * 60)
    ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    put(env, table, "lost", "1")  # no stream is recording
    delete(env, table, "a0")
    ddb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    put(env, table, "new", "1")
    env.advance(2)

    (request,) = tick().run_requests
    assert request.tags["dynamo_cdc/kind"] == "heal"
    resources = env.dagster_resources(lake.root)
    run = dg.materialize(
        [changes],
        # the request's hour follows the local AWS's clock, which this test moved ahead of
        # Dagster's; healing does not depend on the hour, so use one Dagster has
        partition_key=datetime.now(UTC).strftime("%Y-%m-%d-%H:00"),
        run_config=request.run_config,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert run.success
    (materialization,) = run.asset_materializations_for_node(changes.op.name)
    assert materialization.metadata["heal_action"].value == "incremental_export"
    assert materialization.metadata["healed_gap"].value == "stream_arn_changed"

    tick()  # capture resumes on the new stream (its hour may be ahead of this test's clock)
    refresh_current(lake, table)
    assert mirror(lake, table) == scan(env, table)
