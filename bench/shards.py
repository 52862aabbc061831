"""Many shards per table: a load test of stream capture on the DynamoDB Streams simulator.

    python -m bench.shards                     # 1,000 shards, 5,000 records/s for 60 s
    python -m bench.shards --seconds 120 --latency-ms 20,50 --threads 16

One table whose stream has ``--shards`` open shards. The simulator (``dynamo_cdc.local.streams``)
makes the records itself, ``--rate`` a second for ``--seconds``, from a thread of this process:
writes through the local AWS (moto in server mode, then its stream feed) do not reach 5,000 a
second on 2 cores. Every Streams call waits ``--latency-ms`` (drawn uniformly in the range, in
wall time, outside the simulator's lock) as calls to AWS wait on the network, and the simulator
throttles a sixth GetRecords on a shard within a second, as AWS does.

Capture runs as the sensor runs it: :func:`dynamo_cdc.capture.capture_once` (read the stream
with ``--threads`` GetRecords in flight, write the change files into a local lake, commit the
checkpoint) with the sensor's budget (20 s), back to back, until the writes stop and a poll
finds nothing more. The lag of a record is the time from its write to the end of the capture
that made its change row readable (files written, checkpoint committed, and the Iceberg
``changes`` table updated unless ``DYNAMO_CDC_ICEBERG=off``). Printed: shards,
records/s written, records landed (every one exactly once, else the run fails), lag median /
p95 / max, captures, the API calls per operation, and the CPU used.

Then records/s per shard: one shard with a backlog of items of 2 KB and of 300 KB, drained by
captures back to back (GetRecords answers at most 1 MB, and at most 5 calls a second per shard).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pyarrow.parquet as pq
from botocore.config import Config

from dynamo_cdc.capture import capture_once, commit_batch, read_batch, write_batch
from dynamo_cdc.lake import Lake
from dynamo_cdc.local.botocore_hook import attach
from dynamo_cdc.local.streams import StreamSimulator
from dynamo_cdc.stream import DEFAULT_READ_THREADS, ReadBudget, StreamInfo

TABLE = "load"
KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}]
SENSOR_BUDGET_SECONDS = 20.0  # the sensor's default poll budget


@dataclass
class LoadResult:
    """What one run measured."""

    shards: int
    seconds: float
    written: int
    landed: int
    duplicates: int
    lost: int
    lags: list[float]
    captures: int
    max_capture_seconds: float
    calls: Counter[str]
    errors: Counter[str]
    most_in_flight: int
    cpu_seconds: float
    wall_seconds: float
    stopped_by: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """Every record written landed exactly once."""
        return self.duplicates == 0 and self.lost == 0 and self.landed == self.written


def _client(sim: StreamSimulator) -> Any:
    client = boto3.client(
        "dynamodbstreams",
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 1}),
    )
    attach(client, sim)
    return client


class Writer(threading.Thread):
    """Feeds the simulator ``rate`` records a second for ``seconds``, keys never repeated."""

    def __init__(self, sim: StreamSimulator, rate: float, seconds: float, item_bytes: int) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.sim, self.rate, self.seconds = sim, rate, seconds
        self.pad = "x" * max(0, item_bytes - 40)
        self.written: dict[str, float] = {}  # event id -> wall time of the write

    def run(self) -> None:
        started = time.time()
        n = 0
        while (now := time.time()) - started < self.seconds:
            due = int((now - started) * self.rate)
            while n < due:
                keys, new = _item(n, self.pad)
                wire = self.sim.record(TABLE, "INSERT", keys, None, new)
                assert wire is not None
                self.written[wire["eventID"]] = time.time()
                n += 1
            time.sleep(0.01)


def run_load(
    *,
    shards: int,
    rate: float,
    seconds: float,
    latency_ms: tuple[float, float],
    threads: int,
    item_bytes: int,
    lake_root: Path,
    budget_seconds: float = SENSOR_BUDGET_SECONDS,
) -> LoadResult:
    """Write ``rate`` records/s over ``shards`` shards for ``seconds``; capture back to back."""
    shutil.rmtree(lake_root, ignore_errors=True)
    sim = _simulator(latency_ms, seed=20)
    arn = sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=shards)
    clients = SimpleNamespace(streams=_client(sim))
    info = StreamInfo(TABLE, arn, "NEW_AND_OLD_IMAGES", (("pk", "S"),))
    lake = Lake(str(lake_root))
    budget = ReadBudget(max_seconds=budget_seconds)
    landed_at: dict[str, float] = {}  # file -> when its capture ended
    stopped_by: Counter[str] = Counter()
    captures = 0
    longest = 0.0
    cpu_before = os.times()
    started = time.time()
    writer = Writer(sim, rate, seconds, item_bytes)
    writer.start()
    while True:
        writing = writer.is_alive()
        began = time.time()
        result = capture_once(clients, lake, TABLE, budget, info=info, read_threads=threads)
        ended = time.time()
        captures += 1
        longest = max(longest, ended - began)
        stopped_by[result.stopped_by] += 1
        for path in result.files:
            landed_at[path] = ended
        if not writing and result.records == 0 and result.stopped_by == "caught_up":
            break
    wall = time.time() - started
    cpu_after = os.times()
    landed: list[str] = []
    lags: list[float] = []
    for path, when in landed_at.items():
        ids = pq.read_table(lake.root + "/" + path, columns=["event_id"]).column(0).to_pylist()
        landed.extend(ids)
        lags.extend(when - writer.written[i] for i in ids if i in writer.written)
    unique = set(landed)
    return LoadResult(
        shards=shards,
        seconds=seconds,
        written=len(writer.written),
        landed=len(unique),
        duplicates=len(landed) - len(unique),
        lost=len(set(writer.written) - unique),
        lags=lags,
        captures=captures,
        max_capture_seconds=longest,
        calls=Counter(sim.calls),
        errors=Counter(sim.errors),
        most_in_flight=sim.most_in_flight,
        cpu_seconds=(cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
        wall_seconds=wall,
        stopped_by=stopped_by,
    )


def _simulator(latency_ms: tuple[float, float], seed: int) -> StreamSimulator:
    return StreamSimulator(
        clock=time.time,
        seed=seed,
        enforce_read_limit=True,
        latency_seconds=(latency_ms[0] / 1000, latency_ms[1] / 1000),
    )


def _item(n: int, pad: str) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = {"pk": {"S": f"k{n:09d}"}}
    return keys, {**keys, "n": {"N": str(n)}, "pad": {"S": pad}}


def _backlog(sim: StreamSimulator, records: int, item_bytes: int) -> None:
    """``records`` items written before the first poll starts."""
    pad = "x" * max(0, item_bytes - 40)
    for n in range(records):
        keys, new = _item(n, pad)
        sim.record(TABLE, "INSERT", keys, None, new)
    time.sleep(1.1)  # every record is older than the first poll's start


def per_shard_rate(
    *, item_bytes: int, records: int, latency_ms: tuple[float, float], threads: int, lake_root: Path
) -> dict[str, float]:
    """Records/s one shard is captured at: a backlog of ``records`` items drained back to back."""
    shutil.rmtree(lake_root, ignore_errors=True)
    sim = _simulator(latency_ms, seed=21)
    arn = sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA)
    _backlog(sim, records, item_bytes)
    clients = SimpleNamespace(streams=_client(sim))
    info = StreamInfo(TABLE, arn, "NEW_AND_OLD_IMAGES", (("pk", "S"),))
    lake = Lake(str(lake_root))
    landed = 0
    started = time.time()
    while True:
        result = capture_once(
            clients,
            lake,
            TABLE,
            ReadBudget(max_seconds=SENSOR_BUDGET_SECONDS),
            info=info,
            read_threads=threads,
        )
        landed += result.records
        if result.records == 0 and result.stopped_by == "caught_up":
            break
    seconds = time.time() - started
    return {
        "item_bytes": item_bytes,
        "records": landed,
        "seconds": seconds,
        "records_per_s": landed / seconds,
        "mb_per_s": landed * item_bytes / 1e6 / seconds,
        "get_records": sim.calls["GetRecords"],
        "throttled": sim.errors["LimitExceededException"],
    }


def capture_steps(
    *,
    shards: int,
    records: int,
    item_bytes: int,
    latency_ms: tuple[float, float],
    threads: int,
    lake_root: Path,
) -> dict[str, Any]:
    """Where one capture's time goes: a backlog of ``records`` over ``shards`` shards read by
    one poll, then written, then committed (the three steps of ``capture_once``, timed apart)."""
    shutil.rmtree(lake_root, ignore_errors=True)
    sim = _simulator(latency_ms, seed=22)
    arn = sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=shards)
    _backlog(sim, records, item_bytes)
    clients = SimpleNamespace(streams=_client(sim))
    info = StreamInfo(TABLE, arn, "NEW_AND_OLD_IMAGES", (("pk", "S"),))
    lake = Lake(str(lake_root))
    # the sensor's seconds; calls and bytes enough for the whole backlog
    budget = ReadBudget(
        max_seconds=SENSOR_BUDGET_SECONDS, max_calls=4 * shards, max_bytes=1024 * 1024 * 1024
    )
    began = time.time()
    _, batch = read_batch(clients, lake, TABLE, budget, info=info, read_threads=threads)
    read = time.time()
    files = write_batch(lake, TABLE, info, batch)
    written = time.time()
    commit_batch(lake, TABLE, batch)
    return {
        "records": batch.count,
        "calls": batch.calls,
        "stopped_by": batch.stopped_by,
        "files": len(files),
        "read_s": read - began,
        "write_s": written - read,
        "commit_s": time.time() - written,
    }


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def format_load(r: LoadResult, rate: float, latency_ms: tuple[float, float], threads: int) -> str:
    """The load test's figures, one per line."""
    calls = ", ".join(f"{op} {n:,}" for op, n in sorted(r.calls.items()))
    errors = ", ".join(f"{code} {n:,}" for code, n in sorted(r.errors.items())) or "none"
    lines = [
        f"shards (open)                      {r.shards:,}",
        f"records/s asked / written          {rate:,.0f} / {r.written / r.seconds:,.0f}",
        f"records written / landed           {r.written:,} / {r.landed:,}",
        f"duplicates / lost                  {r.duplicates} / {r.lost}",
        f"lag s median / p95 / max           {statistics.median(r.lags) if r.lags else 0:.1f}"
        f" / {_quantile(r.lags, 0.95):.1f} / {max(r.lags, default=0):.1f}",
        f"captures / longest s               {r.captures} / {r.max_capture_seconds:.1f}"
        f" (stopped by: {dict(r.stopped_by)})",
        f"API calls                          {calls} ({sum(r.calls.values()):,})",
        f"API calls per record               {sum(r.calls.values()) / max(1, r.written):.2f}",
        f"errors                             {errors}",
        f"latency ms / read threads          {latency_ms[0]:g}-{latency_ms[1]:g} / {threads}"
        f" (most calls in flight: {r.most_in_flight})",
        f"wall s / CPU s (this process)      {r.wall_seconds:.1f} / {r.cpu_seconds:.1f}"
        f" ({r.cpu_seconds / r.wall_seconds:.2f} of a core; "
        f"{r.cpu_seconds / max(1, r.written) * 1e6:.0f} µs a record, the simulator's work included)",
    ]
    return "\n".join(lines)


