"""The benchmark's export generator and runner: deterministic, AWS-shaped, runnable."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
# bench/ is not an installed package: import it from the checkout.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.generate import (  # noqa: E402
    CONFLICT_ATTRIBUTE,
    SPARSE_ATTRIBUTES,
    generate_export,
    generate_items,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _manifest_lines(export_dir: Path) -> list[dict]:
    text = (export_dir / "manifest-files.json").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_same_seed_gives_byte_identical_export_and_other_seed_differs(tmp_path):
    a = generate_export(tmp_path / "a", items=300, files=3, seed=11)
    b = generate_export(tmp_path / "b", items=300, files=3, seed=11)
    c = generate_export(tmp_path / "c", items=300, files=3, seed=12)
    tree_a, tree_b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert tree_a == tree_b
    assert len([k for k in tree_a if "/data/" in k]) == 3
    data_a = b"".join(v for k, v in tree_a.items() if "/data/" in k)
    data_c = b"".join(v for k, v in _tree(tmp_path / "c").items() if "/data/" in k)
    assert data_a != data_c
    assert a.export_id == b.export_id != c.export_id


def test_layout_and_manifests_match_the_data_files(tmp_path):
    info = generate_export(tmp_path, items=500, files=4, seed=3)
    root = Path(info.export_dir)
    assert root.parent.name == "AWSDynamoDB"
    assert (root / "_started").read_bytes() == b""
    summary = json.loads((root / "manifest-summary.json").read_text())
    assert summary["version"] == "2020-06-30"
    assert summary["outputFormat"] == "DYNAMODB_JSON"
    assert summary["itemCount"] == 500
    assert summary["exportArn"].endswith(f"/export/{root.name}")
    assert summary["manifestFilesS3Key"] == f"AWSDynamoDB/{root.name}/manifest-files.json"
    for name in ("manifest-summary", "manifest-files"):
        body = (root / f"{name}.json").read_bytes()
        expected = base64.b64encode(hashlib.md5(body).digest())
        assert (root / f"{name}.md5").read_bytes() == expected

    lines = _manifest_lines(root)
    assert len(lines) == 4
    assert sum(entry["itemCount"] for entry in lines) == 500
    for entry in lines:
        assert set(entry) == {"itemCount", "md5Checksum", "etag", "dataFileS3Key"}
        path = tmp_path / entry["dataFileS3Key"]
        assert path.name.endswith(".json.gz") and path.parent.name == "data"
        raw = path.read_bytes()
        assert entry["md5Checksum"] == base64.b64encode(hashlib.md5(raw).digest()).decode()
        assert raw[:2] == b"\x1f\x8b"  # standard gzip
        assert gzip.decompress(raw).count(b"\n") == entry["itemCount"]


def test_data_lines_decode_to_exactly_generate_items(tmp_path):
    info = generate_export(tmp_path, items=400, files=3, seed=5)
    items = []
    for entry in _manifest_lines(Path(info.export_dir)):
        with gzip.open(tmp_path / entry["dataFileS3Key"], "rt") as fh:
            for line in fh:
                record = json.loads(line)
                assert list(record) == ["Item"]
                items.append(record["Item"])
    assert items == list(generate_items(400, seed=5))
    total = sum(len(line) for line in (b'{"Item":' + orjson.dumps(i) + b"}\n" for i in items))
    assert info.uncompressed_bytes == total


def test_items_have_every_type_the_conflict_and_sparse_attributes():
    items = list(generate_items(5000, seed=1))
    conflict = Counter(next(iter(i[CONFLICT_ATTRIBUTE])) for i in items)
    assert conflict["N"] > 4900 and 1 <= conflict["S"] <= 20

    def tags(value, seen):
        ((tag, v),) = value.items()
        seen.add(tag)
        if tag == "M":
            for x in v.values():
                tags(x, seen)
        elif tag == "L":
            for x in v:
                tags(x, seen)

    seen: set[str] = set()
    for item in items[:500]:
        for value in item.values():
            tags(value, seen)
    assert seen == {"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"}
    for name in SPARSE_ATTRIBUTES:
        share = sum(name in i for i in items) / len(items)
        assert 0.07 < share < 0.13, (name, share)
    assert any(len(i["ledger_id"]["N"]) == 38 for i in items)
    mean_size = sum(len(orjson.dumps(i)) for i in items) / len(items)
    assert 900 < mean_size < 1050
    assert 15 <= sum(len(i) for i in items) / len(items) <= 19
    assert len({(i["pk"]["S"], i["sk"]["S"]) for i in items}) == len(items)


def test_ion_export_lines_parse_as_ion_with_decimals_and_annotated_sets(tmp_path):
    from amazon.ion import simpleion

    info = generate_export(tmp_path, items=60, files=2, seed=9, fmt="ion")
    root = Path(info.export_dir)
    assert json.loads((root / "manifest-summary.json").read_text())["outputFormat"] == "ION"
    originals = list(generate_items(60, seed=9))
    decoded = []
    for entry in _manifest_lines(root):
        assert entry["dataFileS3Key"].endswith(".ion.gz")
        with gzip.open(tmp_path / entry["dataFileS3Key"], "rt") as fh:
            for line in fh:
                assert line.startswith("$ion_1_0 {Item:")
                decoded.append(simpleion.loads(line)["Item"])
    assert len(decoded) == 60
    first, orig = decoded[0], originals[0]
    assert first["ledger_id"] == Decimal(orig["ledger_id"]["N"])
    assert isinstance(first["revision"], Decimal)  # N is an Ion decimal even when integral
    assert [a.text for a in first["tags"].ion_annotations] == ["$dynamodb_SS"]
    assert [a.text for a in first["ratings"].ion_annotations] == ["$dynamodb_NS"]
    assert bytes(first["thumbnail"]) == base64.b64decode(orig["thumbnail"]["B"])


BASELINE_NAMES = ("naive", "duckdb_raw", "duckdb_typed", "pyarrow_raw")


def test_bench_run_tiny_prints_table_and_writes_results(tmp_path):
    # The baselines only: "ours" is another module's work and has its own tests. The stream and
    # mirror benchmarks that follow run at a tiny size too; the freshness probe, which runs the
    # demo for minutes, has its own test (tests/e2e/test_freshness_probe.py).
    env = dict(
        os.environ,
        BENCH_ITEMS="2000",
        BENCH_FILES="2",
        BENCH_OUT=str(tmp_path),
        BENCH_APPROACHES=",".join(BASELINE_NAMES),
        BENCH_RECORDS="2000",
        BENCH_FRESHNESS="0",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard, not a speed limit: speed is measured in bench/
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| approach | items/s | MB/s | peak RSS MB | vs naive | vs duckdb_raw |" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["approach"]: r for r in results["rows"]}
    assert set(rows) == set(BASELINE_NAMES)
    for name in BASELINE_NAMES:
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["items"] == 2000
        assert rows[name]["peak_rss_mb"] > 10
        assert f"| {name} | " in proc.stdout
    assert results["export"]["items"] == 2000
    assert "2,000 stream records, one core" in proc.stdout
    assert "| the C reader (the StreamReader's handler), then ours |" in proc.stdout
    assert "ratio:" in proc.stdout  # the mirror refresh's bytes rewritten
    # the snapshot as 1 and as 2 convert steps in parallel, with the scaling efficiency
    assert "| convert steps in parallel | seconds | items/s |" in proc.stdout
    assert "scaling efficiency with 2 steps:" in proc.stdout


def test_stream_records_are_boto3_shaped_with_binary_as_bytes():
    import datetime as dt

    from bench.stream_records import generate_records

    records = generate_records(200, seed=2)
    assert {r["eventName"] for r in records} == {"INSERT", "MODIFY", "REMOVE"}
    for r in records:
        d = r["dynamodb"]
        assert isinstance(d["ApproximateCreationDateTime"], dt.datetime)
        assert set(d["Keys"]) == {"pk", "sk"}
        assert d["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        image = d.get("NewImage") or d["OldImage"]
        assert isinstance(image["thumbnail"]["B"], bytes)
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs)


@pytest.mark.parametrize("bad", [{"fmt": "csv"}, {"files": 0}])
def test_generate_export_rejects_bad_arguments(tmp_path, bad):
    with pytest.raises(ValueError):
        generate_export(tmp_path, items=10, **bad)


def test_bench_own_ion_encoder_writes_parseable_export_lines():
    from amazon.ion import simpleion

    from bench.generate import bench_item_to_ion_text

    for item in generate_items(50, seed=4):
        line = bench_item_to_ion_text(item)
        assert line.startswith("$ion_1_0 {Item:{")
        decoded = simpleion.loads(line)["Item"]
        assert decoded["ledger_id"] == Decimal(item["ledger_id"]["N"])
        assert isinstance(decoded["revision"], Decimal | str)
        assert [a.text for a in decoded["tags"].ion_annotations] == ["$dynamodb_SS"]


def test_duckdb_typed_reference_keeps_items_lossless_and_types_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.baselines import duckdb_typed

    info = generate_export(tmp_path / "export", items=3000, files=2, seed=8)
    assert duckdb_typed(info.export_dir, str(tmp_path / "out")) == 3000
    table = pq.read_table(tmp_path / "out" / "part-0.parquet")
    originals = list(generate_items(3000, seed=8))
    assert any("S" in o[CONFLICT_ATTRIBUTE] for o in originals)
    decoded = [json.loads(t) for t in table["_item"].to_pylist()]

    def sort_key(item):
        return item["sk"]["S"]

    assert sorted(decoded, key=sort_key) == sorted(originals, key=sort_key)
    assert pa.types.is_decimal(table.schema.field("total").type)
    assert pa.types.is_decimal(table.schema.field("ledger_id").type)
    assert pa.types.is_binary(table.schema.field("thumbnail").type)
    # the N/S conflict becomes text in the typed view
    assert pa.types.is_string(table.schema.field(CONFLICT_ATTRIBUTE).type)
