"""The lake writes atomically and never outside its root."""

from __future__ import annotations

import os

import pytest

from dynamo_cdc.errors import LakeError, UnsafeTableNameError
from dynamo_cdc.lake import Lake


def test_write_bytes_replaces_atomically_and_leaves_no_temp_file(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    lake.write_bytes("t1/_state/a.json", b"one")
    lake.write_bytes("t1/_state/a.json", b"two")
    assert lake.read_bytes("t1/_state/a.json") == b"two"
    assert os.listdir(tmp_path / "t1" / "_state") == ["a.json"]


def test_publish_dir_swaps_whole_folder(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    rel = lake.table_path("orders", "snapshot", "export_date=2026-01-01")
    for content in (["a", "b"], ["c"]):
        with lake.staging("orders") as staging:
            for name in content:
                (staging / f"{name}.parquet").write_bytes(name.encode())
            published = lake.publish_dir(staging, rel)
        assert published == [f"{rel}/{n}.parquet" for n in content]
    assert lake.list(rel) == [f"{rel}/c.parquet"]
    assert lake.list("orders/_state/staging") == []


@pytest.mark.parametrize("table", ["../x", "/abs", "..", "a/b"])
def test_table_names_cannot_escape_the_root(tmp_path, table: str) -> None:
    lake = Lake(str(tmp_path))
    with pytest.raises(UnsafeTableNameError):
        lake.table_path(table, "snapshot")


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../b", "a/.."])
def test_relative_paths_cannot_escape_the_root(tmp_path, rel: str) -> None:
    with pytest.raises(LakeError, match="stay inside the root"):
        Lake(str(tmp_path)).write_bytes(rel, b"x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_lake_root_is_a_clear_error(tmp_path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    with pytest.raises(LakeError, match="permission denied.*Fix:"):
        Lake(str(root)).write_bytes("t1/x", b"x")


def test_lake_root_that_is_a_file_is_a_clear_error(tmp_path) -> None:
    root = tmp_path / "file"
    root.write_text("not a folder")
    with pytest.raises(LakeError, match="lake root.*Fix:"):
        Lake(str(root)).write_bytes("t1/x", b"x")


def test_read_only_filesystem_is_a_clear_error(tmp_path, monkeypatch) -> None:
    import errno

    def refuse(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("dynamo_cdc.lake.os.replace", refuse)
    with pytest.raises(LakeError, match="Read-only file system.*Fix:"):
        Lake(str(tmp_path)).write_bytes("t1/x", b"x")


def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    import errno

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dynamo_cdc.lake.os.fsync", full)
    lake = Lake(str(tmp_path))
    with pytest.raises(LakeError, match="disk is full"):
        lake.write_bytes("t1/x", b"x")
    assert lake.list("t1") == []
