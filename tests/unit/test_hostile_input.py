"""Hostile input stays confined and bounded: a tampered export, a lying stream, a partition name
from input never reach outside their place, and no input makes us crash or eat the machine.

docs/reliability.md ("Hostile input: confined and bounded") lists what these tests cover.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from bench.generate import generate_export
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.convert import records_to_table
from dynamo_cdc.errors import ExportVerificationError, LakeError, StreamRecordError
from dynamo_cdc.export import open_manifest
from dynamo_cdc.lake import Lake
from dynamo_cdc.snapshot import write_snapshot

KEYS = (("pk", "S"),)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    return Path(generate_export(tmp_path / "bucket", items=60, files=2, seed=3).export_dir)


def _point_first_data_file_at(export_dir: Path, key: str, target: Path | None) -> None:
    """Rewrite manifest-files.json so that its first entry names ``key`` (with the MD5 of
    ``target`` when given, so only the key check can refuse it)."""
    lines = [json.loads(x) for x in (export_dir / "manifest-files.json").read_text().splitlines()]
    lines[0]["dataFileS3Key"] = key
    if target is not None:
        digest = hashlib.md5(target.read_bytes()).digest()
        lines[0]["md5Checksum"] = base64.b64encode(digest).decode()
    (export_dir / "manifest-files.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for name in ("manifest-files.md5", "manifest-files.checksum"):
        (export_dir / name).unlink(missing_ok=True)


def _outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.json.gz"
    secret.write_bytes(b"a file outside the export")
    return secret


@pytest.mark.parametrize(
    "key",
    [
        "{secret}",  # absolute
        "AWSDynamoDB/{export_id}/data/../../../../secret.json.gz",  # climbing out
        "AWSDynamoDB/{export_id}/../secret.json.gz",
        "AWSDynamoDB/{export_id}/data/sub/x.json.gz",  # not a file directly in data/
        "AWSDynamoDB/01700000000000-deadbeef/data/x.json.gz",  # another export's data
        "AWSDynamoDB/{export_id}/manifest-summary.json",  # the export's own, outside data/
        "AWSDynamoDB/{export_id}/data/\x00.json.gz",
    ],
)
def test_a_manifest_key_outside_its_exports_data_folder_is_refused_before_any_file_is_read(
    export_dir: Path, tmp_path: Path, key: str
) -> None:
    secret = _outside(tmp_path)
    key = key.format(secret=secret, export_id=export_dir.name)
    _point_first_data_file_at(export_dir, key, secret)
    md5_of_secret = base64.b64encode(hashlib.md5(secret.read_bytes()).digest()).decode()
    with pytest.raises(ExportVerificationError, match="not under") as info:
        open_manifest(str(export_dir))
    assert md5_of_secret not in str(info.value) or key == str(secret)


def test_a_refused_manifest_publishes_nothing_and_never_prints_an_outside_files_md5(
    export_dir: Path, tmp_path: Path
) -> None:
    secret = _outside(tmp_path)
    _point_first_data_file_at(export_dir, "AWSDynamoDB/x/data/../../../../secret.json.gz", None)
    with pytest.raises(ExportVerificationError) as info:
        manifest = open_manifest(str(export_dir))
        write_snapshot(manifest, Lake(str(tmp_path / "lake")), "orders", "2026-01-01", workers=1)
    digest = base64.b64encode(hashlib.md5(secret.read_bytes()).digest()).decode()
    assert digest not in str(info.value)
    assert not (tmp_path / "lake").exists() or Lake(str(tmp_path / "lake")).list("orders") == []


def test_a_manifest_files_key_outside_the_export_is_refused_before_it_is_read(
    export_dir: Path, tmp_path: Path
) -> None:
    summary = json.loads((export_dir / "manifest-summary.json").read_text())
    summary["manifestFilesS3Key"] = "AWSDynamoDB/x/../../../etc/passwd"
    (export_dir / "manifest-summary.json").write_text(json.dumps(summary))
    for name in ("manifest-summary.md5", "manifest-summary.checksum"):
        (export_dir / name).unlink(missing_ok=True)
    with pytest.raises(ExportVerificationError, match="not under"):
        open_manifest(str(export_dir))


def test_an_untampered_export_still_opens(export_dir: Path) -> None:
    manifest = open_manifest(str(export_dir))
    assert len(manifest.files) == 2


# -- stream identifiers and lake paths -------------------------------------------------------


def _records(seq: str = "1" * 21) -> list[dict]:
    keys = {"pk": {"S": "a"}}
    return [
        {
            "eventID": "e1",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "Keys": keys,
                "NewImage": keys,
                "SequenceNumber": seq,
                "SizeBytes": 10,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
                "ApproximateCreationDateTime": 1_700_000_000,
            },
        }
    ]


@pytest.mark.parametrize(
    "shard", ["shardId-1/../../x", "shardId-1/nested", "shard\x00id", "shard\nid", "s" * 66, ""]
)
def test_a_shard_id_aws_never_gives_is_refused_before_it_becomes_a_file_name(
    tmp_path: Path, shard: str
) -> None:
    rows = records_to_table(_records(), KEYS, shard_ids=shard)
    with pytest.raises(StreamRecordError, match="shard id"):
        write_change_batch(Lake(str(tmp_path)), "orders", rows)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seq", ["12/34", "1e5", "-1", "1" * 41, "12\x0034"])
def test_a_sequence_number_that_is_not_digits_is_refused_before_it_becomes_a_file_name(
    tmp_path: Path, seq: str
) -> None:
    rows = records_to_table(_records(seq), KEYS, shard_ids="shardId-00000001700000000000-0a1b2c3d")
    with pytest.raises(StreamRecordError, match="sequence number"):
        write_change_batch(Lake(str(tmp_path)), "orders", rows)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rel", ["t/a\x00b", "t/a\nb", "t/\x1b[31m", "t/x\x7f"])
def test_the_lake_refuses_control_characters_in_any_path(tmp_path: Path, rel: str) -> None:
    lake = Lake(str(tmp_path))
    for call in (
        lambda: lake.write_bytes(rel, b"x"),
        lambda: lake.read_bytes(rel),
        lambda: lake.list(rel),
        lambda: lake.uri(rel),
    ):
        with pytest.raises(LakeError, match="control character"):
            call()


# -- partition names from input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "export_time", ["../../../x", "2026-01-01/../../x", "2026-13-45T00:00:00Z", "yesterday"]
)
def test_a_manifest_export_time_that_is_not_a_time_never_becomes_a_folder(
    export_dir: Path, tmp_path: Path, export_time: str
) -> None:
    summary = json.loads((export_dir / "manifest-summary.json").read_text())
    summary["exportTime"] = export_time
    (export_dir / "manifest-summary.json").write_text(json.dumps(summary))
    for name in ("manifest-summary.md5", "manifest-summary.checksum"):
        (export_dir / name).unlink(missing_ok=True)
    with pytest.raises(ExportVerificationError, match="exportTime .* is not an ISO 8601 time"):
        _ = open_manifest(str(export_dir)).export_date


def test_a_manifest_export_time_gives_its_utc_date() -> None:
    from dynamo_cdc.export import ExportManifest, LocalExportSource

    manifest = ExportManifest(
        LocalExportSource(Path(".")), {"exportTime": "2026-01-01T23:30:00-05:00"}
    )
    assert manifest.export_date == "2026-01-02"


@pytest.mark.parametrize(
    "date", ["../x", "2026-01-01/../../x", "2026-02-30", "20260101", " 2026-01-01"]
)
def test_a_snapshot_partition_that_is_not_a_date_is_refused(
    export_dir: Path, tmp_path: Path, date: str
) -> None:
    manifest = open_manifest(str(export_dir))
    with pytest.raises(LakeError, match="partition date"):
        write_snapshot(manifest, Lake(str(tmp_path / "lake")), "orders", date, workers=1)
    assert not (tmp_path / "x").exists()


def test_cli_export_to_parquet_refuses_a_tampered_export_time(
    export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dynamo_cdc.cli import main

    summary = json.loads((export_dir / "manifest-summary.json").read_text())
    summary["exportTime"] = "../../escape"
    (export_dir / "manifest-summary.json").write_text(json.dumps(summary))
    for name in ("manifest-summary.md5", "manifest-summary.checksum"):
        (export_dir / name).unlink(missing_ok=True)
    assert (
        main(["export-to-parquet", str(export_dir), str(tmp_path / "lake"), "--table", "orders"])
        == 2
    )
    assert "exportTime '../../escape' is not an ISO 8601 time" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists()


# -- a lying endpoint ----------------------------------------------------------------------------


def _reader_on_simulator(images: list[dict], budget=None, before_parse=None):
    """A StreamReader reading, through boto3, a simulated stream of ``orders`` holding one
    record per image (INSERT of the first key, MODIFY after); ``before_parse`` is registered
    on GetRecords before the reader's own handler (an endpoint that lies)."""
    import boto3
    from botocore.config import Config

    from dynamo_cdc.checkpoint import StreamCheckpoint
    from dynamo_cdc.local.botocore_hook import attach
    from dynamo_cdc.local.streams import ManualClock, StreamSimulator
    from dynamo_cdc.stream import GET_RECORDS_EVENT, StreamReader

    clock = ManualClock(start=1_709_290_800.0)
    sim = StreamSimulator(clock=clock, seed=7)
    sim.enable_stream(
        "orders", "NEW_AND_OLD_IMAGES", key_schema=[{"AttributeName": "pk", "KeyType": "HASH"}]
    )
    seen: set[str] = set()
    for image in images:
        keys = {"pk": image["pk"]}
        sim.record("orders", "MODIFY" if image["pk"]["S"] in seen else "INSERT", keys, None, image)
        seen.add(image["pk"]["S"])
    client = boto3.client(
        "dynamodbstreams", region_name="us-east-1", config=Config(retries={"max_attempts": 1})
    )
    attach(client, sim)
    if before_parse is not None:
        client.meta.events.register_first(GET_RECORDS_EVENT, before_parse)
    return StreamReader(
        client,
        "orders",
        StreamCheckpoint("orders"),
        budget,
        stream_arn=sim.stream_arn("orders"),
        clock=clock,
        sleep=clock.advance,
    )


