"""The Arrow export -> Arrow path gives exactly the reference path's statistics and table, or
says it cannot (and the snapshot converts that block item by item).

Both of its readers are pinned: ``native`` (the C reader, dynamo_cdc/_native.c) and ``arrow``
(pyarrow.json). A test that says a path must take a block checks that the reader named took it,
not a fallback."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cases.all_types import ALL_TYPES_ITEMS, KEY_ATTRIBUTES, large_item
from cases.tables import first_difference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import FastPathShare, as_aws_writes, byte_edits, damaged, number_texts
from strategies import items as random_items

from bench.generate import generate_items
from dynamo_cdc import arrowconvert, schema, snapshot
from dynamo_cdc.errors import CodecError
from dynamo_cdc.export import DataFile


def _block(items: list[dict]) -> bytes:
    return b"\n".join(b'{"Item":' + orjson.dumps(item) + b"}" for item in items)


def _reference(items: list[dict], keys: list[str], chunk: int):
    """(merged reference stats, per-chunk (items, texts)) as an export's lines give them."""
    texts = [orjson.dumps(item) for item in items]
    parsed = [orjson.loads(t) for t in texts]
    stats = schema.SchemaStats()
    parts = []
    for start in range(0, len(items), chunk):
        part, part_texts = parsed[start : start + chunk], texts[start : start + chunk]
        stats.update(part)
        parts.append((part, part_texts))
    return stats, parts


NATIVE = arrowconvert.NATIVE
# Stated shares of generated cases the reader takes, about half of the share measured on
# 2026-12-06 (in brackets): random items by the C reader (0.61) and pyarrow.json (1.00), items
# sharing attributes of changing types (0.79, 1.00), damaged blocks by the C reader (0.13).
SHARE_NATIVE_RANDOM = 0.3
SHARE_ARROW_RANDOM = 0.5
SHARE_NATIVE_CHANGING = 0.4
SHARE_ARROW_CHANGING = 0.5
SHARE_NATIVE_DAMAGED = 0.06
READERS = pytest.mark.parametrize("native", [True, False], ids=["native", "arrow"])


def _assert_same(
    items: list[dict],
    keys: list[str],
    chunk: int | None = None,
    *,
    must_take: bool = True,
    native: bool = False,
) -> bool:
    """Arrow and reference agree on the statistics and table of every chunk; True when the
    reader asked for (the C reader, or ``pyarrow.json``) took every chunk (``must_take``: it
    has to)."""
    chunk = chunk or max(1, len(items))
    ref_stats, parts = _reference(items, keys, chunk)
    final = schema.decide_schema(ref_stats, keys)
    reader = arrowconvert.BlockReader(native=native)
    took = True
    for part, texts in parts:
        try:
            arrow = reader.read(_block(part))
            if must_take:
                assert arrow.native == native, "the block fell back to the other reader"
            took = took and arrow.native == native
            stats = arrow.stats()
            assert stats == schema.SchemaStats.of(part)
            actual = arrow.table(final)
        except arrowconvert.Unsupported:
            if must_take:
                raise
            took = False
            continue
        expected = schema.items_to_table(part, final, [t.decode() for t in texts])
        assert actual.schema.equals(expected.schema, check_metadata=True)
        assert actual.equals(expected), first_difference(actual, expected)
    return took


@READERS
def test_bench_items_take_the_arrow_path_and_give_the_reference_table(native: bool) -> None:
    items = list(generate_items(3000, seed=11))
    _assert_same(items, ["pk", "sk"], native=native)
    _assert_same(items, ["pk", "sk"], chunk=700, native=native)


@READERS
def test_bench_items_with_a_number_sort_key_give_the_reference_table(native: bool) -> None:
    items = list(generate_items(500, seed=5, sk_type="N"))
    _assert_same(items, ["pk", "sk"], chunk=128, native=native)


