"""Lists of record dicts read by the C extension (``dynamo_cdc.convert._native.scan_record_dicts``,
through :func:`records_to_table`) give exactly the change rows of the Python path (the C
extension off), or are refused and converted by the Python path.

Both record shapes are covered: boto3's (binary values ``bytes``, ``ApproximateCreationDateTime``
a datetime) and orjson's (binary values base64 text, the time epoch seconds). The Python path is
itself pinned against the frozen per-record implementation in ``test_change_rows_fast.py``. A test
that says the C path must take the records checks that it did (``python_path`` counts the chunks
the Python path converts).
"""

from __future__ import annotations

import base64
import io
import math
import random
import sys
import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cases.tables import first_difference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    FastPathShare,
    as_aws_writes,
    attribute_names,
    items,
    number_texts,
    text,
)

from dynamo_cdc import changefiles, changes
from dynamo_cdc.changes import _micros, pages_to_table, records_to_table
from dynamo_cdc.convert import (
    _native,  # type: ignore[attr-defined]  # make test needs it built
    native,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.stream_records import (  # noqa: E402
    KEY_ATTRIBUTES,
    SHARD_ID,
    _response_bodies,
    generate_records,
)

KEYS_SN = [("pk", "S"), ("sk", "N")]
TTL = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
T0 = datetime(2024, 3, 1, 10, 59, 59, 123456, tzinfo=UTC)


@pytest.fixture
def python_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the chunks of records the Python path converts (0: the C path took them all)."""
    assert native.ENABLED, "these tests need the C extension built"
    count = [0]
    chunk_columns = changes._chunk_columns

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return chunk_columns(*args, **kwargs)

    monkeypatch.setattr(changes, "_chunk_columns", counting)
    return count


def _python_rows(records: list[dict], keys: Any, **options: Any) -> pa.Table:
    was = native.ENABLED
    native.ENABLED = False
    try:
        return records_to_table(records, keys, **options)
    finally:
        native.ENABLED = was


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def assert_same_rows(
    records: list[dict],
    keys: Any = KEYS_SN,
    *,
    python_path: list[int] | None = None,
    **options: Any,
) -> pa.Table:
    """records_to_table gives the Python path's rows (schema, values, Parquet bytes); with
    ``python_path``, without taking the Python path."""
    expected = _python_rows(records, keys, **options)
    before = python_path[0] if python_path else 0
    actual = records_to_table(records, keys, **options)
    if python_path:
        assert python_path[0] == before, "the records went to the Python path"
    actual.validate(full=True)
    assert actual.schema == expected.schema
    assert actual.equals(expected), first_difference(actual, expected)
    assert _parquet(actual) == _parquet(expected)
    assert changefiles.parquet_bytes(actual) == changefiles.parquet_bytes(expected)
    return actual


def assert_taken(records: list[dict], python_path: list[int], keys: Any = KEYS_SN, **opts: Any):
    """The C path takes the records, and gives the Python path's rows."""
    _native.scan_record_dicts(records)  # raises ValueError (with the reason) if refused
    return assert_same_rows(records, keys, python_path=python_path, **opts)


def assert_refused(records: list[dict], python_path: list[int], keys: Any = KEYS_SN) -> None:
    """The C path refuses the records; records_to_table gives the Python path's rows, or raises
    what the Python path raises."""
    with pytest.raises(ValueError):
        _native.scan_record_dicts(records)
    try:
        expected = _python_rows(records, keys)
    except Exception as exc:  # whatever the Python path raises, the same
        with pytest.raises(type(exc)):
            records_to_table(records, keys)
        return
    before = python_path[0]
    actual = records_to_table(records, keys)
    assert python_path[0] > before
    assert actual.equals(expected), first_difference(actual, expected)


def _record(
    i: int,
    keys: dict | None = None,
    new: dict | None = None,
    old: dict | None = None,
    *,
    when: Any = T0,
    seq: Any = "default",
    ident: Any = None,
    event: str | None = None,
) -> dict:
    ddb: dict[str, Any] = {"ApproximateCreationDateTime": when, "SizeBytes": 10}
    if keys is not None:
        ddb["Keys"] = keys
    if seq == "default":
        ddb["SequenceNumber"] = str(10**20 + i)
    elif seq is not None:
        ddb["SequenceNumber"] = seq
    if new is not None:
        ddb["NewImage"] = new
    if old is not None:
        ddb["OldImage"] = old
    record: dict[str, Any] = {
        "eventID": f"ev-{i}",
        "eventName": event or ("MODIFY" if new and old else "INSERT" if new else "REMOVE"),
        "eventVersion": "1.1",
        "dynamodb": ddb,
    }
    if ident is not None:
        record["userIdentity"] = ident
    return record


def _orjson_shape(records: list[dict]) -> list[dict]:
    """The records as the StreamReader's handler leaves them when orjson reads the response:
    binary as base64 text, times as epoch seconds."""
    return [r for body in _response_bodies(records, per=500) for r in orjson.loads(body)["Records"]]


# -- the bench's records -------------------------------------------------------------------------


def test_the_bench_records_take_the_c_path_and_give_the_python_paths_rows(
    python_path: list[int],
) -> None:
    records = generate_records(2500, seed=5)
    assert_taken(records, python_path, KEY_ATTRIBUTES, shard_ids=SHARD_ID)


def test_the_bench_records_in_orjsons_shape_take_the_c_path(python_path: list[int]) -> None:
    records = _orjson_shape(generate_records(1200, seed=6))
    assert isinstance(records[0]["dynamodb"]["ApproximateCreationDateTime"], int | float)
    assert_taken(records, python_path, KEY_ATTRIBUTES, shard_ids=SHARD_ID)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"shard_ids": None, "source": "export"},
        {"shard_ids": "per-record"},
    ],
)
def test_shards_and_sources_are_those_of_the_python_path(
    options: dict, python_path: list[int]
) -> None:
    records = generate_records(300, seed=7)
    if options.get("shard_ids") == "per-record":
        options = {"shard_ids": [None if i % 5 == 0 else f"s{i % 3}" for i in range(300)]}
    assert_taken(records, python_path, KEY_ATTRIBUTES, **options)