def test_a_stream_that_understates_size_bytes_cannot_make_a_poll_read_past_its_byte_budget() -> (
    None
):
    """Every record says SizeBytes 1 but carries 100 KB: the poll stops on the bytes it read."""
    import re

    from dynamo_cdc.stream import ReadBudget

    def lie(response_dict: dict, **_: object) -> None:
        body = response_dict.get("body")
        if isinstance(body, bytes):
            response_dict["body"] = re.sub(rb'"SizeBytes":\s*\d+', b'"SizeBytes":1', body)

    images = [{"pk": {"S": f"k{i}"}, "blob": {"S": "x" * 100_000}} for i in range(20)]
    reader = _reader_on_simulator(images, ReadBudget(max_bytes=500_000, records_per_call=2), lie)
    batch = reader.poll()
    assert batch.stopped_by == "bytes"
    assert 500_000 <= batch.bytes < 500_000 + 2 * 101_000  # at most one response past it
    assert batch.count < 20


# -- big table lists -----------------------------------------------------------------------------


def test_a_table_list_field_over_the_csv_limit_is_the_table_lists_own_error(tmp_path: Path) -> None:
    from dynamo_cdc.config import load_table_list
    from dynamo_cdc.errors import TableListError

    path = tmp_path / "tables.csv"
    path.write_text("orders\n" + '"' + "x" * 200_000 + '"\n')
    with pytest.raises(TableListError, match=r"tables\.csv, line 2: not a table-list row"):
        load_table_list(path)


