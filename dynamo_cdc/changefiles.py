"""Change rows -> Parquet files in the hour partitions of ``<table>/changes/``.

Files: each record goes to the hour partition of its ApproximateCreationDateTime,
``<table>/changes/date=YYYY-MM-DD/hour=HH/`` (``cdc_date``, ``cdc_hour`` for a table keyed on
``date`` or ``hour``: :mod:`dynamo_cdc.layout`), one file per (partition, shard) and batch, named
``<shard id>_<first seq>_<last seq>.parquet`` (padded sequence numbers). A change file is never
deleted by a capture. Files of the same shard in that partition whose range overlaps the new
batch, and compacted files whose statistics do not rule the shard's range out, are read (the
``event_id`` column only), and the batch's records already in them are left out of the new file.
Overlaps come from a run that wrote but did not commit its checkpoint (a crash; the re-run may
read a different amount), and from a re-read from TRIM_HORIZON after a checkpoint reset (gap
healing), which can overlap a committed or compacted file only partly: deleting that file would
lose the records before the new batch's start that the stream may no longer hold. So every
stream record lands once, however the runs were cut. In the usual case a batch starts after
every committed range and no file is read.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dynamo_cdc import catalog
from dynamo_cdc.convert import CHANGE_COLUMNS, IMAGE_COLUMNS
from dynamo_cdc.errors import StreamRecordError
from dynamo_cdc.layout import change_hour_path, table_partition_columns

log = logging.getLogger(__name__)

_MICROS_PER_HOUR = 3_600_000_000
PARQUET_COMPRESSION = "zstd"  # of change files (see parquet_bytes)


# What AWS documents of the identifiers a change file is named by (DynamoDB Streams API
# reference: ShardId 28 to 65 characters, like shardId-00000001414562045508-2bac9cd2; SequenceNumber
# 21 to 40 digits). The lower bounds are not held (moto and the tests use shorter ones); the
# characters and the upper bounds are. Ids are checked before they become a file name, so a
# lying stream cannot nest folders in a partition or break file_range.
_SHARD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,64}")
_SEQUENCE_NUMBER = re.compile(r"[0-9]{1,40}")


def _file_name_part(table: str, what: str, text: str, shape: re.Pattern[str]) -> str:
    if not shape.fullmatch(text):
        raise StreamRecordError(
            f"The stream of table {table!r} gave the {what} {text[:100]!r}, which is not what "
            "AWS documents for DynamoDB Streams: refusing to write it as a file name.",
            fix="check that DYNAMO_CDC_ENDPOINT_URL points at DynamoDB Streams; nothing of "
            "this batch was committed.",
        )
    return text


def file_range(path: str) -> tuple[str, str, str] | None:
    """(shard id, first seq, last seq) of a change file ``<shard>_<first>_<last>.parquet`` (a
    path or a name), or None for other files (compacted files, export rows' batch files)."""
    name = path.rsplit("/", 1)[-1]
    if not name.endswith(".parquet"):
        return None
    parts = name[: -len(".parquet")].rsplit("_", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def is_data_file(rel: str) -> bool:
    """Whether ``rel`` is a Parquet data file (names starting with ``_`` or ``.`` are not)."""
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".parquet") and name[0] not in "_."


def data_files(lake: Any, rel: str) -> list[str]:
    """The Parquet data files under ``rel``, sorted."""
    return [p for p in lake.list(rel) if is_data_file(p)]


def _may_hold(meta: pq.FileMetaData, shard: str, first: str, last: str) -> bool:
    """Whether a file without a range name (compacted) may hold records of ``shard`` in
    [``first``, ``last``], by its row groups' statistics of ``shard_id`` and
    ``sequence_number`` (no statistics: it may)."""
    names = meta.schema.names
    if "shard_id" not in names or "sequence_number" not in names:
        return False  # not change rows of a stream
    si, qi = names.index("shard_id"), names.index("sequence_number")
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        s, q = group.column(si).statistics, group.column(qi).statistics
        if s is not None and s.null_count == group.num_rows:
            continue  # export rows only
        if s is None or q is None or not s.has_min_max or not q.has_min_max:
            return True
        if s.min <= shard <= s.max and q.min <= last and first <= q.max:
            return True
    return False


def _overlapping_files(
    lake: Any, listing: Sequence[str], shard: str, first: str, last: str
) -> list[str]:
    """Files of a partition that may already hold records of ``shard`` in [first, last]: the
    shard's files whose name range overlaps, and files without a range name (compacted) whose
    statistics do not rule it out."""
    out = []
    fs: Any = None
    base = ""
    for rel in listing:
        if not is_data_file(rel):
            continue
        rng = file_range(rel)
        if rng is not None:
            if rng[0] == shard and rng[1] <= last and first <= rng[2]:
                out.append(rel)
            continue
        if fs is None:
            fs, base = lake.arrow_filesystem()
        try:
            meta = pq.read_metadata(f"{base}/{rel}", filesystem=fs)
        except FileNotFoundError:
            continue  # replaced by a compaction meanwhile: its successor is listed next time
        if _may_hold(meta, shard, first, last):
            out.append(rel)
    return out


def _event_ids(lake: Any, rel: str) -> pa.Array:
    fs, base = lake.arrow_filesystem()
    ids = pq.read_table(f"{base}/{rel}", columns=["event_id"], filesystem=fs).column("event_id")
    return ids.combine_chunks()


def write_change_batch(
    lake: Any, table: str, rows: pa.Table, batch_id: str | None = None
) -> list[str]:
    """Write change rows into the hour partitions of their ``approximate_creation_time``.

    One file per (hour, shard), rows in sequence order, named ``<shard>_<first>_<last>.parquet``.
    Nothing is ever deleted: rows whose ``event_id`` is already in a file of the partition that
    may hold the same shard and sequence range (a file of the same shard whose name range
    overlaps, or a compacted file) are left out of the new file, and a group left empty writes
    nothing. So a re-run after a crash between write and commit, or a re-read from TRIM_HORIZON
    after a checkpoint reset that overlaps committed or compacted files only partly, neither
    duplicates nor loses a record (see the module docstring). Rows without a shard id
    (``source='export'``) go to ``<batch_id>.parquet`` per partition, overwritten by a re-run.

    Args:
        lake: a :class:`dynamo_cdc.lake.Lake`.
        table: the table name.
        rows: :func:`records_to_table` output.
        batch_id: names the files of rows without a shard id (required if there are any).

    Returns:
        the relative paths that hold the rows, sorted: the files written, and the files that
        already held some of them.
    """
    if rows.num_rows == 0:
        return []
    ts = rows.column("approximate_creation_time").cast(pa.int64()).to_numpy()
    hours = ts // _MICROS_PER_HOUR
    shard_col = rows.column("shard_id").combine_chunks().dictionary_encode()
    codes = shard_col.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    shard_names = shard_col.dictionary.to_pylist()
    seq = np.asarray(rows.column("sequence_number").fill_null("").to_numpy(zero_copy_only=False))
    order = np.lexsort((seq, codes, hours))
    group_key = np.stack([hours[order], codes[order]], axis=1)
    bounds = np.flatnonzero(np.any(group_key[1:] != group_key[:-1], axis=1)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    event_ids = rows.column("event_id").combine_chunks()
    keys = [c for c in rows.column_names if c not in CHANGE_COLUMNS and c not in IMAGE_COLUMNS]
    columns = table_partition_columns(lake, table, "changes", keys)
    listing: dict[str, list[str]] = {}
    holding: set[str] = set()
    writes: list[tuple[str, np.ndarray]] = []
    for start, end in zip(starts, ends, strict=True):
        idx = order[start:end]
        hour = int(hours[idx[0]])
        code = int(codes[idx[0]])
        part = change_hour_path(lake, table, datetime.fromtimestamp(hour * 3600, tz=UTC), columns)
        if code < 0:
            if not batch_id:
                raise ValueError("rows without a shard_id need a batch_id to name their file")
            name = f"{batch_id}.parquet"
        else:
            shard = _file_name_part(table, "shard id", shard_names[code], _SHARD_ID)
            _file_name_part(table, "sequence number", str(seq[idx[0]]), _SEQUENCE_NUMBER)
            _file_name_part(table, "sequence number", str(seq[idx[-1]]), _SEQUENCE_NUMBER)
            if part not in listing:
                listing[part] = lake.list(part)
            candidates = _overlapping_files(
                lake, listing[part], shard, str(seq[idx[0]]), str(seq[idx[-1]])
            )
            if candidates:
                # Left by a run that wrote but crashed before its commit, or committed before
                # a checkpoint reset: its records are real stream records, so they stay and
                # the new file leaves them out (deleting a partly overlapping file would lose
                # records the stream may no longer hold).
                ids = event_ids.take(pa.array(idx))
                known = np.zeros(len(idx), dtype=bool)
                for rel in candidates:
                    found = pc.is_in(ids, value_set=_event_ids(lake, rel)).to_numpy(
                        zero_copy_only=False
                    )
                    if found.any():
                        holding.add(rel)
                        known |= found
                if known.any():
                    log.info(
                        "%s: %d of %d records of shard %s already in %s",
                        table,
                        int(known.sum()),
                        len(idx),
                        shard,
                        part,
                    )
                    idx = idx[~known]
                    if len(idx) == 0:
                        continue
            name = f"{shard}_{seq[idx[0]]}_{seq[idx[-1]]}.parquet"
        target = f"{part}/{name}"
        writes.append((target, idx))
        holding.add(target)
    _write_files(lake, rows, writes)
    catalog.lake_changed(
        lake, table, "changes", partitions=sorted({p.rsplit("/", 1)[0] for p in holding})
    )
    return sorted(holding)


# Change files written at once by one batch: each write mostly waits (an fsync, or a PUT to S3)
# and a poll over many shards writes one file per shard and hour (docs/scaling.md).
WRITE_THREADS = 16


def _write_files(lake: Any, rows: pa.Table, writes: list[tuple[str, np.ndarray]]) -> None:
    """Write each ``(target, row indices)`` as a change file; on threads when there are several.
    Every write has ended when this returns (the checkpoint is committed after it)."""

    def write(item: tuple[str, np.ndarray]) -> None:
        target, idx = item
        lake.write_bytes(target, parquet_bytes(_rows_at(rows, idx)))

    if len(writes) < 2:
        for item in writes:
            write(item)
        return
    with ThreadPoolExecutor(min(WRITE_THREADS, len(writes)), "dynamo-cdc-write") as pool:
        for _ in pool.map(write, writes):
            pass


def _rows_at(rows: pa.Table, idx: np.ndarray) -> pa.Table:
    """``rows.take(idx)``; a slice (no copy) when ``idx`` is a run of consecutive rows, as it is
    when a poll's records arrive in order (one shard, one hour: the whole table)."""
    first, n = int(idx[0]), len(idx)
    if int(idx[-1]) - first == n - 1 and (n < 2 or bool(np.all(np.diff(idx) == 1))):
        return rows.slice(first, n)
    return rows.take(pa.array(idx))


# Columns whose values are mostly distinct: no dictionary encoding (trying one costs a hash of
# every text, up to Arrow's dictionary page limit, and then falls back to plain).
_DISTINCT_COLUMNS = ("event_id", "sequence_number", *IMAGE_COLUMNS)


def parquet_bytes(rows: pa.Table) -> bytes:
    """A change file's bytes: :data:`PARQUET_COMPRESSION`, dictionary encoding for the columns
    whose values repeat (event name, shard, keys, ...)."""
    buf = io.BytesIO()
    pq.write_table(
        rows,
        buf,
        compression=PARQUET_COMPRESSION,
        use_dictionary=[c for c in rows.column_names if c not in _DISTINCT_COLUMNS],
    )
    return buf.getvalue()