def test_pages_of_record_dicts_take_the_c_path(python_path: list[int]) -> None:
    records = generate_records(600, seed=8)
    pages = [("s1", records[:250]), ("s2", _orjson_shape(records[250:]))]
    table = pages_to_table(pages, KEY_ATTRIBUTES)
    assert python_path == [0]
    expected = _python_rows(
        [*records[:250], *_orjson_shape(records[250:])],
        KEY_ATTRIBUTES,
        shard_ids=["s1"] * 250 + ["s2"] * 350,
    )
    assert table.combine_chunks().equals(expected.combine_chunks())


@pytest.mark.parametrize("n", [1, 7, 2049])
def test_any_number_of_records(n: int, python_path: list[int]) -> None:
    assert_taken(generate_records(n, seed=n), python_path, KEY_ATTRIBUTES, shard_ids="s")


def test_an_empty_list_is_an_empty_table() -> None:
    assert records_to_table([], KEYS_SN).equals(_python_rows([], KEYS_SN))


# -- values of every type and shape --------------------------------------------------------------

_IMAGE = {
    "pk": {"S": "k"},
    "sk": {"N": "12.50"},
    "zero": {"N": "0.0"},
    "neg": {"N": "-0.000001"},
    "big": {"N": "12345678901234567890123456789012345678"},
    "wide": {"N": "1" + "0" * 38},
    "b": {"B": b"\x00\xff\x10"},
    "b_text": {"B": "AAEC"},
    "b_array": {"B": bytearray(b"hi")},
    "empty_b": {"B": b""},
    "t": {"BOOL": True},
    "f": {"BOOL": False},
    "null": {"NULL": True},
    "ss": {"SS": ["b", "a", "é", "Z", "\U0001f600", 'q"', "\\", "\n", "a"]},
    "ns": {"NS": ["10", "9.5", "-1", "0", "-0.25", "1.50", "-3.0", "0.000001", "1"]},
    "bs": {"BS": [b"\xff", b"\x00", b"\x80", b"\x00\x01", b""]},
    "bs_text": {"BS": ["/w==", "AA==", "gA==", "AAE="]},
    "m": {
        "M": {
            "z": {"N": "2.0"},
            "N": {"N": "1.50"},
            "SS": {"SS": ["y", "x"]},
            "a": {"L": [{"NS": ["2", "1"]}, {"BS": [b"\x01", b"\x00"]}, {"M": {}}]},
        }
    },
    "l": {"L": [{"M": {}}, {"L": []}, {"S": ""}, {"B": b"\x00"}, {"N": "100.000"}]},
    "empty_m": {"M": {}},
    "empty_l": {"L": []},
    "empty_sets": {"M": {"ss": {"SS": []}, "ns": {"NS": []}, "bs": {"BS": []}}},
    "ctl": {"S": '\x00\x01\x1f\x7f tab\t \u2028 \ufeff 日本語 \\ " /'},
    "s": {"S": '{"N":"1.50"} "SS":["b","a"] \\'},
    "deep": {"M": {"a": {"M": {"b": {"M": {"c": {"L": [{"L": [{"S": "x"}]}]}}}}}}},
    "": {"S": ""},  # no DynamoDB name, but a dict key like any other
}