def test_a_table_list_with_a_nul_byte_is_the_table_lists_own_error(tmp_path: Path) -> None:
    from dynamo_cdc.config import load_table_list
    from dynamo_cdc.errors import TableListError

    path = tmp_path / "tables.csv"
    path.write_text("orders\nbad\x00name\n")
    with pytest.raises(TableListError, match=r"tables\.csv, line 2"):
        load_table_list(path)


def test_a_table_list_past_the_supported_size_warns_and_still_loads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dynamo_cdc.config import SUPPORTED_TABLES, parse_table_list

    at_limit = "".join(f"table-{i:05d}\n" for i in range(SUPPORTED_TABLES))
    with caplog.at_level("WARNING", logger="dynamo_cdc.config"):
        assert len(parse_table_list(at_limit, "big.csv")) == SUPPORTED_TABLES
    assert not caplog.records
    with caplog.at_level("WARNING", logger="dynamo_cdc.config"):
        specs = parse_table_list(at_limit + "one-more\n", "big.csv")
    assert len(specs) == SUPPORTED_TABLES + 1
    assert "big.csv lists 1001 tables; one code location is supported up to 1000" in caplog.text


# -- nesting ---------------------------------------------------------------------------------------


def _nested(levels: int, kind: str = "M", leaf: dict | None = None) -> dict:
    """A value of ``levels`` maps (or lists) one inside the other around ``leaf``."""
    value = leaf if leaf is not None else {"S": "leaf"}
    for _ in range(levels):
        value = {"M": {"a": value}} if kind == "M" else {"L": [value]}
    return value


