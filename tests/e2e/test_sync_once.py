"""``dynamo-cdc sync --once`` in production's shapes, run as users run it (a child process) on the
local AWS: items of 2.5 KB and of 300 KB whose stream pages GetRecords cuts at 1 MB, an outage
longer than the stream's 24 hours (``on_gap=heal`` and ``on_gap=fail``), and a table deleted and
created again under its name. After each run ``current`` equals a Scan of the table.

First (before the tests that move the local AWS's clock), on SQLite with a local-folder lake and
on PostgreSQL with an s3:// lake: ``sync --once`` and a stream sensor tick with the code location's own resources, whose
settings reach boto3 resolved (``EnvVar``)."""

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pytest

from dynamo_cdc import codec, read_table
from dynamo_cdc.aws import Clients
from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.definitions import build_defs
from dynamo_cdc.dagster.resources import build_resources
from dynamo_cdc.local import LocalAwsProcess
from tests.e2e.chaos import all_stream_event_ids
from tests.e2e.conftest import PAIRWISE, instance_and_lake
from tests.e2e.helpers import REPO, VENV_BIN, lake_dataset, landed_items, live_items

pytestmark = pytest.mark.e2e


def _put_orders(clients, n: int) -> None:
    tag = uuid.uuid4().hex[:8]
    for i in range(n):
        clients.dynamodb.put_item(
            TableName="orders",
            Item={"customer_id": {"S": f"sync-{tag}"}, "order_id": {"S": f"o-{i}"}},
        )


