"""Load: 20 tables with two shards each, a workload writing to all, one sensor daemon's ticks.

The ticks are driven here as the daemon drives them: every round, each table's stream sensor is
evaluated once, one after the other (Dagster's daemon evaluates a code location's sensors in
one thread unless ``sensors.use_threads`` is set), with the sensor's default budget, new boto3
clients per tick (as ``DynamoDBResource.get_clients()`` makes them) and the cursor each tick
returned. Why not the real ``dagster-daemon``: its sensors tick at most every
``minimum_interval_seconds`` (30 s here), so two minutes would hold three or four ticks per
table, too few to measure lag; and each tick's run requests would launch 20 run processes per
round on a 2-core machine. The tick function (:func:`dynamo_cdc.dagster.sensors.stream_tick`) is
the same one the daemon calls; tests/e2e/test_ui.py runs it under the real daemon.

Measured per tick: its wall time (must stay under Dagster's 60 s sensor timeout) and, per record
landed, the lag from the workload's write (wall time when the write was sent) to the end of the
tick that made its row readable in the changes Parquet. At the end every write must be in the
changes exactly once, and every micro-batch is recorded by the sensor's asset events without a
run. A figures table is printed, with the runs per table per day: the runs the ticks requested,
scaled to a day, plus the ``current`` refreshes of the default cadence (the automation sensor's
runs, which this test does not drive).

Items are of production's size: ``DYNAMO_CDC_LOAD_ITEM_BYTES`` (2,500 by default), so a 1 MB
GetRecords page holds about 400 records, not 1,000.

A second test measures what capture sustains on ONE shard: a workload writes as fast as it is
let (``DYNAMO_CDC_LOAD_SHARD_RATE`` writes/s, default 1,000: what one shard takes on AWS) for
``DYNAMO_CDC_LOAD_SHARD_SECONDS`` (30) while the table's sensor ticks back to back; it prints
the records per second landed and per second of tick time, and the lag median and 95th
percentile; then, with capture stopped, the workload writes for as long again and the ticks
drain that backlog: the records per second of tick time they land is what capture sustains::

    DYNAMO_CDC_LOAD_SHARD_SECONDS=60 .venv/bin/python -m pytest tests/e2e/test_load.py -s -k one_shard
"""

import itertools
import os
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import DEFAULT_CURRENT_CRON, Settings, TableSpec
from dynamo_cdc.dagster.sensors import DEFAULT_BUDGET_SECONDS, stream_tick
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess, launch_local_aws
from dynamo_cdc.stream import ReadBudget

pytestmark = pytest.mark.e2e

TABLES = int(os.environ.get("DYNAMO_CDC_LOAD_TABLES", "20"))
WORKLOAD_SECONDS = float(os.environ.get("DYNAMO_CDC_LOAD_SECONDS", "45"))
WRITES_PER_SECOND = float(os.environ.get("DYNAMO_CDC_LOAD_RATE", "150"))
ITEM_BYTES = int(os.environ.get("DYNAMO_CDC_LOAD_ITEM_BYTES", "2500"))
SHARD_RATE = float(os.environ.get("DYNAMO_CDC_LOAD_SHARD_RATE", "1000"))
SHARD_SECONDS = float(os.environ.get("DYNAMO_CDC_LOAD_SHARD_SECONDS", "30"))
DEADLINE_SECONDS = 110.0
SENSOR_TIMEOUT_SECONDS = 60.0
BATCH = 25


