"""The DynamoDB Streams simulator, driven through a real boto3 client (botocore_hook).

Every successful response the simulator produces here is checked against the output shape of
botocore's ``dynamodbstreams`` service model (``_check_shape``), and then parsed by botocore.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dynamo_cdc.local.botocore_hook import attach
from dynamo_cdc.local.streams import (
    TTL_IDENTITY,
    ManualClock,
    SimulatedError,
    StreamSimulator,
    to_http,
)

HOUR = 3600.0
MODEL = botocore.session.get_session().get_service_model("dynamodbstreams")


def _check_shape(value: Any, shape: Any, path: str = "$") -> None:
    """Fail unless ``value`` (wire JSON) conforms to the botocore ``shape``."""
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        assert isinstance(value, dict), f"{path}: expected object, got {value!r}"
        names = {m.serialization.get("name", n): (n, m) for n, m in shape.members.items()}
        for key in value:
            assert key in names, f"{path}: unknown member {key!r} (model has {sorted(names)})"
        for required in shape.required_members:
            assert required in value, f"{path}: missing required {required}"
        for key, item in value.items():
            _check_shape(item, names[key][1], f"{path}.{key}")
    elif kind == "list":
        assert isinstance(value, list), f"{path}: expected list"
        for i, item in enumerate(value):
            _check_shape(item, shape.member, f"{path}[{i}]")
    elif kind == "map":
        assert isinstance(value, dict), f"{path}: expected map"
        for key, item in value.items():
            _check_shape(key, shape.key, f"{path}<key>")
            _check_shape(item, shape.value, f"{path}.{key}")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: expected string, got {value!r}"
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in {shape.enum}"
        if "min" in meta:
            assert len(value) >= meta["min"], f"{path}: shorter than {meta['min']}"
        if "max" in meta:
            assert len(value) <= meta["max"], f"{path}: longer than {meta['max']}"
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: not an int"
        if "min" in meta:
            assert value >= meta["min"], f"{path}: below {meta['min']}"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: not a bool"
    elif kind == "timestamp":
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: time"
    elif kind == "blob":
        assert isinstance(value, str), f"{path}: blob must be base64 text on the wire"
        base64.b64decode(value, validate=True)
    else:  # pragma: no cover - the model has no other types today
        raise AssertionError(f"{path}: unexpected shape type {kind}")


class _CheckedSimulator(StreamSimulator):
    """A simulator whose every successful answer is checked against botocore's model."""

    checked: int = 0

    def handle(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        result = super().handle(operation, params)
        # round-trip through JSON first: exactly what goes on the wire
        _check_shape(json.loads(json.dumps(result)), MODEL.operation_model(operation).output_shape)
        self.checked += 1
        return result


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_700_000_000.0)


def _client(sim: StreamSimulator, **retries: Any) -> Any:
    client = boto3.client(
        "dynamodbstreams",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # total_max_attempts=1: no retry (legacy "max_attempts" counts retries, not attempts)
        config=Config(retries=retries or {"mode": "standard", "total_max_attempts": 1}),
    )
    attach(client, sim)
    return client


def _sim(clock: ManualClock, **kwargs: Any) -> _CheckedSimulator:
    kwargs.setdefault("region", "eu-west-1")
    return _CheckedSimulator(clock=clock, **kwargs)


def _put(sim: StreamSimulator, table: str, pk: str, n: int, **kw: Any) -> dict[str, Any] | None:
    keys = {"pk": {"S": pk}}
    return sim.record(table, "INSERT", keys, None, {**keys, "n": {"N": str(n)}}, **kw)


def _all_shards(client: Any, arn: str, limit: int = 100) -> list[dict[str, Any]]:
    shards, start = [], None
    while True:
        kw = {"ExclusiveStartShardId": start} if start else {}
        desc = client.describe_stream(StreamArn=arn, Limit=limit, **kw)["StreamDescription"]
        shards += desc["Shards"]
        start = desc.get("LastEvaluatedShardId")
        if not start:
            return shards


