"""Conversions anchored in values written by hand, not computed by the codec.

The differential tests (C reader against the reference, record pages against record dicts)
compare our readers with each other and with a
reference that calls the same ``codec`` functions: a codec bug would pass them all. Here each
reader's rows are compared with rows written out by hand from AWS's documented examples (the
export format guide's item, the Streams API reference's GetRecords example, as botocore ships
it in ``dynamodbstreams/2012-08-10/examples-1.json``) and from hand-written lines over the other
types, following the type mapping the README documents.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from dynamo_cdc import convert, schema, snapshot
from dynamo_cdc.convert import native

# The DynamoDB JSON export example of AWS's "DynamoDB table export output format" guide, as one
# line (the guide prints it indented).
AWS_EXPORT_LINE = (
    b'{"Item":{"Authors":{"SS":["Author1","Author2"]},"Dimensions":{"S":"8.5 x 11.0 x 1.5"},'
    b'"ISBN":{"S":"333-3333333333"},"Id":{"N":"103"},"InPublication":{"BOOL":false},'
    b'"PageCount":{"N":"600"},"Price":{"N":"2000"},"ProductCategory":{"S":"Book"},'
    b'"Title":{"S":"Book 103 Title"}}}'
)
# Hand-written: the other types, escapes, a map and a list with numbers not in canonical form.
OTHER_TYPES_LINE = (
    b'{"Item":{"Id":{"N":"104"},"Title":{"S":"caf\\u00e9 \\"quoted\\""},'
    b'"Tags":{"L":[{"S":"a"},{"N":"1.50"},{"NULL":true},{"BOOL":true}]},'
    b'"Meta":{"M":{"z":{"S":"last"},"a":{"N":"-0.250"}}},"Blob":{"B":"AAEC"},'
    b'"Scores":{"NS":["10","-1","2.5"]},"Gone":{"NULL":true},"Authors":{"SS":["Zed","Abe"]}}}'
)

EXPECTED_ROWS = [
    {
        "Id": 103,
        "Authors": ["Author1", "Author2"],
        "Dimensions": "8.5 x 11.0 x 1.5",
        "ISBN": "333-3333333333",
        "InPublication": False,
        "PageCount": 600,
        "Price": 2000,
        "ProductCategory": "Book",
        "Title": "Book 103 Title",
        "Tags": None,
        "Meta": None,
        "Blob": None,
        "Scores": None,
        "Gone": None,
        # JSON exports keep the line's own item text
        "_item": AWS_EXPORT_LINE[len(b'{"Item":') : -1].decode(),
    },
    {
        "Id": 104,
        "Authors": ["Abe", "Zed"],  # sets sorted
        "Dimensions": None,
        "ISBN": None,
        "InPublication": None,
        "PageCount": None,
        "Price": None,
        "ProductCategory": None,
        "Title": 'café "quoted"',
        "Tags": '["a",1.5,null,true]',  # plain JSON: tags dropped, numbers canonical
        "Meta": '{"a":-0.25,"z":"last"}',  # keys sorted
        "Blob": b"\x00\x01\x02",
        "Scores": [Decimal("-1"), Decimal("2.5"), Decimal("10")],  # NS by the N rule, sorted
        "Gone": None,
        "_item": OTHER_TYPES_LINE[len(b'{"Item":') : -1].decode(),
    },
]

# The C reader, the reference a block at a time (as for a block the C reader refuses), the
# reference line by line (as for a file with a damaged line).
READERS = ["native", "reference", "lines"]


def _table(path: Path, reader: str, monkeypatch: pytest.MonkeyPatch) -> pa.Table:
    monkeypatch.setattr(native, "ENABLED", reader == "native")
    if reader == "lines":
        chunks = list(snapshot._reference_chunks(path, "DYNAMODB_JSON", path.name))
    else:
        native.drain(convert.BLOCKS)
        chunks = list(snapshot._block_chunks(path, path.name))
        blocks = native.drain(convert.BLOCKS)
        took = blocks.taken if reader == "native" else blocks.refused
        assert blocks.total and took == blocks.total, "another reader"
    stats = schema.SchemaStats()
    for _, chunk_stats, _ in chunks:
        stats = stats.merge(chunk_stats)
    final = schema.decide_schema(stats, ["Id"])
    return pa.concat_tables(build(final) for _, _, build in chunks)


@pytest.mark.parametrize("reader", READERS)
def test_aws_documented_export_item_and_hand_written_types_give_the_hand_written_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    path = tmp_path / "data.json.gz"
    path.write_bytes(gzip.compress(AWS_EXPORT_LINE + b"\n" + OTHER_TYPES_LINE + b"\n"))
    table = _table(path, reader, monkeypatch)
    assert table.schema.field("Id").type == pa.int64()
    assert table.schema.field("Price").type == pa.int64()
    assert table.schema.field("Blob").type == pa.binary()
    assert table.schema.field("Tags").type == pa.string()
    assert table.schema.field("Authors").type == pa.list_(pa.string())
    rows = table.to_pylist()
    for row, expected in zip(rows, EXPECTED_ROWS, strict=True):
        assert {k: row[k] for k in expected} == expected


# The Ion export example of the same guide (ION format: N as decimal, sets annotated).
AWS_ION_LINE = (
    b'$ion_1_0 {Item:{Authors:$dynamodb_SS::["Author1","Author2"],'
    b'Dimensions:"8.5 x 11.0 x 1.5",ISBN:"333-3333333333",Id:103.,InPublication:false,'
    b'PageCount:6d2,Price:2d3,ProductCategory:"Book",Title:"Book 103 Title"}}'
)


def test_aws_documented_ion_export_item_gives_the_hand_written_row(tmp_path: Path) -> None:
    """The same item as the JSON example: the same typed row; ``_item`` is canonical DynamoDB
    JSON (the AWS example's keys are already sorted, so it is the JSON line's item text)."""
    path = tmp_path / "data.ion.gz"
    path.write_bytes(gzip.compress(AWS_ION_LINE + b"\n"))
    chunks = list(snapshot._reference_chunks(path, "ION", path.name))
    final = schema.decide_schema(chunks[0][1], ["Id"])
    [row] = chunks[0][2](final).to_pylist()
    expected = {k: v for k, v in EXPECTED_ROWS[0].items() if v is not None}
    assert row == expected


# The GetRecords example of the DynamoDB Streams API reference (botocore's examples-1.json), as
# the service sends it: compact JSON, ApproximateCreationDateTime a number.
AWS_GET_RECORDS_BODY = (
    b'{"NextShardIterator":"arn:aws:dynamodb:us-west-2:111122223333:table/Forum/stream/'
    b'2015-05-20T20:51:10.252|1|AAAAAAAAAAGQBYshYDEe","Records":['
    b'{"awsRegion":"us-west-2","dynamodb":{"ApproximateCreationDateTime":1.46480646E9,'
    b'"Keys":{"ForumName":{"S":"DynamoDB"},"Subject":{"S":"DynamoDB Thread 3"}},'
    b'"SequenceNumber":"300000000000000499659","SizeBytes":41,"StreamViewType":"KEYS_ONLY"},'
    b'"eventID":"e2fd9c34eff2d779b297b26f5fef4206","eventName":"INSERT",'
    b'"eventSource":"aws:dynamodb","eventVersion":"1.0"},'
    b'{"awsRegion":"us-west-2","dynamodb":{"ApproximateCreationDateTime":1.46480527E9,'
    b'"Keys":{"ForumName":{"S":"DynamoDB"},"Subject":{"S":"DynamoDB Thread 1"}},'
    b'"SequenceNumber":"400000000000000499660","SizeBytes":41,"StreamViewType":"KEYS_ONLY"},'
    b'"eventID":"4b25bd0da9a181a155114127e4837252","eventName":"MODIFY",'
    b'"eventSource":"aws:dynamodb","eventVersion":"1.0"},'
    b'{"awsRegion":"us-west-2","dynamodb":{"ApproximateCreationDateTime":1.46480646E9,'
    b'"Keys":{"ForumName":{"S":"DynamoDB"},"Subject":{"S":"DynamoDB Thread 2"}},'
    b'"SequenceNumber":"500000000000000499661","SizeBytes":41,"StreamViewType":"KEYS_ONLY"},'
    b'"eventID":"740280c73a3df7842edab3548a1b08ad","eventName":"REMOVE",'
    b'"eventSource":"aws:dynamodb","eventVersion":"1.0"}]}'
)
SHARD = "shardId-00000001414562045508-2bac9cd2"


def _change_row(event_id: str, name: str, seq: str, when: datetime, subject: str) -> dict:
    return {
        "event_id": event_id,
        "event_name": name,
        "sequence_number": seq,
        "shard_id": SHARD,
        "approximate_creation_time": when,
        "ttl_delete": False,
        "source": "stream",
        "ForumName": "DynamoDB",
        "Subject": subject,
        "_keys": '{"ForumName":{"S":"DynamoDB"},"Subject":{"S":"' + subject + '"}}',
        "_new_image": None,  # KEYS_ONLY: no images
        "_old_image": None,
    }


# 1.46480646E9 s after the epoch is 2016-06-01 18:41:00 UTC; 1.46480527E9 is 18:21:10.
EXPECTED_CHANGES = [
    _change_row(
        "e2fd9c34eff2d779b297b26f5fef4206",
        "INSERT",
        "0000000000000000000300000000000000499659",  # padded to 40 digits: sorts as text
        datetime(2016, 6, 1, 18, 41, 0, tzinfo=UTC),
        "DynamoDB Thread 3",
    ),
    _change_row(
        "4b25bd0da9a181a155114127e4837252",
        "MODIFY",
        "0000000000000000000400000000000000499660",
        datetime(2016, 6, 1, 18, 21, 10, tzinfo=UTC),
        "DynamoDB Thread 1",
    ),
    _change_row(
        "740280c73a3df7842edab3548a1b08ad",
        "REMOVE",
        "0000000000000000000500000000000000499661",
        datetime(2016, 6, 1, 18, 41, 0, tzinfo=UTC),
        "DynamoDB Thread 2",
    ),
]
KEYS = (("ForumName", "S"), ("Subject", "S"))


@pytest.mark.parametrize("path", ["response C reader", "dicts C walker", "dicts reference"])
def test_aws_documented_get_records_example_gives_the_hand_written_change_rows(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    import orjson

    from dynamo_cdc.stream import RecordPage

    if path == "response C reader":
        if native.module is None:
            pytest.skip("the C extension is not built")
        records: object = RecordPage(
            AWS_GET_RECORDS_BODY, native.module.scan_records(AWS_GET_RECORDS_BODY)
        )
    else:
        monkeypatch.setattr(native, "ENABLED", path == "dicts C walker")
        records = orjson.loads(AWS_GET_RECORDS_BODY)["Records"]
        if path == "dicts C walker":
            if native.module is None:
                pytest.skip("the C extension is not built")
            native.module.scan_record_dicts(records)  # it takes them (no fallback hides it)
    table = convert.records_to_table(records, KEYS, shard_ids=SHARD)  # type: ignore[arg-type]
    assert table.to_pylist() == EXPECTED_CHANGES
