"""One capture step: load a table's checkpoint, poll its stream, write the change files, commit.

The whole step holds the table's capture lock, and the checkpoint is committed only after the
change files are durable (:func:`capture_once`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dynamo_cdc import fastconvert
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.changes import newest_micros, pages_to_table
from dynamo_cdc.checkpoint import CheckpointStore, StreamCheckpoint
from dynamo_cdc.layout import capture_lock
from dynamo_cdc.lock import exclusive
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
            lock and when it released it: no other capture of the table ran in between.
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


# How long a capture (or a checkpoint reset, or a compaction) waits for another to finish.
CAPTURE_LOCK_WAIT_SECONDS = 300.0


def read_batch(
    clients: Any,
    lake: Any,
    table: str,
    budget: ReadBudget | None = None,
    *,
    info: StreamInfo | None = None,
    **reader_options: Any,
) -> tuple[StreamInfo, StreamBatch]:
    """Step 1 of :func:`capture_once`: load the checkpoint and poll the stream."""
    info = info or discover(clients, table)
    checkpoint = CheckpointStore(lake, table).load()
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


def capture_once(
    clients: Any,
    lake: Any,
    table: str,
    budget: ReadBudget | None = None,
    *,
    info: StreamInfo | None = None,
    after_write: Callable[[list[str]], None] | None = None,
    lock_wait_seconds: float = CAPTURE_LOCK_WAIT_SECONDS,
    **reader_options: Any,
) -> CaptureResult:
    """Load the checkpoint, poll the stream, write Parquet, then commit the checkpoint.

    All of it holds the table's capture lock (:func:`capture_lock`,
    :func:`dynamo_cdc.lock.exclusive`): two captures of one table (a sensor tick and a manual
    run, or two runs that Dagster's pool let start together: its slot claim on SQLite storage
    is not atomic across processes) would read the same checkpoint and could write the same
    records twice. The second waits for the first.

    Args:
        clients: a :class:`dynamo_cdc.aws.Clients` (or anything with ``.dynamodb`` and
            ``.streams`` clients; ``.dynamodb`` is not used when ``info`` is given).
        lake: a :class:`dynamo_cdc.lake.Lake`.
        table: the table name.
        budget: the poll's budget.
        info: the stream and key (default: :func:`dynamo_cdc.stream.discover`).
        after_write: called with the written paths between the write and the commit (tests use
            it to crash there).
        lock_wait_seconds: how long to wait for another capture of the table to finish.
        **reader_options: passed to :class:`dynamo_cdc.stream.StreamReader` (clock, sleep, ...).

    Raises:
        StreamGapError: changes may have been lost; nothing is written or committed.
        LakeBusyError: another capture of the table held the lock past ``lock_wait_seconds``.
    """
    info = info or discover(clients, table)  # a missing table or stream: nothing in the lake
    what = f"capturing the stream of table {table!r}"
    with exclusive(lake, capture_lock(lake, table), wait_seconds=lock_wait_seconds, what=what):
        locked_at = time.time()
        with fastconvert.cyclic_gc_paused():  # the batch's records: many small acyclic objects
            info, batch = read_batch(clients, lake, table, budget, info=info, **reader_options)
            files = write_batch(lake, table, info, batch)
        if after_write is not None:
            after_write(files)
        commit_batch(lake, table, batch)
        released_at = time.time()
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
    )
