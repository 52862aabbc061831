"""Export blocks: the native reader (the C reader, dynamo_cdc/convert/native_items.py) gives
exactly the reference's statistics and table (dynamo_cdc/convert/items.py), or refuses the block;
and the contract (``convert.read_block``) gives the reference's result or error either way.

A test that says the native reader must take a block checks that it took it, not the reference.
"""

from __future__ import annotations

import base64
import functools
import gzip
import logging
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.generate import generate_export, generate_items
from dynamo_cdc import codec, convert, schema, snapshot
from dynamo_cdc.convert import items as reference
from dynamo_cdc.convert import native, native_items
from dynamo_cdc.errors import CodecError
from dynamo_cdc.export import DataFile, iter_blocks
from tests.cases.all_types import ALL_TYPES_ITEMS, KEY_ATTRIBUTES, large_item
from tests.cases.tables import first_difference
from tests.unit.strategies import (
    FastPathShare,
    as_aws_writes,
    byte_edits,
    damaged,
    number_texts,
)
from tests.unit.strategies import items as random_items

# Stated shares of generated cases the C reader takes, about half of the share measured on
# 2026-12-06 (in brackets): random items (0.61), items sharing attributes of changing types
# (0.79), damaged blocks (0.13).
SHARE_RANDOM = 0.3
SHARE_CHANGING = 0.4
SHARE_DAMAGED = 0.06


def _line(item: dict) -> bytes:
    return b'{"Item":' + orjson.dumps(item) + b"}"


def _block(items: list[dict]) -> bytes:
    return b"\n".join(map(_line, items))


def _outcome(read, block: bytes, keys: list[str]) -> tuple[str, object]:
    """("table", (stats, table)) of a block read by ``read``, its schema decided from its own
    statistics, or ("error", (type, message))."""
    try:
        chunk = read(block)
        stats = chunk.stats()
        return "table", (stats, chunk.table(schema.decide_schema(stats, keys)))
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return "error", (type(exc), str(exc))


def _assert_same_outcome(block: bytes, keys: list[str]) -> None:
    """The contract gives the reference's result, or the reference's error."""
    expected = _outcome(reference.ItemsChunk.of_block, block, keys)
    actual = _outcome(convert.read_block, block, keys)
    assert actual[0] == expected[0], (actual, expected)
    if expected[0] == "error":
        assert actual[1] == expected[1]
    else:
        (a_stats, a_table), (e_stats, e_table) = actual[1], expected[1]
        assert a_stats == e_stats
        assert a_table.equals(e_table), first_difference(a_table, e_table)


