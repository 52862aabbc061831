"""``current`` on the local AWS: a real export, the stream simulator read by the capture, then
the mirror compared with a Scan of the live table (through ``_item``).

The local AWS (the session's child process) serves the DynamoDB Streams simulator, fed every
write on the local AWS's clock, so capture reads a stream with AWS's behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dynamo_cdc import codec, read_table
from dynamo_cdc.aws import Clients
from dynamo_cdc.capture import capture_once
from dynamo_cdc.export import ExportRequest
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess
from dynamo_cdc.local.workload import Workload
from dynamo_cdc.mirror import key_text, refresh_current
from dynamo_cdc.snapshot import take_snapshot
from dynamo_cdc.stream import ReadBudget, discover

pytestmark = pytest.mark.integration

KEYS = (("pk", "S"),)


@dataclass
class Env:
    local_aws: LocalAwsProcess
    clients: Clients
    bucket: str

    def now(self) -> float:
        return self.local_aws.control.clock()["now_micros"] / 1e6

    def advance(self, seconds: float) -> None:
        self.local_aws.control.advance_clock(seconds)

    def dagster_resources(self, lake_root: str) -> dict[str, Any]:
        """The Dagster resources of a run on this local AWS and lake."""
        from dagster_aws.s3 import S3Resource

        from dynamo_cdc.dagster.resources import DynamoDBResource, LakeResource

        return {
            "dynamodb": DynamoDBResource(
                endpoint_url=self.local_aws.endpoint_url,
                region_name="us-east-1",
                export_bucket=self.bucket,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ),
            "lake": LakeResource(root=lake_root, s3=S3Resource(region_name="us-east-1")),
        }


@pytest.fixture
def env(local_aws: LocalAwsProcess, clients: Clients, bucket: str) -> Env:
    return Env(local_aws, clients, bucket)


def capture_all(env: Env, lake: Lake, table: str) -> int:
    """Capture until the stream is caught up; returns the records written."""
    info = discover(env.clients, table)
    total = 0
    while True:
        res = capture_once(
            env.clients,
            lake,
            table,
            ReadBudget(max_seconds=20),
            info=info,
            clock=env.now,
            sleep=lambda s: None,
        )
        total += res.records
        if res.stopped_by == "caught_up":
            return total


def snapshot(env: Env, lake: Lake, table: str, at: float | None = None) -> Any:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(at, tz=UTC) if at is not None else None
    return take_snapshot(
        env.clients,
        lake,
        ExportRequest(table=table, bucket=env.bucket, export_time=when),
        workers=1,
        poll_seconds=0.05,
    )


def scan(env: Env, table: str) -> dict[str, dict]:
    out = {}
    paginator = env.clients.dynamodb.get_paginator("scan")
    for page in paginator.paginate(TableName=table):
        for raw in page["Items"]:
            item = codec.normalize_stream_item(raw)
            out[key_text(item, ["pk"])] = codec.deserialize_item(item)
    return out


def mirror(lake: Lake, table: str) -> dict[str, dict]:
    out = {}
    for text in read_table(lake.root, table, "current").column("_item").to_pylist():
        item = codec.item_from_json_text(text)
        out[key_text(item, ["pk"])] = codec.deserialize_item(item)
    return out


@pytest.mark.slow
def test_seeded_workload_of_5000_operations_with_a_mid_workload_snapshot_equals_scan(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    work = Workload(env.clients.dynamodb, table, "pk", seed=11, keys=1500)
    for _ in range(5):
        work.run(500)
        capture_all(env, lake, table)
    snapshot(env, lake, table)  # mid-workload: half the operations are still to come
    for _ in range(5):
        work.run(500)
        capture_all(env, lake, table)
        refresh_current(lake, table, bucket_count=8)  # refreshes along the way, too

    result = refresh_current(lake, table, bucket_count=8)

    assert sum(work.counts.values()) == 5000
    assert all(work.counts[op] > 0 for op in ("put", "update", "delete", "batch", "transact"))
    live = scan(env, table)
    assert len(live) > 500
    assert mirror(lake, table) == live
    assert result.rows == len(live)


def test_a_delete_an_update_and_an_insert_made_while_the_export_runs_are_right(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    ddb = env.clients.dynamodb
    for i in range(20):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})
    env.advance(60)
    ddb.delete_item(TableName=table, Key={"pk": {"S": "k0"}})  # before ExportTime, in margin
    ddb.put_item(TableName=table, Item={"pk": {"S": "k1"}, "v": {"N": "100"}})
    export_time = env.now()
    env.advance(2)
    # While the export runs (after its ExportTime): a delete, an update and an insert.
    ddb.delete_item(TableName=table, Key={"pk": {"S": "k2"}})
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "k3"}},
        UpdateExpression="SET v = :v, w = :w",
        ExpressionAttributeValues={":v": {"N": "3.5"}, ":w": {"S": "new"}},
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "k-new"}, "v": {"N": "7"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "k4"}, "v": {"N": "40"}})
    ddb.delete_item(TableName=table, Key={"pk": {"S": "k4"}})  # written and deleted during it
    snapshot(env, lake, table, at=export_time)
    capture_all(env, lake, table)

    refresh_current(lake, table)

    current = mirror(lake, table)
    assert current == scan(env, table)
    assert '{"pk":{"S":"k2"}}' not in current and '{"pk":{"S":"k0"}}' not in current
    assert current['{"pk":{"S":"k3"}}']["w"] == "new"
    assert '{"pk":{"S":"k-new"}}' in current and '{"pk":{"S":"k4"}}' not in current
    assert read_table(lake.root, table, "current").schema.field("v").type.scale == 1


def test_stitching_ignores_changes_older_than_export_time_minus_the_margin(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    ddb = env.clients.dynamodb
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    capture_all(env, lake, table)
    env.advance(3600)
    ddb.put_item(TableName=table, Item={"pk": {"S": "b"}, "v": {"N": "2"}})
    snapshot(env, lake, table)
    capture_all(env, lake, table)

    result = refresh_current(lake, table, margin_seconds=60)

    assert result.changes_applied == 1  # "b" (at ExportTime), not "a" from an hour earlier
    assert mirror(lake, table) == scan(env, table)
