"""GetRecords responses read by the C reader (``dynamo_cdc.convert._native.scan_records``, through the
StreamReader's before-parse handler ``read_records``) give exactly the change rows of the same
records read by orjson, or are refused and read by orjson.

The C reader's rows come from its columns (a :class:`RecordPage`), the others from record dicts
(:func:`records_to_table`, itself pinned against the frozen per-record implementation in
``test_change_rows_fast.py``). A test that says the C reader must take a response checks that
it did.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from cases.tables import first_difference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    FastPathShare,
    as_aws_writes,
    attribute_values,
    byte_edits,
    damaged,
    items,
    number_texts,
    text,
)

from dynamo_cdc.changes import pages_to_table, records_to_table
from dynamo_cdc.convert import (
    _native,  # type: ignore[attr-defined]  # make test needs it built
    native,
)
from dynamo_cdc.errors import CodecError
from dynamo_cdc.stream import RecordPage, StreamBatch, page_summary, read_records

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.stream_records import _response_bodies, generate_records  # noqa: E402

KEYS = [("pk", "S"), ("sk", "S")]
TTL = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}


def _body(records: list[dict[str, Any]], iterator: str | None = "it-2") -> bytes:
    """A GetRecords response as AWS sends it: compact JSON, UTF-8."""
    response: dict[str, Any] = {"Records": records}
    if iterator is not None:
        response["NextShardIterator"] = iterator
    return json.dumps(response, separators=(",", ":"), ensure_ascii=False).encode()


def _record(
    i: int,
    keys: dict[str, Any] | None,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    ddb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1764243345 + i,
        "SequenceNumber": str(10**20 + i),
        "SizeBytes": 100 + i,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if keys is not None:
        ddb["Keys"] = keys
    if new is not None:
        ddb["NewImage"] = new
    if old is not None:
        ddb["OldImage"] = old
    name = "MODIFY" if new and old else "INSERT" if new else "REMOVE"
    record = {
        "awsRegion": "us-east-1",
        "dynamodb": ddb,
        "eventID": f"e{i}",
        "eventName": name,
        "eventSource": "aws:dynamodb",
        "eventVersion": "1.1",
    }
    record.update(extra)
    return record


def _page(body: bytes) -> RecordPage:
    return RecordPage(body, _native.scan_records(body))


def _assert_same_rows(body: bytes, keys: list[tuple[str, str]] = KEYS) -> RecordPage:
    """The C reader takes ``body`` and its rows are those of orjson's records."""
    page = _page(body)
    actual = records_to_table(page, keys, shard_ids="shardId-1")
    expected = records_to_table(orjson.loads(body)["Records"], keys, shard_ids="shardId-1")
    assert actual.schema == expected.schema
    assert actual.equals(expected), first_difference(actual, expected)
    return page


def test_bench_responses_read_by_the_c_reader_give_the_rows_of_orjsons_records() -> None:
    bodies = _response_bodies(generate_records(2500, seed=3), per=1000)
    pages = [_assert_same_rows(body) for body in bodies]
    assert [len(p) for p in pages] == [1000, 1000, 500]
    both = pages_to_table([("s1", pages[0]), ("s2", orjson.loads(bodies[1])["Records"])], KEYS)
    expected = records_to_table(
        [*pages[0], *orjson.loads(bodies[1])["Records"]],
        KEYS,
        shard_ids=["s1"] * 1000 + ["s2"] * 1000,
    )
    assert both.equals(expected), first_difference(both, expected)


def test_a_page_is_the_records_orjson_reads_and_summarises_like_them() -> None:
    body = _response_bodies(generate_records(300, seed=5), per=300)[0]
    page = _page(body)
    records = orjson.loads(body)["Records"]
    assert list(page) == records and page[7] == records[7] and len(page) == 300
    assert page_summary(page) == page_summary(records)
    batch = StreamBatch([("a", page), ("b", records[:2])], checkpoint=None)  # type: ignore[arg-type]
    assert batch.count == 302
    assert batch.records == [*records, *records[:2]]
    assert batch.shard_ids == ["a"] * 300 + ["b"] * 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(items(max_depth=4), items(max_depth=3)), min_size=1, max_size=6))
