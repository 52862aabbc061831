"""Runs of the ``snapshot`` asset request exports as new requests: a second run of today's
partition exports the table again (a "now" export's ClientToken is the run's, not a constant),
while a retry of a run (same root run) re-attaches to the export it started."""

import uuid
from datetime import UTC, datetime

import dagster as dg
import pytest

from dagster_project.assets import asset_key, snapshot_request_id
from dagster_project.definitions import PipelineOptions, build_table_defs
from dagster_project.resources import build_resources
from dynamo_cdc import codec, read_table
from dynamo_cdc.config import TableSpec

pytestmark = pytest.mark.e2e


def _live(clients, table: str) -> set[str]:
    items = clients.dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {codec.item_to_json_text(codec.normalize_stream_item(i)) for i in items}


def test_a_second_run_of_todays_snapshot_partition_exports_the_table_again(
    clients, dagster_env, lake, monkeypatch
):
    for name, value in dagster_env.items():
        if name.startswith("DYNAMO_CDC_"):
            monkeypatch.setenv(name, value)
    spec = TableSpec(name="orders")
    defs = build_table_defs(spec, PipelineOptions())
    snapshot = next(
        a for a in defs.assets or [] if asset_key(spec, "snapshot") in getattr(a, "keys", ())
    )
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    instance = dg.DagsterInstance.ephemeral()

    def run() -> set[str]:
        result = dg.materialize(
            [snapshot],
            partition_key=today,
            resources=build_resources(),
            instance=instance,
            run_config={"ops": {snapshot.op.name: {"config": {"workers": 1, "poll_seconds": 0.2}}}},
        )
        assert result.success
        rows = read_table(lake.root, "orders", "snapshot", s3_client=lake.s3_client)
        return {
            codec.item_to_json_text(codec.item_from_json_text(t))
            for t in rows.column("_item").to_pylist()
        }

    run()
    tag = uuid.uuid4().hex[:8]
    for i in range(5):
        clients.dynamodb.put_item(
            TableName="orders",
            Item={"customer_id": {"S": f"rerun-{tag}"}, "order_id": {"S": f"o-{i}"}},
        )
    assert run() == _live(clients, "orders")


def test_a_retry_of_a_run_keeps_its_export_request_and_another_run_does_not():
    first = dg.DagsterRun(job_name="j", run_id="run-a")
    retry = dg.DagsterRun(job_name="j", run_id="run-b", parent_run_id="run-a", root_run_id="run-a")
    other = dg.DagsterRun(job_name="j", run_id="run-c")

    assert snapshot_request_id(retry, "2026-12-06") == snapshot_request_id(first, "2026-12-06")
    assert snapshot_request_id(other, "2026-12-06") != snapshot_request_id(first, "2026-12-06")
    assert snapshot_request_id(first, "2026-12-05") != snapshot_request_id(first, "2026-12-06")