@READERS
def test_all_types_items_take_the_arrow_path_and_give_the_reference_table(native: bool) -> None:
    # A number set with an exponent ("1E+2") inside a map: the C reader leaves such a block to
    # pyarrow.json (chunk=1: every other item's block is the C reader's).
    exponent = [i for i, item in enumerate(ALL_TYPES_ITEMS) if b"E+" in orjson.dumps(item)]
    assert exponent
    _assert_same(ALL_TYPES_ITEMS, KEY_ATTRIBUTES, must_take=not native, native=native)
    for i, item in enumerate(ALL_TYPES_ITEMS):
        _assert_same([item], KEY_ATTRIBUTES, must_take=i not in exponent, native=native)
    _assert_same([*ALL_TYPES_ITEMS, large_item()], KEY_ATTRIBUTES, must_take=False, native=native)
    _assert_same([large_item()], KEY_ATTRIBUTES, native=native)


@READERS
def test_control_characters_and_quotes_in_map_strings_are_escaped_as_orjson_does(
    native: bool,
) -> None:
    text = "".join(chr(i) for i in range(32)) + '"\\ \x7f \u2028 😀'
    items = [{"pk": {"S": str(i)}, "m": {"M": {"t": {"S": text[i:]}}}} for i in range(34)]
    _assert_same(items, ["pk"], native=native)


@READERS
def test_every_top_level_type_and_nested_shape_takes_the_arrow_path(native: bool) -> None:
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
            "when": {"S": f"2024-01-0{i % 9 + 1}T10:00:00Z"},
            "mixed": {"S": "text"} if i % 2 else {"N": "5"},
            "sometimes_null": {"S": "v"} if i % 2 else {"NULL": True},
        }
        for i in range(40)
    ]
    _assert_same(items, ["pk"], native=native)
    _assert_same(items, ["pk"], chunk=7, native=native)


@READERS
def test_iso_timestamps_stay_the_exact_strings_across_blocks(native: bool) -> None:
    first = [{"pk": {"S": str(i)}, "at": {"S": "2024-05-01"}} for i in range(5)]
    second = [{"pk": {"S": str(i)}, "at": {"S": "2024-05-01 10:00:00"}} for i in range(5)]
    reader = arrowconvert.BlockReader(native=native)
    for part in (first, second, first):
        target = schema.decide_schema(schema.SchemaStats.of(part), ["pk"])
        table = reader.read(_block(part)).table(target)
        assert table.column("at").to_pylist() == [i["at"]["S"] for i in part]


# The share of generated cases each reader takes whole (every chunk): see FastPathShare.
RANDOM_ITEMS_SHARE = {True: SHARE_NATIVE_RANDOM, False: SHARE_ARROW_RANDOM}
CHANGING_TYPES_SHARE = {True: SHARE_NATIVE_CHANGING, False: SHARE_ARROW_CHANGING}


@READERS
def test_random_items_give_the_reference_table_or_go_item_by_item(native: bool) -> None:
    share = FastPathShare(_reader_name(native), RANDOM_ITEMS_SHARE[native])

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(random_items(max_depth=3), min_size=1, max_size=12), st.integers(1, 5))
    def case(items: list[dict], chunk: int) -> None:
        took = _assert_same(items, ["pk"], chunk=chunk, must_take=False, native=native)
        share.count(took=took)

    case()
    share.check()


@READERS
def test_random_items_sharing_attributes_of_changing_types_give_the_reference_table(
    native: bool,
) -> None:
    share = FastPathShare(_reader_name(native), CHANGING_TYPES_SHARE[native])

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(random_items(max_depth=3, names=st.sampled_from("abcd")), min_size=1, max_size=12),
        st.integers(1, 5),
    )
    def case(items: list[dict], chunk: int) -> None:
        took = _assert_same(items, ["pk"], chunk=chunk, must_take=False, native=native)
        share.count(took=took)

    case()
    share.check()


def _reader_name(native: bool) -> str:
    return "the C reader" if native else "pyarrow.json"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(random_items(max_depth=4, names=st.sampled_from("abcdef")), min_size=1, max_size=12),
    st.integers(1, 5),
)
def test_random_items_as_aws_writes_them_take_the_native_reader(
    items: list[dict], chunk: int
) -> None:
    items = [{k: as_aws_writes(v) for k, v in item.items()} for item in items]
    _assert_same(items, ["pk"], chunk=chunk, native=True)