def _deep_json(levels: int, kind: str = "M") -> bytes:
    """The text of a ``levels``-deep value, built flat (orjson stops at 255 levels)."""
    opening, closing = (b'{"M":{"a":', b"}}") if kind == "M" else (b'{"L":[', b"]}")
    return opening * levels + b'{"S":"leaf"}' + closing * levels


def _data_file(tmp_path: Path, lines: list[bytes], name: str = "d.json.gz") -> Path:
    import gzip

    path = tmp_path / name
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines), compresslevel=1))
    return path


def _good_lines(n: int) -> list[bytes]:
    return [b'{"Item":{"pk":{"S":"k%d"},"v":{"N":"%d"}}}' % (i, i) for i in range(n)]


def _convert_json(path: Path, reader: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """Rows of a JSON data file by one reader: the C reader, the reference a block at a time
    (C off), or the reference line by line; the errors as the snapshot words them."""
    from dynamo_cdc import snapshot
    from dynamo_cdc.convert import native

    monkeypatch.setattr(native, "ENABLED", reader == "native")
    chunks = (
        snapshot._reference_chunks(path, "DYNAMODB_JSON", path.name)
        if reader == "lines"
        else snapshot._block_chunks(path, path.name)
    )
    return sum(n for n, _, _ in chunks)


READERS = ["native", "reference", "lines"]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("levels", [33, 1_000, 10_000])
@pytest.mark.parametrize("kind", ["M", "L"])
def test_an_export_item_nested_deeper_than_32_levels_is_refused_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str, levels: int, kind: str
) -> None:
    """1,000 levels raised RecursionError; 10,000 crashed pyarrow's JSON reader (segfault)."""
    lines = _good_lines(5)
    lines.insert(3, b'{"Item":{"pk":{"S":"deep"},"d":' + _deep_json(levels, kind) + b"}}")
    path = _data_file(tmp_path, lines)
    with pytest.raises(
        ExportVerificationError, match=r"d\.json\.gz line 4 nests maps and lists deeper than "
    ):
        _convert_json(path, reader, monkeypatch)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    "value",
    [
        _nested(32),
        _nested(32, "L"),
        _nested(32, leaf={"SS": ["a", "b"]}),  # a set in a level-32 map: as deep as it gets
        _nested(31, leaf={"M": {}}),  # an empty map at level 32
    ],
    ids=["32 maps", "32 lists", "set at level 32", "empty map at level 32"],
)
def test_an_export_item_of_32_levels_is_read_by_every_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str, value: dict
) -> None:
    import orjson

    from dynamo_cdc import nesting

    assert nesting.levels(value) == 32
    lines = [*_good_lines(3), b'{"Item":{"pk":{"S":"deep"},"d":' + orjson.dumps(value) + b"}}"]
    assert _convert_json(_data_file(tmp_path, lines), reader, monkeypatch) == 4


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("empty", [{"M": {}}, {"L": []}], ids=["map", "list"])
def test_an_empty_map_or_list_at_level_33_is_refused_by_every_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str, empty: dict
) -> None:
    """It has the bracket depth of a set at level 32: the exact check tells them apart."""
    import orjson

    value = _nested(32, leaf=empty)
    lines = [*_good_lines(2), b'{"Item":{"pk":{"S":"deep"},"d":' + orjson.dumps(value) + b"}}"]
    with pytest.raises(ExportVerificationError, match=r"d\.json\.gz line 3 nests"):
        _convert_json(_data_file(tmp_path, lines), reader, monkeypatch)


