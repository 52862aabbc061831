"""Reading a stream in lineage order, within budgets, through failures, with loud gaps.

Every test reads the DynamoDB Streams simulator through a real boto3 client (botocore builds,
signs and parses each call; the hook only replaces the network), so what passes here is what
runs against AWS.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import boto3
import duckdb
import pytest
from moto import mock_aws
from stream_sim import KEY_SCHEMA, KEYS, START, TABLE, Workload
from stream_sim import assert_exactly_once_in_order as _assert_exactly_once_in_order
from stream_sim import capture as _capture
from stream_sim import drain as _drain
from stream_sim import simulator as _sim
from stream_sim import stream_client as _client

from dynamo_cdc.capture import capture_once
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.checkpoint import CheckpointStore, ShardCheckpoint, StreamCheckpoint
from dynamo_cdc.convert import native, records_to_table
from dynamo_cdc.errors import StreamGapError, StreamNotEnabledError, TableNotFoundError
from dynamo_cdc.lake import Lake
from dynamo_cdc.local.streams import TTL_IDENTITY, ManualClock, StreamSimulator
from dynamo_cdc.stream import (
    GET_RECORDS_EVENT,
    ReadBudget,
    RecordPage,
    StreamInfo,
    StreamReader,
    discover,
    list_shards,
    read_records,
    shard_children,
    shard_roots,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


# -- discovery -------------------------------------------------------------------------------


@mock_aws
def test_discover_finds_the_stream_and_the_key_types() -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "sk", "KeyType": "RANGE"},
            {"AttributeName": "pk", "KeyType": "HASH"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    info = discover(ddb, TABLE)
    assert info.stream_arn.startswith("arn:aws:dynamodb:")
    assert info.key_attributes == (("pk", "S"), ("sk", "N"))
    assert discover(SimpleNamespace(dynamodb=ddb), TABLE) == info


@mock_aws
@pytest.mark.parametrize("spec", [None, {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}])
def test_discover_refuses_a_missing_or_partial_stream_with_the_fix(spec) -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    kwargs = {"StreamSpecification": spec} if spec else {}
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **kwargs,
    )
    with pytest.raises(StreamNotEnabledError, match="StreamViewType=NEW_AND_OLD_IMAGES") as err:
        discover(ddb, TABLE)
    assert TABLE in str(err.value)


@mock_aws
def test_discover_names_a_missing_table() -> None:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    with pytest.raises(TableNotFoundError, match="'nope-table' does not exist"):
        discover(ddb, "nope-table")


# -- shard listing and tree ------------------------------------------------------------------


def test_describe_stream_with_250_shards_is_read_over_three_pages(clock) -> None:
    sim = StreamSimulator(clock=clock, seed=7)
    arn = sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=250)
    shards = list_shards(_client(sim), arn)
    assert len({s.shard_id for s in shards}) == 250
    assert sim.calls["DescribeStream"] == 3


def test_shard_whose_parent_is_gone_is_a_root(clock) -> None:
    sim = _sim(clock)
    Workload(sim).write(10)
    sim.rotate(TABLE, split=True)
    arn = sim.stream_arn(TABLE)
    shards = list_shards(_client(sim), arn)
    [root] = shard_roots(shards)
    assert sorted(shard_children(shards)[root]) == sorted(s.shard_id for s in shards[1:])
    # Without the parent in the listing (trimmed away), the children are the roots.
    assert shard_roots(shards[1:]) == sorted(s.shard_id for s in shards[1:])


# -- reading ---------------------------------------------------------------------------------


def test_three_generations_of_splits_over_5000_records_lose_and_duplicate_nothing(
    tmp_path, clock
) -> None:
    sim = _sim(clock)
    client = _client(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim, keys=80)
    budget = ReadBudget(max_records=700, records_per_call=300)
    for generation in range(3):
        work.write(1250)
        # A partial read while the shard is open, then the split, then more writes.
        _capture(sim, client, lake, clock, budget)
        sim.rotate(TABLE, split=True)
        clock.advance(60 * (generation + 1))
    work.write(1250)
    _drain(sim, client, lake, clock, budget)
    assert len(list_shards(client, sim.stream_arn(TABLE))) == 1 + 2 + 4 + 8
    _assert_exactly_once_in_order(lake, work)
    # Finished parents whose children are known were pruned: only the 8 open shards remain.
    ckpt = CheckpointStore(lake, TABLE).load()
    assert len(ckpt.shards) == 8 and not any(s.finished for s in ckpt.shards.values())


def test_parents_are_read_to_their_end_before_their_children(clock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    work = Workload(sim)
    for _ in range(3):
        work.write(400)
        sim.rotate(TABLE, split=True)
    work.write(400)
    parent = {s.shard_id: s.parent_shard_id for s in list_shards(client, sim.stream_arn(TABLE))}
    reader = StreamReader(
        client,
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(max_records=250, records_per_call=100),
        stream_arn=sim.stream_arn(TABLE),
        clock=clock,
        sleep=clock.advance,
    )
    order: list[str] = []
    for _ in range(100):
        batch = reader.poll()
        reader.acknowledge(batch)
        order.extend(batch.shard_ids)
        if not batch.records and batch.stopped_by == "caught_up":
            break
    assert len(order) == 1600
    last_index = {sid: i for i, sid in enumerate(order)}
    first_index: dict[str, int] = {}
    for i, sid in enumerate(order):
        first_index.setdefault(sid, i)
    for child, p in parent.items():
        if p and child in first_index:
            assert last_index[p] < first_index[child], f"{child} read before parent {p} ended"


def test_an_iterator_expiring_mid_shard_gets_a_fresh_one(tmp_path, clock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    work = Workload(sim)
    work.write(3000)
    reader = StreamReader(
        client,
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(max_records=1000),
        stream_arn=sim.stream_arn(TABLE),
        clock=clock,
        sleep=clock.advance,
    )
    lake = Lake(str(tmp_path))
    store = CheckpointStore(lake, TABLE)
    for _ in range(4):
        batch = reader.poll()
        write_change_batch(
            lake, TABLE, records_to_table(batch.records, KEYS, shard_ids=batch.shard_ids)
        )
        store.commit(batch.checkpoint)
        reader.acknowledge(batch)
        clock.advance(16 * 60)  # the iterator kept in memory is now older than 15 minutes
    assert sim.errors["ExpiredIteratorException"] >= 2
    _assert_exactly_once_in_order(lake, work)


def test_throttling_on_30_percent_of_calls_backs_off_with_jitter(tmp_path, clock) -> None:
    sim = _sim(clock, throttle_rate=0.3)
    client = _client(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim)
    work.write(1500)
    sim.rotate(TABLE, split=True)
    work.write(1500)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    info = StreamInfo(TABLE, sim.stream_arn(TABLE), "NEW_AND_OLD_IMAGES", KEYS)
    for _ in range(100):
        result = capture_once(
            SimpleNamespace(streams=client),
            lake,
            TABLE,
            ReadBudget(records_per_call=200),
            info=info,
            clock=clock,
            sleep=sleep,
        )
        if result.records == 0 and result.stopped_by == "caught_up":
            break
    assert sim.errors["LimitExceededException"] > 5
    assert len(set(sleeps)) > 3, "back-off without jitter"
    _assert_exactly_once_in_order(lake, work)


def test_at_most_five_get_records_per_second_per_shard(clock) -> None:
    sim = _sim(clock, enforce_read_limit=True)
    client = _client(sim)
    Workload(sim).write(500)
    reader = StreamReader(
        client,
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(records_per_call=10),
        stream_arn=sim.stream_arn(TABLE),
        clock=clock,
        sleep=clock.advance,
    )
    batch = reader.poll()
    assert len(batch.records) == 500
    assert sim.errors["LimitExceededException"] == 0
    assert sim.calls["GetRecords"] >= 50


def test_captures_back_to_back_keep_five_calls_a_second_and_reuse_iterators(clock) -> None:
    sim = _sim(clock, enforce_read_limit=True)
    Workload(sim).write(500)
    checkpoint = StreamCheckpoint(TABLE)
    for _ in range(3):  # a new reader each time, as each capture makes one
        reader = StreamReader(
            _client(sim),
            TABLE,
            checkpoint,
            ReadBudget(max_calls=6, records_per_call=10),
            stream_arn=sim.stream_arn(TABLE),
            clock=clock,
            sleep=clock.advance,
        )
        batch = reader.poll()
        assert batch.stopped_by == "calls"
        checkpoint = batch.checkpoint

    assert sim.errors["LimitExceededException"] == 0
    assert sim.calls["GetShardIterator"] == 1
    assert sim.calls["GetRecords"] == 17


def test_a_poll_stops_at_its_record_budget(clock) -> None:
    sim = _sim(clock)
    Workload(sim).write(300)
    reader = StreamReader(
        _client(sim),
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(max_records=120, records_per_call=50),
        stream_arn=sim.stream_arn(TABLE),
        clock=clock,
        sleep=clock.advance,
    )
    batch = reader.poll()
    assert len(batch.records) == 120 and batch.stopped_by == "records"
    reader.acknowledge(batch)
    assert len(reader.poll().records) == 120


def _write_padded(sim: StreamSimulator, n: int, pad_bytes: int, when=None) -> list[str]:
    """``n`` new items of about ``pad_bytes`` each; returns their event ids."""
    ids = []
    for i in range(n):
        keys = {"pk": {"S": f"p{i:05d}-{when or 0}"}}
        new = {**keys, "pad": {"S": "x" * pad_bytes}}
        wire = sim.record(TABLE, "INSERT", keys, None, new, when=when)
        assert wire is not None
        ids.append(wire["eventID"])
    return ids


@pytest.mark.parametrize(
    ("items", "pad_bytes"), [(1200, 2_500), (40, 300_000)], ids=["2.5KB", "300KB"]
)
def test_a_poll_reads_on_past_pages_the_1_mb_limit_cut_short(clock, items, pad_bytes) -> None:
    sim = _sim(clock, enforce_read_limit=True)
    ids = _write_padded(sim, items, pad_bytes)
    clock.advance(30)
    reader = StreamReader(
        _client(sim),
        TABLE,
        StreamCheckpoint(TABLE),
        stream_arn=sim.stream_arn(TABLE),
        clock=clock,
        sleep=clock.advance,
    )

    batch = reader.poll()

    assert max(len(page) for _, page in batch.pages) < 1000  # GetRecords cut every page at 1 MB
    assert len(batch.pages) > 2
    assert [r["eventID"] for r in batch.records] == ids
    assert batch.stopped_by == "caught_up" and batch.lag_seconds == 0.0
    assert sim.errors["LimitExceededException"] == 0  # at most 5 GetRecords a second


def test_a_poll_stops_at_records_written_after_it_started(clock) -> None:
    sim = _sim(clock)
    before = _write_padded(sim, 500, 10)
    _write_padded(sim, 500, 10, when=clock() + 5)  # stamped after the poll's start
    reader = StreamReader(
        _client(sim),
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(records_per_call=100),
        stream_arn=sim.stream_arn(TABLE),
        clock=clock,
        sleep=clock.advance,
    )

    batch = reader.poll()

    # every record from before the start, and then only the page that reached past it
    assert [r["eventID"] for r in batch.records][:500] == before
    assert len(batch.records) == 600
    assert batch.stopped_by == "caught_up" and batch.lag_seconds == 0.0


def test_the_lag_of_a_poll_cut_by_its_budget_is_its_distance_to_the_tip(tmp_path, clock) -> None:
    sim = _sim(clock)
    _write_padded(sim, 60, 300_000)  # 3 records a page, every page short of the Limit
    clock.advance(40)
    _write_padded(sim, 10, 10)

    result = _capture(
        sim, _client(sim), Lake(str(tmp_path)), clock, ReadBudget(max_bytes=5 * 1024 * 1024)
    )

    assert result.stopped_by == "bytes" and 15 <= result.records < 60
    assert result.lag_seconds == pytest.approx(40, abs=1)


def test_with_more_shards_than_a_poll_covers_every_shard_gets_its_turn(clock) -> None:
    sim = StreamSimulator(clock=clock, seed=7)
    arn = sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=250)
    Workload(sim, keys=2000).write(2000)
    reader = StreamReader(
        _client(sim),
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(max_calls=200),
        stream_arn=arn,
        clock=clock,
        sleep=clock.advance,
    )
    served: list[set[str]] = []
    total = 0
    for _ in range(4):
        batch = reader.poll()
        reader.acknowledge(batch)
        served.append(set(batch.shard_ids))
        total += len(batch.records)
    assert served[0] and not served[0] & served[1], "the second poll must start elsewhere"
    assert total == 2000


def test_ttl_deletes_are_flagged_in_the_change_rows(tmp_path, clock) -> None:
    sim = _sim(clock)
    keys = {"pk": {"S": "gone"}}
    sim.record(TABLE, "INSERT", keys, None, {**keys, "exp": {"N": "1"}})
    sim.record(TABLE, "REMOVE", keys, {**keys, "exp": {"N": "1"}}, None, user_identity=TTL_IDENTITY)
    lake = Lake(str(tmp_path))
    _capture(sim, _client(sim), lake, clock)
    rows = duckdb.sql(
        f"select event_name, ttl_delete from read_parquet('{tmp_path}/{TABLE}/changes/*/*/*.parquet'"
        ", hive_partitioning=true) order by sequence_number"
    ).fetchall()
    assert rows == [("INSERT", False), ("REMOVE", True)]


# -- many shards at once ---------------------------------------------------------------------


def _reader(sim, clock, budget=None, **kwargs) -> StreamReader:
    return StreamReader(
        _client(sim),
        TABLE,
        StreamCheckpoint(TABLE),
        budget,
        stream_arn=sim.stream_arn(TABLE),
        clock=clock,
        sleep=clock.advance,
        **kwargs,
    )


def test_shards_read_on_8_threads_keep_every_parent_before_its_children(clock) -> None:
    sim = StreamSimulator(clock=clock, seed=7, latency_seconds=(0.001, 0.003))
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=6)
    work = Workload(sim, keys=300)
    for _ in range(3):
        work.write(600)
        sim.rotate(TABLE, split=True)
    work.write(600)
    client = _client(sim)
    parent = {s.shard_id: s.parent_shard_id for s in list_shards(client, sim.stream_arn(TABLE))}
    reader = _reader(sim, clock, ReadBudget(max_records=700, records_per_call=40), read_threads=8)
    order: list[str] = []
    for _ in range(100):
        batch = reader.poll()
        reader.acknowledge(batch)
        order.extend(batch.shard_ids)
        if not batch.records and batch.stopped_by == "caught_up":
            break

    assert sim.most_in_flight > 1, "the shards were not read concurrently"
    assert len(parent) == 6 * (1 + 2 + 4 + 8)
    assert len(order) == 2400
    first = {sid: order.index(sid) for sid in set(order)}
    last = {sid: i for i, sid in enumerate(order)}
    for child, p in parent.items():
        if p in last and child in first:
            assert last[p] < first[child], f"{child} read before parent {p} ended"


def test_concurrent_capture_under_throttling_lands_every_record_once_in_order(
    tmp_path, clock
) -> None:
    sim = StreamSimulator(clock=clock, seed=3, throttle_rate=0.2, enforce_read_limit=True)
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=12)
    client = _client(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim, keys=200)
    work.write(1500)
    _capture(sim, client, lake, clock, ReadBudget(max_records=700), read_threads=6)
    sim.rotate(TABLE, split=True)
    work.write(1500)

    _drain(
        sim, client, lake, clock, ReadBudget(max_records=900, records_per_call=50), read_threads=6
    )

    assert sim.errors["LimitExceededException"] > 10
    _assert_exactly_once_in_order(lake, work)


def test_a_throttled_shard_does_not_stall_the_others(clock) -> None:
    sim = StreamSimulator(clock=clock, seed=7)
    arn = sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=10)
    Workload(sim, keys=500).write(2000)
    hot = list_shards(_client(sim), arn)[3].shard_id
    sim.throttled_shards.add(hot)
    reader = _reader(sim, clock, ReadBudget(records_per_call=25), read_threads=4)

    batch = reader.poll()

    assert set(batch.shard_ids) == {s.shard_id for s in list_shards(_client(sim), arn)} - {hot}
    assert batch.stopped_by == "throttled" and batch.lag_seconds is None
    assert batch.checkpoint.shards[hot].last_sequence_number is None
    reader.acknowledge(batch)
    sim.throttled_shards.clear()
    after = reader.poll()
    assert set(after.shard_ids) == {hot} and after.stopped_by == "caught_up"
    assert batch.count + after.count == 2000


def test_a_throttled_shard_backs_off_no_longer_than_the_polls_seconds(clock) -> None:
    sim = StreamSimulator(clock=clock, seed=7)
    arn = sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=4)
    Workload(sim, keys=100).write(400)
    hot = list_shards(_client(sim), arn)[0].shard_id
    sim.throttled_shards.add(hot)
    reader = _reader(
        sim, clock, ReadBudget(max_seconds=10), read_threads=4, backoff_base=2, backoff_cap=8
    )
    started = clock()

    batch = reader.poll()

    # waits of 1-2 s, 2-4 s, 4-8 s, 4-8 s: the third or the fourth would end past 10 s
    assert 3 <= batch.throttled <= 4
    assert clock() - started < 10
    assert hot not in batch.shard_ids and len(set(batch.shard_ids)) == 3


def test_five_get_records_per_second_per_shard_hold_with_8_threads(clock) -> None:
    sim = StreamSimulator(clock=clock, seed=7, enforce_read_limit=True)
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=4)
    Workload(sim, keys=200).write(1000)
    reader = _reader(sim, clock, ReadBudget(records_per_call=10), read_threads=8)

    batch = reader.poll()

    assert batch.count == 1000 and batch.stopped_by == "caught_up"
    assert sim.calls["GetRecords"] >= 100
    assert sim.errors["LimitExceededException"] == 0


def test_five_get_records_per_second_per_shard_hold_when_calls_take_20_to_50_ms() -> None:
    sim = StreamSimulator(
        clock=time.time, seed=7, enforce_read_limit=True, latency_seconds=(0.02, 0.05)
    )
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA)
    Workload(sim).write(300)
    reader = StreamReader(
        _client(sim),
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(records_per_call=20),
        stream_arn=sim.stream_arn(TABLE),
    )

    batch = reader.poll()

    assert batch.count == 300 and sim.calls["GetRecords"] >= 15
    assert sim.errors["LimitExceededException"] == 0


def test_the_record_budget_is_exact_with_8_threads(clock) -> None:
    sim = StreamSimulator(clock=clock, seed=7)
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=20)
    Workload(sim, keys=1000).write(3000)
    reader = _reader(sim, clock, ReadBudget(max_records=1000, records_per_call=30), read_threads=8)

    batch = reader.poll()

    assert batch.count == 1000 and batch.stopped_by == "records"
    reader.acknowledge(batch)
    assert reader.poll().count == 1000


def test_when_the_time_budget_ends_no_thread_calls_on(clock) -> None:
    sim = StreamSimulator(clock=time.time, seed=7, latency_seconds=(0.002, 0.004))
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA, shard_count=30)
    Workload(sim, keys=1000).write(6000)
    reader = StreamReader(
        _client(sim),
        TABLE,
        StreamCheckpoint(TABLE),
        ReadBudget(max_seconds=0.3, records_per_call=2),
        stream_arn=sim.stream_arn(TABLE),
        read_threads=8,
    )

    batch = reader.poll()
    calls = sum(sim.calls.values())
    time.sleep(0.05)

    assert batch.stopped_by == "seconds" and 0 < batch.count < 6000
    assert sum(sim.calls.values()) == calls, "a thread called on after the poll returned"


# -- gaps are loud ---------------------------------------------------------------------------


def test_trim_past_the_checkpoint_is_a_gap(tmp_path, clock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim)
    work.write(100)
    _capture(sim, client, lake, clock)
    work.write(100)  # never read...
    clock.advance(25 * 3600)  # ...and now trimmed
    work.write(10)
    with pytest.raises(StreamGapError) as err:
        _capture(sim, client, lake, clock)
    gap = err.value
    assert gap.table == TABLE and gap.reason == "checkpoint_behind_trim_horizon"
    assert gap.window_start and gap.window_end and gap.window_start < gap.window_end
    assert "incremental export" in str(gap) and TABLE in str(gap)
    assert CheckpointStore(lake, TABLE).load().stream_arn  # nothing was committed over it


def test_trimmed_data_access_is_a_gap(tmp_path, clock) -> None:
    sim = _sim(clock, retention_seconds=3600)  # the stream keeps 1 h; the reader does not know
    client = _client(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim)
    work.write(50)
    _capture(sim, client, lake, clock)
    work.write(50)
    clock.advance(1800)
    work.write(50)
    clock.advance(2000)  # the 50 after the checkpoint are trimmed, the last 50 are not
    with pytest.raises(StreamGapError) as err:
        _capture(sim, client, lake, clock)
    assert err.value.reason == "trimmed"
    assert sim.errors["TrimmedDataAccessException"] == 1
    assert "2024-03-01T11:00:00" in (err.value.window_start or "")


def test_stream_re_enabled_is_a_gap(tmp_path, clock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    lake = Lake(str(tmp_path))
    Workload(sim).write(20)
    _capture(sim, client, lake, clock)
    sim.disable_stream(TABLE)
    clock.advance(10)
    sim.enable_stream(TABLE, "NEW_AND_OLD_IMAGES", key_schema=KEY_SCHEMA)
    with pytest.raises(StreamGapError, match="disabled and enabled again") as err:
        _capture(sim, client, lake, clock)
    assert err.value.reason == "stream_arn_changed"
    assert err.value.fix and "snapshot" in err.value.fix


def test_a_shard_that_vanished_before_it_was_read_to_its_end_is_a_gap(tmp_path, clock) -> None:
    sim = _sim(clock, retention_seconds=3600)
    client = _client(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim)
    work.write(200)
    _capture(sim, client, lake, clock, ReadBudget(max_records=50))  # partly read
    sim.rotate(TABLE)
    clock.advance(2 * 3600)  # the closed shard is trimmed away, unread records and all
    with pytest.raises(StreamGapError) as err:
        _capture(sim, client, lake, clock)
    assert err.value.reason == "shard_vanished"
    assert "disappeared" in str(err.value)


def test_a_finished_shard_that_vanished_is_no_gap(tmp_path, clock) -> None:
    sim = _sim(clock, retention_seconds=3600)
    client = _client(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim)
    work.write(50)
    _capture(sim, client, lake, clock)
    sim.rotate(TABLE)
    work.write(50)
    _capture(sim, client, lake, clock)
    clock.advance(2 * 3600)
    work.write(50)
    assert _drain(sim, client, lake, clock) == 50
    _assert_exactly_once_in_order(lake, work)


def test_a_checkpointed_shard_missing_from_the_listing_is_a_gap(clock) -> None:
    sim = _sim(clock)
    ckpt = StreamCheckpoint(
        TABLE,
        sim.stream_arn(TABLE),
        {"shardId-00000001000000000000-deadbeef": ShardCheckpoint("1" * 21, False, None, "t0")},
        updated_at=clock(),
    )
    reader = StreamReader(_client(sim), TABLE, ckpt, clock=clock, sleep=clock.advance)
    with pytest.raises(StreamGapError) as err:
        reader.poll()
    assert err.value.reason == "shard_vanished" and err.value.window_start == "t0"


def _get_records_body() -> bytes:
    record = {
        "eventID": "e1",
        "eventName": "INSERT",
        "dynamodb": {
            "ApproximateCreationDateTime": 1764243345,
            "Keys": {"pk": {"B": "AAE="}},
            "SequenceNumber": "100",
            "SizeBytes": 12,
        },
    }
    # Compact, as AWS sends it (the C reader refuses whitespace).
    return json.dumps(
        {"NextShardIterator": "it-2", "Records": [record]}, separators=(",", ":")
    ).encode()


@pytest.mark.parametrize("c_reader", [True, False], ids=["C reader", "orjson"])
def test_the_reader_reads_get_records_with_its_handler_not_botocores_parse(
    c_reader: bool, monkeypatch
) -> None:
    monkeypatch.setattr(native, "ENABLED", c_reader)
    client = boto3.client(
        "dynamodbstreams", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    StreamReader(client, "t", StreamCheckpoint(table="t"), stream_arn="arn:aws:dynamodb:s/stream/1")
    response = {"body": _get_records_body(), "headers": {}, "status_code": 200}
    custom: dict = {}
    client.meta.events.emit(
        GET_RECORDS_EVENT, response_dict=response, customized_response_dict=custom
    )
    assert isinstance(custom["Records"], RecordPage if c_reader else list)
    record = custom["Records"][0]
    assert record["dynamodb"]["Keys"] == {
        "pk": {"B": "AAE="}
    }  # base64 text, as records_to_table takes
    assert record["dynamodb"]["ApproximateCreationDateTime"] == 1764243345
    rest = json.loads(response["body"])  # botocore parses the rest
    assert rest["NextShardIterator"] == "it-2" and not rest.get("Records")


@pytest.mark.parametrize(
    "response",
    [
        {"body": _get_records_body(), "headers": {}, "status_code": 400},
        {"body": b"<html>bad gateway</html>", "headers": {}, "status_code": 200},
        {"body": b'{"NextShardIterator": "it"}', "headers": {}, "status_code": 200},
        {"body": b'{"Records": "not a list"}', "headers": {}, "status_code": 200},
        {"body": None, "headers": {}, "status_code": 200},
    ],
    ids=["error", "not json", "no records", "records not a list", "no body"],
)
def test_errors_and_odd_get_records_bodies_are_left_to_botocore(response: dict) -> None:
    before = dict(response)
    custom: dict = {}
    read_records(response_dict=response, customized_response_dict=custom)
    assert custom == {}
    assert response == before