def test_random_images_as_aws_writes_them_take_the_c_reader(pairs: list[tuple[dict, dict]]) -> None:
    records = []
    for i, (new, old) in enumerate(pairs):
        new = {k: as_aws_writes(v) for k, v in new.items()}
        old = {k: as_aws_writes(v) for k, v in old.items()}
        kind = i % 3
        records.append(
            _record(
                i,
                {"pk": new["pk"]},
                new if kind != 2 else None,
                old if kind != 0 else None,
            )
        )
    _assert_same_rows(_body(records), [("pk", "S")])


def _refused_or_same_rows(body: bytes, keys: list[tuple[str, str]] = KEYS) -> bool:
    """The C reader refuses ``body`` (False) or gives the rows of orjson's records (True)."""
    try:
        page = _page(body)
    except ValueError:
        return False
    actual = records_to_table(page, keys, shard_ids="s")
    expected = records_to_table(orjson.loads(body)["Records"], keys, shard_ids="s")
    assert actual.equals(expected), first_difference(actual, expected)
    return True


# Stated shares of generated responses the C reader takes, about half of the share measured on
# 2026-12-06 (in brackets): images in any number form (0.42), damaged responses (0.07), numbers
# and strings as keys (0.64), any value as an image (0.67). See strategies.FastPathShare.
SHARE_ANY_NUMBER_FORM = 0.2
SHARE_DAMAGED = 0.03
SHARE_KEYS = 0.3
SHARE_ANY_VALUE = 0.3


def test_random_images_in_any_number_form_are_refused_or_read_exactly() -> None:
    """Numbers with exponents or other forms that need the codec: the C reader refuses the
    response (orjson reads it) or gives orjson's rows, and takes a stated share of them."""
    share = FastPathShare("the C reader", SHARE_ANY_NUMBER_FORM)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(items(max_depth=3), min_size=1, max_size=5))
    def case(images: list[dict]) -> None:
        body = _body([_record(i, {"pk": image["pk"]}, image) for i, image in enumerate(images)])
        share.count(took=_refused_or_same_rows(body, [("pk", "S")]))

    case()
    share.check()


def test_json_escapes_in_names_strings_keys_and_sets_are_read_like_orjson() -> None:
    raw = (
        rb'{"Records":[{"eventID":"e\u0031","eventName":"INS\u0045RT","dynamodb":{'
        rb'"ApproximateCreationDateTime":1.7642433451234E9,'
        rb'"Keys":{"p\u006b":{"S":"caf\u00e9 \ud83d\ude00 \/ \" \\ \n \u0000 \u001F"},"sk":{"S":"x"}},'
        rb'"NewImage":{"p\u006b":{"S":"caf\u00e9 \ud83d\ude00 \/ \" \\ \n \u0000 \u001F"},"sk":{"S":"x"},'
        rb'"\"q\u00e9":{"M":{"\u00e9":{"S":"\t"},"z":{"SS":["\u00e9","e","\ud83d\ude00"]},'
        rb'"e":{"N":"1"},"\\":{"L":[{"S":"\ud83d\ude00"},{"NULL":true},{"BOOL":false}]}}},'
        rb'"ss":{"SS":["b\/","a\u0000","\u007f"]},"raw":{"S":"' + "é 😀 \x7f".encode() + rb'"}},'
        rb'"SequenceNumber":"7","SizeBytes":42}}],"NextShardIterator":"it"}'
    )
    page = _assert_same_rows(raw)
    assert page.first_sequence_number == "7" and page.size_bytes == 42