@instance_and_lake(*PAIRWISE)
def test_sync_once_leaves_current_equal_to_the_table(clients, dagster_env, lake, tmp_path):
    tables = tmp_path / "tables.csv"
    tables.write_text("orders\n")
    _put_orders(clients, 30)
    env = dict(dagster_env, DYNAMO_CDC_TABLES=str(tables))
    proc = subprocess.run(
        [sys.executable, "-m", "dynamo_cdc.cli", "sync", "--once"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "orders: ok" in proc.stdout
    current = read_table(lake.root, "orders", s3_client=lake.s3_client)
    assert landed_items(current) == live_items(clients, "orders")


@instance_and_lake(*PAIRWISE)
def test_a_stream_sensor_tick_with_the_locations_resources_lands_the_writes(
    clients, dagster_settings, lake
):
    spec = TableSpec(name="app-events.v1")
    defs = build_defs([spec])
    sensor = defs.get_sensor_def("app_devents_pv1_stream_sensor")
    keys = [f"tick-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for k in keys:
        clients.dynamodb.put_item(TableName="app-events.v1", Item={"event_id": {"S": k}})
    with dg.build_sensor_context(resources=build_resources()) as context:
        result = sensor(context)

    assert isinstance(result, dg.SensorResult)
    rows = lake_dataset(lake, lake.table_path("app-events.v1", "changes")).to_table()
    landed = {
        codec.item_from_json_text(t)["event_id"]["S"] for t in rows.column("_keys").to_pylist()
    }
    assert set(keys) <= landed


@pytest.fixture
def aws(local_aws: LocalAwsProcess) -> LocalAwsProcess:
    """The module's own local AWS (tests/e2e/conftest.py): these tests move its clock."""
    return local_aws


class Sync:
    """One table, its table list and lake, and ``dynamo-cdc sync --once`` over them."""

    def __init__(self, aws: LocalAwsProcess, clients: Clients, tmp: Path, options: str = ""):
        self.clients = clients
        self.table = f"sync-{uuid.uuid4().hex[:8]}.t"
        self.lake = tmp / "lake"
        bucket = f"exports-{uuid.uuid4().hex[:8]}"
        clients.s3.create_bucket(Bucket=bucket)
        tables = tmp / "tables.csv"
        tables.write_text(f"{self.table},{options}\n" if options else f"{self.table}\n")
        home = tmp / "dagster_home"
        home.mkdir()
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DYNAMO_CDC_", "DAGSTER_"))
        }
        self.env.update(
            DAGSTER_HOME=str(home),
            DYNAMO_CDC_ENDPOINT_URL=aws.endpoint_url,
            DYNAMO_CDC_LAKE_ROOT=str(self.lake),
            DYNAMO_CDC_TABLES=str(tables),
            DYNAMO_CDC_EXPORT_BUCKET=bucket,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            PYTHONPATH=str(REPO),
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.create_table()

    def create_table(self) -> None:
        ddb = self.clients.dynamodb
        ddb.create_table(
            TableName=self.table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        ddb.update_continuous_backups(
            TableName=self.table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dynamo_cdc.cli", "sync", "--once"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def run_ok(self) -> str:
        proc = self.run()
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return proc.stdout

    def put(self, keys: range, pad_bytes: int, prefix: str = "k", version: int = 1) -> None:
        """Items ``<prefix><i>`` of about ``pad_bytes`` each (BatchWriteItem, 25 a call)."""
        names = [f"{prefix}{i:05d}" for i in keys]
        for start in range(0, len(names), 25):
            requests: list[dict[str, Any]] = [
                {
                    "PutRequest": {
                        "Item": {
                            "pk": {"S": name},
                            "v": {"N": str(version)},
                            "pad": {"S": "x" * pad_bytes},
                        }
                    }
                }
                for name in names[start : start + 25]
            ]
            while requests:
                out = self.clients.dynamodb.batch_write_item(RequestItems={self.table: requests})
                requests = (out.get("UnprocessedItems") or {}).get(self.table) or []

    def delete(self, keys: range, prefix: str = "k") -> None:
        for i in keys:
            self.clients.dynamodb.delete_item(
                TableName=self.table, Key={"pk": {"S": f"{prefix}{i:05d}"}}
            )

    def scan(self) -> Counter[str]:
        items: Counter[str] = Counter()
        for page in self.clients.dynamodb.get_paginator("scan").paginate(TableName=self.table):
            for raw in page["Items"]:
                items[codec.item_to_json_text(codec.normalize_stream_item(raw))] += 1
        return items

    def current(self) -> Counter[str]:
        texts = read_table(str(self.lake), self.table, "current").column("_item").to_pylist()
        return Counter(codec.item_to_json_text(codec.item_from_json_text(t)) for t in texts)

    def changes(self) -> Any:
        return read_table(str(self.lake), self.table, "changes")


def lag_line(stdout: str) -> str:
    return next(line.strip() for line in stdout.splitlines() if line.strip().startswith("lag:"))


@pytest.mark.parametrize(
    ("writes", "pad_bytes"), [(1200, 2_500), (100, 300_000)], ids=["2.5KB", "300KB"]
)
def test_sync_once_lands_every_record_of_pages_cut_at_1_mb_and_current_equals_scan(
    aws: LocalAwsProcess, clients: Clients, tmp_path: Path, writes: int, pad_bytes: int
) -> None:
    sync = Sync(aws, clients, tmp_path)
    sync.put(range(20), 100)
    sync.run_ok()  # the snapshot, and capture from before it
    sync.put(range(writes), pad_bytes, prefix="w")
    sync.put(range(0, writes, 7), pad_bytes, prefix="w", version=2)
    sync.delete(range(0, writes, 11), prefix="w")

    stdout = sync.run_ok()

    landed = sync.changes().column("event_id").to_pylist()
    assert Counter(landed) == Counter(all_stream_event_ids(clients, sync.table))
    assert sync.current() == sync.scan()
    assert lag_line(stdout) == "lag: 0.0 s"


def outage(sync: Sync, aws: LocalAwsProcess) -> None:
    """Capture, then changes it never reads before the stream trims them, then more."""
    aws.control.advance_clock(60)  # PITR was on a minute before the writes, as in real life
    sync.put(range(50), 1_000)
    sync.run_ok()
    sync.put(range(10), 1_000, version=2)  # lost from the stream: trimmed before the next run
    sync.delete(range(10, 20))
    sync.put(range(100, 110), 1_000)
    aws.control.advance_clock(25 * 3600)
    sync.put(range(200, 800), 2_500)  # in the stream: more than one 1 MB page
    sync.put(range(20, 30), 1_000, version=3)


def test_sync_once_heals_an_outage_longer_than_the_streams_24_hours(
    aws: LocalAwsProcess, clients: Clients, tmp_path: Path
) -> None:
    sync = Sync(aws, clients, tmp_path)  # on_gap=heal, the default
    outage(sync, aws)

    sync.run_ok()

    assert sync.current() == sync.scan()
    sources = Counter(sync.changes().column("source").to_pylist())
    assert sources["export"] >= 30  # the lost window, from an incremental export


def test_sync_once_with_on_gap_fail_fails_on_an_outage_naming_the_stream_gap(
    aws: LocalAwsProcess, clients: Clients, tmp_path: Path
) -> None:
    sync = Sync(aws, clients, tmp_path, options="on_gap=fail")
    outage(sync, aws)
    before = sync.current()

    proc = sync.run()

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{sync.table}: FAILED" in proc.stdout
    assert f"Stream gap on table {sync.table!r}" in proc.stdout and "Fix: " in proc.stdout
    assert sync.current() == before  # nothing healed, nothing half-applied


def test_a_table_deleted_and_created_again_is_mirrored_without_its_old_lifes_rows(
    aws: LocalAwsProcess, clients: Clients, tmp_path: Path
) -> None:
    sync = Sync(aws, clients, tmp_path)
    sync.put(range(40), 500, prefix="old")
    sync.run_ok()
    sync.put(range(40, 60), 500, prefix="old")  # the old table's last changes, captured
    sync.run_ok()
    old_rows = sync.changes().num_rows
    sync.clients.dynamodb.delete_table(TableName=sync.table)
    aws.control.advance_clock(2)  # deleting and creating a table take seconds on AWS
    sync.create_table()
    sync.put(range(30, 45), 500, prefix="old", version=9)  # some keys of the old table's life
    sync.put(range(10), 500, prefix="new")

    sync.run_ok()

    assert sync.current() == sync.scan()
    changes = sync.changes()
    old = changes.filter(pc.starts_with(changes.column("pk"), "old"))
    assert old.num_rows >= old_rows  # the old table's change rows stay, as history
