"""One capture step: load a table's checkpoint, poll its stream, write the change files, commit.

The whole step holds the table's capture lock, and the checkpoint is committed only after the
change files are durable (:func:`capture_once`).

A table too big for one process is captured in shard groups (``capture_once(..., groups=N,
group=g)``, :mod:`dynamo_cdc.shardgroups`): each group has its own checkpoint and lease in the
lake (``<table>/_state/stream/groups/<g>/``), so ``N`` workers capture one table at once, each
reading whole lineage trees of shards. The first grouped capture of a table splits its single
checkpoint (:func:`regroup`); :func:`capture_exclusive` holds every lease at once (heal,
compaction, regroup).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dynamo_cdc import convert
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.checkpoint import (
    CheckpointStore,
    StreamCheckpoint,
    load_group_count,
    store_group_count,
)
from dynamo_cdc.convert import newest_micros, pages_to_table
from dynamo_cdc.errors import CheckpointError, LakeBusyError
from dynamo_cdc.layout import capture_lock, group_checkpoint_path, group_lease
from dynamo_cdc.lock import exclusive
from dynamo_cdc.shardgroups import held_shards, shard_filter, split_checkpoint
from dynamo_cdc.stream import (
    ReadBudget,
    ShardRange,
    StreamBatch,
    StreamInfo,
    StreamReader,
    discover,
)

log = logging.getLogger(__name__)


@dataclass
class CaptureResult:
    """What one :func:`capture_once` did.

    Attributes:
        table: the table.
        records: change rows written.
        files: relative paths of the Parquet files written.
        ranges: per shard, the sequence range read.
        finished_shards: shards read to their end.
        newest_change_time: the newest ApproximateCreationDateTime written (ISO UTC) or None.
        lag_seconds: how far behind the stream's tip capture stands after this poll: 0 when it
            read every shard up to the poll's start, else the poll's
            :attr:`~dynamo_cdc.stream.StreamBatch.lag_seconds`.
        stopped_by: why the poll ended (see :class:`dynamo_cdc.stream.StreamBatch`).
        checkpoint: the committed checkpoint.
        locked_between: epoch seconds (wall clock) when this capture took the table's capture
            lock (or its shard group's lease) and when it released it: no other capture of the
            table (of the group) ran in between.
        group: the shard group captured (0 when the table is captured in one group).
    """

    table: str
    records: int
    files: list[str]
    ranges: dict[str, ShardRange] = field(default_factory=dict)
    finished_shards: list[str] = field(default_factory=list)
    newest_change_time: str | None = None
    lag_seconds: float | None = None
    stopped_by: str = "caught_up"
    checkpoint: StreamCheckpoint | None = None
    locked_between: tuple[float, float] | None = None
    group: int = 0


# How long a capture (or a checkpoint reset, or a compaction) waits for another to finish.
CAPTURE_LOCK_WAIT_SECONDS = 300.0
# When a shard group's lease counts as abandoned (S3 lake: its holder stopped renewing it).
LEASE_SECONDS = 900.0


@contextmanager
def capture_exclusive(
    lake: Any, table: str, *, wait_seconds: float, what: str, groups: int | None = None
) -> Iterator[None]:
    """Hold ``table``'s capture lock and every shard group's lease: no capture of the table
    runs while the block does (a checkpoint reset, a compaction, a regroup).

    The locks are taken in one order (the table's, then the groups' ascending) and a grouped
    capture holds only its group's lease, so this never deadlocks with captures.

    Args:
        lake: the lake.
        table: the table.
        wait_seconds: how long to wait for each lock.
        what: what the block does, for :class:`~dynamo_cdc.errors.LakeBusyError`.
        groups: take this many group leases at least (a regroup to more groups); default: as
            many as the table has (none for a table captured in one group).
    """
    count = max(groups or 0, load_group_count(lake, table) or 0)
    with ExitStack() as stack:
        stack.enter_context(
            exclusive(lake, capture_lock(lake, table), wait_seconds=wait_seconds, what=what)
        )
        for group in range(count if count > 1 else 0):
            stack.enter_context(
                exclusive(
                    lake, group_lease(lake, table, group), wait_seconds=wait_seconds, what=what
                )
            )
        yield


def regroup(
    lake: Any,
    table: str,
    groups: int,
    *,
    wait_seconds: float = CAPTURE_LOCK_WAIT_SECONDS,
    only_if_needed: bool = False,
) -> list[StreamCheckpoint] | None:
    """Split (or merge) ``table``'s capture checkpoint into ``groups`` shard groups.

    Holding every lease (:func:`capture_exclusive`): the committed position (the single
    checkpoint when there is one, which a checkpoint reset writes, else every group's merged)
    is split by lineage tree (:func:`dynamo_cdc.shardgroups.split_checkpoint`) into one
    checkpoint per group, then ``groups.json`` records the count and the single checkpoint is
    removed (in that order: a crash in between leaves the single checkpoint, which the next
    grouped capture splits again). ``groups=1`` goes back to the single checkpoint. Lease files
    stay (a local lock file is never deleted).

    Args:
        lake: the lake.
        table: the table.
        groups: the number of shard groups.
        wait_seconds: how long to wait for each capture of the table to finish.
        only_if_needed: do nothing when the table is already captured in ``groups`` groups (as
            checked holding the locks: the first grouped capture of a table, or a setup step
            before captures fan out); a table captured in another number of groups is then a
            :class:`~dynamo_cdc.errors.CheckpointError`.

    Returns:
        the checkpoints stored, one per group (None when nothing needed doing).
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, not {groups}")
    what = f"regrouping the stream capture of table {table!r} into {groups} shard groups"
    with capture_exclusive(lake, table, wait_seconds=wait_seconds, what=what, groups=groups):
        if only_if_needed and _grouped_as(lake, table, groups):
            return None
        single = CheckpointStore(lake, table)
        checkpoint = single.load()
        old = load_group_count(lake, table) or 0
        if groups == 1:
            single.commit(checkpoint)
            store_group_count(lake, table, None)
            parts = [checkpoint]
        else:
            parts = split_checkpoint(checkpoint, groups)
            for group, part in enumerate(parts):
                CheckpointStore(lake, table, group).commit(part)
        for group in range(groups if groups > 1 else 0, old):
            lake.delete(group_checkpoint_path(lake, table, group))
        if groups > 1:
            store_group_count(lake, table, groups)
            lake.delete(single.path)
    log.info("%s: capture regrouped into %d shard groups (from %d)", table, groups, old or 1)
    return parts


def _grouped_as(lake: Any, table: str, groups: int) -> bool:
    """Whether ``table`` is captured in ``groups`` shard groups (no single checkpoint left by a
    migration or a reset); raises when it is captured in another number of groups."""
    count = load_group_count(lake, table)
    if count is not None and count != groups:
        raise CheckpointError(
            f"The stream of table {table!r} is captured in {count} shard groups, not {groups}.",
            fix=f"capture it with groups={count}, or stop every capture of it and regroup it "
            f"(dynamo_cdc.capture.regroup(lake, {table!r}, {groups})).",
        )
    return count == groups and not lake.exists(CheckpointStore(lake, table).path)


def read_batch(
    clients: Any,
    lake: Any,
    table: str,
    budget: ReadBudget | None = None,
    *,
    info: StreamInfo | None = None,
    **reader_options: Any,
) -> tuple[StreamInfo, StreamBatch]:
    """Step 1 of :func:`capture_once`: load the checkpoint and poll the stream.

    Raises:
        CheckpointError: the table is captured in shard groups (``capture_once(groups=N)``).
    """
    info = info or discover(clients, table)
    store = CheckpointStore(lake, table)
    checkpoint = store.load()
    if store.groups is not None:
        raise CheckpointError(
            f"The stream of table {table!r} is captured in {store.groups} shard groups.",
            fix=f"capture it with groups={store.groups}, or stop every capture of it and "
            f"regroup it into one (dynamo_cdc.capture.regroup(lake, {table!r}, 1)).",
        )
    reader = StreamReader(
        clients.streams, table, checkpoint, budget, stream_arn=info.stream_arn, **reader_options
    )
    return info, reader.poll()


def write_batch(lake: Any, table: str, info: StreamInfo, batch: StreamBatch) -> list[str]:
    """Step 2 of :func:`capture_once`: the batch's records -> Parquet (durable when it returns)."""
    return write_change_batch(lake, table, pages_to_table(batch.pages, info.key_attributes))


def commit_batch(lake: Any, table: str, batch: StreamBatch) -> None:
    """Step 3 of :func:`capture_once`: commit the checkpoint (only after :func:`write_batch`)."""
    CheckpointStore(lake, table).commit(batch.checkpoint)


def _read_group_batch(
    clients: Any,
    lake: Any,
    table: str,
    budget: ReadBudget | None,
    info: StreamInfo,
    groups: int,
    group: int,
    **reader_options: Any,
) -> tuple[StreamBatch, bytes | None]:
    """Step 1 for shard group ``group`` (its lease held): every group's committed checkpoint
    (who holds which lineage tree), then a poll of the group's shards. Also returns the group's
    checkpoint as loaded, to check before the commit that nobody committed over it."""
    parts = [CheckpointStore(lake, table, g).load() for g in range(groups) if g != group]
    loaded = lake.read_bytes(group_checkpoint_path(lake, table, group))
    mine = StreamCheckpoint(table=table)
    if loaded is not None:
        mine = StreamCheckpoint.from_json(loaded, table=table)
    parts.insert(group, mine)
    reader = StreamReader(
        clients.streams,
        table,
        mine,
        budget,
        stream_arn=info.stream_arn,
        shard_filter=shard_filter(held_shards(parts), groups, group),
        **reader_options,
    )
    return reader.poll(), loaded


def capture_once(
    clients: Any,
    lake: Any,
    table: str,
    budget: ReadBudget | None = None,
    *,
    info: StreamInfo | None = None,
    after_write: Callable[[list[str]], None] | None = None,
    lock_wait_seconds: float = CAPTURE_LOCK_WAIT_SECONDS,
    groups: int = 1,
    group: int = 0,
    lease_seconds: float = LEASE_SECONDS,
    **reader_options: Any,
) -> CaptureResult:
    """Load the checkpoint, poll the stream, write Parquet, then commit the checkpoint.

    All of it holds the table's capture lock (:func:`capture_lock`,
    :func:`dynamo_cdc.lock.exclusive`): two captures of one table (a sensor tick and a manual
    run, or two runs that Dagster's pool let start together: its slot claim on SQLite storage
    is not atomic across processes) would read the same checkpoint and could write the same
    records twice. The second waits for the first.

    With ``groups`` > 1 it captures shard group ``group`` only, holding that group's lease
    (:func:`group_lease`) instead of the table's lock, so the groups of one table are captured
    at once by as many workers (see :mod:`dynamo_cdc.shardgroups`). The first grouped capture
    splits the table's checkpoint (:func:`regroup`). A worker that dies leaves its lease to be
    taken over: at once locally (the OS drops its lock), after ``lease_seconds`` on S3; the
    taker re-reads what the dead worker wrote but did not commit, and the change-file writer
    leaves out the rows already landed. Before committing, the group's checkpoint must still be
    the one this capture loaded (else a taker has committed over it: this capture's lease
    lapsed, and it stops with :class:`~dynamo_cdc.errors.LakeBusyError`, committing nothing).

    Args:
        clients: a :class:`dynamo_cdc.aws.Clients` (or anything with ``.dynamodb`` and
            ``.streams`` clients; ``.dynamodb`` is not used when ``info`` is given).
        lake: a :class:`dynamo_cdc.lake.Lake`.
        table: the table name.
        budget: the poll's budget.
        info: the stream and key (default: :func:`dynamo_cdc.stream.discover`).
        after_write: called with the written paths between the write and the commit (tests use
            it to crash there).
        lock_wait_seconds: how long to wait for another capture of the table (of the group) to
            finish.
        groups: the number of shard groups the table is captured in (1: one process).
        group: the shard group to capture (0 to ``groups`` - 1).
        lease_seconds: S3 lake: when a group's lease counts as abandoned (its holder renews it
            every third of this while it runs).
        **reader_options: passed to :class:`dynamo_cdc.stream.StreamReader` (clock, sleep, ...).

    Raises:
        StreamGapError: changes may have been lost; nothing is written or committed.
        LakeBusyError: another capture of the table (of the group) held the lock past
            ``lock_wait_seconds``, or this capture's lease was taken over.
        CheckpointError: the table is captured in another number of shard groups.
    """
    if not 0 <= group < groups:
        raise ValueError(f"group must be in 0..{groups - 1}, not {group}")
    info = info or discover(clients, table)  # a missing table or stream: nothing in the lake
    what = f"capturing the stream of table {table!r}"
    if groups > 1:
        what += f" (shard group {group} of {groups})"
    for _attempt in range(3):
        if groups > 1 and not _grouped_as(lake, table, groups):
            regroup(lake, table, groups, wait_seconds=lock_wait_seconds, only_if_needed=True)
        lock = capture_lock(lake, table) if groups == 1 else group_lease(lake, table, group)
        with exclusive(
            lake, lock, wait_seconds=lock_wait_seconds, stale_seconds=lease_seconds, what=what
        ):
            if groups > 1 and not _grouped_as(lake, table, groups):
                continue  # regrouped or reset meanwhile: split again, then take the lease again
            locked_at = time.time()
            with convert.cyclic_gc_paused():  # the batch's records: many small objects
                if groups == 1:
                    info, batch = read_batch(
                        clients, lake, table, budget, info=info, **reader_options
                    )
                else:
                    batch, loaded = _read_group_batch(
                        clients, lake, table, budget, info, groups, group, **reader_options
                    )
                files = write_batch(lake, table, info, batch)
            if after_write is not None:
                after_write(files)
            if groups == 1:
                commit_batch(lake, table, batch)
            else:
                store = CheckpointStore(lake, table, group)
                if lake.read_bytes(store.path) != loaded:
                    raise LakeBusyError(
                        f"The lease of shard group {group} of table {table!r} was taken over "
                        "while this capture ran (it stopped renewing it for longer than "
                        f"{lease_seconds:g} s); its checkpoint was not committed.",
                        fix="nothing to do: the new holder re-reads what this capture wrote "
                        "and the change files leave out rows already landed.",
                    )
                store.commit(batch.checkpoint)
            released_at = time.time()
        break
    else:
        raise LakeBusyError(
            f"The shard groups of table {table!r} were regrouped three times while {what} waited.",
            fix="check that every capture of the table uses the same number of groups.",
        )
    latest = max(map(newest_micros, (records for _, records in batch.pages)), default=None)
    newest = None
    if latest is not None:
        newest = datetime.fromtimestamp(latest / 1e6, tz=UTC)
    log.info(
        "%s: %d change rows in %d files (%s)",
        table,
        batch.count,
        len(files),
        batch.stopped_by,
    )
    return CaptureResult(
        table=table,
        records=batch.count,
        files=files,
        ranges=batch.ranges,
        finished_shards=batch.finished_shards,
        newest_change_time=newest.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if newest else None,
        lag_seconds=batch.lag_seconds,
        stopped_by=batch.stopped_by,
        checkpoint=batch.checkpoint,
        locked_between=(locked_at, released_at),
        group=group,
    )