def test_images_in_every_type_and_shape_take_the_c_reader() -> None:
    image = {
        "pk": {"S": "k"},
        "sk": {"S": "s"},
        "n": {"N": "12.50"},
        "zero": {"N": "0.0"},
        "neg": {"N": "-0.000001"},
        "big": {"N": "12345678901234567890123456789012345678"},
        "b": {"B": "AAEC"},
        "empty_b": {"B": ""},
        "t": {"BOOL": True},
        "f": {"BOOL": False},
        "null": {"NULL": True},
        "ss": {"SS": ["b", "a", "é", "Z"]},
        "ns": {"NS": ["10", "9.5", "-1", "0", "-0.25", "1.50", "-3.0", "0.000001"]},
        "bs": {"BS": ["/w==", "AA==", "gA==", "AAE="]},
        "m": {"M": {"z": {"N": "2.0"}, "a": {"L": [{"NS": ["2", "1"]}, {"BS": ["AQ==", "AA=="]}]}}},
        "l": {"L": [{"M": {}}, {"L": []}, {"S": ""}, {"B": "AA=="}, {"N": "100.000"}]},
        "empty_m": {"M": {}},
    }
    records = [
        _record(0, {"pk": image["pk"], "sk": image["sk"]}, image),
        _record(
            1, {"pk": image["pk"], "sk": image["sk"]}, image, {"pk": image["pk"], "x": {"S": "1"}}
        ),
        _record(2, {"pk": image["pk"], "sk": image["sk"]}, None, image, userIdentity=TTL),
        _record(3, {"pk": image["pk"], "sk": image["sk"]}, None, image),
    ]
    _assert_same_rows(_body(records))


@pytest.mark.parametrize(
    ("keys", "key_attributes"),
    [
        ({"id": {"N": "42"}, "at": {"N": "12.50"}}, [("id", "N"), ("at", "N")]),
        ({"id": {"N": "-0.5"}}, [("id", "N")]),
        ({"id": {"B": "AAEC"}, "r": {"B": ""}}, [("id", "B"), ("r", "B")]),
        ({"id": {"S": "x"}}, [("id", "S"), ("missing", "S")]),
        ({"id": {"N": "7"}}, [("id", "S")]),  # a value of another type than the table's key
        ({"event_id": {"S": "collides"}}, [("event_id", "S")]),
        (None, [("id", "S")]),  # no Keys
    ],
    ids=["numbers", "negative", "binary", "absent", "other type", "colliding name", "no keys"],
)
def test_key_columns_of_every_key_type_are_those_of_orjsons_records(
    keys: dict | None, key_attributes: list[tuple[str, str]]
) -> None:
    image = {**(keys or {}), "v": {"S": "1"}}
    _assert_same_rows(
        _body([_record(0, keys, image), _record(1, keys, None, image)]), key_attributes
    )


@pytest.mark.parametrize(
    "when",
    [
        1764243345,
        1764243345.5,
        1764243345.1234567,
        1.7005892e9,
        "1.7005892E9",
        "17005892E2",
        "0",
        "-1.5",
    ],
)
def test_creation_times_in_every_number_form_give_orjsons_microseconds(when: Any) -> None:
    record = _record(0, {"pk": {"S": "a"}, "sk": {"S": "b"}}, {"pk": {"S": "a"}})
    record["dynamodb"]["ApproximateCreationDateTime"] = "@WHEN@"
    body = _body([record]).replace(b'"@WHEN@"', str(when).encode())
    page = _assert_same_rows(body)
    assert (
        page.last_creation_time
        == orjson.loads(body)["Records"][0]["dynamodb"]["ApproximateCreationDateTime"]
    )


