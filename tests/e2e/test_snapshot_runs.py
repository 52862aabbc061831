"""Runs of the ``snapshot`` asset request exports as new requests: a second run of today's
partition exports the table again (a "now" export's ClientToken is the run's, not a constant),
while a retry of a run (same root run) re-attaches to the export it started."""

import uuid
from datetime import UTC, datetime

import dagster as dg
import pytest

from dynamo_cdc import read_table
from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import asset_key, snapshot_request_id
from dynamo_cdc.dagster.definitions import PipelineOptions, build_table_defs
from dynamo_cdc.dagster.resources import build_resources
from tests.e2e.helpers import landed_items, live_items

pytestmark = pytest.mark.e2e


def test_a_second_run_of_todays_snapshot_partition_exports_the_table_again(
    clients, dagster_settings, lake
):
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
            run_config={
                "ops": {snapshot.node_def.name: {"config": {"workers": 1, "poll_seconds": 0.2}}}
            },
        )
        assert result.success
        return landed_items(read_table(lake.root, "orders", "snapshot", s3_client=lake.s3_client))

    run()
    tag = uuid.uuid4().hex[:8]
    for i in range(5):
        clients.dynamodb.put_item(
            TableName="orders",
            Item={"customer_id": {"S": f"rerun-{tag}"}, "order_id": {"S": f"o-{i}"}},
        )
    assert run() == live_items(clients, "orders")


def test_a_retry_of_a_run_keeps_its_export_request_and_another_run_does_not():
    first = dg.DagsterRun(job_name="j", run_id="run-a")
    retry = dg.DagsterRun(job_name="j", run_id="run-b", parent_run_id="run-a", root_run_id="run-a")
    other = dg.DagsterRun(job_name="j", run_id="run-c")

    assert snapshot_request_id(retry, "2026-12-06") == snapshot_request_id(first, "2026-12-06")
    assert snapshot_request_id(other, "2026-12-06") != snapshot_request_id(first, "2026-12-06")
    assert snapshot_request_id(first, "2026-12-05") != snapshot_request_id(first, "2026-12-06")
