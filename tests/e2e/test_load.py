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

    def __init__(self, clients: Clients, tables: list[str], rate: float, seconds: float) -> None:
        self.clients = clients
        self.tables = tables
        self.rate = rate
        self.seconds = seconds
        self.written: dict[tuple[str, str], float] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)

    def write(self, table: str, keys: list[str]) -> None:
        requests = [
            {"PutRequest": {"Item": {"pk": {"S": k}, "v": {"N": str(len(k))}}}} for k in keys
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
                size = rng.randint(1, BATCH)
                self.write(table, [f"w{n:07d}-{i:02d}" for i in range(size)])
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


def test_twenty_tables_with_two_shards_each_through_one_sensor_daemon(
    load_aws: LocalAwsProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(endpoint_url=load_aws.endpoint_url, lake_root=str(tmp_path / "lake"))
    admin = Clients(settings, max_attempts=3)
    specs = [TableSpec(f"load-{i:02d}.t") for i in range(TABLES)]
    tables = [s.name for s in specs]
    workload = Workload(admin, tables, WRITES_PER_SECOND, WORKLOAD_SECONDS)
    for name in tables:
        admin.dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
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
    materialized: dict[str, set[str]] = {t: set() for t in tables}
    rounds = 0
    started = time.monotonic()
    workload.start()
    while True:
        rounds += 1
        new_rows = 0
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
            run_requests[spec.name] += len(result.run_requests or [])
            for event in result.asset_events or []:
                if isinstance(event, dg.AssetMaterialization):
                    materialized[spec.name].add(event.metadata["batch_id"].value)
            files = [f for f in lake.list(f"{spec.name}/changes") if f.endswith(".parquet")]
            for rel in sorted(set(files) - seen_files[spec.name]):
                seen_files[spec.name].add(rel)
                rows = pq.read_table(lake.uri(rel), columns=["event_id", "pk", "shard_id"])
                for event_id, pk, shard in zip(
                    rows["event_id"].to_pylist(),
                    rows["pk"].to_pylist(),
                    rows["shard_id"].to_pylist(),
                    strict=True,
                ):
                    landed.setdefault((spec.name, pk), []).append(event_id)
                    shards_seen[spec.name].add(shard)
                    if not pk.startswith("before-split-"):
                        lags.append(readable_at - workload.written[(spec.name, pk)])
                    new_rows += 1
        elapsed = time.monotonic() - started
        if not workload.running and new_rows == 0 and len(landed) >= len(workload.written):
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
    width = max(len(k) for k in figures)
    lines = ["", "load figures (one sensor daemon, default budget)"]
    lines += [f"  {k:<{width}}  {v}" for k, v in figures.items()]
    with capsys.disabled():
        print("\n".join(lines))