def _assert_same(
    items: list[dict], keys: list[str], chunk: int | None = None, *, must_take: bool = True
) -> bool:
    """Native and reference agree on the statistics and table of every chunk of ``items``, as
    blocks of export lines; True when the C reader took every chunk (``must_take``: it has
    to). Every chunk's table is built for the schema of all the chunks' statistics."""
    chunk = chunk or max(1, len(items))
    blocks = [_block(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    refs = [reference.ItemsChunk.of_block(b) for b in blocks]
    stats = schema.SchemaStats()
    for ref in refs:
        stats = stats.merge(ref.stats())
    final = schema.decide_schema(stats, keys)
    took = True
    for block, ref in zip(blocks, refs, strict=True):
        try:
            chunk_ = native_items.read_block(block)
            chunk_stats = chunk_.stats()
            actual = chunk_.table(final)
        except native_items.Unsupported:
            if must_take:
                raise
            took = False
        else:
            assert chunk_stats == ref.stats()
            expected = ref.table(final)
            assert actual.schema.equals(expected.schema, check_metadata=True)
            assert actual.equals(expected), first_difference(actual, expected)
        table = convert.read_block(block).table(final)  # the contract: the reference table
        assert table.equals(ref.table(final))
    return took


# --------------------------------------------------------------------------------------------
# Bench items, all-types cases, hand-written shapes


def test_bench_items_take_the_native_reader_and_give_the_reference_table() -> None:
    items = list(generate_items(3000, seed=11))
    _assert_same(items, ["pk", "sk"])
    _assert_same(items, ["pk", "sk"], chunk=700)


def test_bench_items_with_a_number_sort_key_give_the_reference_table() -> None:
    _assert_same(list(generate_items(500, seed=5, sk_type="N")), ["pk", "sk"], chunk=128)


def test_all_types_items_give_the_reference_table() -> None:
    # A number set with an exponent ("1E+2") inside a map: the C reader refuses such a block
    # (chunk=1: every other item's block is the C reader's).
    exponent = [i for i, item in enumerate(ALL_TYPES_ITEMS) if b"E+" in orjson.dumps(item)]
    assert exponent
    _assert_same(ALL_TYPES_ITEMS, KEY_ATTRIBUTES, must_take=False)
    for i, item in enumerate(ALL_TYPES_ITEMS):
        _assert_same([item], KEY_ATTRIBUTES, must_take=i not in exponent)
    _assert_same([*ALL_TYPES_ITEMS, large_item()], KEY_ATTRIBUTES, must_take=False)
    _assert_same([large_item()], KEY_ATTRIBUTES)


def test_control_characters_and_quotes_in_map_strings_are_escaped_as_orjson_does() -> None:
    text = "".join(chr(i) for i in range(32)) + '"\\ \x7f \u2028 😀'
    items = [{"pk": {"S": str(i)}, "m": {"M": {"t": {"S": text[i:]}}}} for i in range(34)]
    _assert_same(items, ["pk"])


def test_every_top_level_type_and_nested_shape_takes_the_native_reader() -> None:
    items = [
        {
            "pk": {"S": f"k{i}"},
            "s": {"S": 'quote " back \\ é 😀' if i % 2 else "plain"},
            "n": {"N": str(i * 7 - 3)},
            "d": {"N": "1.50" if i % 3 else "-12.25"},
            "wide": {"N": "1" + "0" * 30 if i % 2 else "-7"},
            "b": {"B": "AAEC/w=="},
            "t": {"BOOL": i % 2 == 0},
            "z": {"NULL": True},
            "ss": {"SS": ["b", "a", "é"]},
            "ns": {"NS": ["10", "9", "-1"]},
            "bs": {"BS": ["AQ==", "AA=="]},
            "m": {
                "M": {
                    "s": {"S": "x"},
                    "n": {"N": "2.0" if i % 2 else "3"},
                    "l": {"L": [{"N": "1"}, {"M": {}}, {"L": []}, {"NULL": True}]},
                    "set": {"SS": ["q", "p"]},
                    "bin": {"B": "AA=="},
                    **({"only_some": {"BOOL": False}} if i % 3 == 0 else {}),
                }
            },
            "l": {"L": [{"S": "a"}, {"M": {"k": {"S": "v"}}}] if i % 2 else []},
            "sentinel": {"L": [{"S": "a"}, {"S": "\x01"}, {"S": "b"}]},
            "when": {"S": f"2024-01-0{i % 9 + 1}T10:00:00Z"},
            "mixed": {"S": "text"} if i % 2 else {"N": "5"},
            "mixed_set": {"BS": ["AA=="]} if i % 2 else {"SS": ["x"]},
            "sometimes_null": {"S": "v"} if i % 2 else {"NULL": True},
        }
        for i in range(40)
    ]
    _assert_same(items, ["pk"])
    _assert_same(items, ["pk"], chunk=7)


def test_iso_timestamps_stay_the_exact_strings_across_blocks() -> None:
    first = [{"pk": {"S": str(i)}, "at": {"S": "2024-05-01"}} for i in range(5)]
    second = [{"pk": {"S": str(i)}, "at": {"S": "2024-05-01 10:00:00"}} for i in range(5)]
    for part in (first, second, first):
        target = schema.decide_schema(schema.SchemaStats.of(part), ["pk"])
        table = native_items.read_block(_block(part)).table(target)
        assert table.column("at").to_pylist() == [i["at"]["S"] for i in part]


def test_maps_used_as_dictionaries_take_the_native_reader() -> None:
    items = [
        {"pk": {"S": str(i)}, "m": {"M": {f"user{i}-{j}": {"N": "1"} for j in range(30)}}}
        for i in range(100)
    ]
    _assert_same(items, ["pk"])


def _assert_lines_same(lines: list[bytes], keys: list[str]) -> None:
    """The C reader takes these export lines, written by hand, and gives the reference."""
    block = b"\n".join(lines)
    ref = reference.ItemsChunk.of_block(block)
    final = schema.decide_schema(ref.stats(), keys)
    chunk = native_items.read_block(block)
    assert chunk.stats() == ref.stats()
    actual, expected = chunk.table(final), ref.table(final)
    assert actual.equals(expected), first_difference(actual, expected)


def test_json_escapes_in_names_keys_strings_and_sets_are_read_like_the_reference() -> None:
    lines = [
        rb'{"Item":{"pk":{"S":"caf\u00e9 \ud83d\ude00 \/ \" \\ \n \u0000 \u001F"},'
        rb'"na\u006De":{"S":"x"},"m":{"M":{"\u00e9":{"S":"\t"},"z":{"SS":["\u00e9","e"]},'
        rb'"e":{"N":"1"},"\"q":{"L":[{"S":"\ud83d\ude00"}]}}},"ss":{"SS":["b\/","a\u0000"]}}}',
        rb'{"Item":{"pk":{"S":"plain"},"name":{"S":"caf\u00e9"},"m":{"M":{}},"ss":{"SS":["\"\\"]}}}',
        '{"Item":{"pk":{"S":"raw é 😀 \x7f"},"m":{"M":{"é":{"S":"é"},"e":{"S":"😀"}}}}}'.encode(),
    ]
    _assert_lines_same(lines, ["pk"])


def test_sets_binary_and_numbers_inside_maps_are_rendered_like_the_reference() -> None:
    lines = [
        b'{"Item":{"pk":{"S":"1"},"m":{"M":{"ns":{"NS":["10","9.5","-1","0","-0.25","-10.5",'
        b'"0.000001","1.50","-3.0"]},"bs":{"BS":["/w==","AA==","gA==","AAE="]},"b":{"B":""},'
        b'"ss":{"SS":["b","a","\xc3\xa9","Z"]},"n":{"N":"12.50"},"z":{"N":"0.0"},"e":{"SS":[]}}}}}',
        b'{"Item":{"pk":{"S":"2"},"l":{"L":[{"NS":["2","1"]},{"BS":[]},{"B":"AAEC"},{"N":"100.000"}]}}}',
    ]
    _assert_lines_same(lines, ["pk"])


def test_numbers_that_are_not_canonical_are_rendered_like_the_reference() -> None:
    values = ["1.50", "007", "1e3", "-0", "0.000000001", "15.90", "4.5", "2.0", "-0.0"]
    values += ["0.00000001000", "100.000", "-3.50", "12345678901234567890123456789012345678.0"]
    items = [
        {
            "pk": {"S": str(i)},
            "m": {"M": {"n": {"N": v}}},
            "l": {"L": [{"N": v}]},
            "mixed": {"N": v} if i % 2 else {"S": "s"},
        }
        for i, v in enumerate(values)
    ]
    # "007", "1e3" and the like inside maps: the C reader refuses the block.
    _assert_same(items, ["pk"], must_take=False)
    _assert_same(items, ["pk"], chunk=4, must_take=False)
    final = schema.decide_schema(schema.SchemaStats.of(items), ["pk"])
    table = convert.read_block(_block(items)).table(final)
    assert table.column("m").to_pylist()[0] == '{"n":1.5}'
    assert table.column("l").to_pylist()[2] == "[1000]"
    # Top-level numbers the C reader takes as written, made canonical in a text column.
    top = [
        {"pk": {"S": str(i)}, "mixed": {"N": v} if i % 2 else {"S": "s"}}
        for i, v in enumerate(values)
    ]
    _assert_same(top, ["pk"])


@pytest.mark.parametrize(
    "numbers",
    [
        ["0", "7", "-12", "123456789012345678"],
        ["9223372036854775807", "-9223372036854775808", "1"],
        ["9223372036854775808", "5"],
        ["12345678901234567890", "0"],
        ["0.5", "-0.05", "12.25", "0"],
        ["1E+3", "2"],
        ["722.50", "3", "720.00", "-0.050"],
        ["100.000", "9223372036854775807"],
        ["5.0", "9223372036854775808"],
        ["1.10", "12345678901234567890"],
    ],
    ids=[
        "int64",
        "int64 limits",
        "just past int64",
        "20 digits",
        "fractions",
        "exponent",
        "trailing zeros among canonical",
        "integral with zeros and int64 max",
        "integral with a zero past int64",
        "trailing zero and 20 digits",
    ],
)
def test_number_statistics_equal_the_reference(numbers: list[str]) -> None:
    items = [{"pk": {"S": str(i)}, "n": {"N": v}} for i, v in enumerate(numbers)]
    items.append({"pk": {"S": "set"}, "ns": {"NS": numbers}})
    _assert_same(items, ["pk"])


@given(st.lists(number_texts(), min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_number_statistics_of_any_mix_of_number_forms_equal_the_reference(
    numbers: list[str],
) -> None:
    texts = pa.array(numbers, pa.string())
    assert native_items._number_stats(texts, "n") == schema.number_stats(numbers, "n")


def test_malformed_values_and_missing_keys_give_the_reference_error() -> None:
    cases = [
        [{"pk": {"S": "1"}, "m": {"M": {"x": {"N": "1", "S": "y"}}}}],  # two tags in a map
        [{"pk": {"S": "2"}, "m": {"M": {"x": {"N": "abc"}}}}],  # not a number
        [{"pk": {"S": "2"}, "n": {"N": "abc"}}],
        [{"pk": {"S": "1"}, "x": {"Q": "1"}}],  # unknown tag
        [{"pk": {"S": "1"}}, {"other": {"S": "2"}}],  # a key missing
    ]
    for items in cases:
        _assert_same_outcome(_block(items), ["pk"])
    with pytest.raises(CodecError, match="lack this key"):
        block = _block(cases[-1])
        convert.read_block(block).table(
            schema.decide_schema(schema.SchemaStats.of(cases[-1]), ["pk"])
        )


# --------------------------------------------------------------------------------------------
# Hypothesis items


def test_random_items_give_the_reference_table() -> None:
    share = FastPathShare("the C reader", SHARE_RANDOM)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(random_items(max_depth=3), min_size=1, max_size=12), st.integers(1, 5))
    def case(items: list[dict], chunk: int) -> None:
        share.count(took=_assert_same(items, ["pk"], chunk=chunk, must_take=False))

    case()
    share.check()


def test_random_items_sharing_attributes_of_changing_types_give_the_reference_table() -> None:
    share = FastPathShare("the C reader", SHARE_CHANGING)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(random_items(max_depth=3, names=st.sampled_from("abcd")), min_size=1, max_size=12),
        st.integers(1, 5),
    )
    def case(items: list[dict], chunk: int) -> None:
        share.count(took=_assert_same(items, ["pk"], chunk=chunk, must_take=False))

    case()
    share.check()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(random_items(max_depth=4, names=st.sampled_from("abcdef")), min_size=1, max_size=12),
    st.integers(1, 5),
)
def test_random_items_as_aws_writes_them_take_the_native_reader(
    items: list[dict], chunk: int
) -> None:
    items = [{k: as_aws_writes(v) for k, v in item.items()} for item in items]
    _assert_same(items, ["pk"], chunk=chunk)


# --------------------------------------------------------------------------------------------
# Damaged input (fuzz) and refused blocks

_FUZZ_LINES = [_line(item) for item in [*generate_items(3, seed=8), *ALL_TYPES_ITEMS]]


def test_damaged_blocks_give_the_reference_table_or_the_reference_error() -> None:
    """Bytes flipped, dropped, inserted or cut anywhere: the C reader refuses the block, or
    reads it exactly as the reference does (and never crashes); the contract gives the
    reference's table or error either way. The C reader reads a stated share of the damaged
    blocks (edits inside strings leave valid lines)."""
    share = FastPathShare("the C reader", SHARE_DAMAGED)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(st.sampled_from(range(len(_FUZZ_LINES))), min_size=1, max_size=3),
        byte_edits,
    )
    def case(picks: list[int], edits: list[tuple[int, int, int]]) -> None:
        data = damaged(b"\n".join(_FUZZ_LINES[i] for i in picks), edits)
        _assert_same_outcome(data, ["pk"])
        took = _outcome(native_items.read_block, data, ["pk"])
        if took[0] == "table":
            assert _outcome(reference.ItemsChunk.of_block, data, ["pk"])[0] == "table"
        share.count(took=took[0] == "table")

    case()
    share.check()


