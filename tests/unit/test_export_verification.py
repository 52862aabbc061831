"""A downloaded export is verified before anything is published: every damage is named."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path

import pytest

from bench.generate import generate_export, generate_items
from dynamo_cdc import codec, read_table
from dynamo_cdc.errors import ExportVerificationError
from dynamo_cdc.export import open_manifest
from dynamo_cdc.lake import Lake
from dynamo_cdc.snapshot import write_snapshot


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    info = generate_export(tmp_path / "bucket", items=600, files=3, seed=11)
    return Path(info.export_dir)


def _manifest_lines(export_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (export_dir / "manifest-files.json").read_text().splitlines()]


def _replace_data_file(export_dir: Path, index: int, lines: list[bytes]) -> str:
    """Rewrite data file ``index`` with ``lines`` and make the manifest's MD5 agree, so only the
    content check can catch the damage. Returns the file's key."""
    entries = _manifest_lines(export_dir)
    key = entries[index]["dataFileS3Key"]
    path = export_dir / "data" / key.rsplit("/", 1)[1]
    body = gzip.compress(b"".join(lines))
    path.write_bytes(body)
    entries[index]["md5Checksum"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    text = "".join(json.dumps(e) + "\n" for e in entries)
    (export_dir / "manifest-files.json").write_text(text)
    for name in ("manifest-files.md5", "manifest-files.checksum"):
        (export_dir / name).unlink(missing_ok=True)
    return key


def _lines(export_dir: Path, index: int) -> list[bytes]:
    key = _manifest_lines(export_dir)[index]["dataFileS3Key"]
    data = (export_dir / "data" / key.rsplit("/", 1)[1]).read_bytes()
    return gzip.decompress(data).splitlines(keepends=True)


def _convert(export_dir: Path, root: Path):
    manifest = open_manifest(str(export_dir))
    return write_snapshot(
        manifest, Lake(str(root)), "orders", "2026-01-01", ["pk", "sk"], workers=1
    )


def test_a_downloaded_export_converts_to_the_snapshot(export_dir: Path, tmp_path: Path) -> None:
    result = _convert(export_dir, tmp_path / "lake")
    assert result.rows == 600
    rows = read_table(str(tmp_path / "lake"), "orders", "snapshot").to_pylist()
    expected = {(i["pk"]["S"], i["sk"]["S"]): i for i in generate_items(600, seed=11)}
    assert {(r["pk"], r["sk"]): codec.item_from_json_text(r["_item"]) for r in rows} == expected


def test_missing_data_file_is_named(export_dir: Path, tmp_path: Path) -> None:
    key = _manifest_lines(export_dir)[1]["dataFileS3Key"]
    (export_dir / "data" / key.rsplit("/", 1)[1]).unlink()
    with pytest.raises(ExportVerificationError, match=r"\.json\.gz is missing"):
        _convert(export_dir, tmp_path / "lake")
    assert Lake(str(tmp_path / "lake")).list("orders") == []


def test_a_line_that_is_not_json_is_named(export_dir: Path, tmp_path: Path) -> None:
    lines = _lines(export_dir, 0)
    lines[5] = b"{not json\n"
    key = _replace_data_file(export_dir, 0, lines)
    with pytest.raises(
        ExportVerificationError, match=f"{key.rsplit('/', 1)[1]} line 6 is not JSON"
    ):
        _convert(export_dir, tmp_path / "lake")
    assert Lake(str(tmp_path / "lake")).list("orders") == []


def test_an_unknown_type_tag_is_named(export_dir: Path, tmp_path: Path) -> None:
    lines = _lines(export_dir, 0)
    lines[3] = b'{"Item":{"pk":{"S":"x"},"sk":{"S":"y"},"bad":{"Q":"1"}}}\n'
    key = _replace_data_file(export_dir, 0, lines)
    with pytest.raises(ExportVerificationError, match=f"{key.rsplit('/', 1)[1]}.*'Q'"):
        _convert(export_dir, tmp_path / "lake")
    assert Lake(str(tmp_path / "lake")).list("orders") == []


def test_a_damaged_manifest_fails_its_checksum(export_dir: Path, tmp_path: Path) -> None:
    path = export_dir / "manifest-files.json"
    checksum = [
        p for p in export_dir.iterdir() if p.name.startswith("manifest-files.") and p != path
    ]
    assert checksum, "the export has a checksum file for its manifest"
    text = path.read_text()
    path.write_text(text.replace('"itemCount":200', '"itemCount":201', 1))
    with pytest.raises(ExportVerificationError, match="checksum|manifest"):
        _convert(export_dir, tmp_path / "lake")


def test_a_folder_that_is_not_an_export_says_so(tmp_path: Path) -> None:
    with pytest.raises(ExportVerificationError, match="does not exist"):
        open_manifest(str(tmp_path / "nothing-here"))


@pytest.mark.parametrize("on", [True, False], ids=["native", "reference"])
def test_a_truncated_data_file_names_the_last_line_read_whichever_reader_read_it(
    tmp_path: Path, on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynamo_cdc import convert, snapshot
    from dynamo_cdc.convert import native
    from dynamo_cdc.export import iter_blocks

    items = generate_items(24_000, seed=2)
    lines = [b'{"Item":' + json.dumps(i, separators=(",", ":")).encode() + b"}" for i in items]
    data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1)
    path = tmp_path / "data.json.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    complete = 0  # the lines of the blocks read before the damage
    with pytest.raises(EOFError):
        for block in iter_blocks(path):
            complete += block.count(b"\n") + 1
    assert complete > 0 and complete % 1000  # several blocks, not at a round number

    monkeypatch.setattr(native, "ENABLED", on)
    native.drain(convert.BLOCKS)
    with pytest.raises(ExportVerificationError, match=f"after line {complete} "):
        for _ in snapshot._block_chunks(path, "data.json.gz"):
            pass
    blocks = native.drain(convert.BLOCKS)
    assert blocks.total and (blocks.taken if on else blocks.refused) == blocks.total
