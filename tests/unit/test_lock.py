"""The lock in the lake: one holder at a time, an flock locally, a lease object on S3 that a live
holder renews and a late one never deletes from its taker."""

from __future__ import annotations

import pytest

from dynamo_cdc.errors import LakeBusyError
from dynamo_cdc.lake import Lake
from dynamo_cdc.lock import exclusive

_HOLD = """
import sys, time
from dynamo_cdc.lake import Lake
from dynamo_cdc.lock import exclusive
with exclusive(Lake(sys.argv[1]), "t/_state/x.lock", wait_seconds=0):
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
    lake = Lake(str(tmp_path))
    proc = _holder(tmp_path, 30)
    try:
        with pytest.raises(LakeBusyError, match="capturing t"):
            with exclusive(lake, "t/_state/x.lock", wait_seconds=0.3, what="capturing t"):
                pytest.fail("two holders at once")
    finally:
        proc.kill()
        proc.wait()
    # The OS released the dead holder's lock: the next holder gets it at once.
    with exclusive(lake, "t/_state/x.lock", wait_seconds=0):
        pass


def test_a_local_lock_is_taken_as_soon_as_its_holder_releases_it(tmp_path) -> None:
    import time

    lake = Lake(str(tmp_path))
    proc = _holder(tmp_path, 1.0)
    started = time.monotonic()
    with exclusive(lake, "t/_state/x.lock", wait_seconds=60):
        waited = time.monotonic() - started
    proc.wait()
    assert waited > 0.5  # it waited for the holder (which slept 1 s after saying it held it)


def test_a_local_lock_excludes_another_holder_in_the_same_process(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    with exclusive(lake, "t/_state/x.lock", wait_seconds=0):
        with pytest.raises(LakeBusyError):
            with exclusive(lake, "t/_state/x.lock", wait_seconds=0.1):
                pass
    with exclusive(lake, "t/_state/x.lock", wait_seconds=0):
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
    key = "root/t/_state/x.lock"
    with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0, what="capturing t"):
        lease = s3_lake.s3_client.get_object(Bucket="lake", Key=key)["Body"].read()
        assert b'"owner"' in lease and b'"expires"' in lease
        with pytest.raises(LakeBusyError, match="capturing t.*held by"):
            with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0.5, what="capturing t"):
                pytest.fail("two holders at once")
    assert s3_lake.s3_client.list_objects_v2(Bucket="lake").get("KeyCount") == 0  # released
    with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0):
        pass


def test_an_abandoned_s3_lease_is_taken_over(s3_lake) -> None:
    key = "root/t/_state/x.lock"
    dead = b'{"owner": "x", "expires": 0, "host": "h", "pid": 1}'  # its holder died long ago
    s3_lake.s3_client.put_object(Bucket="lake", Key=key, Body=dead)
    with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0):
        assert s3_lake.s3_client.get_object(Bucket="lake", Key=key)["Body"].read() != dead
    assert s3_lake.s3_client.list_objects_v2(Bucket="lake").get("KeyCount") == 0


def test_a_live_s3_holder_renews_its_lease_past_its_stale_time(s3_lake) -> None:
    import time

    with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0, stale_seconds=0.6):
        time.sleep(1.5)  # well past 0.6 s: only the renewals keep it
        with pytest.raises(LakeBusyError):
            with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0, stale_seconds=0.6):
                pytest.fail("a live holder's lease was taken over")


def test_a_taken_over_s3_lease_is_not_deleted_by_its_late_release(s3_lake) -> None:
    key = "root/t/_state/x.lock"
    s3 = s3_lake.s3_client
    with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0):
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
    with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=2):
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
    with exclusive(s3_lake, "t/_state/x.lock", wait_seconds=0):
        pass
    assert s3.list_objects_v2(Bucket="lake").get("KeyCount") == 0  # and released
