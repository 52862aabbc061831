"""The fast export -> Arrow path gives exactly the reference path's statistics and table."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from cases.all_types import ALL_TYPES_ITEMS, KEY_ATTRIBUTES, large_item
from cases.tables import first_difference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import items as random_items

from bench.generate import generate_items
from dynamo_cdc import arrowconvert, codec, fastconvert, schema, snapshot
from dynamo_cdc.errors import CodecError
from dynamo_cdc.export import DataFile


def _as_exported(items: list[dict]) -> tuple[list[dict], list[bytes]]:
    """Items as a chunk of export lines gives them: parsed back from their JSON text."""
    texts = [orjson.dumps(item) for item in items]
    return [orjson.loads(t) for t in texts], texts


def _assert_same(items: list[dict], keys: list[str], chunk: int | None = None) -> None:
    """Fast and reference agree on statistics and on the table of every chunk."""
    items, texts = _as_exported(items)
    chunk = chunk or max(1, len(items))
    fast_stats, ref_stats = schema.SchemaStats(), schema.SchemaStats()
    pieces = []
    for start in range(0, len(items), chunk):
        part, part_texts = items[start : start + chunk], texts[start : start + chunk]
        columns = fastconvert.ChunkColumns(part, part_texts)
        assert columns.stats() == schema.SchemaStats.of(part)
        fast_stats = fast_stats.merge(columns.stats())
        ref_stats.update(part)
        pieces.append((part, part_texts, columns))
    assert fast_stats == ref_stats
    final = schema.decide_schema(ref_stats, keys)
    for part, part_texts, columns in pieces:
        expected = schema.items_to_table(part, final, [t.decode() for t in part_texts])
        actual = columns.table(final)
        assert actual.schema.equals(expected.schema, check_metadata=True)
        assert actual.equals(expected), first_difference(actual, expected)


def test_bench_items_give_the_reference_table_in_one_chunk_and_in_many() -> None:
    items = list(generate_items(3000, seed=11))
    _assert_same(items, ["pk", "sk"])
    _assert_same(items, ["pk", "sk"], chunk=700)


def test_bench_items_with_a_number_sort_key_give_the_reference_table() -> None:
    _assert_same(list(generate_items(500, seed=5, sk_type="N")), ["pk", "sk"], chunk=128)


def test_all_types_items_give_the_reference_table() -> None:
    _assert_same(ALL_TYPES_ITEMS, KEY_ATTRIBUTES)
    _assert_same(ALL_TYPES_ITEMS, KEY_ATTRIBUTES, chunk=3)
    _assert_same([*ALL_TYPES_ITEMS, large_item()], KEY_ATTRIBUTES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(random_items(max_depth=3), min_size=1, max_size=12), st.integers(1, 5))
def test_random_items_give_the_reference_table(items: list[dict], chunk: int) -> None:
    _assert_same(items, ["pk"], chunk=chunk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(random_items(max_depth=3, names=st.sampled_from("abcd")), min_size=1, max_size=12),
    st.integers(1, 5),
)
def test_random_items_sharing_attributes_of_changing_types_give_the_reference_table(
    items: list[dict], chunk: int
) -> None:
    _assert_same(items, ["pk"], chunk=chunk)


def test_a_list_holding_the_split_sentinel_is_rendered_exactly() -> None:
    sentinel = {"L": [{"S": "a"}, {"S": "\x01"}, {"S": "b"}]}
    items = [{"pk": {"S": str(i)}, "l": sentinel if i % 2 else {"L": []}} for i in range(6)]
    _assert_same(items, ["pk"])
    table = fastconvert.items_to_table(*_as_exported(items)[:1], _schema(items), _texts(items))
    assert table.column("l").to_pylist()[1] == '["a","\\u0001","b"]'


def _schema(items):
    return schema.decide_schema(schema.SchemaStats.of(items), ["pk"])


def _texts(items):
    return [orjson.dumps(i) for i in items]


def test_numbers_that_are_not_canonical_are_rendered_like_the_reference() -> None:
    values = ["1.50", "007", "1e3", "-0", "0.000000001", "15.90", "4.5", "1.50"]
    items = [
        {"pk": {"S": str(i)}, "m": {"M": {"n": {"N": v}}}, "l": {"L": [{"N": v}]}}
        for i, v in enumerate(values)
    ]
    _assert_same(items, ["pk"])
    table = fastconvert.items_to_table(items, _schema(items), _texts(items))
    assert table.column("m").to_pylist()[0] == '{"n":1.5}'
    assert table.column("l").to_pylist()[2] == "[1000]"


def test_malformed_values_give_the_reference_result_or_error() -> None:
    two_tags = [{"pk": {"S": "1"}, "m": {"M": {"x": {"N": "1", "S": "y"}}}}]
    texts = [t.decode() for t in _texts(two_tags)]
    expected = schema.items_to_table(two_tags, _schema(two_tags), texts)
    assert fastconvert.items_to_table(two_tags, _schema(two_tags), _texts(two_tags)) == expected
    bad_number = [{"pk": {"S": "2"}, "m": {"M": {"x": {"N": "abc"}}}}]
    with pytest.raises(CodecError, match="not a DynamoDB number"):
        fastconvert.items_to_table(bad_number, _schema(bad_number), _texts(bad_number))
    unknown = [{"pk": {"S": "1"}, "x": {"Q": "1"}}]
    with pytest.raises(CodecError, match="unknown type tag"):
        schema.SchemaStats.of(unknown)
    with pytest.raises(CodecError, match="unknown type tag"):
        fastconvert.ChunkColumns(unknown, _texts(unknown))


def test_a_missing_key_attribute_raises_like_the_reference() -> None:
    items = [{"pk": {"S": "1"}}, {"other": {"S": "2"}}]
    sch = schema.decide_schema(schema.SchemaStats.of(items), ["pk"])
    with pytest.raises(CodecError, match="lack this key"):
        fastconvert.items_to_table(items, sch, _texts(items))


# --------------------------------------------------------------------------------------------
# Reading lines


def _write_gzip(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def test_lines_split_across_read_blocks_crlf_and_blank_lines(tmp_path) -> None:
    lines = [orjson.dumps({"Item": item}) for item in generate_items(50, seed=2)]
    data = b"\r\n".join(lines[:10]) + b"\r\n\n" + b"\n".join(lines[10:])  # no final newline
    path = _write_gzip(tmp_path / "a.json.gz", data)
    blocks = list(arrowconvert.iter_blocks(path, 97))
    assert len(blocks) > 1
    assert [line for b in blocks for line in fastconvert.block_lines(b)] == lines


def test_lines_in_another_shape_than_aws_are_left_to_the_reference_path() -> None:
    with pytest.raises(fastconvert.FastPathUnavailable):
        fastconvert.parse_item_lines([b'{ "Item":{"pk":{"S":"a"}}}'])
    with pytest.raises(fastconvert.FastPathUnavailable):
        fastconvert.parse_item_lines([b'{"Keys": {"pk": {"S": "a"}}}'])
    with pytest.raises(fastconvert.FastPathUnavailable):
        fastconvert.parse_item_lines([b"not json"])
    items, texts = fastconvert.parse_item_lines([b'{"Item":{"pk":{"S":"a"}}}'])
    assert items == [{"pk": {"S": "a"}}] and texts == [b'{"pk":{"S":"a"}}']


def _convert(path: Path, out: Path, n: int) -> list:
    out.mkdir()
    data_file = DataFile(key=path.name, item_count=n, md5_b64="", etag="")
    result = snapshot.convert_data_file(
        0, str(path), data_file, "DYNAMODB_JSON", "f", ["pk", "sk"], str(out), {b"k": b"v"}
    )
    return [pq.read_table(out / p) for p in result.parts]


def test_data_file_in_aws_shape_and_in_another_shape_convert_to_equal_typed_columns(
    tmp_path,
) -> None:
    items = list(generate_items(400, seed=9))
    aws = b"\n".join(orjson.dumps({"Item": i}) for i in items) + b"\n"
    spaced = b"\n".join(b'{ "Item":' + orjson.dumps(i) + b"}" for i in items) + b"\n"
    fast = _convert(_write_gzip(tmp_path / "aws.json.gz", aws), tmp_path / "fast", len(items))
    ref = _convert(_write_gzip(tmp_path / "sp.json.gz", spaced), tmp_path / "ref", len(items))
    assert len(fast) == len(ref) == 1
    assert fast[0].drop(["_item"]).equals(ref[0].drop(["_item"]))
    assert fast[0].column("_item").to_pylist() == [orjson.dumps(i).decode() for i in items]
    decoded = [codec.item_from_json_text(t) for t in ref[0].column("_item").to_pylist()]
    assert decoded == [codec.canonical_item(i) for i in items]


def test_conversion_workers_can_keep_their_heap_on_glibc() -> None:
    """The snapshot's worker processes call keep_heap (malloc keeps freed blocks for the next
    one): on this Linux/glibc machine kind it must take effect, in a process of its own."""
    import subprocess
    import sys

    code = "from dynamo_cdc.fastconvert import keep_heap; print(keep_heap())"
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

    from bench.generate import generate_export

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
