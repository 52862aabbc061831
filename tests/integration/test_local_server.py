"""The local AWS server: write history for every kind of write, the subscription and Streams
plug point, moto's streams on request, the clock and control API, TTL expiry,
DescribeContinuousBackups by the local clock, and the ``python -m dynamo_cdc.local --demo`` entry
point (with simulator streams, stopping fast on SIGTERM). The simulator's streams themselves are
tested in test_local_streams.py."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings
from dynamo_cdc.local import LocalAws, launch_local_aws, start_local_aws
from dynamo_cdc.local.history import TTL_USER_IDENTITY

pytestmark = pytest.mark.integration

ACCOUNT, REGION = "123456789012", "us-east-1"


class RecordingStreams:
    """A stand-in Streams simulator: keeps what it is fed, answers two operations."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def record(self, table_name, event_name, keys, old_image, new_image, when, user_identity=None):
        self.events.append(
            (table_name, event_name, keys, old_image, new_image, when, user_identity)
        )

    def handle(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if operation == "ListStreams":
            return {"Streams": [{"StreamArn": "arn:sim", "TableName": params.get("TableName", "")}]}
        err = Exception("no such stream")
        err.code, err.message, err.status = "ResourceNotFoundException", "no such stream", 400  # type: ignore[attr-defined]
        raise err


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with start_local_aws(export_delay_seconds=0.1) as server:
        yield server


@pytest.fixture
def ddb(aws: LocalAws) -> Any:
    return Clients(Settings(endpoint_url=aws.endpoint_url), max_attempts=1).dynamodb


@pytest.fixture
def table(ddb: Any) -> str:
    name = f"h-{uuid.uuid4().hex[:8]}.t"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def history(aws: LocalAws, table: str) -> list[Any]:
    h = aws.app.history.get(ACCOUNT, REGION, table)
    assert h is not None
    return h.records()


def pk(value: str) -> dict[str, Any]:
    return {"pk": {"S": value}}


def test_every_kind_of_write_is_recorded_once_and_no_op_writes_are_not(aws, ddb, table):
    ddb.put_item(TableName=table, Item={**pk("a"), "v": {"N": "1"}})
    ddb.put_item(TableName=table, Item={**pk("a"), "v": {"N": "1"}})  # no-op
    ddb.update_item(
        TableName=table,
        Key=pk("u"),
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )  # creates the item: one INSERT, not two
    ddb.update_item(
        TableName=table,
        Key=pk("a"),
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "3"}},
    )
    ddb.delete_item(TableName=table, Key=pk("u"))
    ddb.delete_item(TableName=table, Key=pk("never-existed"))  # nothing to delete
    ddb.batch_write_item(
        RequestItems={
            table: [
                {"PutRequest": {"Item": {**pk("b1"), "v": {"N": "4"}}}},
                {"DeleteRequest": {"Key": pk("a")}},
            ]
        }
    )
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {**pk("t1"), "v": {"N": "5"}}}},
            {"Delete": {"TableName": table, "Key": pk("b1")}},
        ]
    )
    with pytest.raises(ClientError):  # cancelled: nothing may be recorded
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {**pk("t2"), "v": {"N": "6"}}}},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": pk("t1"),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    ddb.execute_statement(Statement=f"INSERT INTO \"{table}\" VALUE {{'pk': 'q1', 'v': 7}}")

    got = [(r.event_name, r.keys["pk"]["S"]) for r in history(aws, table)]

    assert got == [
        ("INSERT", "a"),
        ("INSERT", "u"),
        ("MODIFY", "a"),
        ("REMOVE", "u"),
        ("INSERT", "b1"),
        ("REMOVE", "a"),
        ("INSERT", "t1"),
        ("REMOVE", "b1"),
        ("INSERT", "q1"),
    ]
    recs = history(aws, table)
    assert recs[2].old_image["v"] == {"N": "1"} and recs[2].new_image["v"] == {"N": "3"}
    stamps = [r.timestamp_micros for r in recs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_binary_values_are_kept_as_base64_text_in_the_history(aws, ddb, table):
    ddb.put_item(TableName=table, Item={**pk("bin"), "b": {"B": b"\x00\x01"}, "bs": {"BS": [b"z"]}})

    (rec,) = history(aws, table)

    assert rec.new_image["b"] == {"B": "AAE="} and rec.new_image["bs"] == {"BS": ["eg=="]}


def test_clock_advance_moves_write_timestamps(aws, ddb, table):
    ddb.put_item(TableName=table, Item=pk("before"))
    aws.control.advance_clock(3600)
    ddb.put_item(TableName=table, Item=pk("after"))

    first, second = history(aws, table)

    assert second.timestamp_micros - first.timestamp_micros >= 3600 * 1_000_000
    clock = aws.control.clock()
    assert clock["offset_seconds"] >= 3600
    assert datetime.fromisoformat(clock["now"]) > datetime.now(UTC)


def test_answers_carry_the_local_clock_in_their_date_header(aws, ddb, table):
    from email.utils import parsedate_to_datetime

    aws.control.advance_clock(25 * 3600)
    now = aws.control.clock()["now_micros"] / 1e6

    answers = [
        ddb.describe_table(TableName=table),
        Clients(Settings(endpoint_url=aws.endpoint_url)).streams.list_streams(),
    ]

    for answer in answers:
        date = parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])
        assert abs(date.timestamp() - now) < 5