@pytest.mark.parametrize(
    "identity",
    [
        TTL,
        {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"},
        {"Type": "Service", "PrincipalId": "someone"},
        {"Type": "User", "PrincipalId": "dynamodb.amazonaws.com"},
        {"Type": "Service"},
        {"Other": [1, {"a": None}], **TTL},
        None,
    ],
)
def test_ttl_deletes_are_told_from_user_identity_as_orjsons_records_tell_them(
    identity: Any,
) -> None:
    key = {"pk": {"S": "a"}, "sk": {"S": "b"}}
    _assert_same_rows(
        _body([_record(0, key, None, key, userIdentity=identity), _record(1, key, key)])
    )


def test_an_empty_response_is_an_empty_page() -> None:
    body = _body([])
    page = _page(body)
    assert len(page) == 0 and list(page) == []
    assert records_to_table(page, KEYS, shard_ids="s").num_rows == 0


_REFUSED = {
    "whitespace": json.dumps(
        {"Records": [_record(0, {"pk": {"S": "a"}}, {"pk": {"S": "a"}})]}
    ).encode(),
    "exponent number": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"N": "1E+2"}})]),
    "leading zeros": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"N": "007"}})]),
    "39 digits": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"N": "1" * 39}})]),
    "number in a set": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"NS": ["1E2"]}})]),
    "non-canonical base64": _body([_record(0, {"pk": {"S": "a"}}, {"b": {"B": "AAE"}})]),
    "NULL false": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"NULL": False}})]),
    "unknown tag": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"X": "1"}})]),
    "two tags": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1", "N": "1"}})]),
    "duplicate attribute": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"n":{"S":"1"}', b'"n":{"S":"1"},"n":{"S":"2"}'
    ),
    "duplicate record key": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"eventID":"e0"', b'"eventID":"e0","eventID":"e9"'
    ),
    "image twice": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"NewImage":', b'"NewImage":{},"NewImage":'
    ),
    "no sequence number": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"SequenceNumber"', b'"Sequence"'
    ),
    "sequence not digits": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"SequenceNumber":"1', b'"SequenceNumber":"x1'
    ),
    "size not an integer": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"SizeBytes":100', b'"SizeBytes":100.5'
    ),
    "time as text": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"ApproximateCreationDateTime":1764243345', b'"ApproximateCreationDateTime":"1764243345"'
    ),
    "no event name": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]).replace(
        b'"eventName"', b'"eventNom"'
    ),
    "lone surrogate": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "@"}})]).replace(
        b"@", rb"\ud800"
    ),
    "invalid UTF-8": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "@"}})]).replace(
        b"@", b"\xff"
    ),
    "bad escape": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "@"}})]).replace(b"@", rb"\q"),
    "trailing text": _body([_record(0, {"pk": {"S": "a"}}, {"n": {"S": "1"}})]) + b"x",
    "no records": b'{"NextShardIterator":"it"}',
    "records not a list": b'{"Records":{}}',
    "not json": b"<html>bad gateway</html>",
}


@pytest.mark.parametrize("body", list(_REFUSED.values()), ids=list(_REFUSED))
def test_responses_the_c_reader_does_not_read_exactly_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        _native.scan_records(body)


@pytest.mark.parametrize(
    "name", ["whitespace", "exponent number", "non-canonical base64", "duplicate attribute"]
)
def test_a_refused_response_is_read_by_orjson_instead(name: str) -> None:
    body = _REFUSED[name]
    response = {"body": body, "headers": {}, "status_code": 200}
    custom: dict = {}
    read_records(response_dict=response, customized_response_dict=custom)
    assert isinstance(custom["Records"], list)
    assert custom["Records"] == orjson.loads(body)["Records"]


def test_the_handler_gives_a_page_and_leaves_the_rest_of_the_response_to_botocore() -> None:
    assert native.ENABLED, "make test runs with the C extension built"
    body = _body([_record(0, {"pk": {"S": "a"}, "sk": {"S": "b"}}, {"pk": {"S": "a"}})], "it-9")
    response = {"body": body, "headers": {}, "status_code": 200}
    custom: dict = {}
    read_records(response_dict=response, customized_response_dict=custom)
    assert isinstance(custom["Records"], RecordPage) and len(custom["Records"]) == 1
    assert json.loads(response["body"]) == {"Records": [], "NextShardIterator": "it-9"}