def test_images_of_every_type_and_shape_take_the_c_path(python_path: list[int]) -> None:
    keys = {"pk": _IMAGE["pk"], "sk": _IMAGE["sk"]}
    records = [
        _record(0, keys, _IMAGE),
        _record(1, keys, _IMAGE, {"pk": {"S": "k"}, "x": {"S": "1"}}),
        _record(2, keys, None, _IMAGE, ident=TTL),
        _record(3, keys, None, _IMAGE),
        _record(4, keys, {}, {}),
        _record(5),  # no Keys, no images
        _record(6, {}, None, None, seq=None),  # empty Keys, no sequence number
    ]
    assert_taken(records, python_path)


def test_keys_that_need_escaping_sort_and_escape_as_orjson_writes_them(
    python_path: list[int],
) -> None:
    image = {
        name: {"S": name}
        for name in ['"q', "\\", "\n", "\x00", "a\x1fb", "é", "\U0001f600", "z", "Z", " ", "~"]
    }
    records = [_record(i, {"pk": {"S": "a"}}, image, {"m": {"M": image}}) for i in range(3)]
    assert_taken(records, python_path)


def test_maps_with_the_same_keys_in_other_orders_each_sort_their_keys(
    python_path: list[int],
) -> None:
    """The C path remembers a map's key order by its keys' objects: other orders, other sets."""
    names = [f"k{i}" for i in range(12)]
    rng = random.Random(3)
    records = []
    for i in range(60):
        order = names[: rng.randrange(1, 12)]
        rng.shuffle(order)
        image = {n: {"N": str(j)} for j, n in enumerate(order)}
        image["m"] = {"M": {n: {"S": n} for n in reversed(order)}}
        records.append(_record(i, {"pk": {"S": "a"}, "sk": {"N": "1"}}, image))
    assert_taken(records, python_path)


def test_maps_of_more_keys_than_the_c_path_remembers(python_path: list[int]) -> None:
    image = {f"a{i:03d}": {"N": str(i)} for i in range(150, 0, -1)}
    records = [_record(i, {"pk": {"S": "a"}}, image, {"m": {"M": image}}) for i in range(3)]
    assert_taken(records, python_path)


def test_str_subclasses_are_read_as_their_text(python_path: list[int]) -> None:
    class Text(str):
        def __str__(self) -> str:
            return "not this"

    image = {
        "pk": {"S": Text("k")},
        "sk": {"N": Text("1.50")},
        "ss": {"SS": [Text("b"), "a"]},
        "ns": {"NS": [Text("2"), "1"]},
        "b": {"B": Text("AAEC")},
    }
    record = _record(0, {"pk": {"S": Text("k")}, "sk": {"N": Text("1.50")}}, image)
    record["eventID"] = Text("id")
    record["dynamodb"]["SequenceNumber"] = Text("123")
    assert_taken([record], python_path)


@pytest.mark.parametrize(
    ("keys", "key_attributes"),
    [
        ({"id": {"N": "42"}, "at": {"N": "12.50"}}, [("id", "N"), ("at", "N")]),
        ({"id": {"N": "-0.5"}}, [("id", "N")]),
        ({"id": {"B": b"\x00\x01"}, "r": {"B": b""}}, [("id", "B"), ("r", "B")]),
        ({"id": {"B": "AAEC"}}, [("id", "B")]),
        ({"id": {"S": 'x\n"é'}}, [("id", "S"), ("missing", "S")]),
        ({"id": {"N": "7"}}, [("id", "S")]),  # a value of another type than the table's key
        ({"event_id": {"S": "collides"}}, [("event_id", "S")]),
        (None, [("id", "S")]),  # no Keys
    ],
    ids=[
        "numbers",
        "negative",
        "binary",
        "binary text",
        "escapes",
        "other type",
        "colliding name",
        "no keys",
    ],
)
def test_key_columns_of_every_key_type(
    keys: dict | None, key_attributes: list, python_path: list[int]
) -> None:
    image = {**(keys or {}), "v": {"S": "1"}}
    assert_taken(
        [_record(0, keys, image), _record(1, keys, None, image)], python_path, key_attributes
    )