def test_creation_date_time_follows_the_local_clock(aws, ddb):
    aws.control.advance_clock(3 * 3600)
    name = f"h-{uuid.uuid4().hex[:8]}.t"
    before = aws.control.clock()["now_micros"] / 1e6

    created = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]["CreationDateTime"]
    described = ddb.describe_table(TableName=name)["Table"]["CreationDateTime"]

    assert described == created
    assert before - 1 <= created.timestamp() <= aws.control.clock()["now_micros"] / 1e6


def test_a_recreated_table_starts_a_new_history(aws, ddb, table):
    ddb.put_item(TableName=table, Item=pk("old"))
    old_id = aws.app.history.get(ACCOUNT, REGION, table).table_id
    ddb.delete_table(TableName=table)
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName=table, Item=pk("new"))

    assert [r.keys["pk"]["S"] for r in history(aws, table)] == ["new"]
    assert aws.app.history.get(ACCOUNT, REGION, table).table_id != old_id


def test_attached_streams_simulator_is_fed_writes_and_answers_the_streams_api(aws, ddb, table):
    default = aws.app.streams
    assert default is not None  # the stream simulator is plugged in by default
    sim = RecordingStreams()
    aws.app.attach_streams_simulator(sim)
    streams = Clients(Settings(endpoint_url=aws.endpoint_url), max_attempts=1).streams
    try:
        assert aws.app.streams is None and aws.app.streams_mode == "custom"
        ddb.put_item(TableName=table, Item={**pk("s"), "v": {"N": "1"}})
        ddb.delete_item(TableName=table, Key=pk("s"))
        listed = streams.list_streams(TableName=table)
        with pytest.raises(ClientError) as err:
            streams.describe_stream(StreamArn="arn:aws:dynamodb:us-east-1:1:table/x/stream/y")
        aws.app.detach_streams()
        moto_answer = streams.list_streams(TableName=table)
    finally:
        aws.app.attach_streams_simulator(default)

    mine = [e for e in sim.events if e[0] == table]
    assert [(e[1], e[2]) for e in mine] == [("INSERT", pk("s")), ("REMOVE", pk("s"))]
    assert mine[1][3] == {**pk("s"), "v": {"N": "1"}} and mine[1][4] is None
    assert isinstance(mine[0][5], datetime) and mine[0][5].tzinfo is not None
    assert listed["Streams"] == [{"StreamArn": "arn:sim", "TableName": table}]
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # Detached: moto answers the Streams API (this table has no moto stream).
    assert moto_answer["Streams"] == []
    assert aws.app.streams is default


