"""DynamoDB Streams of the local AWS, served by the stream simulator, seen through boto3.

Every test reaches the shared subprocess server (``local_aws``) the way the library does: boto3
clients for ``dynamodb`` and ``dynamodbstreams`` plus the control API. The clock is shared by
the whole session, so tests read times from it and only move it forward.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dynamo_cdc.aws import Clients
from dynamo_cdc.local import LocalAwsProcess
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration

HOUR = 3600
TTL_IDENTITY = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
DDB_MODEL = botocore.session.get_session().get_service_model("dynamodb")
STREAMS_MODEL = botocore.session.get_session().get_service_model("dynamodbstreams")


def pk(value: str) -> dict[str, Any]:
    return {"pk": {"S": value}}


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as err:
        call()
    return str(err.value.response["Error"]["Code"])


def stream_arn(clients: Clients, table: str) -> str:
    return str(clients.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"])


def shards(clients: Clients, arn: str) -> list[dict[str, Any]]:
    return list(clients.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"])


def read_shard(clients: Clients, arn: str, shard_id: str, **position: Any) -> Iterator[Any]:
    """Every record of a shard from TRIM_HORIZON (or ``position``) to its current end."""
    kwargs = position or {"ShardIteratorType": "TRIM_HORIZON"}
    it = clients.streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id, **kwargs)[
        "ShardIterator"
    ]
    while it:
        page = clients.streams.get_records(ShardIterator=it, Limit=1000)
        yield from page["Records"]
        if not page["Records"]:
            return
        it = page.get("NextShardIterator")


def read_stream(clients: Clients, arn: str) -> list[Any]:
    """All records of a stream, shard by shard in creation order (parents before children)."""
    return [r for s in shards(clients, arn) for r in read_shard(clients, arn, s["ShardId"])]


def shape_errors(value: Any, shape: Any, path: str = "") -> list[str]:
    """Where a raw JSON answer differs from a botocore output shape (unknown or missing
    members, wrong types, values outside an enum)."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        errors = [f"{path}.{m}: required" for m in shape.required_members if m not in value]
        for name, member in value.items():
            if name not in shape.members:
                errors.append(f"{path}.{name}: not in the model")
            else:
                errors += shape_errors(member, shape.members[name], f"{path}.{name}")
        return errors
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            e for i, v in enumerate(value) for e in shape_errors(v, shape.member, f"{path}[{i}]")
        ]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [e for k, v in value.items() for e in shape_errors(v, shape.value, f"{path}[{k}]")]
    if kind in ("string", "blob"):
        if not isinstance(value, str):
            return [f"{path}: expected a string"]
        if shape.enum and value not in shape.enum:
            return [f"{path}: {value!r} not in {shape.enum}"]
        return []
    if kind in ("integer", "long"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer"]
    if kind in ("timestamp", "double", "float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    return []


@pytest.fixture
def raw_answers(clients: Clients) -> dict[str, list[Any]]:
    """The raw JSON of every DynamoDB and Streams answer the test's clients get, by operation."""
    raw: dict[str, list[Any]] = {}

    def keep(http_response: Any, model: Any, **_: Any) -> None:
        if http_response.status_code == 200:
            raw.setdefault(model.name, []).append(json.loads(http_response.content))

    clients.dynamodb.meta.events.register("after-call.dynamodb", keep)
    clients.streams.meta.events.register("after-call.dynamodb-streams", keep)
    return raw


def test_a_table_created_with_a_stream_shows_the_simulators_stream_and_its_records_in_order(
    clients, local_aws: LocalAwsProcess, make_table
):
    table = make_table(pitr=False)
    ddb = clients.dynamodb
    ddb.put_item(TableName=table, Item={**pk("a"), "v": {"N": "1"}})
    ddb.update_item(  # creates the item: one INSERT (moto's own stream has two)
        TableName=table,
        Key=pk("b"),
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    ddb.put_item(TableName=table, Item={**pk("a"), "v": {"N": "3"}})
    ddb.put_item(TableName=table, Item={**pk("a"), "v": {"N": "3"}})  # no-op: no record
    ddb.delete_item(TableName=table, Key=pk("a"))

    desc = ddb.describe_table(TableName=table)["Table"]
    arn = desc["LatestStreamArn"]
    listed = clients.streams.list_streams(TableName=table)["Streams"]
    simulated = {s["table"]: s for s in local_aws.control.streams()["streams"]}
    records = read_stream(clients, arn)

    assert desc["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert arn == simulated[table]["stream_arn"] and simulated[table]["enabled"]
    assert (
        arn
        == f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/"
        + (desc["LatestStreamLabel"])
    )
    assert listed == [
        {"StreamArn": arn, "TableName": table, "StreamLabel": desc["LatestStreamLabel"]}
    ]
    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [
        ("INSERT", "a"),
        ("INSERT", "b"),
        ("MODIFY", "a"),
        ("REMOVE", "a"),
    ]
    first, _, modify, remove = records
    assert "OldImage" not in first["dynamodb"] and first["dynamodb"]["NewImage"]["v"] == {"N": "1"}
    assert modify["dynamodb"]["OldImage"]["v"] == {"N": "1"}
    assert modify["dynamodb"]["NewImage"]["v"] == {"N": "3"}
    assert (
        remove["dynamodb"]["OldImage"]["v"] == {"N": "3"} and "NewImage" not in remove["dynamodb"]
    )
    assert {r["eventVersion"] for r in records} == {"1.1"}  # AWS's format (moto: 1.0)
    assert all("userIdentity" not in r for r in records)
    assert {r["dynamodb"]["StreamViewType"] for r in records} == {"NEW_AND_OLD_IMAGES"}
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_a_ttl_sweep_delete_arrives_as_remove_with_the_ttl_service_identity(
    clients, local_aws: LocalAwsProcess, make_table
):
    table = make_table(pitr=False)
    clients.dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"}
    )
    now = local_aws.control.clock()["now_micros"] // 1_000_000
    clients.dynamodb.put_item(TableName=table, Item={**pk("old"), "exp": {"N": str(now + 60)}})
    clients.dynamodb.put_item(TableName=table, Item={**pk("kept"), "exp": {"N": str(now + 10**6)}})
    clients.dynamodb.delete_item(TableName=table, Key=pk("kept"))  # a user's delete
    local_aws.control.advance_clock(120)
    assert local_aws.control.ttl_sweep() >= 1

    records = read_stream(clients, stream_arn(clients, table))

    removes = [r for r in records if r["eventName"] == "REMOVE"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in removes] == ["kept", "old"]
    user_delete, ttl_delete = removes
    assert "userIdentity" not in user_delete
    assert ttl_delete["userIdentity"] == TTL_IDENTITY
    assert ttl_delete["dynamodb"]["OldImage"]["exp"] == {"N": str(now + 60)}


def test_disable_then_enable_gives_a_new_stream_arn_and_nothing_is_recorded_while_off(
    clients, local_aws: LocalAwsProcess, make_table
):
    table = make_table(pitr=False)
    ddb = clients.dynamodb
    old_arn = stream_arn(clients, table)
    ddb.put_item(TableName=table, Item=pk("before"))

    off = ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    desc_off = ddb.describe_table(TableName=table)["Table"]
    ddb.put_item(TableName=table, Item=pk("while-off"))  # moto's table would break here
    twice = error_code(
        lambda: ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    )
    on = ddb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    again = error_code(
        lambda: ddb.update_table(
            TableName=table,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
    )
    ddb.put_item(TableName=table, Item=pk("after"))
    new_arn = stream_arn(clients, table)
    old = clients.streams.describe_stream(StreamArn=old_arn)["StreamDescription"]

    # AWS leaves StreamSpecification out while the stream is off and keeps the latest ARN.
    assert "StreamSpecification" not in off["TableDescription"]
    assert "StreamSpecification" not in desc_off and desc_off["LatestStreamArn"] == old_arn
    assert (twice, again) == ("ValidationException", "ValidationException")
    assert on["LatestStreamArn"] == new_arn != old_arn
    assert on["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert old["StreamStatus"] == "DISABLED"
    assert all("EndingSequenceNumber" in s["SequenceNumberRange"] for s in old["Shards"])
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in read_stream(clients, old_arn)] == ["before"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in read_stream(clients, new_arn)] == ["after"]
    listed = {s["StreamArn"] for s in clients.streams.list_streams(TableName=table)["Streams"]}
    assert listed == {old_arn, new_arn}
    assert "Item" in ddb.get_item(TableName=table, Key=pk("while-off"))


def test_a_bad_stream_specification_changes_nothing_and_a_missing_table_is_not_found(
    clients, make_table
):
    table = make_table(pitr=False, stream=False)
    code = error_code(
        lambda: clients.dynamodb.update_table(
            TableName=table, StreamSpecification={"StreamEnabled": False}
        )
    )
    desc = clients.dynamodb.describe_table(TableName=table)["Table"]
    missing = error_code(
        lambda: clients.dynamodb.update_table(
            TableName=unique_name("missing"),
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
    )

    assert code == "ValidationException"
    assert missing == "ResourceNotFoundException"
    assert "LatestStreamArn" not in desc and "StreamSpecification" not in desc


def test_delete_table_disables_its_stream_and_a_recreated_table_gets_a_new_one(clients, make_table):
    table = make_table(pitr=False)
    clients.dynamodb.put_item(TableName=table, Item=pk("x"))
    old_arn = stream_arn(clients, table)
    clients.dynamodb.delete_table(TableName=table)
    make_table(name=table, pitr=False)

    old = clients.streams.describe_stream(StreamArn=old_arn)["StreamDescription"]
    assert old["StreamStatus"] == "DISABLED"
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in read_stream(clients, old_arn)] == ["x"]
    new_arn = stream_arn(clients, table)
    assert new_arn != old_arn and read_stream(clients, new_arn) == []


def test_rotation_through_the_control_api_closes_the_parent_and_opens_children(
    clients, local_aws: LocalAwsProcess, make_table
):
    table = make_table(pitr=False)
    arn = stream_arn(clients, table)
    for i in range(4):
        clients.dynamodb.put_item(TableName=table, Item=pk(f"p{i}"))
    (parent,) = shards(clients, arn)

    children = local_aws.control.rotate_shards(table, split=True)
    for i in range(20):
        clients.dynamodb.put_item(TableName=table, Item=pk(f"c{i}"))
    listed = {s["ShardId"]: s for s in shards(clients, arn)}
    parent_records = list(read_shard(clients, arn, parent["ShardId"]))
    it = clients.streams.get_shard_iterator(
        StreamArn=arn, ShardId=parent["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    end_of_parent = clients.streams.get_records(ShardIterator=it)
    child_keys = [
        r["dynamodb"]["Keys"]["pk"]["S"] for c in children for r in read_shard(clients, arn, c)
    ]

    assert len(children) == 2
    closed = listed[parent["ShardId"]]["SequenceNumberRange"]
    assert int(closed["EndingSequenceNumber"]) > int(closed["StartingSequenceNumber"])
    assert [listed[c]["ParentShardId"] for c in children] == [parent["ShardId"]] * 2
    assert all("EndingSequenceNumber" not in listed[c]["SequenceNumberRange"] for c in children)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in parent_records] == [f"p{i}" for i in range(4)]
    assert "NextShardIterator" not in end_of_parent  # a closed shard read to its end
    assert sorted(child_keys) == sorted(f"c{i}" for i in range(20))
    assert {c: bool(list(read_shard(clients, arn, c))) for c in children} == dict.fromkeys(
        children, True
    )
    with pytest.raises(urllib.error.HTTPError) as no_stream:
        local_aws.control.rotate_shards(unique_name("none"))
    assert no_stream.value.code == 400


def test_fault_and_rotation_knobs_through_the_control_api(
    clients, local_aws: LocalAwsProcess, make_table
):
    table = make_table(pitr=False)
    arn = stream_arn(clients, table)
    (shard,) = shards(clients, arn)
    it = clients.streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    # One attempt, no adaptive rate limiting: a throttle must not slow the other clients down.
    single_try = boto3.client(
        "dynamodbstreams",
        endpoint_url=local_aws.endpoint_url,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    try:
        config = local_aws.control.configure_streams(throttle_rate=1.0, rotate_every_records=2)
        throttled = error_code(lambda: single_try.get_records(ShardIterator=it))
        for i in range(5):
            clients.dynamodb.put_item(TableName=table, Item=pk(f"k{i}"))
    finally:
        after = local_aws.control.configure_streams(throttle_rate=0, rotate_every_records=0)
    state = local_aws.control.streams()

    assert config["throttle_rate"] == 1.0 and config["rotate_every_records"] == 2
    assert throttled == "LimitExceededException"
    assert len(shards(clients, arn)) >= 3  # rotated after every 2 records
    assert after["throttle_rate"] == 0.0 and after["rotate_every_records"] is None
    assert state["errors"]["LimitExceededException"] >= 1
    assert len(read_stream(clients, arn)) == 5


def test_advancing_the_server_clock_trims_records_after_24_hours_and_expires_iterators(
    clients, local_aws: LocalAwsProcess, make_table
):
    table = make_table(pitr=False)
    clients.dynamodb.put_item(TableName=table, Item=pk("old"))
    arn = stream_arn(clients, table)
    (shard,) = shards(clients, arn)
    (old,) = read_shard(clients, arn, shard["ShardId"])
    iterator = clients.streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    local_aws.control.advance_clock(16 * 60)
    expired = error_code(lambda: clients.streams.get_records(ShardIterator=iterator))

    local_aws.control.advance_clock(25 * HOUR)
    clients.dynamodb.put_item(TableName=table, Item=pk("new"))
    trimmed = error_code(
        lambda: clients.streams.get_shard_iterator(
            StreamArn=arn,
            ShardId=shard["ShardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=old["dynamodb"]["SequenceNumber"],
        )
    )
    kept = [r["dynamodb"]["Keys"]["pk"]["S"] for r in read_shard(clients, arn, shard["ShardId"])]

    assert expired == "ExpiredIteratorException"
    assert trimmed == "TrimmedDataAccessException"
    assert kept == ["new"]


def test_rewritten_table_descriptions_and_stream_answers_match_botocore_service_model(
    clients, local_aws: LocalAwsProcess, make_table, raw_answers
):
    table = make_table(pitr=False)
    clients.dynamodb.put_item(TableName=table, Item={**pk("a"), "b": {"B": b"\x00"}})
    clients.dynamodb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    clients.dynamodb.describe_table(TableName=table)
    clients.dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    clients.dynamodb.describe_table(TableName=table)
    arn = stream_arn(clients, table)
    local_aws.control.rotate_shards(table)
    clients.streams.list_streams(TableName=table)
    read_stream(clients, arn)
    clients.dynamodb.delete_table(TableName=table)

    checked = 0
    for model, ops in (
        (DDB_MODEL, ("CreateTable", "UpdateTable", "DescribeTable", "DeleteTable")),
        (STREAMS_MODEL, ("ListStreams", "DescribeStream", "GetShardIterator", "GetRecords")),
    ):
        for op in ops:
            assert raw_answers.get(op), f"no {op} answer captured"
            for body in raw_answers[op]:
                assert shape_errors(body, model.operation_model(op).output_shape) == [], (op, body)
                checked += 1
    descs = [b["Table"] for b in raw_answers["DescribeTable"]]
    assert "StreamSpecification" not in descs[0]  # described while the stream was off
    assert descs[-1]["StreamSpecification"]["StreamViewType"] == "KEYS_ONLY"
    assert checked >= 12