@pytest.mark.parametrize("levels", [32, 33, 1_000, 10_000])
def test_an_ion_export_item_is_held_to_32_levels(tmp_path: Path, levels: int) -> None:
    from dynamo_cdc import snapshot

    good = [b'$ion_1_0 {Item:{pk:"k%d",s:$dynamodb_SS::["a"],b:{{aGk=}}}}' % i for i in range(3)]
    deep = b'$ion_1_0 {Item:{pk:"deep",d:' + b"{a:" * levels + b'"x"' + b"}" * levels + b"}}"
    path = _data_file(tmp_path, [*good, deep], "d.ion.gz")
    chunks = snapshot._reference_chunks(path, "ION", path.name)
    if levels <= 32:
        assert sum(n for n, _, _ in chunks) == 4
        return
    with pytest.raises(ExportVerificationError, match=r"d\.ion\.gz line 4 nests maps and lists"):
        sum(n for n, _, _ in chunks)


def _deep_record(levels: int, kind: str = "M") -> dict:
    record = _records()[0]
    record["dynamodb"]["NewImage"] = {"pk": {"S": "a"}, "d": _nested(levels, kind)}
    return record


@pytest.mark.parametrize("native_on", [True, False], ids=["C walker", "Python path"])
@pytest.mark.parametrize("levels", [33, 1_000, 10_000])
def test_stream_record_dicts_nested_deeper_than_32_levels_are_refused_naming_the_record(
    monkeypatch: pytest.MonkeyPatch, native_on: bool, levels: int
) -> None:
    from dynamo_cdc.convert import native

    monkeypatch.setattr(native, "ENABLED", native_on)
    with pytest.raises(StreamRecordError, match=r"record 'e1' .* NewImage nested deeper than"):
        records_to_table([_deep_record(levels)], KEYS, shard_ids="shardId-1")
    assert records_to_table([_deep_record(32)], KEYS, shard_ids="shardId-1").num_rows == 1


@pytest.mark.parametrize("native_on", [True, False], ids=["C reader", "orjson"])
@pytest.mark.parametrize("levels", [32, 33, 200])
def test_a_get_records_response_nested_deeper_than_32_levels_is_refused_naming_the_shard(
    monkeypatch: pytest.MonkeyPatch, native_on: bool, levels: int
) -> None:
    """The simulator answers a record whose image nests ``levels`` deep, through boto3."""
    from dynamo_cdc.convert import native

    monkeypatch.setattr(native, "ENABLED", native_on)
    keys = {"pk": {"S": "a"}}
    reader = _reader_on_simulator([{**keys, "v": {"N": "1"}}, {**keys, "d": _nested(levels)}])
    if levels <= 32:
        assert reader.poll().count == 2
        return
    with pytest.raises(StreamRecordError, match=r"Shard shardId-.* of table 'orders'") as info:
        batch = reader.poll()
        records_to_table(batch.pages[0][1], KEYS, shard_ids="x")
    assert "nested deeper than DynamoDB's 32 levels" in str(info.value)


@pytest.mark.parametrize("native_on", [True, False], ids=["C reader", "orjson"])
@pytest.mark.parametrize("levels", [1_000, 10_000])
def test_a_get_records_body_nested_thousands_deep_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch, native_on: bool, levels: int
) -> None:
    """Deeper than the simulator writes: the body as bytes, through the GetRecords handler
    (the StreamReader words the refusal with the shard, as the test above shows)."""
    import orjson

    from dynamo_cdc import nesting
    from dynamo_cdc.convert import native
    from dynamo_cdc.stream import read_records

    monkeypatch.setattr(native, "ENABLED", native_on)
    record = orjson.dumps(_deep_record(0)).replace(b'{"S":"leaf"}', _deep_json(levels), 1)
    body = b'{"Records":[' + record + b'],"NextShardIterator":"it"}'
    response = {"body": body, "headers": {}, "status_code": 200}
    with pytest.raises(nesting.TooDeep):
        read_records(response_dict=response, customized_response_dict={})
    pretty = body.replace(b"{", b"{\n")  # newlines between tokens do not reset the depth
    with pytest.raises(nesting.TooDeep):
        read_records(response_dict={**response, "body": pretty}, customized_response_dict={})


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_line_depths_are_the_depth_of_each_json_line_in_c_and_in_numpy() -> None:
    """Against the depth of the Python value each line was written from; strings full of
    brackets, quotes and backslashes do not count."""
    import orjson
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dynamo_cdc import nesting
    from dynamo_cdc.convert import native

    text = st.text(alphabet=st.sampled_from('{}[]"\\\nab\u00e9'), max_size=8)
    values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=20,
    )

    @settings(max_examples=300, deadline=None)
    @given(st.lists(values, min_size=1, max_size=5))
    def same(docs: list) -> None:
        block = b"\n".join(orjson.dumps(d) for d in docs)
        expected = [_depth(d) for d in docs]
        enabled = native.ENABLED
        try:
            for on in [True, False] if native.module is not None else [False]:
                native.ENABLED = on
                assert nesting.line_depths(block).tolist() == expected
        finally:
            native.ENABLED = enabled

    same()