@pytest.fixture(scope="module")
def load_aws(tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = tmp_path_factory.mktemp("load-aws") / "server.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.pop("MOTO_ACCOUNT_ID", None)
    server = launch_local_aws(0, env=env, stderr_path=str(log))
    try:
        yield server
    finally:
        server.stop()


class Workload:
    """Writes new items to every table at a steady rate; remembers when each write returned."""

    def __init__(
        self,
        clients: Clients,
        tables: list[str],
        rate: float,
        seconds: float,
        item_bytes: int = ITEM_BYTES,
        batch: int = BATCH,
        prefix: str = "w",
    ) -> None:
        self.clients = clients
        self.prefix = prefix
        self.pad = "x" * max(0, item_bytes - 40)  # the key, v and attribute names: ~40 bytes
        self.batch = batch
        self.tables = tables
        self.rate = rate
        self.seconds = seconds
        self.written: dict[tuple[str, str], float] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)

    def write(self, table: str, keys: list[str]) -> None:
        requests = [
            {
                "PutRequest": {
                    "Item": {"pk": {"S": k}, "v": {"N": str(len(k))}, "pad": {"S": self.pad}}
                }
            }
            for k in keys
        ]
        # the time is taken before the call: a tick may read the record before it returns
        sent = time.time()
        for k in keys:
            self.written[(table, k)] = sent
        pending = {table: requests}
        while pending:
            out = self.clients.dynamodb.batch_write_item(RequestItems=pending)
            pending = out.get("UnprocessedItems") or {}

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            rng = random.Random(7)
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < self.seconds:
                table = self.tables[n % len(self.tables)]
                size = rng.randint(1, self.batch)
                self.write(table, [f"{self.prefix}{n:07d}-{i:02d}" for i in range(size)])
                n += 1
                # keep the average rate: sleep until this many writes are due
                due = started + len(self.written) / self.rate
                time.sleep(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def cron_ticks_per_day(cron: str) -> int:
    """How many times ``cron`` fires in a day (UTC)."""
    from dagster._utils.schedules import cron_string_iterator

    start = 1_700_006_400  # a midnight, UTC
    ticks = cron_string_iterator(start, cron, "UTC")
    return sum(1 for _ in itertools.takewhile(lambda t: t.timestamp() < start + 86400, ticks))


def create_table(clients: Clients, name: str) -> None:
    clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def new_rows(lake: Lake, table: str, seen_files: set[str]) -> list[tuple[str, str, str]]:
    """(event_id, pk, shard_id) of the rows of change files not seen yet (then seen)."""
    out: list[tuple[str, str, str]] = []
    files = [f for f in lake.list(f"{table}/changes") if f.endswith(".parquet")]
    for rel in sorted(set(files) - seen_files):
        seen_files.add(rel)
        rows = pq.read_table(lake.uri(rel), columns=["event_id", "pk", "shard_id"])
        out += zip(
            rows["event_id"].to_pylist(),
            rows["pk"].to_pylist(),
            rows["shard_id"].to_pylist(),
            strict=True,
        )
    return out


def print_figures(title: str, figures: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    width = max(len(k) for k in figures)
    lines = ["", title] + [f"  {k:<{width}}  {v}" for k, v in figures.items()]
    with capsys.disabled():
        print("\n".join(lines))


def test_twenty_tables_with_two_shards_each_through_one_sensor_daemon(
    load_aws: LocalAwsProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(endpoint_url=load_aws.endpoint_url, lake_root=str(tmp_path / "lake"))
    admin = Clients(settings, max_attempts=3)
    specs = [TableSpec(f"load-{i:02d}.t") for i in range(TABLES)]
    tables = [s.name for s in specs]
    workload = Workload(admin, tables, WRITES_PER_SECOND, WORKLOAD_SECONDS)
    for name in tables:
        create_table(admin, name)
        # records in the first shard, so the children wait for their parent to be read
        workload.write(name, [f"before-split-{i}" for i in range(5)])
        children = load_aws.control.rotate_shards(name, split=True)
        assert len(children) == 2
    open_shards = {
        s["table"]: s for s in load_aws.control.streams()["streams"] if s["table"] in tables
    }
    assert len(open_shards) == TABLES

    lake = Lake(settings.lake_root)
    budget = ReadBudget(max_seconds=DEFAULT_BUDGET_SECONDS)
    cursors: dict[str, str | None] = dict.fromkeys(tables)
    seen_files: dict[str, set[str]] = {t: set() for t in tables}
    landed: dict[tuple[str, str], list[str]] = {}
    shards_seen: dict[str, set[str]] = {t: set() for t in tables}
    tick_seconds: list[float] = []
    lags: list[float] = []
    run_requests: dict[str, int] = dict.fromkeys(tables, 0)
    first_snapshots: dict[str, set[str]] = {t: set() for t in tables}
    materialized: dict[str, set[str]] = {t: set() for t in tables}
    rounds = 0
    started = time.monotonic()
    workload.start()
    while True:
        rounds += 1
        new = 0
        for spec in specs:
            t0 = time.monotonic()
            result = stream_tick(
                spec,
                cursors[spec.name],
                Clients(settings),
                lake,
                op_name="changes_op",
                budget=budget,
            )
            tick_seconds.append(time.monotonic() - t0)
            readable_at = time.time()
            cursors[spec.name] = result.cursor
            for request in result.run_requests or []:
                if request.tags.get("dynamo_cdc/kind") == "first_snapshot":
                    # a table with no snapshot yet asks for one, keyed by the day: one run
                    first_snapshots[spec.name].add(request.run_key)
                else:
                    run_requests[spec.name] += 1
            for event in result.asset_events or []:
                if isinstance(event, dg.AssetMaterialization):
                    materialized[spec.name].add(event.metadata["batch_id"].value)
            for event_id, pk, shard in new_rows(lake, spec.name, seen_files[spec.name]):
                landed.setdefault((spec.name, pk), []).append(event_id)
                shards_seen[spec.name].add(shard)
                if not pk.startswith("before-split-"):
                    lags.append(readable_at - workload.written[(spec.name, pk)])
                new += 1
        elapsed = time.monotonic() - started
        if not workload.running and new == 0 and len(landed) >= len(workload.written):
            break
        assert elapsed < DEADLINE_SECONDS, f"not caught up after {elapsed:.0f} s"
    workload.join()
    assert workload.error is None, workload.error

    # every write landed exactly once, nothing else landed
    assert set(landed) == set(workload.written)
    duplicates = {k: v for k, v in landed.items() if len(v) != 1}
    assert duplicates == {}
    assert all(len(s) == 3 for s in shards_seen.values()), shards_seen  # parent + 2 children
    assert max(tick_seconds) < SENSOR_TIMEOUT_SECONDS
    # every table's batches were reported as materializations, none needed a run
    assert all(materialized.values()) and sum(run_requests.values()) == 0, run_requests
    # ... and the only run a tick asked for is each new table's first snapshot, once
    assert all(len(keys) == 1 for keys in first_snapshots.values()), first_snapshots

    wall = time.monotonic() - started
    sensor_runs_per_day = sum(run_requests.values()) / TABLES * 86400 / wall
    current_runs_per_day = cron_ticks_per_day(DEFAULT_CURRENT_CRON)
    # at most one compaction per hour closes (none within this short run)
    compactions_per_day = 24

    figures = {
        "tables": TABLES,
        "shards (open / total)": f"{2 * TABLES} / {3 * TABLES}",
        "records": len(landed),
        "workload": f"{WORKLOAD_SECONDS:.0f} s at {WRITES_PER_SECOND:.0f} writes/s",
        "item bytes": ITEM_BYTES,
        "rounds / ticks": f"{rounds} / {len(tick_seconds)}",
        "tick seconds max / median": (
            f"{max(tick_seconds):.2f} / {statistics.median(tick_seconds):.2f}"
        ),
        "lag seconds max / median": f"{max(lags):.2f} / {statistics.median(lags):.2f}",
        "wall seconds": f"{wall:.1f}",
        "batches recorded without a run": sum(len(v) for v in materialized.values()),
        "runs per table per day": (
            f"{sensor_runs_per_day + current_runs_per_day + compactions_per_day:.0f} (sensor "
            f"batches {sensor_runs_per_day:.0f}, compactions <= {compactions_per_day}, current "
            f"<= {current_runs_per_day} on '{DEFAULT_CURRENT_CRON}')"
        ),
    }
    print_figures("load figures (one sensor daemon, default budget)", figures, capsys)


def test_one_shard_with_production_sized_items_is_captured_as_fast_as_it_is_written(
    load_aws: LocalAwsProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(endpoint_url=load_aws.endpoint_url, lake_root=str(tmp_path / "lake"))
    admin = Clients(settings, max_attempts=3)
    spec = TableSpec("load-one-shard.t")
    create_table(admin, spec.name)
    workload = Workload(admin, [spec.name], SHARD_RATE, SHARD_SECONDS)
    lake = Lake(settings.lake_root)
    budget = ReadBudget(max_seconds=DEFAULT_BUDGET_SECONDS)
    cursor: str | None = None
    seen: set[str] = set()
    landed: dict[str, list[str]] = {}
    shards: set[str] = set()
    lags: list[float] = []
    ticks: list[tuple[float, int]] = []  # (seconds, records landed)
    started = time.monotonic()
    workload.start()
    while True:
        t0 = time.monotonic()
        result = stream_tick(spec, cursor, Clients(settings), lake, op_name="op", budget=budget)
        seconds = time.monotonic() - t0
        readable_at = time.time()
        cursor = result.cursor
        rows = new_rows(lake, spec.name, seen)
        ticks.append((seconds, len(rows)))
        for event_id, pk, shard in rows:
            landed.setdefault(pk, []).append(event_id)
            shards.add(shard)
            lags.append(readable_at - workload.written[(spec.name, pk)])
        if not workload.running and not rows and len(landed) >= len(workload.written):
            break
        assert time.monotonic() - started < SHARD_SECONDS + DEADLINE_SECONDS, "not caught up"
    workload.join()
    backlog = Workload(admin, [spec.name], SHARD_RATE, SHARD_SECONDS, prefix="b")
    backlog.start()  # capture stopped: a backlog builds up
    backlog.join()
    drain: list[tuple[float, int]] = []
    while not drain or drain[-1][1]:
        t0 = time.monotonic()
        result = stream_tick(spec, cursor, Clients(settings), lake, op_name="op", budget=budget)
        drain.append((time.monotonic() - t0, len(rows := new_rows(lake, spec.name, seen))))
        cursor = result.cursor
        for event_id, pk, shard in rows:
            landed.setdefault(pk, []).append(event_id)
            shards.add(shard)
    assert workload.error is None and backlog.error is None, workload.error or backlog.error
    assert set(landed) == {pk for _, pk in workload.written} | {pk for _, pk in backlog.written}
    assert all(len(ids) == 1 for ids in landed.values())
    assert len(shards) == 1

    written_seconds = max(workload.written.values()) - min(workload.written.values())
    p95 = statistics.quantiles(lags, n=20)[-1]
    drained = sum(n for _, n in drain)
    figures = {
        "item bytes": ITEM_BYTES,
        "live: records / written per second": (
            f"{len(workload.written)} / {len(workload.written) / written_seconds:.0f} "
            f"(asked {SHARD_RATE:.0f})"
        ),
        "live: ticks / max tick seconds": f"{len(ticks)} / {max(s for s, _ in ticks):.2f}",
        "live: lag seconds median / p95 / max": (
            f"{statistics.median(lags):.2f} / {p95:.2f} / {max(lags):.2f}"
        ),
        "backlog: records / ticks": f"{drained} / {len(drain)}",
        "backlog: landed per second of tick time": f"{drained / sum(s for s, _ in drain):.0f}",
        "wall seconds": f"{time.monotonic() - started:.1f}",
    }
    print_figures("one shard, ticks back to back (default budget)", figures, capsys)
