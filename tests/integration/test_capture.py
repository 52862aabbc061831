"""Stream capture on the local AWS: every stream record lands once, even when the reader is
killed between writing Parquet and committing its checkpoint, or before writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import duckdb
import pytest

from dynamo_cdc.capture import capture_once
from dynamo_cdc.convert import native, pages_to_table
from dynamo_cdc.lake import Lake
from dynamo_cdc.local.workload import Workload
from dynamo_cdc.stream import GET_RECORDS_EVENT, ReadBudget, RecordPage, read_records
from tests.e2e.chaos import all_stream_event_ids

pytestmark = pytest.mark.integration


def landed_event_ids(root: str, table: str) -> list[str]:
    glob = f"{root}/{table}/changes/*/*/*.parquet"
    rows = duckdb.sql(f"SELECT event_id FROM read_parquet('{glob}', hive_partitioning=true)")
    return [r[0] for r in rows.fetchall()]


def capture_until_caught_up(clients, lake, table: str) -> int:
    total = 0
    for _ in range(100):
        result = capture_once(clients, lake, table, ReadBudget(max_records=1500))
        total += result.records
        if result.stopped_by == "caught_up" and result.records == 0:
            return total
    raise AssertionError("capture never caught up")


def run_workload(clients, table: str, writes: int, seed: int) -> None:
    workload = Workload(clients.dynamodb, table, "pk", None, seed=seed, keys=400)
    while len(all_stream_event_ids(clients, table)) < writes:
        workload.run(100)
    assert all(workload.counts[op] for op in ("put", "update", "delete", "batch", "transact"))


def test_2000_writes_land_as_exactly_one_row_per_stream_record(
    clients, make_table, tmp_path
) -> None:
    table = make_table()
    run_workload(clients, table, 2000, seed=1)
    lake = Lake(str(tmp_path))

    capture_until_caught_up(clients, lake, table)

    truth = all_stream_event_ids(clients, table)
    landed = landed_event_ids(str(tmp_path), table)
    assert len(truth) >= 2000
    assert Counter(landed) == Counter(truth)  # nothing lost, nothing twice
    # order per key: sequence numbers increase within each key's rows
    rows = duckdb.sql(
        f"SELECT pk, sequence_number FROM read_parquet('{tmp_path}/{table}/changes/*/*/*.parquet') "
        "ORDER BY pk, approximate_creation_time, sequence_number"
    ).fetchall()
    last: dict[str, str] = {}
    for pk, seq in rows:
        assert seq > last.get(pk, ""), pk
        last[pk] = seq


def put_padded(clients, table: str, count: int, pad_bytes: int, prefix: str = "p") -> None:
    """``count`` new items of about ``pad_bytes`` each (BatchWriteItem, 25 a call)."""
    for start in range(0, count, 25):
        requests = [
            {
                "PutRequest": {
                    "Item": {"pk": {"S": f"{prefix}{i:05d}"}, "pad": {"S": "x" * pad_bytes}}
                }
            }
            for i in range(start, min(start + 25, count))
        ]
        while requests:
            out = clients.dynamodb.batch_write_item(RequestItems={table: requests})
            requests = (out.get("UnprocessedItems") or {}).get(table) or []


def test_one_capture_reads_every_1_mb_page_though_this_clock_is_a_day_behind_the_streams(
    local_aws, clients, make_table, tmp_path
) -> None:
    """Records stamped a day after this machine's clock are no reason to stop reading: the
    poll's start is taken on the stream's clock (DynamoDB's Date header)."""
    table = make_table()
    local_aws.control.advance_clock(25 * 3600)
    put_padded(clients, table, 1200, 2_500)
    lake = Lake(str(tmp_path))

    result = capture_once(clients, lake, table)

    assert result.records == 1200 and result.stopped_by == "caught_up"
    assert result.lag_seconds == 0.0
    assert Counter(landed_event_ids(str(tmp_path), table)) == Counter(
        all_stream_event_ids(clients, table)
    )


def test_captures_of_one_table_started_at_once_take_turns_and_land_each_record_once(
    clients, make_table, tmp_path
) -> None:
    """Four captures of one table at once (as a sensor tick beside manual runs, or runs that
    Dagster's pool let start together): each holds the table's capture lock in turn, and every
    stream record lands once."""
    from concurrent.futures import ThreadPoolExecutor

    table = make_table()
    run_workload(clients, table, 600, seed=3)
    lake = Lake(str(tmp_path))

    def capture(_: int):
        return capture_once(clients, lake, table, ReadBudget(max_records=200))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(capture, range(4)))
    windows = sorted(r.locked_between for r in results if r.locked_between)
    assert len(windows) == 4
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert end <= start, f"two captures held the lock at once: {windows}"
    capture_until_caught_up(clients, lake, table)
    landed = landed_event_ids(str(tmp_path), table)
    assert Counter(landed) == Counter(all_stream_event_ids(clients, table))


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.config import Settings
    from dynamo_cdc.lake import Lake
    from dynamo_cdc import capture
    from dynamo_cdc.stream import ReadBudget

    endpoint, root, table, where = sys.argv[1:5]
    clients = Clients(Settings(endpoint_url=endpoint))
    lake = Lake(root)
    budget = ReadBudget(max_records=700)
    if where == "after-write":
        capture.capture_once(clients, lake, table, budget,
                             after_write=lambda files: os.kill(os.getpid(), signal.SIGKILL))
    else:
        info, batch = capture.read_batch(clients, lake, table, budget)
        assert batch.records, "the crash must happen with records in hand"
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("where", ["after-write", "before-write"])
def test_sigkill_of_the_reader_loses_nothing_and_duplicates_nothing(
    clients, local_aws, make_table, tmp_path, where: str
) -> None:
    table = make_table()
    run_workload(clients, table, 1500, seed=2)
    lake = Lake(str(tmp_path))
    capture_once(clients, lake, table, ReadBudget(max_records=300))  # a committed start

    child = subprocess.run(
        [sys.executable, "-c", CHILD, local_aws.endpoint_url, str(tmp_path), table, where],
        env=dict(os.environ),
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    if where == "after-write":
        assert len(landed_event_ids(str(tmp_path), table)) > 300  # files written, not committed

    capture_until_caught_up(clients, lake, table)

    landed = landed_event_ids(str(tmp_path), table)
    assert Counter(landed) == Counter(all_stream_event_ids(clients, table))


def test_get_records_read_by_the_c_reader_or_orjson_give_the_change_rows_botocore_gives(
    clients, make_table, monkeypatch
) -> None:
    """The StreamReader's GetRecords are read by the C reader (change-row columns) or, with it
    off, by orjson (binary stays base64 text, the creation time epoch seconds); the change rows
    are those of botocore's own parse, value for value."""
    table = make_table(range_key=True)
    db = clients.dynamodb
    for i in range(40):
        item = {
            "pk": {"S": f"k{i % 7}"},
            "sk": {"N": str(i)},
            "b": {"B": bytes([i, 0, 255])},
            "bs": {"BS": [b"\x01", bytes([i])]},
            "ns": {"NS": ["1.50", str(i), "-3"]},
            "ss": {"SS": ["b", "a", "é"]},
            "m": {"M": {"z": {"N": "2.0"}, "a": {"L": [{"NULL": True}, {"BOOL": i % 2 == 0}]}}},
            "s": {"S": 'quote " and \\ and \n'},
        }
        db.put_item(TableName=table, Item=item)
        if i % 3 == 0:
            db.update_item(
                TableName=table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET n = :n",
                ExpressionAttributeValues={":n": {"N": "12.250"}},
            )
        if i % 5 == 0:
            db.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
    arn = db.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    fast = clients.streams
    fast.meta.events.register(GET_RECORDS_EVENT, read_records, unique_id="t")
    plain = clients.session.client(
        "dynamodbstreams", region_name=clients.region, endpoint_url=clients.settings.endpoint_url
    )

    def read_all(client) -> list[tuple[str, object]]:
        pages = []
        for shard in client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            iterator = client.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                response = client.get_records(ShardIterator=iterator)
                if not response["Records"]:
                    break
                pages.append((shard["ShardId"], response["Records"]))
                iterator = response.get("NextShardIterator")
        return pages

    by_c_reader = read_all(fast)
    monkeypatch.setattr(native, "ENABLED", False)
    by_orjson = read_all(fast)
    by_botocore = read_all(plain)
    assert all(isinstance(page, RecordPage) for _, page in by_c_reader)
    records = [r for _, page in by_orjson for r in page]
    assert len(records) == sum(len(p) for _, p in by_botocore) > 40
    first = next(r for r in records if "b" in r["dynamodb"].get("NewImage", {}))
    assert isinstance(first["dynamodb"]["NewImage"]["b"]["B"], str)  # base64, not bytes
    assert isinstance(first["dynamodb"]["ApproximateCreationDateTime"], int | float)
    keys = [("pk", "S"), ("sk", "N")]
    c_rows = pages_to_table(by_c_reader, keys)
    orjson_rows = pages_to_table(by_orjson, keys)
    botocore_rows = pages_to_table(by_botocore, keys)
    assert c_rows.equals(botocore_rows)
    assert orjson_rows.equals(botocore_rows)