# -- line size -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gzip of 300 KB that expands to 256 MB: two item lines, then one line without end."""
    import zlib

    path = tmp_path_factory.mktemp("bomb") / "bomb.json.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as fh:
        fh.write(compressor.compress(b"\n".join(_good_lines(2)) + b'\n{"Item":{"pk":{"S":"'))
        chunk = b"x" * (1 << 20)
        for _ in range(256):
            fh.write(compressor.compress(chunk))
        fh.write(compressor.flush())
    assert path.stat().st_size < 400_000
    return path


@pytest.mark.parametrize("reader", READERS)
def test_a_line_far_beyond_the_item_limit_is_refused_before_it_is_held_whole(
    bomb: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """The whole line was held (and copied once per 8 MB read: quadratic): 256 MB here, and
    gigabytes from a few hundred KB of gzip. Now the 8 MiB bound and a few reads' buffers."""
    import tracemalloc

    from dynamo_cdc.export import MAX_LINE_BYTES

    tracemalloc.start()
    try:
        with pytest.raises(
            ExportVerificationError, match=r"bomb\.json\.gz line 3 is longer than 8 MiB"
        ):
            _convert_json(bomb, reader, monkeypatch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * MAX_LINE_BYTES  # about 50 MB measured; the line alone was 256 MB


def test_lines_spanning_many_reads_come_out_whole_and_in_order(tmp_path: Path) -> None:
    import random

    from dynamo_cdc.export import iter_blocks

    rng = random.Random(5)
    lines = [b"x" * rng.choice([0, 1, 3, 50, 400]) + b"%d" % i for i in range(300)]
    path = _data_file(tmp_path, lines)
    for block_bytes in (1, 7, 64, 1000, 1 << 20):
        blocks = list(iter_blocks(path, block_bytes=block_bytes, max_line=1000))
        assert b"\n".join(blocks).split(b"\n") == lines


def test_a_line_at_the_bound_is_read_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    from dynamo_cdc.export import LineTooLong, iter_blocks

    path = _data_file(tmp_path, [b"a" * 100, b"b" * 100])
    assert len(list(iter_blocks(path, block_bytes=30, max_line=100))) == 2
    with pytest.raises(LineTooLong):
        list(iter_blocks(path, block_bytes=30, max_line=99))


def test_a_snapshot_plan_back_from_json_is_held_to_the_same_rules(export_dir: Path) -> None:
    """A plan travels between steps as JSON (run config): its partition and its data-file keys
    are checked again when it is read back."""
    from dynamo_cdc.snapshot import SnapshotPlan, plan_snapshot

    plan = plan_snapshot(open_manifest(str(export_dir)), "orders", "2026-01-01").to_dict()
    with pytest.raises(LakeError, match="partition date"):
        SnapshotPlan.from_dict({**plan, "export_date": "2026-01-01/../../x"})
    files = [dict(f) for f in plan["files"]]
    files[0]["key"] = "/etc/passwd"
    with pytest.raises(ExportVerificationError, match="not under"):
        SnapshotPlan.from_dict({**plan, "files": files}).manifest()
    assert len(SnapshotPlan.from_dict(plan).manifest().files) == 2
