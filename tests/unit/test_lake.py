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


# -- locks ---------------------------------------------------------------------------------------

_HOLD = """
import sys, time
from dynamo_cdc.lake import Lake
with Lake(sys.argv[1]).exclusive("t/_state/x.lock", wait_seconds=0):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path, seconds: float):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_local_lock_held_by_another_process_makes_the_next_holder_wait_then_fail(
    tmp_path,
) -> None:
    from dynamo_cdc.errors import LakeBusyError

    lake = Lake(str(tmp_path))
    proc = _holder(tmp_path, 30)
    try:
        with pytest.raises(LakeBusyError, match="capturing t"):
            with lake.exclusive("t/_state/x.lock", wait_seconds=0.3, what="capturing t"):
                pytest.fail("two holders at once")
    finally:
        proc.kill()
        proc.wait()
    # The OS released the dead holder's lock: the next holder gets it at once.
    with lake.exclusive("t/_state/x.lock", wait_seconds=0):
        pass


def test_a_local_lock_is_taken_as_soon_as_its_holder_releases_it(tmp_path) -> None:
    import time

    lake = Lake(str(tmp_path))
    proc = _holder(tmp_path, 1.0)
    started = time.monotonic()
    with lake.exclusive("t/_state/x.lock", wait_seconds=60):
        waited = time.monotonic() - started
    proc.wait()
    assert waited > 0.5  # it waited for the holder (which slept 1 s after saying it held it)


def test_a_local_lock_excludes_another_holder_in_the_same_process(tmp_path) -> None:
    from dynamo_cdc.errors import LakeBusyError

    lake = Lake(str(tmp_path))
    with lake.exclusive("t/_state/x.lock", wait_seconds=0):
        with pytest.raises(LakeBusyError):
            with lake.exclusive("t/_state/x.lock", wait_seconds=0.1):
                pass
    with lake.exclusive("t/_state/x.lock", wait_seconds=0):
        pass


@pytest.fixture
def s3_lake():
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        yield Lake("s3://lake/root", s3_client=s3)


def test_an_s3_lock_is_a_lease_object_that_excludes_a_second_holder(s3_lake) -> None:
    from dynamo_cdc.errors import LakeBusyError

    key = "root/t/_state/x.lock"
    with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0, what="capturing t"):
        lease = s3_lake.s3_client.get_object(Bucket="lake", Key=key)["Body"].read()
        assert b'"owner"' in lease and b'"expires"' in lease
        with pytest.raises(LakeBusyError, match="capturing t.*held by"):
            with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0.5, what="capturing t"):
                pytest.fail("two holders at once")
    assert s3_lake.s3_client.list_objects_v2(Bucket="lake").get("KeyCount") == 0  # released
    with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0):
        pass


def test_an_abandoned_s3_lease_is_taken_over(s3_lake) -> None:
    key = "root/t/_state/x.lock"
    dead = b'{"owner": "x", "expires": 0, "host": "h", "pid": 1}'  # its holder died long ago
    s3_lake.s3_client.put_object(Bucket="lake", Key=key, Body=dead)
    with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0):
        assert s3_lake.s3_client.get_object(Bucket="lake", Key=key)["Body"].read() != dead
    assert s3_lake.s3_client.list_objects_v2(Bucket="lake").get("KeyCount") == 0


def test_a_live_s3_holder_renews_its_lease_past_its_stale_time(s3_lake) -> None:
    import time

    from dynamo_cdc.errors import LakeBusyError

    with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0, stale_seconds=0.6):
        time.sleep(1.5)  # well past 0.6 s: only the renewals keep it
        with pytest.raises(LakeBusyError):
            with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0, stale_seconds=0.6):
                pytest.fail("a live holder's lease was taken over")


def test_a_taken_over_s3_lease_is_not_deleted_by_its_late_release(s3_lake) -> None:
    key = "root/t/_state/x.lock"
    s3 = s3_lake.s3_client
    with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0):
        # Another took it over (as if this holder had been stopped past its stale time).
        s3.put_object(Bucket="lake", Key=key, Body=b'{"owner": "other", "expires": 1e20}')
        theirs = s3.get_object(Bucket="lake", Key=key)["ETag"]
    # The release was conditional on this holder's own lease: theirs is still there.
    assert s3.get_object(Bucket="lake", Key=key)["ETag"] == theirs


def test_an_s3_lease_released_while_being_taken_over_is_simply_taken_again(
    s3_lake, monkeypatch
) -> None:
    """The abandoned lease disappears between our read and our If-Match takeover (its late
    holder released it): S3 answers NoSuchKey, and the lock is taken on the next try."""
    key = "root/t/_state/x.lock"
    s3 = s3_lake.s3_client
    s3.put_object(Bucket="lake", Key=key, Body=b'{"expires": 0, "host": "h", "pid": 1}')
    real_get = s3.get_object

    def get_then_release(**kwargs):
        answer = real_get(**kwargs)
        s3.delete_object(Bucket="lake", Key=key)
        monkeypatch.setattr(s3, "get_object", real_get)
        return answer

    monkeypatch.setattr(s3, "get_object", get_then_release)
    with s3_lake.exclusive("t/_state/x.lock", wait_seconds=2):
        assert b'"owner"' in real_get(Bucket="lake", Key=key)["Body"].read()


def test_an_s3_lease_whose_first_put_landed_unseen_is_recognised_as_ours(
    s3_lake, monkeypatch
) -> None:
    """botocore retried a PUT whose first try landed but whose answer was lost: the retry gets
    412, and the lease it finds is our own (same owner token), not another holder's."""
    from botocore.exceptions import ClientError

    s3 = s3_lake.s3_client
    real_put = s3.put_object

    def landed_then_lost(**kwargs):
        real_put(**kwargs)
        monkeypatch.setattr(s3, "put_object", real_put)
        raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")

    monkeypatch.setattr(s3, "put_object", landed_then_lost)
    with s3_lake.exclusive("t/_state/x.lock", wait_seconds=0):
        pass
    assert s3.list_objects_v2(Bucket="lake").get("KeyCount") == 0  # and released