def _latency(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    return (parts[0], parts[-1])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load test and the per-shard rates; print the figures. Exit 1 if a record was
    lost or duplicated."""
    parser = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5000.0, help="records written a second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long records are written")
    parser.add_argument("--item-bytes", type=int, default=1000)
    parser.add_argument("--latency-ms", type=_latency, default=(20.0, 50.0), help="least,most")
    parser.add_argument("--threads", type=int, default=DEFAULT_READ_THREADS)
    parser.add_argument(
        "--per-shard",
        default="2000:20000,300000:300",
        help="item bytes:backlog records of the per-shard runs, comma-separated ('' skips)",
    )
    parser.add_argument(
        "--steps-records",
        type=int,
        default=50_000,
        help="backlog of the one-capture run timed step by step (0 skips)",
    )
    parser.add_argument("--out", type=Path, default=None, help="lake folder (default: a temp)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        result = run_load(
            shards=args.shards,
            rate=args.rate,
            seconds=args.seconds,
            latency_ms=args.latency_ms,
            threads=args.threads,
            item_bytes=args.item_bytes,
            lake_root=out / "load",
        )
        print(
            f"\nmany shards: one table, {args.shards:,} open shards, {args.rate:,.0f} records/s of "
            f"{args.item_bytes:,} bytes for {args.seconds:g} s (records made by the simulator), "
            f"Iceberg publish of changes: {os.environ.get('DYNAMO_CDC_ICEBERG') or 'sql'} "
            f"(DYNAMO_CDC_ICEBERG), {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
        )
        print(format_load(result, args.rate, args.latency_ms, args.threads), flush=True)
        runs = [p.split(":") for p in args.per_shard.split(",") if p]
        if runs:
            print("\nrecords/s per shard (one shard, a backlog drained by captures back to back)\n")
            print("| item bytes | records | seconds | records/s | MB/s | GetRecords | throttled |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
        for size, count in runs:
            row = per_shard_rate(
                item_bytes=int(size),
                records=int(count),
                latency_ms=args.latency_ms,
                threads=args.threads,
                lake_root=out / f"shard-{size}",
            )
            print(
                f"| {row['item_bytes']:,} | {row['records']:,} | {row['seconds']:.1f} | "
                f"{row['records_per_s']:,.0f} | {row['mb_per_s']:.1f} | {row['get_records']:,} | "
                f"{row['throttled']} |",
                flush=True,
            )
        if args.steps_records:
            steps = capture_steps(
                shards=args.shards,
                records=args.steps_records,
                item_bytes=args.item_bytes,
                latency_ms=args.latency_ms,
                threads=args.threads,
                lake_root=out / "steps",
            )
            print(
                f"\none capture of a backlog of {args.steps_records:,} records over "
                f"{args.shards:,} shards, step by step: read {steps['records']:,} records in "
                f"{steps['read_s']:.1f} s ({steps['calls']:,} calls, {steps['stopped_by']}), "
                f"write {steps['files']:,} "
                f"files in {steps['write_s']:.1f} s, commit in {steps['commit_s']:.1f} s",
                flush=True,
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS {peak:,.0f} MB", flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    if not result.ok:
        print("FAILED: records lost or duplicated", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