@pytest.mark.parametrize(
    "block",
    [
        b'{"Item":{"pk":{"S":"\\ud800"}}}',
        b'{"Item":{"pk":{"S":"\\udc00x"}}}',
        b'{"Item":{"pk":{"S":"\\u12"}}}',
        b'{"Item":{"pk":{"S":"\\x"}}}',
        b'{"Item":{"pk":{"S":"\xff"}}}',
        b'{"Item":{"pk":{"S":"\xed\xa0\x80"}}}',
        b'{"Item":{"pk":{"S":"a"},"pk":{"S":"b"}}}',
        b'{"Item":{"pk":{"S":"a"},"\\u0070k":{"S":"b"}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"S":"1"},"\\u0061":{"S":"2"}}}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"NULL":false}}}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"B":"AB=="}}}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"BS":["AAA"]}}}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"N":"007"}}}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"N":"1E+3"}}}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"N":"-0.0"}}}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"a":{"NS":["1","1e3"]}}}}}',
        b'{"Item":{"pk":{"S":"a"},"l":{"L":[' + b'{"L":[' * 70 + b"]}" * 70 + b"]}}}",
        b'{"Item":{"pk":{"S":"a"}}}\n',
        b'{"Item":{"pk":{"S":"a"}} }',
        b"",
        b'{"Item":{"pk":{"S":"a"}}}\r\n{"Item":{"pk":{"S":"b"}}}',
        b'{"Item":{"pk":{"S":"a"}}}\n\n{"Item":{"pk":{"S":"b"}}}',
        b'{ "Item":{"pk":{"S":"a"}}}',
        b'{"Item":{"pk":{"S":"a"}},"Extra":1}',
        b'{"Item":{"pk":{"S":"a"},"x":{}}}',
        b'{"Item":{"pk":{"S":"a"},"x":{"S":"1","N":"1"}}}',
        b'{"Item":{"pk":{"S":"a"},"x":{"Q":"1"}}}',
        b'{"Item":{"pk":{"S":"a"},"x":{"S":1}}}',
        b'{"Item":{"pk":{"S":"a"},"x":{"NULL":false}}}',
        b'{"Item":{"pk":{"S":"a\x01"}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"k":{}}}}}',
        b'{"Item":{"pk":{"S":"a"},"l":{"L":[{"S":"a"},{}]}}}',
        b'{"Item":{"pk":{"S":"a"},"m":{"M":{"k":{"S":"1"},"k":{"N":"2"}}}}}',
        b"not json",
    ],
    ids=[
        "lone high surrogate",
        "lone low surrogate",
        "short unicode escape",
        "unknown escape",
        "invalid utf-8",
        "encoded surrogate",
        "duplicate attribute",
        "duplicate attribute once escaped",
        "duplicate map key once escaped",
        "nested null false",
        "binary with stray bits",
        "binary without padding",
        "leading zeros",
        "exponent",
        "negative zero",
        "exponent in a set",
        "too deep",
        "blank last line",
        "space",
        "empty",
        "crlf",
        "blank",
        "spaced",
        "extra key",
        "no tag",
        "two tags",
        "unknown tag",
        "number S",
        "null false",
        "raw control",
        "map value without tag",
        "list member without tag",
        "duplicate map key",
        "not json",
    ],
)
def test_blocks_the_native_reader_refuses_take_the_reference(block: bytes) -> None:
    with pytest.raises(native_items.Unsupported):
        native_items.read_block(block)
    before = native.counts().get(convert.BLOCKS, native.Tally()).refused
    _assert_same_outcome(block, ["pk"])
    assert native.counts()[convert.BLOCKS].refused > before