@pytest.mark.parametrize(
    "identity",
    [
        TTL,
        {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"},
        {"Type": "Service", "PrincipalId": "someone"},
        {"Type": "User", "PrincipalId": "dynamodb.amazonaws.com"},
        {"Type": "Service"},
        {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        {"Type": None, "PrincipalId": None},
        {},
        None,
    ],
)
def test_ttl_deletes_are_told_as_the_python_path_tells_them(
    identity: Any, python_path: list[int]
) -> None:
    key = {"pk": {"S": "a"}, "sk": {"N": "1"}}
    records = [_record(0, key, None, key, ident=identity), _record(1, key, key)]
    assert_taken(records, python_path)


@pytest.mark.parametrize(
    "seq", ["0", "7", "12345678901234567890123456789", "9" * 40, None], ids=str
)
def test_sequence_numbers_are_padded_as_the_python_path_pads_them(
    seq: Any, python_path: list[int]
) -> None:
    assert_taken([_record(0, {"pk": {"S": "a"}}, seq=seq), _record(1)], python_path)


# -- creation times ------------------------------------------------------------------------------

_WHENS: list[Any] = [
    T0,
    datetime(2024, 3, 1, 10, 59, 59, 999999),  # naive: UTC
    datetime(1969, 12, 31, 23, 59, 59, 500000),
    datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2200, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 3, 1, 15, 0, 0, 1, tzinfo=timezone(timedelta(hours=5))),
    datetime(2024, 3, 1, 15, 0, 0, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30), "X")),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1, seconds=17))),
    datetime(1850, 1, 1, tzinfo=ZoneInfo("Europe/Berlin")),  # LMT: +0:53:28
    datetime(2024, 10, 27, 2, 30, fold=0, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2024, 3, 31, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),  # in the gap
    datetime(1950, 6, 1, 12, tzinfo=ZoneInfo("America/New_York")),
    1709290799,
    -1,
    0,
    1709290799.123456,
    1709290799.9999995,
    1234567890.1234565,
    -0.0000005,
    1e9 + 0.5e-6,
    2**36,
    9.2e10,
]


def test_creation_times_give_the_python_paths_microseconds(python_path: list[int]) -> None:
    records = [_record(i, {"pk": {"S": "a"}}, when=w) for i, w in enumerate(_WHENS)]
    table = assert_taken(records, python_path)
    micros = table.column("approximate_creation_time").cast(pa.int64()).to_pylist()
    assert micros == [_micros(w) for w in _WHENS]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.datetimes(
                min_value=datetime(1700, 1, 1),
                max_value=datetime(2250, 1, 1),
                timezones=st.one_of(
                    st.none(),
                    st.just(UTC),
                    st.builds(
                        timezone,
                        st.timedeltas(
                            min_value=timedelta(hours=-23, minutes=-59),
                            max_value=timedelta(hours=23, minutes=59),
                        ).map(lambda d: d - timedelta(microseconds=d.microseconds)),
                    ),
                    st.sampled_from(
                        [ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Kolkata"), ZoneInfo("UTC")]
                    ),
                ),
                allow_imaginary=True,
            ),
            st.floats(-1e10, 1e10, allow_nan=False),
            st.integers(-(10**10), 10**10),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_random_creation_times_give_the_python_paths_microseconds(whens: list[Any]) -> None:
    records = [_record(i, {"pk": {"S": "a"}}, when=w) for i, w in enumerate(whens)]
    columns = _native.scan_record_dicts(records)
    micros = memoryview(columns["micros"]).cast("q").tolist()
    assert micros == [_micros(w) for w in whens]
    assert_same_rows(records)


# -- random records ------------------------------------------------------------------------------


def _to_bytes(av: dict) -> dict:
    """strategies' values (binary as base64 text) -> boto3's (binary as bytes)."""
    ((tag, value),) = av.items()
    if tag == "B":
        return {"B": base64.b64decode(value)}
    if tag == "BS":
        return {"BS": [base64.b64decode(v) for v in value]}
    if tag == "M":
        return {"M": {k: _to_bytes(v) for k, v in value.items()}}
    if tag == "L":
        return {"L": [_to_bytes(v) for v in value]}
    return av


_whens = st.one_of(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-7))]),
    ),
    st.floats(-1e10, 1e10, allow_nan=False),
    st.integers(-(10**10), 10**10),
)
_identities = st.sampled_from([None, TTL, {"Type": "Service", "PrincipalId": "x"}, {}])


