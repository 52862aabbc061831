"""The stream sensor, called with build_sensor_context: the materializations it reports without
a run, the first snapshot and the compaction of a closed hour it requests.

The table and its stream are the local AWS's (serving in a thread of this process on
127.0.0.1): DynamoDB Streams come from the stream simulator, as on AWS, with shards that close,
split and rotate (moto's stream has one shard that never does).
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pyarrow.dataset as ds
import pytest
from dagster_aws.s3 import S3Resource

from dynamo_cdc.aws import Clients
from dynamo_cdc.changefiles import data_files
from dynamo_cdc.checkpoint import CheckpointStore
from dynamo_cdc.compaction import compact_hour
from dynamo_cdc.config import Settings, TableSpec
from dynamo_cdc.dagster.assets import hour_partition_key
from dynamo_cdc.dagster.resources import DynamoDBResource, LakeResource
from dynamo_cdc.dagster.sensors import (
    StreamSensorCursor,
    batch_id,
    build_stream_sensor,
    stream_tick,
)
from dynamo_cdc.errors import StreamGapError
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import hour_of_path
from dynamo_cdc.local import LocalAws, start_local_aws
from dynamo_cdc.stream import ReadBudget

TABLE = "app-events.v1"
SPEC = TableSpec(TABLE)
OP = "dynamodb__app_devents_pv1__changes"


@pytest.fixture(scope="module")
def local() -> Iterator[LocalAws]:
    with start_local_aws() as server:
        yield server


@pytest.fixture
def aws(local: LocalAws) -> Clients:
    local.app.reset()
    clients = Clients(Settings(endpoint_url=local.endpoint_url), max_attempts=1)
    clients.dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return clients


def put(clients, *keys):
    for k in keys:
        clients.dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": k}, "v": {"N": "1"}})


def publish_snapshot_marker(root) -> None:
    """What a published snapshot partition leaves for readers to find (its lineage file)."""
    folder = root / TABLE / "snapshot" / "export_date=2026-01-01"
    folder.mkdir(parents=True)
    (folder / "_lineage.json").write_text("{}")


@pytest.fixture
def resources(local, tmp_path):
    publish_snapshot_marker(tmp_path / "lake")
    return {
        "dynamodb": DynamoDBResource(max_attempts=1, endpoint_url=local.endpoint_url),
        "lake": LakeResource(root=str(tmp_path / "lake"), s3=S3Resource()),
    }


def tick(resources, cursor=None, spec=SPEC):
    sensor = build_stream_sensor(spec, OP)
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        return sensor(context)


def test_cursor_round_trips_through_json():
    cursor = StreamSensorCursor(
        caught_up_at=1.5, last_poll_at=2.0, pending_hours=("2026-01-01-00:00",), batches=3
    )
    assert StreamSensorCursor.from_json(cursor.to_json()) == cursor
    assert StreamSensorCursor.from_json(None) == StreamSensorCursor()
    assert StreamSensorCursor.from_json("not json") == StreamSensorCursor()
    assert StreamSensorCursor.from_json('{"v": 99}') == StreamSensorCursor()


def materializations(result) -> list[dg.AssetMaterialization]:
    return [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]


def test_a_tick_lands_the_batch_and_reports_its_hour_materialized_without_a_run(
    aws, resources, tmp_path
):
    put(aws, "a", "b", "c")
    result = tick(resources)
    assert result.run_requests == []
    (event,) = materializations(result)
    assert event.asset_key == dg.AssetKey(["dynamodb", "app_devents_pv1", "changes"])
    lake = Lake(str(tmp_path / "lake"))
    files = data_files(lake, f"{TABLE}/changes")
    assert len(files) == 1
    assert event.partition == hour_partition_key(hour_of_path(files[0]))
    metadata = {k: v.value for k, v in event.metadata.items()}
    assert metadata["batch_rows"] == 3 and metadata["batch_files"] == 1
    assert metadata["batch_id"] == batch_id(TABLE, event.partition, files)
    assert metadata["batch_bytes"] > 0
    (shard,) = metadata["shard_ranges"].values()
    assert shard[2] == 3  # lineage: the sequence range of the stream the rows came from
    assert metadata["path"] == lake.uri(files[0].rsplit("/", 1)[0])
    assert event.tags["dynamo_cdc/table"] == "app_devents_pv1"
    assert ds.dataset(lake.uri(files[0])).count_rows() == 3
    cursor = json.loads(result.cursor)
    assert cursor["batches"] == 1 and cursor["pending_hours"] == [event.partition]
    assert len(result.cursor) < 300


def test_the_first_tick_reports_the_freshness_check_without_a_run(aws, resources):
    result = tick(resources)
    (check,) = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert check.check_name == "capture_freshness" and check.passed
    assert check.asset_key == dg.AssetKey(["dynamodb", "app_devents_pv1", "changes"])
    assert result.run_requests == []
    # not again until the report interval has passed
    assert tick(resources, result.cursor).asset_events == []


def test_nothing_is_reported_or_run_when_nothing_is_new(aws, resources):
    put(aws, "a")
    first = tick(resources)
    second = tick(resources, first.cursor)
    assert second.run_requests == [] and second.asset_events == []
    assert "nothing new" in second.skip_reason.skip_message
    assert StreamSensorCursor.from_json(second.cursor).batches == 1


def test_only_new_records_make_the_next_batch(aws, resources):
    put(aws, "a")
    first = tick(resources)
    put(aws, "b", "c")
    second = tick(resources, first.cursor)
    (event,) = materializations(second)
    assert event.metadata["batch_rows"].value == 2
    assert event.metadata["batch_id"] != materializations(first)[0].metadata["batch_id"]


def test_a_crashed_batch_read_again_is_reported_with_the_same_batch_id(aws, resources, tmp_path):
    put(aws, "a", "b")
    lake = Lake(str(tmp_path / "lake"))
    before = CheckpointStore(lake, TABLE).path
    first = tick(resources)
    # As if the tick had crashed after writing the Parquet but before the commit.
    (tmp_path / "lake" / before).unlink()
    again = tick(resources)
    assert [e.metadata["batch_id"] for e in materializations(again)] == [
        e.metadata["batch_id"] for e in materializations(first)
    ]
    assert len(data_files(lake, f"{TABLE}/changes")) == 1


def _break_checkpoint_arn(tmp_path) -> None:
    store = CheckpointStore(Lake(str(tmp_path / "lake")), TABLE)
    checkpoint = store.load()
    checkpoint.stream_arn = checkpoint.stream_arn + "-old"
    store.commit(checkpoint)


def test_a_stream_gap_fails_the_tick_with_its_message_when_on_gap_is_fail(aws, resources, tmp_path):
    put(aws, "a")
    spec = TableSpec(TABLE, on_gap="fail")
    tick(resources, spec=spec)
    _break_checkpoint_arn(tmp_path)
    with pytest.raises(StreamGapError, match=f"Stream gap on table '{TABLE}'"):
        tick(resources, spec=spec)


def test_a_stream_gap_requests_one_heal_run_when_on_gap_is_heal(aws, resources, tmp_path):
    put(aws, "a")
    tick(resources)
    _break_checkpoint_arn(tmp_path)
    first, again = tick(resources, cursor="{}"), tick(resources, cursor="{}")
    (request,) = first.run_requests
    assert request.run_key.startswith("heal-")
    assert [r.run_key for r in again.run_requests] == [request.run_key]  # the same run, once
    config = request.run_config["ops"][OP]["config"]
    assert config["heal"]["reason"] == "stream_arn_changed"
    assert request.tags["dynamo_cdc/kind"] == "heal"


def test_a_closed_hour_is_compacted_once_and_keeps_exactly_its_rows(aws, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    publish_snapshot_marker(tmp_path / "lake")
    put(aws, "a", "b")
    t0 = datetime.now(UTC).timestamp()
    first = stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    put(aws, "c")
    # a MODIFY of a key already landed: a different event, kept (a write that changes nothing
    # emits no record on AWS and on the simulator; moto's stream emitted one)
    aws.dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
    second = stream_tick(
        SPEC, first.cursor, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5)
    )
    hour_key = materializations(second)[0].partition
    rel = f"{TABLE}/changes"
    files = data_files(lake, rel)
    assert len(files) == 2
    before = ds.dataset(lake.uri(rel), format="parquet").to_table().sort_by("sequence_number")
    # Caught up well after the hour's end: the tick requests the compaction, keyed by hour.
    hour_end = datetime.strptime(hour_key, "%Y-%m-%d-%H:00").replace(tzinfo=UTC) + timedelta(
        hours=1
    )
    later = hour_end.timestamp() + 600
    third = stream_tick(
        SPEC,
        second.cursor,
        aws,
        lake,
        op_name=OP,
        budget=ReadBudget(max_seconds=5),
        clock=lambda: later,
    )
    (compaction,) = third.run_requests
    assert compaction.run_key == f"compact:{hour_key}"
    config = compaction.run_config["ops"][OP]["config"]
    assert config["compact"]["caught_up_at"] == later
    assert StreamSensorCursor.from_json(third.cursor).pending_hours == ()
    hour = hour_of_path(files[0])
    checkpoint = CheckpointStore(lake, TABLE).load()
    not_yet = compact_hour(lake, TABLE, hour, checkpoint, caught_up_at=t0)
    assert not not_yet.compacted and "not caught up" in not_yet.reason
    done = compact_hour(lake, TABLE, hour, checkpoint, caught_up_at=later)
    assert done.compacted and len(done.files_after) == 1 and done.rows == 4
    after = ds.dataset(lake.uri(rel), format="parquet").to_table().sort_by("sequence_number")
    assert after.equals(before)
    again = compact_hour(lake, TABLE, hour, checkpoint, caught_up_at=later)
    assert not again.compacted and data_files(lake, rel) == done.files_after


def test_a_batch_in_an_hour_dagster_does_not_have_yet_is_left_to_its_compaction(aws, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    publish_snapshot_marker(tmp_path / "lake")
    put(aws, "a", "b")
    behind = datetime.now(UTC).timestamp() - 2 * 3600  # this sensor's clock lags the records
    result = stream_tick(
        SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5), clock=lambda: behind
    )
    assert result.run_requests == [] and materializations(result) == []
    assert len(StreamSensorCursor.from_json(result.cursor).pending_hours) == 1
    assert len(data_files(lake, f"{TABLE}/changes")) == 1  # landed all the same


def test_a_tick_skips_while_another_capture_of_the_table_holds_its_lock(aws, tmp_path, monkeypatch):
    from dynamo_cdc.dagster import sensors
    from dynamo_cdc.layout import capture_lock
    from dynamo_cdc.lock import exclusive

    monkeypatch.setattr(sensors, "LOCK_WAIT_SECONDS", 0.2)
    lake = Lake(str(tmp_path / "lake"))
    put(aws, "a")
    with exclusive(lake, capture_lock(lake, TABLE), wait_seconds=0):  # a manual run, say
        busy = stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    assert not busy.asset_events and busy.skip_reason is not None
    assert "capturing the stream" in busy.skip_reason.skip_message
    after = stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    assert len(materializations(after)) == 1  # the next tick lands the batch


# -- shards that split and rotate ------------------------------------------------------------


def _landed(tmp_path) -> list[tuple]:
    """(event_id, pk, event_name, shard_id, sequence_number) of every change row in the lake."""
    return duckdb.sql(
        "select event_id, pk, event_name, shard_id, sequence_number from read_parquet("
        f"'{tmp_path}/lake/{TABLE}/changes/*/*/*.parquet', hive_partitioning=true)"
    ).fetchall()


def _stream_shards(aws) -> list[dict]:
    arn = aws.dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    return aws.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]


def _tick_until_caught_up(resources, cursor=None, limit=20):
    events = []
    for _ in range(limit):
        result = tick(resources, cursor)
        cursor = result.cursor
        if not materializations(result):
            return events, cursor
        events += materializations(result)
    raise AssertionError("the sensor did not catch up")


def test_a_split_between_ticks_lands_parent_then_children_once_and_prunes_the_parent(
    aws, local, resources, tmp_path
):
    put(aws, "a", "b")
    first = tick(resources)
    put(aws, "c")  # still in the parent, after the first tick
    (parent,) = [s["ShardId"] for s in _stream_shards(aws)]
    children = local.control.rotate_shards(TABLE, split=True)
    keys = [f"k{i:02d}" for i in range(40)]
    put(aws, *keys)
    shards = _stream_shards(aws)
    assert {s.get("ParentShardId") for s in shards if s["ShardId"] in children} == {parent}

    events, cursor = _tick_until_caught_up(resources, first.cursor)

    rows = _landed(tmp_path)
    assert len(rows) == len({r[0] for r in rows}) == 43  # every record once
    by_shard = {}
    for _, pk, _, shard, _ in rows:
        by_shard.setdefault(shard, set()).add(pk)
    assert by_shard[parent] == {"a", "b", "c"}
    assert set().union(*(by_shard[c] for c in children)) == set(keys)
    assert all(by_shard.get(c) for c in children)  # the keys really went to both children
    checkpoint = CheckpointStore(Lake(str(tmp_path / "lake")), TABLE).load()
    assert parent not in checkpoint.shards  # read to its end, children known: pruned
    assert set(children) <= set(checkpoint.shards)
    assert sum(e.metadata["batch_rows"].value for e in events) == 41


def test_shards_rotating_every_few_records_lose_and_duplicate_nothing_across_ticks(
    aws, local, resources, tmp_path
):
    local.control.configure_streams(rotate_every_records=3)
    try:
        cursor, written = None, []
        for round_ in range(4):
            batch = [f"r{round_}-{i}" for i in range(7)]
            put(aws, *batch)
            written += batch
            _, cursor = _tick_until_caught_up(resources, cursor)
    finally:
        local.control.configure_streams(rotate_every_records=0)
    rows = _landed(tmp_path)
    assert sorted(r[1] for r in rows) == sorted(written)
    assert len({r[0] for r in rows}) == len(written)
    assert len({r[3] for r in rows}) >= len(written) // 3  # many generations of shards
    checkpoint = CheckpointStore(Lake(str(tmp_path / "lake")), TABLE).load()
    assert len(checkpoint.shards) <= 3  # finished generations were pruned
    assert len(cursor) < 300  # the sensor cursor stays small through every rotation


def test_a_table_without_a_snapshot_gets_todays_snapshot_requested_once_a_day(aws, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    put(aws, "a")
    now = datetime.now(UTC).timestamp()

    def tick_at(when, cursor=None):
        budget = ReadBudget(max_seconds=5)
        return stream_tick(SPEC, cursor, aws, lake, op_name=OP, budget=budget, clock=lambda: when)

    first = tick_at(now)
    (request,) = first.run_requests
    assert request.asset_selection == [dg.AssetKey(["dynamodb", "app_devents_pv1", "snapshot"])]
    assert request.partition_key == datetime.now(UTC).strftime("%Y-%m-%d")
    assert request.tags["dynamo_cdc/kind"] == "first_snapshot"
    assert materializations(first)  # the capture ran first: the snapshot overlaps the stream
    # the same run key all day (Dagster launches it once), a new one the next day
    for later in (now + 60, now + 86400):
        day = datetime.fromtimestamp(later, tz=UTC).strftime("%Y-%m-%d")
        keys = [r.run_key for r in tick_at(later, first.cursor).run_requests]
        assert f"first-snapshot:{day}" in keys
    # once a snapshot is published, never again
    publish_snapshot_marker(tmp_path / "lake")
    later = tick_at(now + 120, first.cursor)
    assert later.run_requests == []
    assert StreamSensorCursor.from_json(later.cursor).has_snapshot