# --------------------------------------------------------------------------------------------
# Binary columns: the C decoder and binascii

_LAX_BASE64 = ["QQ", "QR==", "QUI", "Q\nUJD", "QUJD=", "=QUJD", "QU=D", "Q", "QUJ-", "QUJ_"]


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode("ascii")),
            st.sampled_from(_LAX_BASE64),
        ),
        max_size=30,
    ),
    st.integers(0, 3),
)
@settings(max_examples=300, deadline=None)
def test_binary_columns_decode_the_same_by_the_c_decoder_and_binascii(
    texts: list[str | None], offset: int
) -> None:
    c = pa.array(["QUJD"] * offset + texts, pa.string()).slice(offset)
    results = []
    module = native.module
    for on in (True, False):
        native.module = module if on else None
        try:
            results.append(native_items._binary(c))
        except native_items.Unsupported as exc:
            results.append(str(exc))
        finally:
            native.module = module
    assert results[0] == results[1]
    if all(t is None or t not in _LAX_BASE64 for t in texts):
        assert results[0].to_pylist() == [None if t is None else base64.b64decode(t) for t in texts]


def test_binary_columns_of_canonical_base64_take_the_c_decoder(monkeypatch) -> None:
    c = pa.array([base64.b64encode(bytes([i] * i)).decode() for i in range(50)] + [None])
    monkeypatch.setattr(native_items.binascii, "a2b_base64", None)  # would fail if called
    assert native_items._binary(c).to_pylist() == [bytes([i] * i) for i in range(50)] + [None]


