"""A lock in the lake: one holder at a time of ``<table>/_state/...lock``, across processes and,
on S3, machines.

Captures, compactions and checkpoint resets hold a table's capture lock, the mirror's refresh its
own (:mod:`dynamo_cdc.layout` names them). Locally it is an ``flock``, which the OS releases when
its process dies. On S3 it is a lease object written with ``If-None-Match: *``, released with
``If-Match`` its ETag, and taken over with ``If-Match`` once older than its stale time; a live
holder renews it every third of that. Dagster's pools do not serialise runs reliably on its
default storage, and the sensor's own capture is in no pool, hence this lock
(docs/architecture.md).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson

from dynamo_cdc.errors import LakeBusyError
from dynamo_cdc.lake import Lake, MissingObject

log = logging.getLogger(__name__)

# S3 codes of a conditional write that lost to another writer (NoSuchKey: the lease an If-Match
# takeover aimed at was released meanwhile).
_LOST_RACE = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey", "404"}
)


@contextmanager
def exclusive(
    lake: Lake, rel: str, *, wait_seconds: float, stale_seconds: float = 900.0, what: str = ""
) -> Iterator[None]:
    """Hold the lock ``rel`` while the block runs: one holder at a time, across processes
    (and, on S3, machines).

    Locally it is an ``flock`` on the file ``rel`` (never deleted), which the OS releases
    when its process dies. On S3 it is a lease object created with ``If-None-Match: *`` and
    deleted with ``If-Match`` its ETag; a lease older than ``stale_seconds`` (its holder
    died) is taken over with ``If-Match``, so two takers never both succeed. While the
    block runs, a thread renews the lease every third of ``stale_seconds``; only a holder
    that cannot renew for that long (stopped, or cut off from S3) can be taken over while it
    still works.

    Args:
        lake: the lake the lock is in.
        rel: the lock's path in the lake.
        wait_seconds: how long to wait for another holder to finish.
        stale_seconds: S3 only: when a lease counts as abandoned.
        what: what the lock guards, for the error.

    Raises:
        LakeBusyError: another holder kept it longer than ``wait_seconds``.
    """
    release = _s3_lock(lake, rel, wait_seconds, stale_seconds, what) if lake.is_s3 else None
    if release is not None:
        try:
            yield
        finally:
            release()
        return
    deadline = time.monotonic() + wait_seconds
    path = lake.local_path(rel)
    with lake.local_errors("lock", rel):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(lake, rel, what, wait_seconds) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _busy(lake: Lake, rel: str, what: str, wait_seconds: float, holder: str = "") -> LakeBusyError:
    return LakeBusyError(
        f"Another process is {what or 'holding ' + repr(rel)} (lock {lake.uri(rel)}"
        f"{', held by ' + holder if holder else ''}); waited {wait_seconds:g} s.",
        fix="let it finish, or check that no other deployment writes the same lake root.",
    )


def _s3_lock(
    lake: Lake, rel: str, wait_seconds: float, stale_seconds: float, what: str
) -> Callable[[], None]:
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + wait_seconds
    key = lake.key(rel)
    token = uuid.uuid4().hex
    lease = {"owner": token, "host": socket.gethostname(), "pid": os.getpid()}
    client = lake.s3_client

    def attempt(**condition: str) -> str | None:
        body = orjson.dumps({**lease, "expires": time.time() + stale_seconds})
        try:
            put = client.put_object(Bucket=lake.bucket, Key=key, Body=body, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _LOST_RACE:
                return None
            raise
        return str(put["ETag"])

    holder = ""
    while True:
        etag = lake.s3_call("lock", rel, lambda: attempt(IfNoneMatch="*"))
        if etag is None:
            try:
                current = lake.s3_call(
                    "read",
                    rel,
                    lambda: client.get_object(Bucket=lake.bucket, Key=key),
                    missing_ok=True,
                )
            except MissingObject:
                continue  # released meanwhile
            try:
                info = orjson.loads(current["Body"].read())
                expires = float(info["expires"])
                holder = f"{info.get('host', '?')} pid {info.get('pid', '?')}"
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                info, expires, holder = {}, 0.0, "an unreadable lease"
            if info.get("owner") == token:  # ours: a retried PUT whose first try landed
                etag = str(current["ETag"])
            elif expires < time.time():  # abandoned: take it over, unless another does first
                old = str(current["ETag"])
                etag = lake.s3_call("lock", rel, functools.partial(attempt, IfMatch=old))
        if etag is not None:
            break
        if time.monotonic() >= deadline:
            raise _busy(lake, rel, what, wait_seconds, holder)
        time.sleep(0.2 + random.random() * 0.3)
    held = [etag]  # the lease's current ETag: the renewals replace it
    stop = threading.Event()

    def renew() -> None:
        # Push the expiry forward every third of stale_seconds while the block runs, so a
        # long holder is never taken for a dead one.
        while not stop.wait(stale_seconds / 3):
            try:
                renewed = attempt(IfMatch=held[0])
            except (ClientError, BotoCoreError) as exc:
                renewed, reason = None, str(exc)
            else:
                reason = "it was taken over"
            if renewed is None:
                log.warning("lock %s not renewed: %s", lake.uri(rel), reason)
                return
            held[0] = renewed

    renewer = threading.Thread(target=renew, name=f"lease {rel}", daemon=True)
    renewer.start()

    def release() -> None:
        stop.set()
        renewer.join()
        try:
            client.delete_object(Bucket=lake.bucket, Key=key, IfMatch=held[0])
        except (ClientError, BotoCoreError) as exc:
            # Taken over (we were stopped past stale_seconds), or S3 unreachable: the lease
            # then stays until it is stale. Never hides what the guarded block raised or did.
            log.warning("lock %s not released: %s", lake.uri(rel), exc)

    return release
