"""Stream records -> change rows -> Parquet files in hour partitions, and one capture step.

Change rows (DESIGN.md's data contract), one per stream record:

=========================  ===============================  ===================================
column                     Arrow type                       from
=========================  ===============================  ===================================
event_id                   string                           eventID
event_name                 string                           eventName (INSERT, MODIFY, REMOVE)
sequence_number            string                           SequenceNumber left-padded with
                                                            zeros to 40 digits, so text order
                                                            is numeric order
shard_id                   string                           the shard read (null for exports)
approximate_creation_time  timestamp[us, tz=UTC]            ApproximateCreationDateTime
ttl_delete                 bool                             userIdentity is Service /
                                                            dynamodb.amazonaws.com (a TTL
                                                            delete)
source                     string                           ``stream`` or ``export``
<key attributes>           S -> string, N -> string,        Keys, named as in the table
                           B -> binary
_keys                      string                           Keys as canonical DynamoDB JSON
_new_image, _old_image     string (null where absent)       NewImage / OldImage, canonical
                                                            DynamoDB JSON
=========================  ===============================  ===================================

Key columns take their type from the table's AttributeDefinitions, never from the values, so
every change file of a table has the same schema. An ``N`` key is the canonical number text
(:func:`dynamo_cdc.codec.canonical_number_text`): DynamoDB numbers have 38 digits and exponents
from -130 to +125, which neither int64 nor one decimal128 scale holds, and a rule that looked at
the values would give files whose schemas do not unify. (Cast in queries: ``CAST(id AS
BIGINT)``.) A key attribute named like one of the columns above is written as ``key_<name>``.

Files: each record goes to the hour partition of its ApproximateCreationDateTime,
``<table>/changes/date=YYYY-MM-DD/hour=HH/``, one file per (partition, shard) and batch, named
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

import functools
import io
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dynamo_cdc import codec
from dynamo_cdc.checkpoint import CheckpointStore, StreamCheckpoint
from dynamo_cdc.stream import (
    ReadBudget,
    ShardRange,
    StreamBatch,
    StreamInfo,
    StreamReader,
    discover,
)

log = logging.getLogger(__name__)

SEQUENCE_DIGITS = 40
SOURCES = ("stream", "export")
TTL_PRINCIPAL = "dynamodb.amazonaws.com"
CHANGE_COLUMNS = (
    "event_id",
    "event_name",
    "sequence_number",
    "shard_id",
    "approximate_creation_time",
    "ttl_delete",
    "source",
)
IMAGE_COLUMNS = ("_keys", "_new_image", "_old_image")
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_KEY_ARROW_TYPES = {"S": pa.string(), "N": pa.string(), "B": pa.binary()}
_MICROS_PER_HOUR = 3_600_000_000


# -- canonical text, fast ---------------------------------------------------------------------

# Numbers whose text is already canonical (codec.canonical_number_text gives the same text):
# integers without leading zeros, and decimals with no trailing zero and an adjusted exponent of
# at least -7. At most 38 characters, so at most 38 significant digits.
_CANONICAL_NUMBER_RE = rb"(?:0|-?(?:[1-9][0-9]*(?:\.[0-9]*[1-9])?|0\.0{0,6}[1-9](?:[0-9]*[1-9])?))"
_CANONICAL_NUMBER = re.compile(_CANONICAL_NUMBER_RE)
# In orjson's output of an image, '"N":"' only starts a number value and '"SS":[' only starts a
# set: inside JSON strings every '"' is escaped, and a map attribute named "N" or "SS" is
# followed by '{'. So the spots where orjson's text can differ from the canonical text are found
# by one regex over the bytes: a number that is not already canonical, or a set (whose members
# may need sorting). They are fixed in place with the codec's own functions.
_JSON_STRING = rb'"(?:[^"\\]|\\.)*"'
_FIXABLE = re.compile(
    rb'"N":"(?!(?=[^"]{0,38}")'
    + _CANONICAL_NUMBER_RE
    + rb'")([^"]*)"|"([SNB]S)":(\['
    + _JSON_STRING
    + rb"(?:,"
    + _JSON_STRING
    + rb")*\])"
)


@functools.lru_cache(maxsize=65536)
def _canonical_number_bytes(text: bytes) -> bytes:
    return codec.canonical_number_text(text.decode("ascii")).encode("ascii")


@functools.lru_cache(maxsize=16384)
def _canonical_set_bytes(tag: bytes, members: bytes) -> bytes:
    name = tag.decode("ascii")
    return orjson.dumps(codec.canonical_value({name: orjson.loads(members)})[name])


def _fix(match: re.Match[bytes]) -> bytes:
    number = match.group(1)
    if number is not None:
        return b'"N":"' + _canonical_number_bytes(number) + b'"'
    tag = match.group(2)
    return b'"' + tag + b'":' + _canonical_set_bytes(tag, match.group(3))


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return codec.encode_binary(value)
    raise TypeError


def image_text(image: Mapping[str, Any] | None) -> str | None:
    """Canonical DynamoDB JSON text of a stream image (binary as bytes or base64), or None.

    Equal to :func:`dynamo_cdc.codec.item_to_json_text` (a property test pins it), but fast:
    orjson writes the image with sorted keys and binary as base64, then the numbers that are not
    already canonical and the sets are rewritten in place with the codec's
    ``canonical_number_text`` and ``canonical_value`` (cached: the same texts recur). Anything
    orjson cannot write goes to the codec whole.
    """
    if image is None:
        return None
    try:
        raw = orjson.dumps(image, option=orjson.OPT_SORT_KEYS, default=_b64)
    except TypeError:
        return codec.item_to_json_text(image)
    # One scan: sub() returns the same bytes when nothing needs fixing.
    return _FIXABLE.sub(_fix, raw).decode("utf-8")


# -- records -> Arrow ------------------------------------------------------------------------


def key_column_name(name: str) -> str:
    """The change-row column of key attribute ``name`` (``key_<name>`` when it collides)."""
    return f"key_{name}" if name in CHANGE_COLUMNS or name in IMAGE_COLUMNS else name


def change_schema(key_attributes: Sequence[tuple[str, str]]) -> pa.Schema:
    """The Arrow schema of a table's change rows.

    Args:
        key_attributes: ``(name, type)`` pairs, HASH key first, type ``S``, ``N`` or ``B``
            (from AttributeDefinitions; see :class:`dynamo_cdc.stream.StreamInfo`).
    """
    fields = [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_name", pa.string(), nullable=False),
        pa.field("sequence_number", pa.string()),
        pa.field("shard_id", pa.string()),
        pa.field("approximate_creation_time", TIMESTAMP_TYPE, nullable=False),
        pa.field("ttl_delete", pa.bool_(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
    for name, kind in key_attributes:
        if kind not in _KEY_ARROW_TYPES:
            raise ValueError(f"key attribute {name!r} has type {kind!r}; keys are S, N or B")
        fields.append(pa.field(key_column_name(name), _KEY_ARROW_TYPES[kind]))
    fields += [pa.field(c, pa.string()) for c in IMAGE_COLUMNS]
    return pa.schema(fields)


def _key_value(av: Mapping[str, Any] | None, kind: str) -> Any:
    if av is None:
        return None
    value = av.get(kind)
    if value is None:
        return None
    if kind == "S":
        return value
    if kind == "N":
        return (
            value
            if len(value) <= 38 and _CANONICAL_NUMBER.fullmatch(value.encode())
            else codec.canonical_number_text(value)
        )
    return codec.decode_binary(value)


def _micros(when: Any) -> int:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return round(when.timestamp() * 1_000_000)
    return round(float(when) * 1_000_000)


def records_to_table(
    records: Sequence[Mapping[str, Any]],
    key_attributes: Sequence[tuple[str, str]],
    *,
    shard_ids: Sequence[str | None] | str | None = None,
    source: str = "stream",
) -> pa.Table:
    """Change rows of stream records (see the module docstring for the columns).

    Args:
        records: GetRecords records as boto3 returns them (binary as bytes) or with binary as
            base64 text; ``dynamodb.ApproximateCreationDateTime`` a datetime or epoch seconds.
        key_attributes: ``(name, type)`` of the table's key attributes.
        shard_ids: the shard of each record (a sequence parallel to ``records``), one shard id
            for all, or None.
        source: ``stream`` or ``export``.

    Returns:
        A table with :func:`change_schema`'s schema, rows in the order given.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    n = len(records)
    event_id: list[str] = [""] * n
    event_name: list[str] = [""] * n
    seq: list[str | None] = [None] * n
    micros: list[int] = [0] * n
    ttl: list[bool] = [False] * n
    keys_text: list[str | None] = [None] * n
    new_text: list[str | None] = [None] * n
    old_text: list[str | None] = [None] * n
    key_values: list[list[Any]] = [[None] * n for _ in key_attributes]
    key_specs = list(enumerate(key_attributes))
    digits = SEQUENCE_DIGITS
    for i, rec in enumerate(records):
        d = rec["dynamodb"]
        event_id[i] = rec["eventID"]
        event_name[i] = rec["eventName"]
        s = d.get("SequenceNumber")
        if s is not None:
            seq[i] = s.zfill(digits)
        micros[i] = _micros(d["ApproximateCreationDateTime"])
        ident = rec.get("userIdentity")
        if ident is not None:
            ttl[i] = ident.get("Type") == "Service" and ident.get("PrincipalId") == TTL_PRINCIPAL
        keys = d.get("Keys")
        keys_text[i] = image_text(keys)
        new_text[i] = image_text(d.get("NewImage"))
        old_text[i] = image_text(d.get("OldImage"))
        if keys is not None:
            for j, (name, kind) in key_specs:
                key_values[j][i] = _key_value(keys.get(name), kind)
    if shard_ids is None or isinstance(shard_ids, str):
        shard_col = pa.array([shard_ids] * n, pa.string())
    else:
        if len(shard_ids) != n:
            raise ValueError("shard_ids must have one entry per record")
        shard_col = pa.array(shard_ids, pa.string())
    schema = change_schema(key_attributes)
    columns = [
        pa.array(event_id, pa.string()),
        pa.array(event_name, pa.string()),
        pa.array(seq, pa.string()),
        shard_col,
        pa.array(micros, pa.int64()).cast(TIMESTAMP_TYPE),
        pa.array(ttl, pa.bool_()),
        pa.array([source] * n, pa.string()),
        *(
            pa.array(vals, _KEY_ARROW_TYPES[kind])
            for vals, (_, kind) in zip(key_values, key_attributes, strict=True)
        ),
        pa.array(keys_text, pa.string()),
        pa.array(new_text, pa.string()),
        pa.array(old_text, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


# -- Arrow -> Parquet files ------------------------------------------------------------------


def partition_path(lake: Any, table: str, hour_start: datetime) -> str:
    """``<table>/changes/date=YYYY-MM-DD/hour=HH`` of the hour starting at ``hour_start``."""
    return lake.table_path(table, "changes", f"date={hour_start:%Y-%m-%d}", f"hour={hour_start:%H}")


def _file_range(name: str) -> tuple[str, str, str] | None:
    """(shard id, first seq, last seq) from a change file name, or None for other files."""
    if not name.endswith(".parquet"):
        return None
    parts = name[: -len(".parquet")].rsplit("_", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _is_data_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".parquet") and name[0] not in "_."


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
        if not _is_data_file(rel):
            continue
        rng = _file_range(rel.rsplit("/", 1)[-1])
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
    listing: dict[str, list[str]] = {}
    holding: set[str] = set()
    for start, end in zip(starts, ends, strict=True):
        idx = order[start:end]
        hour = int(hours[idx[0]])
        code = int(codes[idx[0]])
        part = partition_path(lake, table, datetime.fromtimestamp(hour * 3600, tz=UTC))
        if code < 0:
            if not batch_id:
                raise ValueError("rows without a shard_id need a batch_id to name their file")
            name = f"{batch_id}.parquet"
        else:
            shard = shard_names[code]
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
        buf = io.BytesIO()
        pq.write_table(rows.take(pa.array(idx)), buf, compression="zstd")
        lake.write_bytes(target, buf.getvalue())
        holding.add(target)
    return sorted(holding)


# -- one capture step ------------------------------------------------------------------------


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
        lag_seconds: now minus ``newest_change_time`` when the poll stopped on its budget (the
            stream holds more); 0 when it caught up; None when nothing was read.
        stopped_by: why the poll ended (see :class:`dynamo_cdc.stream.StreamBatch`).
        checkpoint: the committed checkpoint.
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
    rows = records_to_table(batch.records, info.key_attributes, shard_ids=batch.shard_ids)
    return write_change_batch(lake, table, rows)


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
    **reader_options: Any,
) -> CaptureResult:
    """Load the checkpoint, poll the stream, write Parquet, then commit the checkpoint.

    Args:
        clients: a :class:`dynamo_cdc.aws.Clients` (or anything with ``.dynamodb`` and
            ``.streams`` clients; ``.dynamodb`` is not used when ``info`` is given).
        lake: a :class:`dynamo_cdc.lake.Lake`.
        table: the table name.
        budget: the poll's budget.
        info: the stream and key (default: :func:`dynamo_cdc.stream.discover`).
        after_write: called with the written paths between the write and the commit (tests use
            it to crash there).
        **reader_options: passed to :class:`dynamo_cdc.stream.StreamReader` (clock, sleep, ...).

    Raises:
        StreamGapError: changes may have been lost; nothing is written or committed.
    """
    info, batch = read_batch(clients, lake, table, budget, info=info, **reader_options)
    files = write_batch(lake, table, info, batch)
    if after_write is not None:
        after_write(files)
    commit_batch(lake, table, batch)
    newest = None
    if batch.records:
        newest_micros = max(
            _micros(r["dynamodb"]["ApproximateCreationDateTime"]) for r in batch.records
        )
        newest = datetime.fromtimestamp(newest_micros / 1e6, tz=UTC)
    clock = reader_options.get("clock", time.time)
    if newest is None:
        lag = None
    elif batch.stopped_by == "caught_up":
        lag = 0.0
    else:
        lag = max(0.0, clock() - newest.timestamp())
    log.info(
        "%s: %d change rows in %d files (%s)",
        table,
        len(batch.records),
        len(files),
        batch.stopped_by,
    )
    return CaptureResult(
        table=table,
        records=len(batch.records),
        files=files,
        ranges=batch.ranges,
        finished_shards=batch.finished_shards,
        newest_change_time=newest.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if newest else None,
        lag_seconds=lag,
        stopped_by=batch.stopped_by,
        checkpoint=batch.checkpoint,
    )