def _assert_lines_same(lines: list[bytes], keys: list[str]) -> None:
    """The C reader takes these export lines, written by hand, and gives the reference."""
    texts = [line[len(b'{"Item":') : -1].decode() for line in lines]
    items = [orjson.loads(t) for t in texts]
    final = schema.decide_schema(schema.SchemaStats.of(items), keys)
    chunk = arrowconvert.read_native(b"\n".join(lines))
    assert chunk.stats() == schema.SchemaStats.of(items)
    actual, expected = chunk.table(final), schema.items_to_table(items, final, texts)
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


_FUZZ_LINES = [
    b'{"Item":' + orjson.dumps(item) + b"}"
    for item in [*generate_items(3, seed=8), *ALL_TYPES_ITEMS]
]


def test_damaged_lines_are_refused_or_read_exactly_like_the_reference() -> None:
    """Bytes flipped, dropped, inserted or cut anywhere: the C reader refuses the block, or reads
    it exactly as orjson and the reference path do (and never crashes); it reads a stated share
    of the damaged blocks (edits inside strings leave valid lines)."""
    share = FastPathShare("the C reader", SHARE_NATIVE_DAMAGED)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(st.sampled_from(range(len(_FUZZ_LINES))), min_size=1, max_size=3),
        byte_edits,
    )
    def case(picks: list[int], edits: list[tuple[int, int, int]]) -> None:
        share.count(took=_damaged_lines_case(picks, edits))

    case()
    share.check()


def _damaged_lines_case(picks: list[int], edits: list[tuple[int, int, int]]) -> bool:
    """One case of the test above: whether the C reader read the block into a table."""
    data = damaged(b"\n".join(_FUZZ_LINES[i] for i in picks), edits)
    if not data:
        return False
    try:
        chunk = arrowconvert.read_native(data)
    except arrowconvert.Unsupported:
        return False
    lines = data.split(b"\n")
    assert all(line.startswith(b'{"Item":') and line.endswith(b"}") for line in lines)
    texts = [line[len(b'{"Item":') : -1].decode() for line in lines]
    items = [orjson.loads(t) for t in texts]  # the C reader took only valid JSON
    try:
        ref_stats = schema.SchemaStats.of(items)
        final = schema.decide_schema(ref_stats, ["pk"])
        expected = schema.items_to_table(items, final, texts)
    except CodecError:
        expected = None
    try:
        stats = chunk.stats()
        actual = chunk.table(schema.decide_schema(stats, ["pk"]))
    except arrowconvert.Unsupported:
        return False  # the caller falls back to the per-item path: the reference or its error
    assert expected is not None, "the C reader's table for items the reference refuses"
    assert stats == ref_stats
    assert actual.equals(expected), first_difference(actual, expected)
    return True


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
    ],
)
def test_blocks_the_native_reader_leaves_to_the_others_are_refused(block: bytes) -> None:
    with pytest.raises(arrowconvert.Unsupported, match="C reader"):
        arrowconvert.read_native(block)