def test_with_the_c_reader_off_the_handler_gives_orjsons_records(monkeypatch) -> None:
    monkeypatch.setattr(native, "ENABLED", False)
    body = _body([_record(0, {"pk": {"S": "a"}, "sk": {"S": "b"}}, {"pk": {"S": "a"}})])
    response = {"body": body, "headers": {}, "status_code": 200}
    custom: dict = {}
    read_records(response_dict=response, customized_response_dict=custom)
    assert custom["Records"] == orjson.loads(body)["Records"]


_FUZZ_BODY = _body(
    [
        _record(
            0,
            {"pk": {"S": "a"}, "sk": {"S": "é"}},
            {"pk": {"S": "a"}, "m": {"M": {"b": {"N": "1.5"}, "a": {"SS": ["y", "x"]}}}},
        ),
        _record(
            1,
            {"pk": {"S": "b"}, "sk": {"S": "c"}},
            {"pk": {"S": "b"}, "l": {"L": [{"B": "AA=="}, {"NULL": True}]}},
            {"pk": {"S": "b"}},
            userIdentity=TTL,
        ),
    ]
)


def test_damaged_responses_are_refused_or_read_exactly_like_orjson() -> None:
    """Bytes flipped, dropped, inserted or cut anywhere: the C reader refuses the response, or
    reads it exactly as orjson and records_to_table do (and never crashes); it reads a stated
    share of them (edits inside strings leave a valid response)."""
    share = FastPathShare("the C reader", SHARE_DAMAGED)

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(byte_edits)
    def case(edits: list[tuple[int, int, int]]) -> None:
        share.count(took=_damaged_response_case(edits))

    case()
    share.check()


def _damaged_response_case(edits: list[tuple[int, int, int]]) -> bool:
    data = damaged(_FUZZ_BODY, edits)
    try:
        page = _page(data)
    except ValueError:
        return False
    records = orjson.loads(data)["Records"]  # the C reader took only valid JSON
    assert list(page) == records
    actual = records_to_table(page, KEYS, shard_ids="s")
    try:
        expected = records_to_table(records, KEYS, shard_ids="s")
    except (CodecError, KeyError, TypeError, AttributeError, ValueError) as exc:
        pytest.fail(f"the C reader took records the dict path refuses: {exc!r}")
    assert actual.equals(expected), first_difference(actual, expected)
    if len(page):
        assert page_summary(page)[:3] == page_summary(records)[:3]
    return True


def test_numbers_and_strings_as_key_values_give_orjsons_key_columns() -> None:
    share = FastPathShare("the C reader", SHARE_KEYS)

    @settings(max_examples=100, deadline=None)
    @given(number_texts(), text)
    def case(number: str, s: str) -> None:
        keys = {"n": {"N": number}, "s": {"S": s}}
        body = _body([_record(0, keys, keys)])
        share.count(took=_refused_or_same_rows(body, [("n", "N"), ("s", "S")]))

    case()
    share.check()


def test_any_value_as_an_image_is_refused_or_read_exactly() -> None:
    share = FastPathShare("the C reader", SHARE_ANY_VALUE)

    @settings(max_examples=60, deadline=None)
    @given(attribute_values(max_depth=3))
    def case(value: dict) -> None:
        body = _body([_record(0, {"pk": {"S": "a"}, "sk": {"S": "b"}}, {"v": value})])
        share.count(took=_refused_or_same_rows(body))

    case()
    share.check()


def test_threads_reading_responses_at_once_each_get_their_own_columns() -> None:
    """The C reader keeps its buffers per thread between calls: threads never share them."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = _response_bodies(generate_records(1200, seed=11), per=100)
    alone = [records_to_table(_page(b), KEYS, shard_ids="s") for b in bodies]

    def read_all(offset: int) -> list:
        order = bodies[offset:] + bodies[:offset]
        tables = [records_to_table(_page(b), KEYS, shard_ids="s") for b in order]
        return tables[len(bodies) - offset :] + tables[: len(bodies) - offset]

    with ThreadPoolExecutor(4) as pool:
        for tables in pool.map(read_all, range(0, 12, 3)):
            assert all(t.equals(a) for t, a in zip(tables, alone, strict=True))
