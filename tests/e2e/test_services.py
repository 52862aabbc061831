"""Dagster as deployed: ``dagster code-server`` (gRPC), ``dagster-webserver`` and
``dagster-daemon`` as separate processes, with the production deploy/dagster.yaml on a real
PostgreSQL server, the workspace (deploy/workspace.yaml) pointing at the code server, and the
lake on S3 (the local AWS).

For the two demo tables, written to while it runs, nobody clicks: the daemon ticks the stream
sensors (batches recorded as materializations without runs), the sensors ask for each table's
first snapshot (runs launched by the code server, which must succeed), ``current`` follows. A
backfill of the ``changes`` hours launched over GraphQL succeeds. At the end every stream
record is in the changes exactly once and ``current`` equals a Scan. The UI's GraphQL shows the
batches as materializations without a run, with their metadata, no community dialog, and no
process logs a Beta, Supersession or Deprecation warning.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from dynamo_cdc import read_table
from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings, dagster_safe_name
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess, launch_local_aws
from dynamo_cdc.local.demo import DEMO_BUCKET, DEMO_TABLES
from tests.e2e.chaos import all_stream_event_ids, compare_current_with_scan
from tests.e2e.helpers import (
    REPO,
    dagster_process_env,
    stream_sensor_batches,
    wait_until,
    warning_lines,
)
from tests.e2e.services import production_services

pytestmark = pytest.mark.e2e

LAKE_BUCKET = "dynamo-cdc-lake"
WRITE_SECONDS = 60.0


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[LocalAwsProcess]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.pop("MOTO_ACCOUNT_ID", None)
    server = launch_local_aws(
        0, demo=True, export_delay_seconds=0.2, env=env, stderr_path=str(tmp_path / "aws.log")
    )
    try:
        yield server
    finally:
        server.stop()


def write_steadily(clients: Clients, seconds: float, stop: threading.Event) -> None:
    """Puts (and a delete every tenth) to both demo tables, a few a second."""
    started, n = time.monotonic(), 0
    while time.monotonic() - started < seconds and not stop.is_set():
        for table, spec in DEMO_TABLES.items():
            keys = [k["AttributeName"] for k in spec["KeySchema"]]
            item = {k: {"S": f"svc-{n % 40}-{k}"} for k in keys}
            if n % 10 == 9:
                clients.dynamodb.delete_item(TableName=table, Key=item)
            else:
                item["n"] = {"N": str(n)}
                clients.dynamodb.put_item(TableName=table, Item=item)
        n += 1
        time.sleep(0.5)


RUNS = """
{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }
"""
LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""
BACKFILL = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}
"""
LATEST = """
query ($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 1) { runId timestamp } }
  }
}
"""


