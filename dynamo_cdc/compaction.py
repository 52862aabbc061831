"""Compaction of a closed hour: its micro-batch files become a few well-sized files, atomically.

The stream sensor lands one small file per (hour, shard) and micro-batch, so a busy hour holds
hundreds of files. Once the hour is closed, :func:`compact_hour` rewrites them into files of up
to ``target_rows`` rows and swaps them in with :meth:`dynamo_cdc.lake.Lake.publish_dir`: on a
local lake the hour folder is replaced by one rename, so a reader sees the old files or the new
ones, never both (no row twice, none missing). On S3 the new objects are uploaded before the old
ones are deleted; a reader listing the folder in that instant can see both sets (S3 has no
multi-object atomicity), which is why compaction of an S3 lake is best scheduled away from
readers.

When is an hour *closed*, so that nobody writes into it again?

* the capture caught up (read every shard to its end) at a time at least ``grace`` after the
  hour ended (the sensor knows this and passes it in), or the hour ended more than the stream's
  retention before the last committed poll (whatever the stream held of it is landed by then);
* and every file of the hour is *committed*: its last sequence number is at or before the
  checkpoint of its shard. A file beyond the checkpoint was written by a capture that crashed
  before its commit; the next capture overwrites it (see :mod:`dynamo_cdc.changefiles`), so it must
  not be folded into a compacted file, which the next capture would not recognise. A shard absent
  from a committed checkpoint was read to its end and pruned, so its files are committed.

Compacted files are named ``compacted-<digest>-<n>.parquet``, a name that the capture's
overlap rule never matches, and the digest is of the input names, so a re-run after a crash
writes the same names.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from dynamo_cdc import catalog
from dynamo_cdc.changefiles import data_files, file_range
from dynamo_cdc.checkpoint import StreamCheckpoint
from dynamo_cdc.convert import SEQUENCE_DIGITS
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import change_hour_path
from dynamo_cdc.times import STREAM_RETENTION_SECONDS

log = logging.getLogger(__name__)

DEFAULT_TARGET_ROWS = 1_000_000
DEFAULT_GRACE_SECONDS = 300.0
COMPACTED_PREFIX = "compacted-"


@dataclass
class CompactionResult:
    """What :func:`compact_hour` did.

    Attributes:
        compacted: True when the hour's files were replaced.
        reason: why not, when ``compacted`` is False.
        files_before: data files found in the hour.
        files_after: data files in the hour afterwards.
        rows: rows in the hour (unchanged by compaction).
    """

    compacted: bool
    reason: str
    files_before: list[str] = field(default_factory=list)
    files_after: list[str] = field(default_factory=list)
    rows: int = 0


def uncommitted_files(files: list[str], checkpoint: StreamCheckpoint) -> list[str]:
    """The files whose records go beyond the committed checkpoint (see the module docstring)."""
    if checkpoint.is_new:
        return [f for f in files if file_range(f) is not None]
    out = []
    for path in files:
        rng = file_range(path)
        if rng is None:
            continue
        shard = checkpoint.shards.get(rng[0])
        if shard is None or shard.finished:
            continue
        last = (shard.last_sequence_number or "").zfill(SEQUENCE_DIGITS)
        if shard.last_sequence_number is None or rng[2] > last:
            out.append(path)
    return out


def hour_is_closed(
    hour_start: datetime,
    checkpoint: StreamCheckpoint,
    *,
    caught_up_at: float | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
) -> tuple[bool, str]:
    """Whether nothing will be written into the hour starting at ``hour_start`` any more.

    Returns:
        (closed, reason when not closed)
    """
    hour_end = (hour_start + timedelta(hours=1)).timestamp()
    if caught_up_at is not None and caught_up_at >= hour_end + grace_seconds:
        return True, ""
    updated = checkpoint.updated_at
    if updated is not None and updated >= hour_end + STREAM_RETENTION_SECONDS:
        return True, ""
    return False, (
        f"the capture has not caught up {grace_seconds:.0f} s past the hour's end yet "
        f"(caught up at {caught_up_at}, last committed poll at {updated})"
    )


def compact_hour(
    lake: Lake,
    table: str,
    hour_start: datetime,
    checkpoint: StreamCheckpoint,
    *,
    caught_up_at: float | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    target_rows: int = DEFAULT_TARGET_ROWS,
    force: bool = False,
) -> CompactionResult:
    """Replace the hour's files by ``ceil(rows / target_rows)`` files, atomically.

    Args:
        lake: the lake.
        table: the table name.
        hour_start: the hour (UTC).
        checkpoint: the table's committed stream checkpoint.
        caught_up_at: epoch seconds when the capture last read every shard to its end.
        grace_seconds: how long after the hour's end the capture must have caught up.
        target_rows: rows per compacted file.
        force: skip the closed-hour rule (the committed-files rule still applies).

    Returns:
        a :class:`CompactionResult`; nothing changes when the hour is not closed, holds at most
        one file, or holds uncommitted files.
    """
    rel = change_hour_path(lake, table, hour_start)
    files = data_files(lake, rel)
    if len(files) <= 1:
        return CompactionResult(False, f"{len(files)} file(s): nothing to compact", files, files)
    if not force:
        closed, why = hour_is_closed(
            hour_start, checkpoint, caught_up_at=caught_up_at, grace_seconds=grace_seconds
        )
        if not closed:
            return CompactionResult(False, why, files, files)
    pending = uncommitted_files(files, checkpoint)
    if pending:
        return CompactionResult(
            False,
            f"{len(pending)} file(s) beyond the committed checkpoint (a capture crashed before "
            "its commit; the next capture rewrites them)",
            files,
            files,
        )
    digest = hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
    rows = 0
    with lake.staging(table) as staging:
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        n_out = 0
        in_file = 0
        try:
            for path in files:
                raw = lake.read_bytes(path)
                if raw is None:
                    raise FileNotFoundError(f"{lake.uri(path)} vanished during compaction")
                source = pq.ParquetFile(io.BytesIO(raw))
                for i in range(source.num_row_groups):
                    part = source.read_row_group(i)
                    if schema is None:
                        schema = part.schema
                    part = part.cast(schema) if not part.schema.equals(schema) else part
                    start = 0
                    while start < part.num_rows:
                        if writer is None or in_file >= target_rows:
                            if writer is not None:
                                writer.close()
                            name = f"{COMPACTED_PREFIX}{digest}-{n_out:03d}.parquet"
                            writer = pq.ParquetWriter(staging / name, schema, compression="zstd")
                            n_out += 1
                            in_file = 0
                        take = min(part.num_rows - start, target_rows - in_file)
                        writer.write_table(part.slice(start, take))
                        in_file += take
                        rows += take
                        start += take
        finally:
            if writer is not None:
                writer.close()
        after = lake.publish_dir(staging, rel)
    catalog.lake_changed(lake, table, "changes", partitions=[rel])
    log.info("%s: compacted %d files of %s into %d", table, len(files), rel, len(after))
    return CompactionResult(True, "", files, [p for p in after if p.endswith(".parquet")], rows)