def test_ttl_sweep_deletes_expired_items_as_the_ttl_service(aws, ddb, table):
    ddb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"}
    )
    now = aws.control.clock()["now_micros"] // 1_000_000
    ddb.put_item(TableName=table, Item={**pk("soon"), "exp": {"N": str(now + 60)}})
    ddb.put_item(TableName=table, Item={**pk("later"), "exp": {"N": str(now + 7200)}})
    ddb.put_item(TableName=table, Item={**pk("never"), "exp": {"S": "not a number"}})

    assert aws.control.ttl_sweep() == 0
    aws.control.advance_clock(120)
    deleted = aws.control.ttl_sweep()

    assert deleted == 1
    assert "Item" not in ddb.get_item(TableName=table, Key=pk("soon"))
    assert "Item" in ddb.get_item(TableName=table, Key=pk("later"))
    last = history(aws, table)[-1]
    assert (last.event_name, last.keys, last.user_identity) == (
        "REMOVE",
        pk("soon"),
        TTL_USER_IDENTITY,
    )


def test_describe_continuous_backups_reports_the_pitr_window_by_the_local_clock(aws, ddb, table):
    ddb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    enabled_at = aws.app.history.get(ACCOUNT, REGION, table).pitr_since_micros
    aws.control.advance_clock(7200)

    desc = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    pitr = desc["PointInTimeRecoveryDescription"]

    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"
    assert abs(pitr["EarliestRestorableDateTime"].timestamp() * 1e6 - enabled_at) < 2000
    latest = pitr["LatestRestorableDateTime"].timestamp()
    assert latest - pitr["EarliestRestorableDateTime"].timestamp() >= 7200


def test_control_api_rejects_unknown_routes_and_time_travel_backwards(aws):
    import urllib.error
    import urllib.request

    headers = {"X-Dynamo-Cdc-Token": aws.control.token, "Content-Type": "application/json"}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(
            urllib.request.Request(f"{aws.endpoint_url}/_dynamo_cdc/nope", headers=headers)
        )
    req = urllib.request.Request(
        f"{aws.endpoint_url}/_dynamo_cdc/clock",
        data=b'{"advance_seconds": -5}',
        method="POST",
        headers=headers,
    )
    with pytest.raises(urllib.error.HTTPError) as backwards:
        urllib.request.urlopen(req)

    assert missing.value.code == 404
    assert backwards.value.code == 400


