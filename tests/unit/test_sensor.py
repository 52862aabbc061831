"""The stream sensor, called with build_sensor_context on an in-process moto DynamoDB, and the
compaction of a closed hour it requests."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow.dataset as ds
import pytest
from dagster_aws.s3 import S3Resource
from moto import mock_aws

from dagster_project.assets import hour_of_path, hour_partition_key
from dagster_project.compaction import compact_hour, data_files
from dagster_project.resources import DynamoDBResource, LakeResource
from dagster_project.sensors import (
    StreamSensorCursor,
    batch_run_key,
    build_stream_sensor,
    stream_tick,
)
from dynamo_cdc.aws import Clients
from dynamo_cdc.checkpoint import CheckpointStore
from dynamo_cdc.config import Settings, TableSpec
from dynamo_cdc.errors import StreamGapError
from dynamo_cdc.lake import Lake
from dynamo_cdc.stream import ReadBudget

TABLE = "app-events.v1"
SPEC = TableSpec(TABLE)
OP = "dynamodb__app_devents_pv1__changes"


@pytest.fixture
def aws():
    with mock_aws():
        clients = Clients(Settings(), max_attempts=1)
        clients.dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        yield clients


def put(clients, *keys):
    for k in keys:
        clients.dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": k}, "v": {"N": "1"}})


@pytest.fixture
def resources(tmp_path):
    return {
        "dynamodb": DynamoDBResource(max_attempts=1),
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


def test_a_tick_lands_the_batch_and_requests_one_run_per_hour_touched(aws, resources, tmp_path):
    put(aws, "a", "b", "c")
    result = tick(resources)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    config = request.run_config["ops"][OP]["config"]
    assert config["batch_records"] == 3
    assert request.tags["dynamo_cdc/table"] == "app_devents_pv1"
    lake = Lake(str(tmp_path / "lake"))
    files = data_files(lake, f"{TABLE}/changes")
    assert len(files) == 1
    assert request.partition_key == hour_partition_key(hour_of_path(files[0]))
    assert request.run_key == batch_run_key(TABLE, request.partition_key, files)
    assert ds.dataset(lake.uri(files[0])).count_rows() == 3
    cursor = json.loads(result.cursor)
    assert cursor["batches"] == 1 and cursor["pending_hours"] == [request.partition_key]
    assert len(result.cursor) < 300


def test_no_run_when_nothing_is_new(aws, resources):
    put(aws, "a")
    first = tick(resources)
    second = tick(resources, first.cursor)
    assert second.run_requests == []
    assert "nothing new" in second.skip_reason.skip_message
    assert StreamSensorCursor.from_json(second.cursor).batches == 1


def test_only_new_records_make_the_next_batch(aws, resources):
    put(aws, "a")
    first = tick(resources)
    put(aws, "b", "c")
    second = tick(resources, first.cursor)
    assert len(second.run_requests) == 1
    assert second.run_requests[0].run_config["ops"][OP]["config"]["batch_records"] == 2
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_run_key_is_stable_when_a_crashed_batch_is_read_again(aws, resources, tmp_path):
    put(aws, "a", "b")
    lake = Lake(str(tmp_path / "lake"))
    before = CheckpointStore(lake, TABLE).path
    first = tick(resources)
    # As if the tick had crashed after writing the Parquet but before the commit.
    (tmp_path / "lake" / before).unlink()
    again = tick(resources)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
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
    assert config["heal"] is True and config["gap_reason"] == "stream_arn_changed"
    assert request.tags["dynamo_cdc/kind"] == "heal"


def test_a_closed_hour_is_compacted_once_and_keeps_exactly_its_rows(aws, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    put(aws, "a", "b")
    t0 = datetime.now(UTC).timestamp()
    first = stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    put(aws, "c")
    put(aws, "a")  # a MODIFY of a key already landed: a different event, kept
    second = stream_tick(
        SPEC, first.cursor, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5)
    )
    hour_key = second.run_requests[0].partition_key
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
    assert config["compact"] is True and config["caught_up_at"] == later
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


def test_uncommitted_files_are_never_folded_into_a_compacted_file(aws, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    put(aws, "a")
    stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    committed = CheckpointStore(lake, TABLE).load()
    put(aws, "b")
    stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    files = data_files(lake, f"{TABLE}/changes")
    assert len(files) == 2
    # The second batch's checkpoint "was never committed".
    result = compact_hour(lake, TABLE, hour_of_path(files[0]), committed, force=True)
    assert not result.compacted and "beyond the committed checkpoint" in result.reason
    assert data_files(lake, f"{TABLE}/changes") == files


def test_a_batch_in_an_hour_dagster_does_not_have_yet_is_left_to_its_compaction(aws, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    put(aws, "a", "b")
    behind = datetime.now(UTC).timestamp() - 2 * 3600  # this sensor's clock lags the records
    result = stream_tick(
        SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5), clock=lambda: behind
    )
    assert result.run_requests == []
    assert len(StreamSensorCursor.from_json(result.cursor).pending_hours) == 1
    assert len(data_files(lake, f"{TABLE}/changes")) == 1  # landed all the same


def test_a_tick_skips_while_another_capture_of_the_table_holds_its_lock(aws, tmp_path, monkeypatch):
    from dagster_project import sensors
    from dynamo_cdc.changes import capture_lock

    monkeypatch.setattr(sensors, "LOCK_WAIT_SECONDS", 0.2)
    lake = Lake(str(tmp_path / "lake"))
    put(aws, "a")
    with lake.exclusive(capture_lock(lake, TABLE), wait_seconds=0):  # a manual run, say
        busy = stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    assert not busy.run_requests and busy.skip_reason is not None
    assert "capturing the stream" in busy.skip_reason.skip_message
    after = stream_tick(SPEC, None, aws, lake, op_name=OP, budget=ReadBudget(max_seconds=5))
    assert len(after.run_requests) == 1  # the next tick lands the batch