@st.composite
def record_lists(draw: st.DrawFn, canonical: bool) -> list[dict]:
    """Records in boto3's or orjson's shape (both in one list), with random images; with
    ``canonical`` their numbers as DynamoDB writes them (the C path takes those)."""
    out = []
    shared = st.sampled_from(["pk", "a", "N", "SS", "M", "é"])
    for i in range(draw(st.integers(1, 6))):
        as_bytes = draw(st.booleans())
        sk = draw(number_texts())
        keys = {"pk": {"S": draw(text)}, "sk": {"N": sk}}
        images: list[dict | None] = []
        for _ in range(2):
            if draw(st.integers(0, 3)) == 0:
                images.append(None)
                continue
            item = draw(
                items(max_depth=4, max_attributes=5, names=st.one_of(shared, attribute_names))
            )
            image = {**item, **keys}
            if canonical:
                image = {k: as_aws_writes(v) for k, v in image.items()}
            if as_bytes:
                image = {k: _to_bytes(v) for k, v in image.items()}
            images.append(image)
        record_keys = {k: as_aws_writes(v) for k, v in keys.items()} if canonical else keys
        out.append(
            _record(
                i,
                record_keys,
                images[0],
                images[1],
                when=draw(_whens),
                seq=draw(st.sampled_from(["default", None, "0", "1234567890123"])),
                ident=draw(_identities),
            )
        )
    return out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_lists(canonical=True), st.sampled_from([None, "s-1", "list"]))
def test_random_records_as_aws_writes_them_take_the_c_path(records: list[dict], shard: Any) -> None:
    shard_ids = [f"s{i % 2}" for i in range(len(records))] if shard == "list" else shard
    _native.scan_record_dicts(records)
    assert_same_rows(records, shard_ids=shard_ids)


def _refused_or_same_rows(records: list[dict]) -> bool:
    """records_to_table gives the Python path's rows (or raises its error); True when the C
    walker took the records."""
    try:
        expected = _python_rows(records, KEYS_SN)
    except Exception as exc:  # the codec's error for a number it does not take: the same
        with pytest.raises(type(exc)):
            records_to_table(records, KEYS_SN)
        return False
    try:
        _native.scan_record_dicts(records)
    except ValueError:
        took = False  # refused: records_to_table takes the Python path
    else:
        took = True
    actual = records_to_table(records, KEYS_SN)
    assert actual.equals(expected), first_difference(actual, expected)
    return took


# Stated shares of generated record lists the C walker takes, at most about half of the share
# measured on 2026-12-06 (in brackets): records in any number form (0.10), numbers and strings
# as keys (0.20). See strategies.FastPathShare.
SHARE_ANY_NUMBER_FORM = 0.03
SHARE_KEYS = 0.1


def test_random_records_in_any_number_form_are_refused_or_read_exactly() -> None:
    share = FastPathShare("the C walker", SHARE_ANY_NUMBER_FORM)

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(record_lists(canonical=False))
    def case(records: list[dict]) -> None:
        share.count(took=_refused_or_same_rows(records))

    case()
    share.check()


def test_numbers_and_strings_as_key_values() -> None:
    share = FastPathShare("the C walker", SHARE_KEYS)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(number_texts(), text), min_size=1, max_size=5))
    def case(pairs: list[tuple[str, str]]) -> None:
        records = [
            _record(i, {"pk": {"S": s}, "sk": {"N": n}}, {"pk": {"S": s}, "sk": {"N": n}})
            for i, (n, s) in enumerate(pairs)
        ]
        share.count(took=_refused_or_same_rows(records))

    case()
    share.check()


