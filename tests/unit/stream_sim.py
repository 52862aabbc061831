"""A DynamoDB Streams simulator read through a real boto3 client, a workload that remembers
what it wrote, and captures of it into a lake: for the tests of the stream reader and of the
capture step.

    from stream_sim import START, simulator  # tests/unit is on sys.path for tests in tests/unit
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from types import SimpleNamespace

import boto3
import duckdb
from botocore.config import Config

from dynamo_cdc.capture import capture_once
from dynamo_cdc.lake import Lake
from dynamo_cdc.local.botocore_hook import attach
from dynamo_cdc.local.streams import ManualClock, StreamSimulator
from dynamo_cdc.stream import StreamInfo

START = 1_709_290_800.0  # 2024-03-01T11:00:00Z: where the tests' ManualClock starts
TABLE = "orders"
KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}]
KEYS = (("pk", "S"),)


class Workload:
    """Writes versioned items to the simulator and remembers what each key went through."""

    def __init__(self, sim: StreamSimulator, keys: int = 50, seed: int = 1) -> None:
        self.sim = sim
        self.rng = random.Random(seed)
        self.keys = [f"k{i:03d}" for i in range(keys)]
        self.version: dict[str, int] = defaultdict(int)
        self.event_ids: list[str] = []

    def write(self, n: int) -> None:
        for _ in range(n):
            pk = self.rng.choice(self.keys)
            v = self.version[pk]
            keys = {"pk": {"S": pk}}
            old = {**keys, "v": {"N": str(v)}} if v else None
            if v and self.rng.random() < 0.1:
                wire = self.sim.record(TABLE, "REMOVE", keys, old, None)
                self.version[pk] = 0
            else:
                new = {**keys, "v": {"N": str(v + 1)}, "b": {"B": b"\x00" * (v % 3)}}
                wire = self.sim.record(TABLE, "MODIFY" if v else "INSERT", keys, old, new)
                self.version[pk] = v + 1
            assert wire is not None
            self.event_ids.append(wire["eventID"])


def stream_client(sim: StreamSimulator):
    client = boto3.client(
        "dynamodbstreams",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    attach(client, sim)
    return client


def simulator(clock: ManualClock, **kwargs) -> StreamSimulator:
    sim = StreamSimulator(clock=clock, seed=7, **kwargs)
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA)
    return sim


def capture(sim, client, lake, clock, budget=None, **kwargs):
    info = StreamInfo(TABLE, sim.stream_arn(TABLE), "NEW_AND_OLD_IMAGES", KEYS)
    return capture_once(
        SimpleNamespace(streams=client),
        lake,
        TABLE,
        budget,
        info=info,
        clock=clock,
        sleep=clock.advance,
        **kwargs,
    )


def drain(sim, client, lake, clock, budget=None, limit=500, **kwargs) -> int:
    """Capture until a poll catches up without reading anything."""
    total = 0
    for _ in range(limit):
        result = capture(sim, client, lake, clock, budget, **kwargs)
        total += result.records
        if result.stopped_by == "caught_up" and result.records == 0:
            return total
        clock.advance(0.2)
    raise AssertionError("capture did not catch up")


def lake_rows(lake: Lake) -> list[tuple]:
    return duckdb.sql(
        f"select event_id, pk, sequence_number, _new_image, event_name from read_parquet("
        f"'{lake.root}/{TABLE}/changes/*/*/*.parquet', hive_partitioning=true) "
        "order by sequence_number"
    ).fetchall()


def assert_exactly_once_in_order(lake: Lake, work: Workload) -> None:
    rows = lake_rows(lake)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate event_id in the change partitions"
    assert sorted(ids) == sorted(work.event_ids), "records lost"
    # Per key, sequence order replays the writes: versions count up from 1 after each delete.
    last: dict[str, int] = defaultdict(int)
    for _, pk, _, new_image, event in rows:
        if event == "REMOVE":
            last[pk] = 0
            continue
        version = int(json.loads(new_image)["v"]["N"])
        assert version == last[pk] + 1, f"key {pk}: version {version} after {last[pk]}"
        last[pk] = version