# --------------------------------------------------------------------------------------------
# Data files: blocks, refusals counted and logged once


def _write_gzip(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def _convert(path: Path, out: Path, n: int) -> tuple[list[pa.Table], snapshot.FileResult]:
    out.mkdir()
    data_file = DataFile(key=path.name, item_count=n, md5_b64="", etag="")
    result = snapshot.convert_data_file(
        0, str(path), data_file, "DYNAMODB_JSON", "f", ["pk", "sk"], str(out), {b"k": b"v"}
    )
    return [pq.read_table(out / p) for p in result.parts], result


def test_blocks_end_on_line_boundaries_whatever_the_block_size(tmp_path) -> None:
    lines = [_line(i) for i in generate_items(60, seed=3)]
    path = _write_gzip(tmp_path / "a.json.gz", b"\n".join(lines) + b"\n")
    for size in (50, 997, 1 << 20):
        blocks = list(iter_blocks(path, size))
        assert b"\n".join(blocks).split(b"\n") == lines


def test_lines_split_across_read_blocks_crlf_and_blank_lines(tmp_path) -> None:
    items = list(generate_items(50, seed=2))
    lines = list(map(_line, items))
    data = b"\r\n".join(lines[:10]) + b"\r\n\n" + b"\n".join(lines[10:])  # no final newline
    blocks = list(iter_blocks(_write_gzip(tmp_path / "a.json.gz", data), 97))
    assert len(blocks) > 1
    read = [item for b in blocks for item in reference.block_items(b)[0]]
    assert read == [orjson.loads(orjson.dumps(i)) for i in items]


def test_a_file_mixing_blocks_the_c_reader_takes_and_refuses_converts_exactly_and_counts_them(
    tmp_path, monkeypatch
) -> None:
    items = list(generate_items(300, seed=4))
    # A CRLF line end every 50 items: those blocks take the reference.
    data = b"".join(
        _line(item) + (b"\r\n" if n % 50 == 0 else b"\n") for n, item in enumerate(items)
    )
    path = _write_gzip(tmp_path / "f.json.gz", data)
    monkeypatch.setattr(snapshot, "iter_blocks", functools.partial(iter_blocks, block_bytes=20_000))
    native.drain(convert.BLOCKS)  # what other tests counted
    tables, result = _convert(path, tmp_path / "out", len(items))
    expected = convert.items_to_table(
        items,
        schema.decide_schema(schema.SchemaStats.of(items), ["pk", "sk"]),
        [orjson.dumps(i).decode() for i in items],
    )
    assert len(tables) == 1
    assert tables[0].replace_schema_metadata(None).equals(expected), first_difference(
        tables[0], expected
    )
    assert result.blocks.taken > 0 and result.blocks.refused > 0
    assert result.blocks.reasons == {"a line in another shape than AWS's": result.blocks.refused}


def test_data_file_in_aws_shape_and_in_another_shape_convert_to_equal_typed_columns(
    tmp_path,
) -> None:
    items = list(generate_items(400, seed=9))
    aws = b"\n".join(map(_line, items)) + b"\n"
    spaced = b"\n".join(b'{ "Item":' + orjson.dumps(i) + b"}" for i in items) + b"\n"
    fast, _ = _convert(_write_gzip(tmp_path / "aws.json.gz", aws), tmp_path / "fast", len(items))
    ref, _ = _convert(_write_gzip(tmp_path / "sp.json.gz", spaced), tmp_path / "ref", len(items))
    assert len(fast) == len(ref) == 1
    assert fast[0].drop(["_item"]).equals(ref[0].drop(["_item"]))
    assert fast[0].column("_item").to_pylist() == [orjson.dumps(i).decode() for i in items]
    decoded = [codec.item_from_json_text(t) for t in ref[0].column("_item").to_pylist()]
    assert decoded == [codec.canonical_item(i) for i in items]


def test_blocks_that_took_the_reference_are_logged_once_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    info = generate_export(tmp_path / "export", items=600, files=3, seed=4)
    expected = tmp_path / "expected"
    snapshot.convert_export_dir(info.export_dir, str(expected), workers=1)
    monkeypatch.setattr(native, "ENABLED", False)
    native.drain(convert.BLOCKS)  # what other tests counted
    with caplog.at_level(logging.WARNING, logger="dynamo_cdc.convert.native"):
        assert snapshot.convert_export_dir(info.export_dir, str(tmp_path / "out"), workers=1) == 600
    assert [r.getMessage() for r in caplog.records] == [
        "3 of 3 export blocks took the reference path (DYNAMO_CDC_NATIVE=0: 3)"
    ]
    assert convert.BLOCKS not in native.counts()  # nothing left to log again at exit
    for part in sorted(expected.glob("*.parquet")):
        assert pq.read_table(tmp_path / "out" / part.name).equals(pq.read_table(part))


def test_refusals_not_logged_by_a_snapshot_are_logged_once_at_exit() -> None:
    """A process that converted blocks outside a snapshot (nothing drained its count) logs what
    took the reference path once, when it exits; one that refused nothing logs nothing."""
    import subprocess
    import sys

    code = """
from dynamo_cdc import convert
for block in (b'{"Item":{"pk":{"S":"a"}}}', b'{"Item":{"pk":{"S":"a"}} }', b'{ "Item":{"pk":{"S":"b"}}}'):
    convert.read_block(block)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.splitlines() == [
        "2 of 3 export blocks took the reference path (a line in another shape than AWS's: 2)"
    ]
    code = 'from dynamo_cdc import convert; convert.read_block(b\'{"Item":{"pk":{"S":"a"}}}\')'
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == ""


def test_conversion_workers_can_keep_their_heap_on_glibc() -> None:
    """The snapshot's worker processes call keep_heap (malloc keeps freed blocks for the next
    one): on this Linux/glibc machine kind it must take effect, in a process of its own."""
    import subprocess
    import sys

    code = "from dynamo_cdc.convert import keep_heap; print(keep_heap())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_conversion_worker_converts_an_export_without_importing_pandas_or_boto3(
    tmp_path: Path,
) -> None:
    """A worker process starts in a fraction of the time when it imports neither: the snapshot
    module imports neither, and the worker's setup keeps pyarrow from importing pandas (which it
    does the first time a Python scalar meets a compute function). The conversion is the same."""
    import subprocess
    import sys

    info = generate_export(tmp_path / "export", items=2_000, files=2, seed=4)
    expected = tmp_path / "expected"
    snapshot.convert_export_dir(info.export_dir, str(expected), workers=1)
    code = f"""
import sys
from dynamo_cdc import snapshot
assert "pandas" not in sys.modules and "boto3" not in sys.modules, "imported by the module"
snapshot.conversion_worker_setup()
assert snapshot.convert_export_dir({info.export_dir!r}, {str(tmp_path / "out")!r}, workers=1) == 2000
print(sorted(m for m in ("pandas", "boto3") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    for part in sorted(expected.glob("*.parquet")):
        assert pq.read_table(tmp_path / "out" / part.name).equals(pq.read_table(part))