# -- what the C path refuses ---------------------------------------------------------------------


class _Hour(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class _Moment(datetime):
    pass


def _deep(depth: int) -> dict:
    value: dict = {"S": "x"}
    for _ in range(depth):
        value = {"M": {"a": value}}
    return value


_OK_KEYS = {"pk": {"S": "a"}, "sk": {"N": "1"}}


def _with_image(**values: Any) -> list[dict]:
    return [_record(0, _OK_KEYS, {**_OK_KEYS, **values}), _record(1, _OK_KEYS, _OK_KEYS)]


def _with_record(**changes_: Any) -> list[dict]:
    record = _record(0, _OK_KEYS, _OK_KEYS)
    for path, value in changes_.items():
        where = record["dynamodb"] if path.startswith("ddb_") else record
        name = path.removeprefix("ddb_")
        if value is _DELETE:
            del where[name]
        else:
            where[name] = value
    return [_record(1, _OK_KEYS, _OK_KEYS), record]


_DELETE = object()

_REFUSED: dict[str, list[dict]] = {
    "Decimal number": _with_image(n={"N": Decimal("1.50")}),
    "int number": _with_image(n={"N": 2**70}),
    "exponent number": _with_image(n={"N": "1E+2"}),
    "leading zeros": _with_image(n={"N": "007"}),
    "plus sign": _with_image(n={"N": "+5"}),
    "negative zero": _with_image(n={"N": "-0"}),
    "39 significant digits": _with_image(n={"N": "1" * 39}),
    "invalid number": _with_image(n={"N": "1.2.3"}),
    "exponent in a set": _with_image(n={"NS": ["1E2", "3"]}),
    "non-canonical base64": _with_image(b={"B": "AAE"}),
    "invalid base64 in a set": _with_image(b={"BS": ["!!", "AA=="]}),
    "memoryview binary": _with_image(b={"B": memoryview(b"hi")}),
    "NULL false": _with_image(n={"NULL": False}),
    "BOOL not a bool": _with_image(n={"BOOL": 1}),
    "unknown tag": _with_image(n={"X": "1"}),
    "two tags": _with_image(n={"S": "1", "N": "1"}),
    "no tag": _with_image(n={}),
    "value not a dict": _with_image(n="plain"),
    "set as a Python set": _with_image(n={"SS": {"b", "a"}}),
    "set of numbers": _with_image(n={"SS": [1, 2]}),
    "list subclass": _with_image(n={"L": type("Items", (list,), {})([{"S": "x"}])}),
    "dict subclass": _with_image(n={"M": OrderedDict(a={"S": "x"})}),
    "int map key": _with_image(n={"M": {1: {"S": "x"}}}),
    "lone surrogate": _with_image(n={"S": "a\ud800"}),
    "lone surrogate in a key": _with_image(**{"a\udc00": {"S": "x"}}),
    "nesting too deep": _with_image(n=_deep(70)),
    "Decimal time": _with_record(ddb_ApproximateCreationDateTime=Decimal("1709290799.5")),
    "time as text": _with_record(ddb_ApproximateCreationDateTime="1709290799"),
    "bool time": _with_record(ddb_ApproximateCreationDateTime=True),
    "NaN time": _with_record(ddb_ApproximateCreationDateTime=math.nan),
    "time past 1e11 s": _with_record(ddb_ApproximateCreationDateTime=2**40),
    "huge time": _with_record(ddb_ApproximateCreationDateTime=1e300),
    "huge int time": _with_record(ddb_ApproximateCreationDateTime=10**400),
    "datetime subclass": _with_record(ddb_ApproximateCreationDateTime=_Moment(2024, 1, 1)),
    # Arrow (the Python path's conversion) drops the microseconds of an offset; _micros does not
    "offset with microseconds": _with_record(
        ddb_ApproximateCreationDateTime=datetime(2024, 1, 1, tzinfo=timezone(timedelta(0, 1, 7)))
    ),
    "exotic tzinfo": _with_record(
        ddb_ApproximateCreationDateTime=datetime(2024, 1, 1, tzinfo=_Hour())
    ),
    "year 9999": _with_record(ddb_ApproximateCreationDateTime=datetime(9999, 12, 31, tzinfo=UTC)),
    "year 1": _with_record(ddb_ApproximateCreationDateTime=datetime(1, 1, 1)),
    "no time": _with_record(ddb_ApproximateCreationDateTime=_DELETE),
    "sequence not digits": _with_record(ddb_SequenceNumber="-5"),
    "empty sequence": _with_record(ddb_SequenceNumber=""),
    "41 digits": _with_record(ddb_SequenceNumber="1" * 41),
    "sequence as an int": _with_record(ddb_SequenceNumber=12),
    "no event id": _with_record(eventID=_DELETE),
    "event id None": _with_record(eventID=None),
    "event name as bytes": _with_record(eventName=b"INSERT"),
    "no dynamodb": _with_record(dynamodb=_DELETE),
    "identity not a dict": _with_record(userIdentity="service"),
    "identity type not text": _with_record(userIdentity={"Type": 1, "PrincipalId": "x"}),
    "image not a dict": _with_record(ddb_NewImage=[{"S": "x"}]),
    "image a dict subclass": _with_record(ddb_NewImage=OrderedDict(pk={"S": "a"})),
}


@pytest.mark.parametrize("records", list(_REFUSED.values()), ids=list(_REFUSED))
def test_what_the_c_path_does_not_render_exactly_is_refused_and_converted_by_the_python_path(
    records: list[dict], python_path: list[int]
) -> None:
    assert_refused(records, python_path)


def test_records_that_are_not_a_list_of_dicts_are_refused(python_path: list[int]) -> None:
    with pytest.raises(ValueError):
        _native.scan_record_dicts(tuple(generate_records(2)))
    assert_refused([*generate_records(2), "not a record"], python_path, KEY_ATTRIBUTES)
    records = generate_records(3)
    assert records_to_table(iter(records), KEY_ATTRIBUTES).equals(
        _python_rows(records, KEY_ATTRIBUTES)
    )


# -- references, threads -------------------------------------------------------------------------


def test_no_reference_is_kept_or_lost_whether_taken_or_refused() -> None:
    name, value, tag = "".join(["na", "me"]), "".join(["va", "lue"]), "".join("S")
    records = [_record(i, {"pk": {"S": "a"}}, {name: {tag: value}}) for i in range(50)]
    when = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    records[3]["dynamodb"]["ApproximateCreationDateTime"] = when
    objects = [name, value, tag, when, when.tzinfo, records[0], records[0]["dynamodb"]]
    before = [sys.getrefcount(o) for o in objects]
    for _ in range(3):
        _native.scan_record_dicts(records)
    assert [sys.getrefcount(o) for o in objects] == before
    good = records[40]["dynamodb"]["NewImage"][name]
    records[40]["dynamodb"]["NewImage"][name] = {tag: value, "N": "1"}  # refused at record 40
    for _ in range(3):
        with pytest.raises(ValueError):
            _native.scan_record_dicts(records)
    records[40]["dynamodb"]["NewImage"][name] = good
    assert [sys.getrefcount(o) for o in objects] == before
    assert_same_rows(records)  # a refusal leaves nothing behind for the next call


def test_threads_converting_at_once_each_get_their_own_rows() -> None:
    lists = [generate_records(400, seed=s) for s in range(4)]
    lists += [_orjson_shape(records) for records in lists[:2]]
    alone = [records_to_table(r, KEY_ATTRIBUTES, shard_ids="s") for r in lists]
    failures: list[str] = []

    def convert(k: int) -> None:
        for j in range(6):
            i = (k + j) % len(lists)
            table = records_to_table(lists[i], KEY_ATTRIBUTES, shard_ids="s")
            if not table.equals(alone[i]):
                failures.append(f"thread {k} list {i}")

    threads = [threading.Thread(target=convert, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_big_lists_hand_their_buffers_over_and_reuse_the_memory() -> None:
    """Buffers over the copy threshold are handed to Arrow as they are (no copy) and their
    memory is reused by the next call: the rows stay right after the first table is freed."""
    records = generate_records(3000, seed=9)
    expected = _python_rows(records, KEY_ATTRIBUTES)
    first = records_to_table(records, KEY_ATTRIBUTES)
    assert first.equals(expected)
    del first
    second = records_to_table(records, KEY_ATTRIBUTES)
    third = records_to_table(records, KEY_ATTRIBUTES)
    assert second.equals(expected) and third.equals(expected)