@pytest.mark.parametrize(
    "block",
    [
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
@READERS
def test_blocks_it_cannot_convert_exactly_are_refused(block: bytes, native: bool) -> None:
    with pytest.raises(arrowconvert.Unsupported):
        if native:
            arrowconvert.read_native(block)
        chunk = arrowconvert.BlockReader(native=False).read(block)
        chunk.table(schema.decide_schema(chunk.stats(), ["pk"]))


def _wide_map_items() -> list[dict]:
    return [
        {"pk": {"S": str(i)}, "m": {"M": {f"user{i}-{j}": {"N": "1"} for j in range(30)}}}
        for i in range(100)
    ]


def test_maps_used_as_dictionaries_are_refused_before_they_explode_in_width() -> None:
    with pytest.raises(arrowconvert.Unsupported, match="distinct keys"):
        arrowconvert.BlockReader(native=False).read(_block(_wide_map_items()))


def test_maps_used_as_dictionaries_take_the_native_reader() -> None:
    _assert_same(_wide_map_items(), ["pk"], native=True)


def test_blocks_end_on_line_boundaries_whatever_the_block_size(tmp_path) -> None:
    lines = [b'{"Item":' + orjson.dumps(i) + b"}" for i in generate_items(60, seed=3)]
    path = tmp_path / "a.json.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    for size in (50, 997, 1 << 20):
        blocks = list(arrowconvert.iter_blocks(path, size))
        assert b"\n".join(blocks).split(b"\n") == lines


def _convert(path: Path, out: Path, n: int) -> list:
    out.mkdir()
    data_file = DataFile(key=path.name, item_count=n, md5_b64="", etag="")
    result = snapshot.convert_data_file(
        0, str(path), data_file, "DYNAMODB_JSON", "f", ["pk", "sk"], str(out), {b"k": b"v"}
    )
    return [pq.read_table(out / p) for p in result.parts]


def test_a_file_mixing_blocks_arrow_takes_and_blocks_it_refuses_converts_exactly(
    tmp_path, monkeypatch
) -> None:
    items = list(generate_items(300, seed=4))
    # A CRLF line end every 50 items: those blocks go item by item.
    data = b"".join(
        b'{"Item":' + orjson.dumps(item) + (b"}\r\n" if n % 50 == 0 else b"}\n")
        for n, item in enumerate(items)
    )
    path = tmp_path / "f.json.gz"
    path.write_bytes(gzip.compress(data))
    monkeypatch.setattr(arrowconvert, "BLOCK_BYTES", 20_000)
    tables = _convert(path, tmp_path / "out", len(items))
    ref_stats, parts = _reference(items, ["pk", "sk"], len(items))
    expected = schema.items_to_table(
        parts[0][0],
        schema.decide_schema(ref_stats, ["pk", "sk"]),
        [t.decode() for t in parts[0][1]],
    )
    assert len(tables) == 1
    assert tables[0].replace_schema_metadata(None).equals(expected), first_difference(
        tables[0], expected
    )


@READERS
def test_numbers_that_are_not_canonical_are_rendered_like_the_reference(native: bool) -> None:
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
    # "007", "1e3" and the like inside maps: the C reader leaves the block to pyarrow.json.
    _assert_same(items, ["pk"], must_take=not native, native=native)
    _assert_same(items, ["pk"], chunk=4, must_take=not native, native=native)


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
@READERS
def test_number_statistics_equal_the_reference(numbers: list[str], native: bool) -> None:
    items = [{"pk": {"S": str(i)}, "n": {"N": v}} for i, v in enumerate(numbers)]
    items.append({"pk": {"S": "set"}, "ns": {"NS": numbers}})
    _assert_same(items, ["pk"], native=native)


@given(st.lists(number_texts(), min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_number_statistics_of_any_mix_of_number_forms_equal_the_reference(
    numbers: list[str],
) -> None:
    texts = pa.array(numbers, pa.string())
    assert arrowconvert._number_stats(texts, "n") == schema._number_stats(numbers, "n")


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
    for native in (True, False):
        arrowconvert.NATIVE = native
        try:
            results.append(arrowconvert._binary(c))
        except arrowconvert.Unsupported as exc:
            results.append(str(exc))
        finally:
            arrowconvert.NATIVE = NATIVE
    assert results[0] == results[1]
    canonical = all(t is None or t not in _LAX_BASE64 for t in texts)
    if canonical:
        assert results[0].to_pylist() == [None if t is None else base64.b64decode(t) for t in texts]


def test_binary_columns_of_canonical_base64_take_the_c_decoder(monkeypatch) -> None:
    c = pa.array([base64.b64encode(bytes([i] * i)).decode() for i in range(50)] + [None])
    monkeypatch.setattr(arrowconvert.binascii, "a2b_base64", None)  # would fail if called
    assert arrowconvert._binary(c).to_pylist() == [bytes([i] * i) for i in range(50)] + [None]