def _read_shard(client: Any, arn: str, shard_id: str, kind: str = "TRIM_HORIZON") -> list:
    """Read a shard until it ends (closed) or returns nothing more (open)."""
    it = client.get_shard_iterator(StreamArn=arn, ShardId=shard_id, ShardIteratorType=kind)
    iterator, records = it["ShardIterator"], []
    while iterator:
        page = client.get_records(ShardIterator=iterator)
        records += page["Records"]
        iterator = page.get("NextShardIterator")
        if not page["Records"] and iterator:
            break  # open shard, caught up
    return records


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


# ---------------------------------------------------------------- records


def test_records_come_back_in_order_with_the_aws_record_format(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("orders", "NEW_AND_OLD_IMAGES")
    keys = {"pk": {"S": "a"}}
    sim.record("orders", "INSERT", keys, None, {**keys, "b": {"B": b"\x00\xff"}})
    clock.advance(1.7)
    sim.record("orders", "MODIFY", keys, {**keys, "b": {"B": "AP8="}}, {**keys, "n": {"N": "1"}})
    sim.record("orders", "REMOVE", keys, {**keys, "n": {"N": "1"}}, None)

    (shard,) = _all_shards(client, arn)
    records = _read_shard(client, arn, shard["ShardId"])

    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    first = records[0]
    assert first["eventVersion"] == "1.1"
    assert first["eventSource"] == "aws:dynamodb"
    assert first["awsRegion"] == "eu-west-1"
    assert len(first["eventID"]) == 32
    assert "userIdentity" not in first
    assert first["dynamodb"]["NewImage"]["b"] == {"B": b"\x00\xff"}  # base64 on the wire
    assert "OldImage" not in first["dynamodb"]
    assert records[2]["dynamodb"]["OldImage"] == {"pk": {"S": "a"}, "n": {"N": "1"}}
    assert "NewImage" not in records[2]["dynamodb"]
    assert records[1]["dynamodb"]["ApproximateCreationDateTime"].timestamp() == 1_700_000_001
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert seqs[-1] - seqs[0] > 2  # increasing, not contiguous (moto's are +1)
    assert all(21 <= len(r["dynamodb"]["SequenceNumber"]) <= 40 for r in records)
    assert int(shard["SequenceNumberRange"]["StartingSequenceNumber"]) < seqs[0]
    assert sim.checked >= 3


@pytest.mark.parametrize(
    ("view", "members"),
    [
        ("KEYS_ONLY", {"Keys"}),
        ("NEW_IMAGE", {"Keys", "NewImage"}),
        ("OLD_IMAGE", {"Keys", "OldImage"}),
        ("NEW_AND_OLD_IMAGES", {"Keys", "NewImage", "OldImage"}),
    ],
)
def test_view_type_decides_which_images_a_record_carries(
    clock: ManualClock, view: str, members: set[str]
) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", view)
    keys = {"pk": {"S": "a"}}
    sim.record("tbl", "MODIFY", keys, {**keys, "v": {"N": "1"}}, {**keys, "v": {"N": "2"}})
    (shard,) = _all_shards(client, arn)
    (record,) = _read_shard(client, arn, shard["ShardId"])
    images = {k for k in ("Keys", "NewImage", "OldImage") if k in record["dynamodb"]}
    assert images == members
    assert record["dynamodb"]["StreamViewType"] == view


def test_sequence_numbers_may_change_length_but_stay_increasing(clock: ManualClock) -> None:
    sim = _sim(clock, first_sequence_number=10**21 - 20_000)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    for i in range(20):
        _put(sim, "tbl", f"k{i}", i)
    (shard,) = _all_shards(client, arn)
    seqs = [r["dynamodb"]["SequenceNumber"] for r in _read_shard(client, arn, shard["ShardId"])]
    assert {len(s) for s in seqs} == {21, 22}
    assert [int(s) for s in seqs] == sorted(int(s) for s in seqs)


def test_ttl_delete_carries_the_service_user_identity(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    keys = {"pk": {"S": "a"}}
    lambda_spelling = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    sim.record(
        "tbl", "REMOVE", keys, {**keys, "exp": {"N": "1"}}, None, user_identity=lambda_spelling
    )
    sim.record("tbl", "REMOVE", keys, keys, None, user_identity=TTL_IDENTITY)
    sim.record("tbl", "REMOVE", keys, keys, None)
    (shard,) = _all_shards(client, arn)
    records = _read_shard(client, arn, shard["ShardId"])
    expected = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    assert [r.get("userIdentity") for r in records] == [expected, expected, None]


def test_records_of_one_key_stay_in_one_shard_across_several_open_shards(
    clock: ManualClock,
) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream(
        "tbl",
        "NEW_AND_OLD_IMAGES",
        key_schema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        shard_count=4,
    )
    for round_ in range(3):
        for i in range(40):
            _put(sim, "tbl", f"k{i}", round_)
    shards = _all_shards(client, arn)
    assert len(shards) == 4
    where: dict[str, set[str]] = {}
    for shard in shards:
        for r in _read_shard(client, arn, shard["ShardId"]):
            where.setdefault(r["dynamodb"]["Keys"]["pk"]["S"], set()).add(shard["ShardId"])
    assert len(where) == 40
    assert all(len(s) == 1 for s in where.values())
    assert len({next(iter(s)) for s in where.values()}) == 4  # every shard got some keys


def test_get_records_honours_limit_and_the_one_megabyte_cap(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_IMAGE")
    big = "x" * 100_000
    for i in range(15):
        keys = {"pk": {"S": f"k{i}"}}
        sim.record("tbl", "INSERT", keys, None, {**keys, "blob": {"S": big}})
    (shard,) = _all_shards(client, arn)
    it = client.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert len(client.get_records(ShardIterator=it, Limit=3)["Records"]) == 3
    first = client.get_records(ShardIterator=it)
    assert 5 <= len(first["Records"]) <= 10  # about 1 MB of ~100 KB records
    rest = client.get_records(ShardIterator=first["NextShardIterator"])["Records"]
    assert len(first["Records"]) + len(rest) == 15
    with pytest.raises(ClientError) as excinfo:
        client.get_records(ShardIterator=it, Limit=1001)
    assert _code(excinfo) == "ValidationException"


def test_latest_and_at_timestamp_iterators(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    _put(sim, "tbl", "a", 1)
    clock.advance(60)
    _put(sim, "tbl", "b", 2)
    (shard,) = _all_shards(client, arn)
    latest = client.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
    )["ShardIterator"]
    _put(sim, "tbl", "c", 3)
    got = client.get_records(ShardIterator=latest)["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in got] == ["c"]
    at = client.get_shard_iterator(
        StreamArn=arn,
        ShardId=shard["ShardId"],
        ShardIteratorType="AT_TIMESTAMP",
        Timestamp=1_700_000_030,
    )["ShardIterator"]
    got = client.get_records(ShardIterator=at)["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in got] == ["b", "c"]


def test_resume_at_and_after_a_sequence_number(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    seqs = [_put(sim, "tbl", f"k{i}", i)["dynamodb"]["SequenceNumber"] for i in range(5)]
    sid = _all_shards(client, arn)[0]["ShardId"]

    def keys_from(kind: str, seq: str) -> list[str]:
        it = client.get_shard_iterator(
            StreamArn=arn, ShardId=sid, ShardIteratorType=kind, SequenceNumber=seq
        )
        page = client.get_records(ShardIterator=it["ShardIterator"])
        return [r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"]]

    assert keys_from("AT_SEQUENCE_NUMBER", seqs[2]) == ["k2", "k3", "k4"]
    assert keys_from("AFTER_SEQUENCE_NUMBER", seqs[2]) == ["k3", "k4"]
    assert keys_from("AFTER_SEQUENCE_NUMBER", seqs[4]) == []
    sim.rotate("tbl")
    (child,) = [s for s in _all_shards(client, arn) if s.get("ParentShardId") == sid]
    with pytest.raises(ClientError) as excinfo:  # a number of another shard
        client.get_shard_iterator(
            StreamArn=arn,
            ShardId=child["ShardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=seqs[0],
        )
    assert _code(excinfo) == "ValidationException"


# ---------------------------------------------------------------- shards


def test_rotation_and_split_build_the_shard_tree(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    _put(sim, "tbl", "before", 0)
    clock.advance(5)
    (child,) = sim.rotate("tbl")
    _put(sim, "tbl", "middle", 1)
    left, right = sim.rotate("tbl", split=True)
    for i in range(30):
        _put(sim, "tbl", f"after{i}", 2)

    shards = _all_shards(client, arn)
    ids = [s["ShardId"] for s in shards]
    root = ids[0]
    assert ids == [root, child, left, right]  # creation order
    by_id = {s["ShardId"]: s for s in shards}
    assert "ParentShardId" not in by_id[root]
    assert by_id[child]["ParentShardId"] == root
    assert by_id[left]["ParentShardId"] == child and by_id[right]["ParentShardId"] == child
    for closed in (root, child):
        rng = by_id[closed]["SequenceNumberRange"]
        assert int(rng["EndingSequenceNumber"]) > int(rng["StartingSequenceNumber"])
    for open_ in (left, right):
        assert "EndingSequenceNumber" not in by_id[open_]["SequenceNumberRange"]
    assert all(s.startswith("shardId-000000017000000") and len(s) == 37 for s in ids)

    root_records = _read_shard(client, arn, root)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in root_records] == ["before"]
    end = int(by_id[root]["SequenceNumberRange"]["EndingSequenceNumber"])
    assert int(root_records[-1]["dynamodb"]["SequenceNumber"]) <= end
    assert len(_read_shard(client, arn, child)) == 1
    assert len(_read_shard(client, arn, left)) + len(_read_shard(client, arn, right)) == 30
    assert len(_read_shard(client, arn, left)) > 0 and len(_read_shard(client, arn, right)) > 0

    children = client.describe_stream(
        StreamArn=arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": child}
    )["StreamDescription"]["Shards"]
    assert [s["ShardId"] for s in children] == [left, right]


def test_closed_shard_read_to_its_end_has_no_next_iterator(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    _put(sim, "tbl", "a", 1)
    root = _all_shards(client, arn)[0]["ShardId"]
    it = client.get_shard_iterator(StreamArn=arn, ShardId=root, ShardIteratorType="TRIM_HORIZON")
    page = client.get_records(ShardIterator=it["ShardIterator"])
    assert len(page["Records"]) == 1 and page["NextShardIterator"]  # open: keeps an iterator
    sim.rotate("tbl")
    last = client.get_records(ShardIterator=page["NextShardIterator"])
    assert last["Records"] == [] and "NextShardIterator" not in last


def test_automatic_rotation_every_n_records_and_by_shard_age(clock: ManualClock) -> None:
    sim = _sim(clock, rotate_every_records=10, rotate_every_seconds=4 * HOUR)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    for i in range(25):
        _put(sim, "tbl", f"k{i}", i)
    shards = _all_shards(client, arn)
    assert len(shards) == 3
    assert [len(_read_shard(client, arn, s["ShardId"])) for s in shards] == [10, 10, 5]
    clock.advance(4 * HOUR)
    shards = _all_shards(client, arn)
    assert len(shards) == 4 and shards[3]["ParentShardId"] == shards[2]["ShardId"]


def test_describe_stream_pages_250_shards_in_three_pages(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    for _ in range(249):
        clock.advance(0.001)
        sim.rotate("tbl")
    pages, start = [], None
    while True:
        kw = {"ExclusiveStartShardId": start} if start else {}
        desc = client.describe_stream(StreamArn=arn, **kw)["StreamDescription"]
        pages.append(desc)
        start = desc.get("LastEvaluatedShardId")
        if not start:
            break
    assert [len(p["Shards"]) for p in pages] == [100, 100, 50]
    assert pages[0]["LastEvaluatedShardId"] == pages[0]["Shards"][-1]["ShardId"]
    assert "LastEvaluatedShardId" not in pages[2]
    ids = [s["ShardId"] for p in pages for s in p["Shards"]]
    assert len(set(ids)) == 250
    parents = [s.get("ParentShardId") for p in pages for s in p["Shards"]]
    assert parents == [None, *ids[:-1]]  # a chain, listed in creation order
    small = client.describe_stream(StreamArn=arn, Limit=7)["StreamDescription"]
    assert len(small["Shards"]) == 7
    with pytest.raises(ClientError) as excinfo:
        client.describe_stream(StreamArn=arn, Limit=101)
    assert _code(excinfo) == "ValidationException"


# ---------------------------------------------------------------- trim horizon and expiry


def test_trim_horizon_drops_records_older_than_24_hours(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    old = [_put(sim, "tbl", f"old{i}", i) for i in range(3)]
    clock.advance(2 * HOUR)
    _put(sim, "tbl", "new", 9)
    (shard,) = _all_shards(client, arn)
    sid = shard["ShardId"]
    early = client.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")

    clock.advance(22 * HOUR + 1)  # the old records are now 24 h + 1 s old
    with pytest.raises(ClientError) as excinfo:
        client.get_records(ShardIterator=early["ShardIterator"])  # issued > 15 min ago
    assert _code(excinfo) == "ExpiredIteratorException"

    records = _read_shard(client, arn, sid)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records] == ["new"]
    for seq in (old[0]["dynamodb"]["SequenceNumber"], old[2]["dynamodb"]["SequenceNumber"]):
        with pytest.raises(ClientError) as excinfo:
            client.get_shard_iterator(
                StreamArn=arn,
                ShardId=sid,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=seq,
            )
        assert _code(excinfo) == "TrimmedDataAccessException"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as excinfo:
        client.get_shard_iterator(
            StreamArn=arn,
            ShardId=sid,
            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
            SequenceNumber=old[1]["dynamodb"]["SequenceNumber"],
        )
    assert _code(excinfo) == "TrimmedDataAccessException"
    # after the last trimmed record nothing was lost: allowed
    after_last = client.get_shard_iterator(
        StreamArn=arn,
        ShardId=sid,
        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
        SequenceNumber=old[2]["dynamodb"]["SequenceNumber"],
    )
    got = client.get_records(ShardIterator=after_last["ShardIterator"])["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in got] == ["new"]


def test_get_records_on_an_iterator_overtaken_by_the_trim_raises(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    _put(sim, "tbl", "a", 1)
    clock.advance(24 * HOUR - 60)
    _put(sim, "tbl", "b", 2)
    sid = _all_shards(client, arn)[0]["ShardId"]
    it = client.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")
    clock.advance(120)  # "a" is trimmed; the iterator is 2 minutes old, still valid
    with pytest.raises(ClientError) as excinfo:
        client.get_records(ShardIterator=it["ShardIterator"])
    assert _code(excinfo) == "TrimmedDataAccessException"


def test_closed_shards_vanish_24_hours_after_closing(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    _put(sim, "tbl", "a", 1)
    root = _all_shards(client, arn)[0]["ShardId"]
    clock.advance(HOUR)
    sim.rotate("tbl")
    clock.advance(24 * HOUR - 1)
    shards = _all_shards(client, arn)
    assert shards[0]["ShardId"] == root  # its only record is trimmed, the shard is still listed
    assert _read_shard(client, arn, root) == []
    clock.advance(1)
    shards = _all_shards(client, arn)
    assert root not in [s["ShardId"] for s in shards]
    assert shards[0]["ParentShardId"] == root  # the child still names its vanished parent
    with pytest.raises(ClientError) as excinfo:
        client.get_shard_iterator(StreamArn=arn, ShardId=root, ShardIteratorType="TRIM_HORIZON")
    assert _code(excinfo) == "ResourceNotFoundException"


def test_iterators_expire_15_minutes_after_issue(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    sid = _all_shards(client, arn)[0]["ShardId"]
    it = client.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="LATEST")
    clock.advance(15 * 60)
    page = client.get_records(ShardIterator=it["ShardIterator"])  # exactly 15 min: still fine
    clock.advance(1)
    with pytest.raises(ClientError) as excinfo:
        client.get_records(ShardIterator=it["ShardIterator"])
    assert _code(excinfo) == "ExpiredIteratorException"
    # the NextShardIterator issued 1 s ago is fresh
    assert client.get_records(ShardIterator=page["NextShardIterator"])["Records"] == []


def test_a_malformed_iterator_is_a_validation_error(clock: ManualClock) -> None:
    client = _client(_sim(clock))
    with pytest.raises(ClientError) as excinfo:
        client.get_records(ShardIterator="not-an-iterator")
    assert _code(excinfo) == "ValidationException"


# ---------------------------------------------------------------- throttling and faults


def test_throttle_rate_is_roughly_the_configured_fraction_and_seeded(clock: ManualClock) -> None:
    def run(seed: int) -> list[bool]:
        sim = _sim(clock, throttle_rate=0.3, seed=seed)
        client = _client(sim)
        arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
        sid = _all_shards(client, arn)[0]["ShardId"]
        it = client.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="LATEST")
        outcomes = []
        for _ in range(300):
            try:
                client.get_records(ShardIterator=it["ShardIterator"])
                outcomes.append(False)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "LimitExceededException"
                outcomes.append(True)
        assert sim.errors["LimitExceededException"] == sum(outcomes)
        return outcomes

    first = run(seed=7)
    assert 0.22 <= sum(first) / len(first) <= 0.38
    assert run(seed=7) == first  # same seed, same faults
    assert run(seed=8) != first


def test_more_than_five_reads_per_shard_per_second_are_throttled(clock: ManualClock) -> None:
    sim = _sim(clock, enforce_read_limit=True)
    client = _client(sim)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES", shard_count=2)
    first, second = (s["ShardId"] for s in _all_shards(client, arn))
    its = {
        sid: client.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="LATEST")[
            "ShardIterator"
        ]
        for sid in (first, second)
    }
    for _ in range(5):
        client.get_records(ShardIterator=its[first])
    with pytest.raises(ClientError) as excinfo:
        client.get_records(ShardIterator=its[first])
    assert _code(excinfo) == "LimitExceededException"
    client.get_records(ShardIterator=its[second])  # the limit is per shard
    clock.advance(1)
    client.get_records(ShardIterator=its[first])


def test_botocore_retries_a_throttled_get_records(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = _sim(clock, throttle_rate=0.5, seed=3)
    client = _client(sim, mode="standard", total_max_attempts=10)
    arn = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    _put(sim, "tbl", "a", 1)
    sid = _all_shards(client, arn)[0]["ShardId"]
    it = client.get_shard_iterator(StreamArn=arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")
    # botocore decides to retry and how long to wait; only the wait itself is skipped
    sleeps: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time.sleep", sleeps.append)
    got = {}
    for _ in range(5):
        got = client.get_records(ShardIterator=it["ShardIterator"])
        assert len(got["Records"]) == 1
    assert sim.errors["LimitExceededException"] >= 1
    assert len(sleeps) == sim.errors["LimitExceededException"]


def test_internal_error_rate_answers_http_500(clock: ManualClock) -> None:
    sim = _sim(clock, internal_error_rate=1.0)
    client = _client(sim)
    with pytest.raises(ClientError) as excinfo:
        client.list_streams()
    assert _code(excinfo) == "InternalServerError"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


# ---------------------------------------------------------------- stream lifecycle


def test_disable_then_enable_gives_a_new_stream_arn(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    first = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")
    _put(sim, "tbl", "a", 1)
    sim.disable_stream("tbl")
    assert _put(sim, "tbl", "lost", 2) is None  # nothing is recorded while disabled
    assert sim.stream_arn("tbl") is None
    second = sim.enable_stream("tbl", "NEW_AND_OLD_IMAGES")  # same millisecond, still a new ARN
    _put(sim, "tbl", "b", 3)

    assert second != first and sim.stream_arn("tbl") == second
    assert second.startswith("arn:aws:dynamodb:eu-west-1:123456789012:table/tbl/stream/2023-11-14T")
    old = client.describe_stream(StreamArn=first)["StreamDescription"]
    assert old["StreamStatus"] == "DISABLED"
    (old_shard,) = old["Shards"]
    assert "EndingSequenceNumber" in old_shard["SequenceNumberRange"]
    assert [
        r["dynamodb"]["Keys"]["pk"]["S"] for r in _read_shard(client, first, old_shard["ShardId"])
    ] == ["a"]
    new = client.describe_stream(StreamArn=second)["StreamDescription"]
    assert new["StreamStatus"] == "ENABLED"
    new_records = _read_shard(client, second, new["Shards"][0]["ShardId"])
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in new_records] == ["b"]

    listed = client.list_streams(TableName="tbl")["Streams"]
    assert [s["StreamArn"] for s in listed] == [first, second]
    clock.advance(24 * HOUR)  # "a" is exactly 24 h old: kept
    assert len(client.list_streams()["Streams"]) == 2
    clock.advance(1)
    assert [s["StreamArn"] for s in client.list_streams()["Streams"]] == [second]
    with pytest.raises(ClientError) as excinfo:
        client.describe_stream(StreamArn=first)
    assert _code(excinfo) == "ResourceNotFoundException"


def test_list_streams_pages_and_filters_by_table(clock: ManualClock) -> None:
    sim = _sim(clock)
    client = _client(sim)
    arns = [sim.enable_stream(f"tab{i}", "KEYS_ONLY") for i in range(5)]
    page = client.list_streams(Limit=2)
    assert [s["StreamArn"] for s in page["Streams"]] == arns[:2]
    rest = client.list_streams(ExclusiveStartStreamArn=page["LastEvaluatedStreamArn"])
    assert [s["StreamArn"] for s in rest["Streams"]] == arns[2:]
    assert "LastEvaluatedStreamArn" not in rest
    assert [s["TableName"] for s in client.list_streams(TableName="tab3")["Streams"]] == ["tab3"]


def test_unknown_stream_is_resource_not_found(clock: ManualClock) -> None:
    client = _client(_sim(clock))
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/nope/stream/2023-11-14T22:13:20.000"
    with pytest.raises(ClientError) as excinfo:
        client.describe_stream(StreamArn=arn)
    assert _code(excinfo) == "ResourceNotFoundException"


def test_to_http_builds_an_aws_json_error() -> None:
    status, headers, body = to_http(SimulatedError("TrimmedDataAccessException", "gone", 400))
    assert status == 400
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert json.loads(body) == {
        "__type": "com.amazonaws.dynamodb.v20120810#TrimmedDataAccessException",
        "message": "gone",
    }


def test_shape_checker_rejects_a_wrong_response() -> None:
    shape = MODEL.operation_model("GetRecords").output_shape
    bad = {"Records": [{"userIdentity": {"type": "Service"}}]}  # Lambda spelling: not the API's
    with pytest.raises(AssertionError, match="unknown member 'type'"):
        _check_shape(bad, shape)
    with pytest.raises(AssertionError, match="shorter than 21"):
        _check_shape({"Records": [{"dynamodb": {"SequenceNumber": "1"}}]}, shape)