def test_moto_streams_mode_leaves_streams_to_moto_and_refuses_stream_control():
    import urllib.error

    name = f"moto-{uuid.uuid4().hex[:8]}"
    with start_local_aws(streams="moto") as moto_aws:
        c = Clients(Settings(endpoint_url=moto_aws.endpoint_url), max_attempts=1)
        c.dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        c.dynamodb.put_item(TableName=name, Item=pk("m"))
        arn = c.dynamodb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
        shards = c.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        it = c.streams.get_shard_iterator(
            StreamArn=arn, ShardId=shards[0]["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = c.streams.get_records(ShardIterator=it)["Records"]
        state = moto_aws.control.streams()
        with pytest.raises(urllib.error.HTTPError) as refused:
            moto_aws.control.rotate_shards(name)

    assert moto_aws.app.streams is None and state["mode"] == "moto"
    assert [r["eventVersion"] for r in records] == ["1.0"]  # moto's record format
    assert refused.value.code == 400


def test_cli_demo_creates_tables_with_streams_pitr_and_the_bucket_then_stops_on_sigterm(tmp_path):
    server = launch_local_aws(0, demo=True, stderr_path=str(tmp_path / "demo.log"))
    try:
        c = Clients(Settings(endpoint_url=server.endpoint_url), max_attempts=1)
        tables = set(c.dynamodb.list_tables()["TableNames"])
        described = {t: c.dynamodb.describe_table(TableName=t)["Table"] for t in tables}
        pitr = {
            t: c.dynamodb.describe_continuous_backups(TableName=t)["ContinuousBackupsDescription"][
                "PointInTimeRecoveryDescription"
            ]["PointInTimeRecoveryStatus"]
            for t in tables
        }
        buckets = {b["Name"] for b in c.s3.list_buckets()["Buckets"]}
        simulated = {s["table"]: s["stream_arn"] for s in server.control.streams()["streams"]}
        assert server.endpoint_url.startswith("http://127.0.0.1:")
    finally:
        signalled = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        code = server.proc.wait(timeout=15)
        stop_seconds = time.monotonic() - signalled
        server.stop()

    assert {"orders", "app-events.v1"} <= tables
    for name in ("orders", "app-events.v1"):
        assert described[name]["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert described[name]["LatestStreamArn"] == simulated[name]  # the simulator's stream
        assert pitr[name] == "ENABLED"
    assert "dynamo-cdc-exports" in buckets
    assert code == 0
    assert stop_seconds < 1.0


# -- the control API and moto's /moto-api/ are guarded ---------------------------------------


def _http(aws, method, path, body=None, headers=None):
    """(status, body) of a raw HTTP request to the local AWS, as a web page could send it."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", aws.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _token(aws) -> dict[str, str]:
    return {"X-Dynamo-Cdc-Token": aws.control.token, "Content-Type": "application/json"}


def test_control_api_refuses_a_request_without_the_servers_token(aws):
    body = b'{"access_key_id": "AKIAATTACKER0000000"}'
    for headers in (
        {"Content-Type": "application/json"},
        {**_token(aws), "X-Dynamo-Cdc-Token": "guess"},
    ):
        status, answer = _http(aws, "POST", "/_dynamo_cdc/credentials", body, headers)
        assert status == 403 and b"X-Dynamo-Cdc-Token" in answer
    assert aws.control.required_access_key_id() is None  # nothing was switched
    assert _http(aws, "POST", "/_dynamo_cdc/reset", b"{}", {})[0] == 403
    assert _http(aws, "GET", "/_dynamo_cdc/clock")[0] == 403
    assert _http(aws, "GET", "/_dynamo_cdc/health")[0] == 200  # the one open route
    assert _http(aws, "GET", "/_dynamo_cdc/clock", headers=_token(aws))[0] == 200


def test_control_api_takes_json_only_so_a_web_form_cannot_post_to_it(aws):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = {**_token(aws), "Content-Type": content_type}
        status, _ = _http(aws, "POST", "/_dynamo_cdc/clock", b'{"advance_seconds": 9e9}', headers)
        assert status == 415, content_type
    assert abs(aws.control.clock()["offset_seconds"]) < 9e9


def test_moto_api_refuses_a_request_without_the_token_and_keeps_the_state(aws, ddb, table):
    assert _http(aws, "POST", "/moto-api/reset", b"", {})[0] == 403
    assert _http(aws, "GET", "/moto-api/data.json")[0] == 403
    assert table in ddb.list_tables()["TableNames"]
    assert _http(aws, "GET", "/moto-api/data.json", headers=_token(aws))[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:4566", "10.0.0.5", "[fe80::1]:80"])
def test_a_non_loopback_host_header_is_refused_everywhere_against_dns_rebinding(aws, host):
    headers = {**_token(aws), "Host": host}
    assert _http(aws, "GET", "/_dynamo_cdc/clock", headers=headers)[0] == 403
    assert _http(aws, "POST", "/moto-api/reset", b"{}", headers)[0] == 403
    list_tables = {
        **headers,
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Content-Type": "application/x-amz-json-1.0",
    }
    status, answer = _http(aws, "POST", "/", b"{}", list_tables)
    assert status == 403 and b"loopback" in answer


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "[::1]", "bucket.localhost", "127.0.0.2"]
)
def test_loopback_host_headers_are_served(aws, host):
    headers = {**_token(aws), "Host": f"{host}:{aws.port}"}
    assert _http(aws, "GET", "/_dynamo_cdc/clock", headers=headers)[0] == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com"])
def test_a_non_loopback_bind_is_refused_unless_forced(host):
    from dynamo_cdc.local.server import LocalAwsServer

    with pytest.raises(ValueError, match="Refusing to serve the local AWS.*allow-remote"):
        LocalAwsServer(0, host=host)


def test_the_command_refuses_a_non_loopback_bind_unless_forced():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "dynamo_cdc.local", "--port", "0", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr
    assert "listening" not in proc.stdout


def test_a_launched_server_takes_its_token_from_the_parent_only(tmp_path):
    server = launch_local_aws(0, stderr_path=str(tmp_path / "log"))
    try:
        assert server.control.clock()["now_micros"] > 0  # the parent's token works
        assert _http(server, "GET", "/_dynamo_cdc/clock")[0] == 403
        assert server.control.token not in (tmp_path / "log").read_text()
    finally:
        server.stop()
