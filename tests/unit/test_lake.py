"""The lake writes atomically and never outside its root."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

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


NOBODY = 65534


def _as_a_user_without_root_powers(fn: Callable[[], None]) -> str:
    """Run ``fn`` as it would run for an ordinary user; the text of what it raised ('' if
    nothing). Root ignores file permissions (CI runs as root), so as root ``fn`` runs in a
    forked child that dropped to uid/gid 65534 first; otherwise here."""
    if os.geteuid() != 0:
        try:
            fn()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return ""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                fn()
                text = ""
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
            os.write(write_end, text.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed to run"
    return text


def test_unwritable_lake_root_is_a_clear_error_for_root_too() -> None:
    Lake(tempfile.mkdtemp()).write_bytes("warm/x", b"x")  # imports done before any fork
    parent = Path(tempfile.mkdtemp(prefix="dynamo-cdc-ro-"))  # /tmp: reachable by anyone
    try:
        parent.chmod(0o755)
        root = parent / "ro"
        root.mkdir()
        root.chmod(0o555)
        raised = _as_a_user_without_root_powers(lambda: Lake(str(root)).write_bytes("t1/x", b"x"))
        assert re.match(
            f"LakeError: .*'t1/x'.*{re.escape(str(root))}.*permission denied.*Fix:", raised
        )
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o755)
        shutil.rmtree(parent)


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


def test_an_s3_lake_hands_its_clients_credentials_to_readers_outside_boto3() -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        aws_session_token="token",
    )
    frozen = Lake("s3://lake/root", s3_client=s3).s3_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "AKIDEXAMPLE",
        "secret",
        "token",
    )