def test_separate_services_on_postgresql_and_s3_capture_two_tables_without_a_click(
    aws: LocalAwsProcess, postgres: Any, tmp_path: Path
) -> None:
    clients = Clients(Settings(endpoint_url=aws.endpoint_url), max_attempts=3)
    clients.s3.create_bucket(Bucket=LAKE_BUCKET)
    root = f"s3://{LAKE_BUCKET}/lake"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    env = dagster_process_env(
        aws.endpoint_url,
        root,
        home,
        **postgres.new_instance_env(),
        DYNAMO_CDC_EXPORT_BUCKET=DEMO_BUCKET,
        DYNAMO_CDC_SENSOR_INTERVAL_SECONDS="5",
        DYNAMO_CDC_SENSOR_BUDGET_SECONDS="5",
        DYNAMO_CDC_CURRENT_CRON="* * * * *",
    )
    stop_writing = threading.Event()
    writer = threading.Thread(target=write_steadily, args=(clients, WRITE_SECONDS, stop_writing))
    with ExitStack() as stack:
        services = stack.enter_context(production_services(env, tmp_path))
        stack.callback(stop_writing.set)
        writer.start()
        stack.callback(writer.join)

        # Nobody launches anything: first snapshots, then current, of both tables.
        for table in DEMO_TABLES:
            for kind in ("snapshot", "current"):
                key = {"path": ["dynamodb", dagster_safe_name(table), kind]}

                def materialized(key: dict = key) -> list:
                    data = services.graphql(LATEST, {"key": key})["assetOrError"]
                    return [e for e in data.get("assetMaterializations") or [] if e["runId"]]

                wait_until(materialized, timeout=420, interval=5, what=f"{table} {kind}")

        # A backfill of this hour's changes of both tables, launched over GraphQL.
        hour = datetime.now(UTC).strftime("%Y-%m-%d-%H:00")
        keys = [{"path": ["dynamodb", dagster_safe_name(t), "changes"]} for t in DEMO_TABLES]
        launched = services.graphql(
            LAUNCH_BACKFILL,
            {"params": {"assetSelection": keys, "partitionNames": [hour], "fromFailure": False}},
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched

        def backfill_done() -> str | None:
            data = services.graphql(BACKFILL, {"id": launched["backfillId"]})
            status = data["partitionBackfillOrError"]["status"]
            return status if status not in ("REQUESTED", "CANCELING", "FAILING") else None

        status = wait_until(backfill_done, timeout=420, interval=5, what="the backfill")
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), services.logs()

        stop_writing.set()
        writer.join()
        # every stream record captured
        for table in DEMO_TABLES:
            wait_until(
                lambda table=table: (
                    landed_stream_rows(root, table, clients)
                    == Counter(all_stream_event_ids(clients, table))
                ),
                timeout=180,
                interval=5,
                what=f"{table}'s stream captured",
            )
        # current follows (its automation after the last batch): it equals a Scan
        lake = Lake(root, clients.s3)
        for table, spec in DEMO_TABLES.items():
            keys = tuple(k["AttributeName"] for k in spec["KeySchema"])

            def current_equals_scan(table: str = table, keys: tuple = keys) -> bool:
                rows, items, differ = compare_current_with_scan(lake, table, clients, keys)
                return not differ and rows == items > 0

            wait_until(current_equals_scan, timeout=300, interval=10, what=f"{table} current")

        def all_runs_ended() -> list:
            runs = services.graphql(RUNS)["runsOrError"]["results"]
            ended = all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
            return runs if ended else []

        runs = wait_until(all_runs_ended, timeout=300, interval=5, what="the runs to end")
        statuses = Counter(r["status"] for r in runs)
        assert statuses and set(statuses) == {"SUCCESS"}, (statuses, services.logs())
        kinds = Counter(
            t["value"] for r in runs for t in r["tags"] if t["key"] == "dynamo_cdc/kind"
        )
        assert kinds["batch"] == 0 and kinds["first_snapshot"] == len(DEMO_TABLES), kinds
        # the daemon recorded each sensor's batches as materializations without a run, with
        # their metadata and partition, and no tick failed
        for table in DEMO_TABLES:
            batches = stream_sensor_batches(services.graphql, table, services.folder)
            assert batches and all(b["partition"] for b in batches), table
        # deploy/dagster.yaml: no "join the community" dialog, no telemetry; no process logged
        # a Beta, Supersession or Deprecation warning
        assert services.graphql("{ shouldShowNux }")["shouldShowNux"] is False
        log = services.logs(tail=None)
        assert "Telemetry:" not in log
        assert warning_lines(log) == [], log[-3000:]

    for table in DEMO_TABLES:
        truth = Counter(all_stream_event_ids(clients, table))
        assert landed_stream_rows(root, table, clients) == truth  # every record, once


def landed_stream_rows(root: str, table: str, clients: Clients) -> Counter[str]:
    """How many times each stream record (event id) is in the table's changes."""
    rows = read_table(root, table, "changes", s3_client=clients.s3)
    stream = rows.filter(pc.equal(rows.column("source"), "stream"))
    return Counter(stream.column("event_id").to_pylist())
