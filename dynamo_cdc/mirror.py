"""The ``current`` view: one row per key, the newest snapshot plus the changes after it.

Why this layout (merge on read over key-hash buckets)
-----------------------------------------------------

A refresh must cost in proportion to the changes, not to the table. Rewriting whole files that
hold a changed key cannot do that when changes hit random keys: 1,000 changes over 64 key-hash
buckets touch all 64 of them (and even over 4,096 buckets they touch 22%). So a version is a set
of **base** files, one per key-hash bucket, plus **delta** files that hold only the rows changed
since the base was written. A refresh writes one delta (the changed rows) and carries every other
file over without writing its bytes; when the deltas grow past ``compact_ratio`` of the base
rows (or ``max_delta_files``), the refresh *compacts*: it merges them into new bases. Readers
take, per key, the row with the newest ``(_change_time, _sequence_number)`` and drop tombstones.

Layout under ``<root>/<table>/current/``::

    _pointer.json                         the version readers use (written last, atomically)
    version=NNNNNN/bucket-BBBB.parquet    base rows of key-hash bucket BBBB
    version=NNNNNN/delta-NNNNNN-KKKK.parquet
                                          rows changed by refresh NNNNNN (batch KKKK)
    version=NNNNNN/_state.json            what the version applied (not data)

Every version folder holds *all* its files: files that did not change are carried over as hard
links on a local lake (no bytes written) and with a server-side CopyObject on S3. The pointer
names the version, its files (relative to ``current/``), the bucket count, the snapshot it
starts from and its schema; it is written last, so a reader sees the previous version or the new
one, never a mix. Versions other than the current and the previous one are deleted ``grace``
(default 1 hour) after they were replaced, so a reader that read the pointer just before a
refresh still finds its files.

Columns of every file (one schema per version): the typed columns of the snapshot (keys, then
attributes, see :mod:`dynamo_cdc.schema`), ``_item`` (the lossless item; null in tombstones),
then the hidden columns:

* ``_change_time`` (timestamp UTC) and ``_sequence_number`` (40-digit text): the change that set
  the row (null for rows taken from the snapshot), so a replayed or late older change never wins;
* ``_deleted`` (bool): a tombstone, kept ``tombstone_seconds`` (default 48 h) after the delete so
  that a late older record cannot resurrect the key;
* ``_key`` (canonical DynamoDB JSON of the key) and ``_bucket`` (its bucket: the first 8 bytes of
  BLAKE2b of ``_key`` as UTF-8, big-endian, modulo the bucket count).

Reading it (one consistent version) with DuckDB, where ``C`` is ``<root>/<table>/current``::

    SET VARIABLE f = (SELECT list('C/' || f) FROM (SELECT unnest(files) AS f
      FROM read_json('C/_pointer.json')));
    SELECT * EXCLUDE (_key, _bucket, _deleted)
      FROM read_parquet(getvariable('f'), hive_partitioning = false)
      QUALIFY row_number() OVER (PARTITION BY _key ORDER BY _change_time DESC NULLS LAST,
      _sequence_number DESC NULLS LAST) = 1 AND NOT _deleted;

(:func:`duckdb_query` writes it for a lake.) After a compaction with no delta left, the files
hold one row per key, and ``WHERE NOT _deleted`` alone is enough; the query above is always
right. :func:`read_current` does the same in pyarrow.

Applying changes
----------------

The newest snapshot partition (by its ``_lineage.json``) is the bootstrap; a newer one, or a
different bucket count, rebuilds. Change rows with ``approximate_creation_time >= ExportTime -
margin``, and not older than the table's CreationDateTime (rows of an earlier table of the same
name, deleted and created again, stay in ``changes`` as history but never reach ``current``),
are replayed per key in order of (approximate_creation_time, sequence_number): REMOVE
(no ``_new_image``) deletes, INSERT/MODIFY set the row to ``_new_image``. With full new images
this is idempotent, so the overlap with the snapshot is safe. Which change files were applied is
tracked by file name per hour partition (in ``_state.json``), not by a time watermark: shards
land at different paces, so a late file may hold records older than some already applied.
A rewritten partition (compacted change files) is simply applied again.

The typed schema is decided from the snapshot's schema plus the statistics of every new image.
If a change widens it (a new attribute, an integer column that meets a fraction, a type
conflict), every file is rewritten with :func:`dynamo_cdc.schema.cast_table_to_schema`: rare,
and it costs one full rewrite.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dynamo_cdc import catalog, codec, convert, schema
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import mirror_lock, newest_snapshot, partition_value
from dynamo_cdc.lock import exclusive
from dynamo_cdc.times import parse_time

log = logging.getLogger(__name__)

POINTER_FILE = "_pointer.json"
STATE_FILE = "_state.json"
POINTER_FORMAT = 1
HIDDEN_COLUMNS = ("_change_time", "_sequence_number", "_deleted", "_key", "_bucket")
#: Columns readers drop (``_change_time`` and ``_sequence_number`` stay: when the row last changed).
INTERNAL_COLUMNS = ("_key", "_bucket", "_deleted")
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
DEFAULT_TARGET_BUCKET_BYTES = 96 * 1024 * 1024
MAX_BUCKETS = 4096
WRITERS_PER_PASS = 256
COMPRESSION = "zstd"
_SEQ_DIGITS = 40
_CHANGE_COLUMNS = ["approximate_creation_time", "sequence_number", "_keys", "_new_image"]


@dataclass
class MirrorResult:
    """What :func:`refresh_current` did.

    Attributes:
        table: the table.
        version: the version readers now see (unchanged when there was nothing to apply).
        rows: live rows (keys) in the mirror.
        files: files in the version.
        files_written: files written by this refresh (not carried over).
        bytes_written: bytes written by this refresh (Parquet, state and pointer).
        bytes_total: bytes of the version's Parquet files.
        changes_applied: change rows read from the new change files (after the margin filter).
        change_files_applied: new change files read.
        buckets: the key-hash bucket count.
        rebuilt: bootstrapped from a snapshot (first run, newer snapshot, other bucket count).
        compacted: deltas were merged into new bases.
        schema_changed: the typed schema widened, so every file was rewritten.
        snapshot_export_time: the ExportTime of the snapshot the mirror starts from.
        uri: where ``current`` lives.
    """

    table: str
    version: int
    rows: int
    files: int
    files_written: int
    bytes_written: int
    bytes_total: int
    changes_applied: int
    change_files_applied: int
    buckets: int
    rebuilt: bool = False
    compacted: bool = False
    schema_changed: bool = False
    snapshot_export_time: str | None = None
    uri: str = ""


# -- keys and buckets ---------------------------------------------------------------------------


def bucket_of(key_text: str, buckets: int) -> int:
    """The bucket of a canonical key text: BLAKE2b (8 bytes, big-endian) modulo ``buckets``."""
    digest = hashlib.blake2b(key_text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def key_text(item: dict[str, Any], key_attributes: Sequence[str]) -> str:
    """The canonical DynamoDB JSON of an item's key (equal to a change row's ``_keys``)."""
    return codec.item_to_json_text({k: item[k] for k in key_attributes})


def choose_bucket_count(snapshot_bytes: int, target_bucket_bytes: int) -> int:
    """A power of two near ``snapshot_bytes / target_bucket_bytes`` (1 to 4096)."""
    want = max(1, -(-snapshot_bytes // max(1, target_bucket_bytes)))
    n = 1
    while n < want and n < MAX_BUCKETS:
        n *= 2
    return n


def _key_av(value: Any, kind: str) -> dict[str, Any]:
    if kind == codec.STRING:
        return {"S": value}
    if kind == codec.BINARY:
        return {"B": codec.encode_binary(value)}
    return {"N": codec.canonical_number_text(str(value))}


def _key_texts_from_columns(table: pa.Table, key_fields: Sequence[pa.Field]) -> list[str]:
    columns = [table.column(f.name).to_pylist() for f in key_fields]
    kinds = [schema.field_kind(f) for f in key_fields]
    names = [f.name for f in key_fields]
    out = []
    for values in zip(*columns, strict=True):
        out.append(
            codec.item_to_json_text(
                {n: _key_av(v, k) for n, v, k in zip(names, values, kinds, strict=True)}
            )
        )
    return out


# -- schema -------------------------------------------------------------------------------------


def _hidden_fields() -> list[pa.Field]:
    return [
        pa.field("_change_time", TIMESTAMP_TYPE),
        pa.field("_sequence_number", pa.string()),
        pa.field("_deleted", pa.bool_(), nullable=False),
        pa.field("_key", pa.string(), nullable=False),
        pa.field("_bucket", pa.int32(), nullable=False),
    ]


def mirror_schema(data_schema: pa.Schema) -> pa.Schema:
    """The schema of mirror files: ``data_schema`` (``_item`` made nullable for tombstones)
    plus the hidden columns."""
    fields = [
        f.with_nullable(True) if f.name == schema.ITEM_COLUMN else f
        for f in data_schema.remove_metadata()
        if f.name not in HIDDEN_COLUMNS
    ]
    return pa.schema(fields + _hidden_fields())


def data_schema_of(mirror: pa.Schema) -> pa.Schema:
    """The typed part of a mirror schema (what :func:`dynamo_cdc.convert.items_to_table` takes)."""
    fields = [f for f in mirror if f.name not in HIDDEN_COLUMNS]
    return pa.schema(
        [f.with_nullable(False) if f.name == schema.ITEM_COLUMN else f for f in fields]
    )


def stats_from_schema(data_schema: pa.Schema, rows: int) -> schema.SchemaStats:
    """Statistics that make :func:`dynamo_cdc.schema.decide_schema` give ``data_schema`` again.

    The snapshot's Parquet schema (types plus ``dynamodb_type`` metadata) is enough to rebuild
    them, so a bootstrap does not parse every ``_item``: a decimal128(p, s) column means integer
    digits p - s and scale s, int64 means all integers, a string number column (wider than 38
    digits) means 39 integer digits, MIXED means two tags.
    """
    stats = schema.SchemaStats(items=rows)
    count = max(rows, 1)
    for f in data_schema:
        if f.name == schema.ITEM_COLUMN:
            continue
        kind = schema.field_kind(f)
        column = schema.ColumnStats(count=count)
        if kind == schema.MIXED:
            column.tags = {codec.STRING: count, codec.NUMBER: count}
        else:
            column.tags = {kind: count}
        t = f.type.value_type if pa.types.is_list(f.type) else f.type
        if kind in (codec.NUMBER, codec.NUMBER_SET):
            if pa.types.is_decimal(t):
                column.all_int64 = False
                column.int_digits = t.precision - t.scale
                column.scale = t.scale
            elif pa.types.is_string(t):
                column.all_int64 = False
                column.int_digits = schema.MAX_DECIMAL_PRECISION + 1
        stats.columns[f.name] = column
    return stats


# -- the pointer and the state --------------------------------------------------------------------


def current_path(lake: Lake, table: str, *parts: str) -> str:
    """``<table>/current/<parts...>``."""
    return lake.table_path(table, "current", *parts)


def version_dir(version: int) -> str:
    return f"version={version:06d}"


def load_pointer(lake: Lake, table: str) -> dict[str, Any] | None:
    """The pointer of ``current`` (see the module docstring), or None before the first refresh."""
    raw = lake.read_bytes(current_path(lake, table, POINTER_FILE))
    return None if raw is None else dict(orjson.loads(raw))


def duckdb_query(lake: Lake, table: str) -> str:
    """The documented DuckDB statements that read exactly the pointer's version of ``current``."""
    base = lake.uri(current_path(lake, table)).replace("'", "''")
    return (
        f"SET VARIABLE dynamo_cdc_files = (SELECT list('{base}/' || f) FROM "
        f"(SELECT unnest(files) AS f FROM read_json('{base}/{POINTER_FILE}'))); "
        "SELECT * EXCLUDE (_key, _bucket, _deleted) "
        "FROM read_parquet(getvariable('dynamo_cdc_files'), hive_partitioning = false) "
        "QUALIFY row_number() OVER (PARTITION BY _key ORDER BY _change_time DESC NULLS LAST, "
        "_sequence_number DESC NULLS LAST) = 1 AND NOT _deleted"
    )


def schema_from_json(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(text)))


def _schema_to_json(s: pa.Schema) -> str:
    return s.serialize().to_pybytes().hex()


# -- reading ------------------------------------------------------------------------------------


def read_files(lake: Lake, rels: Sequence[str], columns: list[str] | None = None) -> pa.Table:
    fs, base = lake.arrow_filesystem()
    paths = [f"{base}/{rel}" for rel in rels]
    return ds.dataset(paths, filesystem=fs, format="parquet").to_table(columns=columns)


def newest_per_key(rows: pa.Table) -> pa.Table:
    """Per ``_key``, the row with the newest (``_change_time``, ``_sequence_number``); rows
    without a change time (from the snapshot) lose to any change."""
    if rows.num_rows == 0:
        return rows
    order = pc.sort_indices(
        rows,
        sort_keys=[
            ("_key", "ascending", "at_end"),
            ("_change_time", "descending", "at_end"),
            ("_sequence_number", "descending", "at_end"),
        ],
    )
    keys = rows.column("_key").take(order).combine_chunks()
    first = pc.not_equal(keys[1:], keys[:-1])
    mask = pa.concat_arrays([pa.array([True]), first.fill_null(True)])
    return rows.take(pc.filter(order, mask))


def read_current(lake: Lake, table: str) -> pa.Table:
    """The mirror of ``table``: one row per live key, typed columns, ``_item``, and
    ``_change_time`` / ``_sequence_number`` (null for rows unchanged since the snapshot).

    Where a catalog is on and the ``current`` Iceberg table was published from the pointer's
    version, that table is scanned (one row per key already: no merge); otherwise the mirror's
    files are read and merged.

    Raises:
        FileNotFoundError: ``current`` was never refreshed.
    """
    pointer = load_pointer(lake, table)
    if pointer is None:
        raise FileNotFoundError(
            f"No current view of {table!r} under {lake.uri(current_path(lake, table))}: run "
            "dynamo_cdc.mirror.refresh_current (the `current` asset) first."
        )
    published = catalog.read_published_current(lake, table, pointer)
    if published is not None:  # the Iceberg table holds this version: a plain scan
        return published
    mirror = schema_from_json(pointer["schema"])
    rels = [current_path(lake, table, f) for f in pointer["files"]]
    if not rels:
        rows = mirror.empty_table()
    else:
        rows = read_files(lake, rels)
        rows = rows.select(mirror.names).cast(mirror)
    if pointer.get("deltas"):
        rows = newest_per_key(rows)
    rows = rows.filter(pc.invert(rows.column("_deleted")))
    return rows.drop_columns(list(INTERNAL_COLUMNS))


# -- changes -> mirror rows -------------------------------------------------------------------------


def _tombstones(
    keys_texts: list[str],
    times: pa.Array,
    seqs: pa.Array,
    mirror: pa.Schema,
    key_attributes: Sequence[str],
    buckets: int,
) -> pa.Table:
    items = [codec.item_from_json_text(t) for t in keys_texts]
    arrays = []
    for f in mirror:
        if f.name in key_attributes:
            arrays.append(convert.build_column([i.get(f.name) for i in items], f))
        elif f.name == "_change_time":
            arrays.append(times)
        elif f.name == "_sequence_number":
            arrays.append(seqs)
        elif f.name == "_deleted":
            arrays.append(pa.array([True] * len(items), pa.bool_()))
        elif f.name == "_key":
            arrays.append(pa.array(keys_texts, pa.string()))
        elif f.name == "_bucket":
            arrays.append(pa.array([bucket_of(k, buckets) for k in keys_texts], pa.int32()))
        else:
            arrays.append(pa.nulls(len(items), f.type))
    return pa.Table.from_arrays(arrays, schema=mirror)


def live_rows(
    items: list[dict[str, Any]],
    item_texts: list[str],
    keys_texts: list[str],
    times: pa.Array | None,
    seqs: pa.Array | None,
    mirror: pa.Schema,
    buckets: int,
) -> pa.Table:
    """Mirror rows of live items (typed columns from the items, ``_item`` from the texts)."""
    typed = convert.items_to_table(items, data_schema_of(mirror), item_texts=item_texts)
    n = len(items)
    hidden = {
        "_change_time": times if times is not None else pa.nulls(n, TIMESTAMP_TYPE),
        "_sequence_number": seqs if seqs is not None else pa.nulls(n, pa.string()),
        "_deleted": pa.array([False] * n, pa.bool_()),
        "_key": pa.array(keys_texts, pa.string()),
        "_bucket": pa.array([bucket_of(k, buckets) for k in keys_texts], pa.int32()),
    }
    arrays = [
        typed.column(f.name) if f.name in typed.column_names else hidden[f.name] for f in mirror
    ]
    return pa.Table.from_arrays(arrays, schema=mirror)


def reduce_changes(changes: pa.Table) -> pa.Table:
    """Per key (``_keys``), the newest change row by (approximate_creation_time,
    sequence_number)."""
    if changes.num_rows == 0:
        return changes
    renamed = changes.rename_columns(
        [
            "_change_time"
            if c == "approximate_creation_time"
            else "_sequence_number"
            if c == "sequence_number"
            else "_key"
            if c == "_keys"
            else c
            for c in changes.column_names
        ]
    )
    return newest_per_key(renamed)


def changes_to_rows(
    reduced: pa.Table, mirror: pa.Schema, key_attributes: Sequence[str], buckets: int
) -> pa.Table:
    """Mirror rows (live rows and tombstones) of :func:`reduce_changes` output."""
    deleted = pc.is_null(reduced.column("_new_image"))
    parts = []
    live = reduced.filter(pc.invert(deleted))
    if live.num_rows:
        texts = live.column("_new_image").to_pylist()
        items = [codec.item_from_json_text(t) for t in texts]
        parts.append(
            live_rows(
                items,
                texts,
                live.column("_key").to_pylist(),
                live.column("_change_time").combine_chunks(),
                live.column("_sequence_number").combine_chunks(),
                mirror,
                buckets,
            )
        )
    dead = reduced.filter(deleted)
    if dead.num_rows:
        parts.append(
            _tombstones(
                dead.column("_key").to_pylist(),
                dead.column("_change_time").combine_chunks(),
                dead.column("_sequence_number").combine_chunks(),
                mirror,
                key_attributes,
                buckets,
            )
        )
    if not parts:
        return mirror.empty_table()
    return pa.concat_tables(parts)


def cast_rows(rows: pa.Table, mirror: pa.Schema) -> pa.Table:
    """Mirror rows of an older (narrower) schema, converted exactly to ``mirror``."""
    if rows.schema.equals(mirror):
        return rows
    deleted = rows.column("_deleted")
    live = rows.filter(pc.invert(deleted))
    dead = rows.filter(deleted)
    parts = []
    if live.num_rows:
        parts.append(schema.cast_table_to_schema(live, mirror))
    if dead.num_rows:
        arrays = []
        for f in mirror:
            if f.name in dead.column_names and (
                f.name in HIDDEN_COLUMNS or not f.nullable or f.name == schema.ITEM_COLUMN
            ):
                arrays.append(dead.column(f.name).cast(f.type))
            else:
                arrays.append(pa.nulls(dead.num_rows, f.type))
        parts.append(pa.Table.from_arrays(arrays, schema=mirror))
    return pa.concat_tables(parts) if parts else mirror.empty_table()


# -- lake helpers ---------------------------------------------------------------------------------


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=COMPRESSION)
    return buf.getvalue()


# -- snapshots and change files -------------------------------------------------------------------


def change_files_since(lake: Lake, table: str, start: datetime) -> dict[str, list[str]]:
    """Change files of the hour partitions from ``start``'s hour on: partition -> file names
    (the table's partition columns are named as the lake has them, see :mod:`dynamo_cdc.layout`)."""
    prefix = lake.table_path(table, "changes")
    since = (f"{start:%Y-%m-%d}", f"{start:%H}")
    out: dict[str, list[str]] = {}
    for date in lake.folders(prefix):
        if "=" not in date or partition_value(date) < since[0]:
            continue
        for rel in lake.list(f"{prefix}/{date}"):
            part, _, name = rel[len(prefix) + 1 :].rpartition("/")
            hour = partition_value(part.rsplit("/", 1)[-1]) if "/" in part else ""
            if not name.endswith(".parquet") or (partition_value(date), hour) < since:
                continue
            out.setdefault(part, []).append(name)
    return out


# -- refresh --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """The version being written."""

    version: int
    buckets: int
    mirror: pa.Schema
    stats: schema.SchemaStats
    base_files: dict[int, str] = field(default_factory=dict)  # bucket -> relative to current/
    base_rows: dict[int, int] = field(default_factory=dict)
    # bucket -> the version that wrote its base file's rows (the Iceberg publish of ``current``
    # rewrites only buckets changed since the version it published last)
    base_versions: dict[int, int] = field(default_factory=dict)
    deltas: list[str] = field(default_factory=list)
    delta_rows: int = 0
    applied: dict[str, list[str]] = field(default_factory=dict)
    newest_change_micros: int | None = None
    written: list[str] = field(default_factory=list)
    bytes_written: int = 0
    # a random id given when the mirror is built from a snapshot and kept by the versions that
    # build on it: a mirror built again (its folder deleted) is another mirror, whose version
    # numbers start again (the Iceberg publish must not take it for the one it published)
    rebuild_id: str = ""


def refresh_current(
    lake: Lake,
    table: str,
    *,
    key_attributes: Sequence[str] | None = None,
    margin_seconds: float = 300.0,
    bucket_count: int | None = None,
    target_bucket_bytes: int = DEFAULT_TARGET_BUCKET_BYTES,
    compact_ratio: float = 0.1,
    max_delta_files: int = 32,
    tombstone_seconds: float = 48 * 3600.0,
    grace_seconds: float = 3600.0,
    batch_rows: int = 200_000,
    now: float | None = None,
) -> MirrorResult:
    """Bring ``current`` up to date with the newest snapshot and the change files since.

    Args:
        lake: the lake.
        table: the DynamoDB table name.
        key_attributes: hash key then range key (default: the snapshot's ``_lineage.json``).
        margin_seconds: changes from the snapshot's ExportTime minus this are replayed.
        bucket_count: key-hash buckets; default chosen at bootstrap from the snapshot's size
            (``target_bucket_bytes`` per bucket, a power of two up to 4096). A value other than
            the pointer's rebuilds.
        target_bucket_bytes: the size a base file aims at when the count is chosen.
        compact_ratio: compact when the delta rows exceed this fraction of the base rows.
        max_delta_files: compact when a version would hold more delta files than this.
        tombstone_seconds: how long a delete is remembered (against late older records).
        grace_seconds: how long a replaced version stays readable.
        batch_rows: change rows read per delta file (bounds memory).
        now: epoch seconds for the grace period (default: the wall clock).

    Returns:
        what was done; ``version`` is what readers now see.

    Raises:
        FileNotFoundError: no snapshot partition of ``table`` exists yet.
        LakeBusyError: another refresh of the table held its lock past an hour.
    """
    with exclusive(
        lake,
        mirror_lock(lake, table),
        wait_seconds=REFRESH_LOCK_WAIT_SECONDS,
        stale_seconds=REFRESH_STALE_SECONDS,
        what=f"refreshing the mirror of table {table!r}",
    ):
        result = _refresh_current(
            lake,
            table,
            key_attributes=key_attributes,
            margin_seconds=margin_seconds,
            bucket_count=bucket_count,
            target_bucket_bytes=target_bucket_bytes,
            compact_ratio=compact_ratio,
            max_delta_files=max_delta_files,
            tombstone_seconds=tombstone_seconds,
            grace_seconds=grace_seconds,
            batch_rows=batch_rows,
            now=now,
        )
    # outside the lock: the Iceberg publish reads the version it names, which stays for an hour
    catalog.lake_changed(lake, table, "current")
    return result


# One refresh of a table at a time: two would build the same next version folder and replace
# each other's files. The lock (lock.exclusive) is an flock locally and a lease object on S3; a
# refresh waits this long for another, and an S3 lease older than REFRESH_STALE_SECONDS counts
# as abandoned by a refresh that died (a bootstrap of a very large table must finish within it).
REFRESH_LOCK_WAIT_SECONDS = 3600.0
REFRESH_STALE_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class _Source:
    """What a refresh starts from: the newest snapshot partition and the changes to replay."""

    snapshot_rel: str
    lineage: dict[str, Any]
    keys: list[str]
    replay_from: datetime

    @property
    def identity(self) -> dict[str, Any]:
        """How the pointer names the snapshot (another one means a rebuild)."""
        return {
            "path": self.snapshot_rel,
            "export_time": self.lineage["export_time"],
            "export_arn": self.lineage.get("export_arn"),
        }


def _source(
    lake: Lake, table: str, key_attributes: Sequence[str] | None, margin_seconds: float
) -> _Source:
    snap = newest_snapshot(lake, table)
    if snap is None:
        raise FileNotFoundError(
            f"No snapshot of {table!r} under {lake.uri(lake.table_path(table, 'snapshot'))}: "
            "take a snapshot first (the `snapshot` asset), then refresh `current`."
        )
    snap_rel, lineage = snap
    keys = list(key_attributes or lineage.get("key_attributes") or [])
    if not keys:
        raise ValueError(f"key_attributes of {table!r} are unknown: pass them.")
    replay_from = parse_time(lineage["export_time"]) - timedelta(seconds=margin_seconds)
    if lineage.get("table_created"):
        # Older rows are an earlier table's of the same name (deleted, then created again).
        # Stream times are whole seconds: the creation's second stays in.
        created = parse_time(lineage["table_created"]).replace(microsecond=0)
        replay_from = max(replay_from, created)
    return _Source(snap_rel, lineage, keys, replay_from)


def _state_to_carry(
    lake: Lake,
    table: str,
    pointer: dict[str, Any] | None,
    source: _Source,
    bucket_count: int | None,
) -> dict[str, Any] | None:
    """The state of the pointer's version when the next version builds on it; None when the
    next version is rebuilt from the snapshot (first run, newer snapshot, other bucket count or
    keys)."""
    if (
        pointer is None
        or pointer.get("snapshot") != source.identity
        or (bucket_count is not None and bucket_count != pointer["buckets"])
        or pointer.get("key_attributes") != source.keys
    ):
        return None
    return load_state(lake, table, pointer)


def _unapplied(
    listing: dict[str, list[str]], applied: dict[str, list[str]]
) -> list[tuple[str, str]]:
    """(partition, file name) of the listed change files not applied yet, in order."""
    return [
        (part, name)
        for part, names in sorted(listing.items())
        for name in names
        if name not in set(applied.get(part, ()))
    ]


@dataclass
class _Applied:
    """What :func:`_apply_change_files` did."""

    rows: int = 0
    schema_changed: bool = False


def _apply_change_files(
    lake: Lake,
    table: str,
    plan: _Plan,
    files: Sequence[tuple[str, str]],
    source: _Source,
    batch_rows: int,
) -> _Applied:
    """Replay the change files into delta files of ``plan`` (one per ``batch_rows`` rows)."""
    applied = _Applied()
    batches: list[pa.Table] = []
    pending = 0
    changes_prefix = lake.table_path(table, "changes")
    for part, name in files:
        t = read_files(lake, [f"{changes_prefix}/{part}/{name}"], _CHANGE_COLUMNS)
        t = t.filter(
            pc.greater_equal(
                t.column("approximate_creation_time"),
                pa.scalar(source.replay_from, TIMESTAMP_TYPE),
            )
        )
        plan.applied.setdefault(part, []).append(name)
        if t.num_rows:
            newest = pc.max(t.column("approximate_creation_time")).cast(pa.int64()).as_py()
            plan.newest_change_micros = max(plan.newest_change_micros or newest, newest)
            applied.rows += t.num_rows
            batches.append(t.select(_CHANGE_COLUMNS))
            pending += t.num_rows
        if pending >= batch_rows:
            applied.schema_changed |= _write_batch(lake, table, plan, batches, source.keys)
            batches, pending = [], 0
    if batches:
        applied.schema_changed |= _write_batch(lake, table, plan, batches, source.keys)
    return applied


def _write_batch(
    lake: Lake, table: str, plan: _Plan, batches: list[pa.Table], keys: Sequence[str]
) -> bool:
    """One delta file of the newest change per key of ``batches``; True when the typed schema
    widened (every file of the version was rewritten)."""
    reduced = reduce_changes(pa.concat_tables(batches))
    images = [
        codec.item_from_json_text(t) for t in reduced.column("_new_image").drop_null().to_pylist()
    ]
    plan.stats.update(images)
    wanted = mirror_schema(schema.decide_schema(plan.stats, keys))
    widened = not wanted.equals(plan.mirror)
    if widened:
        _rewrite_all(lake, table, plan, wanted)
    elif not wanted.equals(plan.mirror, check_metadata=True):
        plan.mirror = wanted  # same Arrow types, another dynamodb_type (e.g. S -> MIXED)
    _write_delta(lake, table, plan, changes_to_rows(reduced, plan.mirror, keys, plan.buckets))
    return widened


def _should_compact(plan: _Plan, rebuilt: bool, compact_ratio: float, max_delta_files: int) -> bool:
    return bool(plan.deltas) and (
        rebuilt
        or plan.delta_rows > compact_ratio * max(sum(plan.base_rows.values()), 1)
        or len(plan.deltas) > max_delta_files
    )


def _refresh_current(
    lake: Lake,
    table: str,
    *,
    key_attributes: Sequence[str] | None,
    margin_seconds: float,
    bucket_count: int | None,
    target_bucket_bytes: int,
    compact_ratio: float,
    max_delta_files: int,
    tombstone_seconds: float,
    grace_seconds: float,
    batch_rows: int,
    now: float | None,
) -> MirrorResult:
    now = time.time() if now is None else now
    pointer = load_pointer(lake, table)
    source = _source(lake, table, key_attributes, margin_seconds)
    listing = change_files_since(lake, table, source.replay_from)
    old_state = _state_to_carry(lake, table, pointer, source, bucket_count)
    if old_state is not None and not _unapplied(listing, old_state.get("applied", {})):
        assert pointer is not None
        return _result(lake, table, pointer, source=source)  # nothing new: the same version
    version = (pointer["version"] + 1) if pointer else 1
    lake.delete(current_path(lake, table, version_dir(version)))  # a crashed refresh's leftovers
    if old_state is None:
        plan = _bootstrap(
            lake,
            table,
            source.snapshot_rel,
            source.lineage,
            source.keys,
            version,
            bucket_count,
            target_bucket_bytes,
        )
        log.info(
            "%s: current rebuilt from %s (%d buckets)", table, source.snapshot_rel, plan.buckets
        )
    else:
        assert pointer is not None
        plan = _carry_over(lake, table, pointer, old_state, version)
    new_files = _unapplied(listing, plan.applied)
    # Forget applied names that are gone (compacted hours): keeps the state small.
    plan.applied = {
        part: sorted(set(names) & set(listing.get(part, ())))
        for part, names in plan.applied.items()
        if part in listing
    }
    applied = _apply_change_files(lake, table, plan, new_files, source, batch_rows)
    rebuilt = old_state is None
    compacted = _should_compact(plan, rebuilt, compact_ratio, max_delta_files)
    if compacted:
        _compact(lake, table, plan, tombstone_seconds)
    pointer = _commit(lake, table, plan, source, pointer, now, grace_seconds)
    return _result(
        lake,
        table,
        pointer,
        source=source,
        plan=plan,
        changes_applied=applied.rows,
        change_files_applied=len(new_files),
        rebuilt=rebuilt,
        compacted=compacted,
        schema_changed=applied.schema_changed,
    )


def _result(
    lake: Lake,
    table: str,
    pointer: dict[str, Any],
    *,
    source: _Source,
    plan: _Plan | None = None,
    changes_applied: int = 0,
    change_files_applied: int = 0,
    rebuilt: bool = False,
    compacted: bool = False,
    schema_changed: bool = False,
) -> MirrorResult:
    """The result of a refresh whose version is ``pointer`` (``plan``: the files it wrote;
    None when it wrote nothing)."""
    return MirrorResult(
        table=table,
        version=pointer["version"],
        rows=int(pointer.get("rows", 0)),
        files=len(pointer["files"]),
        files_written=len(plan.written) if plan else 0,
        bytes_written=plan.bytes_written if plan else 0,
        bytes_total=int(pointer.get("bytes", 0)),
        changes_applied=changes_applied,
        change_files_applied=change_files_applied,
        buckets=int(pointer["buckets"]),
        rebuilt=rebuilt,
        compacted=compacted,
        schema_changed=schema_changed,
        snapshot_export_time=source.lineage["export_time"],
        uri=lake.uri(current_path(lake, table)),
    )


def _write(lake: Lake, table: str, plan: _Plan, name: str, rows: pa.Table) -> str:
    rel = f"{version_dir(plan.version)}/{name}"
    data = _parquet_bytes(rows)
    lake.write_bytes(current_path(lake, table, rel), data)
    plan.written.append(rel)
    plan.bytes_written += len(data)
    return rel


def _bootstrap(
    lake: Lake,
    table: str,
    snap_rel: str,
    lineage: dict[str, Any],
    keys: list[str],
    version: int,
    bucket_count: int | None,
    target_bucket_bytes: int,
) -> _Plan:
    """Write the base files of a new version from the snapshot partition.

    Snapshot files are streamed, one at a time, into one Parquet writer per bucket (at most
    :data:`WRITERS_PER_PASS` open at once; more buckets take more passes), so memory is
    O(snapshot file), not O(table).
    """
    files = [f"{snap_rel}/{f}" for f in lineage.get("files", [])]
    snapshot_bytes = sum(lake.size(f) for f in files)
    buckets = bucket_count or choose_bucket_count(snapshot_bytes, target_bucket_bytes)
    fs, base = lake.arrow_filesystem()
    if files:
        data_schema = pq.read_schema(f"{base}/{files[0]}", filesystem=fs).remove_metadata()
    else:
        data_schema = schema.decide_schema(schema.SchemaStats(), keys)
    stats = stats_from_schema(data_schema, int(lineage.get("rows", 0)))
    mirror = mirror_schema(schema.decide_schema(stats, keys))
    plan = _Plan(
        version=version, buckets=buckets, mirror=mirror, stats=stats, rebuild_id=os.urandom(8).hex()
    )
    key_fields = [mirror.field(k) for k in keys]
    vdir = version_dir(version)
    with lake.staging(table) as staging:
        for first in range(0, buckets, WRITERS_PER_PASS):
            group = range(first, min(buckets, first + WRITERS_PER_PASS))
            writers = {
                b: pq.ParquetWriter(
                    str(staging / f"bucket-{b:04d}.parquet"), mirror, compression=COMPRESSION
                )
                for b in group
            }
            counts = dict.fromkeys(group, 0)
            try:
                for rel in files:
                    rows = _snapshot_rows(lake, rel, mirror, key_fields, buckets)
                    ids = rows.column("_bucket")
                    for b in pc.unique(ids).to_pylist():
                        if b in writers:
                            part = rows.filter(pc.equal(ids, b))
                            writers[b].write_table(part)
                            counts[b] += part.num_rows
            finally:
                for w in writers.values():
                    w.close()
            for b in group:
                name = f"bucket-{b:04d}.parquet"
                rel = f"{vdir}/{name}"
                lake.put_file(current_path(lake, table, rel), staging / name)
                plan.bytes_written += (staging / name).stat().st_size
                (staging / name).unlink()
                plan.written.append(rel)
                plan.base_files[b] = rel
                plan.base_rows[b] = counts[b]
                plan.base_versions[b] = version
    return plan


def _snapshot_rows(
    lake: Lake, rel: str, mirror: pa.Schema, key_fields: Sequence[pa.Field], buckets: int
) -> pa.Table:
    """Mirror rows of one snapshot file (no change time: any change wins over them)."""
    snap = schema.cast_table_to_schema(read_files(lake, [rel]), data_schema_of(mirror))
    key_texts = _key_texts_from_columns(snap, key_fields)
    n = snap.num_rows
    hidden = {
        "_change_time": pa.nulls(n, TIMESTAMP_TYPE),
        "_sequence_number": pa.nulls(n, pa.string()),
        "_deleted": pa.array([False] * n, pa.bool_()),
        "_key": pa.array(key_texts, pa.string()),
        "_bucket": pa.array([bucket_of(k, buckets) for k in key_texts], pa.int32()),
    }
    return pa.Table.from_arrays(
        [snap.column(f.name) if f.name in snap.column_names else hidden[f.name] for f in mirror],
        schema=mirror,
    )


def load_state(lake: Lake, table: str, pointer: dict[str, Any] | None) -> dict[str, Any] | None:
    if pointer is None:
        return None
    raw = lake.read_bytes(current_path(lake, table, version_dir(pointer["version"]), STATE_FILE))
    return dict(orjson.loads(raw)) if raw else None


def _carry_over(
    lake: Lake, table: str, pointer: dict[str, Any], state: dict[str, Any], version: int
) -> _Plan:
    plan = _Plan(
        version=version,
        buckets=int(pointer["buckets"]),
        mirror=schema_from_json(pointer["schema"]),
        stats=schema.SchemaStats.from_dict(state["stats"]),
        applied={k: list(v) for k, v in state.get("applied", {}).items()},
        newest_change_micros=state.get("newest_change_micros"),
        rebuild_id=str(pointer.get("rebuild_id", "")),
    )
    vdir = version_dir(version)
    for b_text, rel in state["base_files"].items():
        b = int(b_text)
        new_rel = f"{vdir}/{rel.rsplit('/', 1)[1]}"
        lake.copy(current_path(lake, table, rel), current_path(lake, table, new_rel))
        plan.base_files[b] = new_rel
        plan.base_rows[b] = int(state["base_rows"][b_text])
        plan.base_versions[b] = int(state.get("base_versions", {}).get(b_text, state["version"]))
    for rel in state.get("deltas", []):
        new_rel = f"{vdir}/{rel.rsplit('/', 1)[1]}"
        lake.copy(current_path(lake, table, rel), current_path(lake, table, new_rel))
        plan.deltas.append(new_rel)
    plan.delta_rows = int(state.get("delta_rows", 0))
    return plan


def _write_delta(lake: Lake, table: str, plan: _Plan, rows: pa.Table) -> None:
    if rows.num_rows == 0:
        return
    rows = rows.sort_by([("_bucket", "ascending"), ("_key", "ascending")])
    name = f"delta-{plan.version:06d}-{len(plan.deltas):04d}.parquet"
    plan.deltas.append(_write(lake, table, plan, name, rows))
    plan.delta_rows += rows.num_rows


def _drop_written(lake: Lake, table: str, plan: _Plan, rels: Iterable[str]) -> None:
    for rel in list(rels):
        lake.delete(current_path(lake, table, rel))


def _rewrite_all(lake: Lake, table: str, plan: _Plan, wanted: pa.Schema) -> None:
    """The schema widened: rewrite every base and delta file of the version with ``wanted``."""
    log.info("%s: the typed schema of current widened; rewriting every file", table)
    for b, rel in sorted(plan.base_files.items()):
        rows = cast_rows(read_files(lake, [current_path(lake, table, rel)]), wanted)
        lake.delete(current_path(lake, table, rel))
        plan.base_files[b] = _write(lake, table, plan, rel.rsplit("/", 1)[1], rows)
    for i, rel in enumerate(plan.deltas):
        rows = cast_rows(read_files(lake, [current_path(lake, table, rel)]), wanted)
        lake.delete(current_path(lake, table, rel))
        plan.deltas[i] = _write(lake, table, plan, rel.rsplit("/", 1)[1], rows)
    plan.mirror = wanted


def _compact(lake: Lake, table: str, plan: _Plan, tombstone_seconds: float) -> None:
    """Merge the deltas into new bases (only buckets the deltas touch are rewritten)."""
    delta_rels = [current_path(lake, table, rel) for rel in plan.deltas]
    touched = pc.unique(read_files(lake, delta_rels, ["_bucket"]).column("_bucket")).to_pylist()
    cutoff = None
    if plan.newest_change_micros is not None:
        cutoff = plan.newest_change_micros - int(tombstone_seconds * 1_000_000)
    fs, base = lake.arrow_filesystem()
    deltas = ds.dataset([f"{base}/{r}" for r in delta_rels], filesystem=fs, format="parquet")
    for b in sorted(touched):
        base_rel = plan.base_files[b]
        rows = pa.concat_tables(
            [
                read_files(lake, [current_path(lake, table, base_rel)]).cast(plan.mirror),
                deltas.to_table(filter=ds.field("_bucket") == b).cast(plan.mirror),
            ]
        )
        rows = newest_per_key(rows)
        if cutoff is not None:
            old_tomb = pc.and_(
                rows.column("_deleted"),
                pc.less(rows.column("_change_time").cast(pa.int64()), cutoff),
            )
            rows = rows.filter(pc.invert(old_tomb.fill_null(False)))
        rows = rows.sort_by("_key")
        lake.delete(current_path(lake, table, base_rel))
        if base_rel in plan.written:
            plan.written.remove(base_rel)
        plan.base_files[b] = _write(lake, table, plan, f"bucket-{b:04d}.parquet", rows)
        plan.base_rows[b] = rows.num_rows
        plan.base_versions[b] = plan.version
    for rel in plan.deltas:
        lake.delete(current_path(lake, table, rel))
        if rel in plan.written:
            plan.written.remove(rel)
    plan.deltas = []
    plan.delta_rows = 0


def _count_live(lake: Lake, table: str, plan: _Plan) -> int:
    rels = [current_path(lake, table, r) for r in (*plan.base_files.values(), *plan.deltas)]
    if not rels:
        return 0
    rows = read_files(lake, rels, ["_key", "_change_time", "_sequence_number", "_deleted"])
    if plan.deltas:
        rows = newest_per_key(rows)
    return rows.num_rows - pc.sum(rows.column("_deleted").cast(pa.int64())).as_py() or 0


def _commit(
    lake: Lake,
    table: str,
    plan: _Plan,
    source: _Source,
    previous: dict[str, Any] | None,
    now: float,
    grace_seconds: float,
) -> dict[str, Any]:
    vdir = version_dir(plan.version)
    files = [*(plan.base_files[b] for b in sorted(plan.base_files)), *plan.deltas]
    total = sum(lake.size(current_path(lake, table, f)) for f in files)
    state = {
        "version": plan.version,
        "base_files": {str(b): rel for b, rel in sorted(plan.base_files.items())},
        "base_rows": {str(b): n for b, n in sorted(plan.base_rows.items())},
        "base_versions": {str(b): v for b, v in sorted(plan.base_versions.items())},
        "deltas": plan.deltas,
        "delta_rows": plan.delta_rows,
        "applied": {k: sorted(v) for k, v in sorted(plan.applied.items())},
        "newest_change_micros": plan.newest_change_micros,
        "stats": plan.stats.to_dict(),
        "created_at": now,
    }
    state_bytes = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    lake.write_bytes(current_path(lake, table, vdir, STATE_FILE), state_bytes)
    retired = list(previous.get("retired", [])) if previous else []
    if previous is not None:
        retired.append({"version": previous["version"], "at": now})
    pointer = {
        "format": POINTER_FORMAT,
        "table": table,
        "version": plan.version,
        "path": vdir,
        "files": files,
        "deltas": len(plan.deltas),
        "buckets": plan.buckets,
        "key_attributes": source.keys,
        "snapshot": source.identity,
        "rebuild_id": plan.rebuild_id,
        "rows": _count_live(lake, table, plan),
        "bytes": total,
        "schema": _schema_to_json(plan.mirror),
        "columns": plan.mirror.names,
        "updated_at": now,
        "retired": retired,
    }
    pointer_bytes = orjson.dumps(pointer, option=orjson.OPT_INDENT_2)
    lake.write_bytes(current_path(lake, table, POINTER_FILE), pointer_bytes)
    plan.bytes_written += len(state_bytes) + len(pointer_bytes)
    pointer["retired"] = _clean_old_versions(lake, table, plan.version, retired, now, grace_seconds)
    if pointer["retired"] != retired:
        lake.write_bytes(
            current_path(lake, table, POINTER_FILE),
            orjson.dumps(pointer, option=orjson.OPT_INDENT_2),
        )
    return pointer


def _clean_old_versions(
    lake: Lake,
    table: str,
    version: int,
    retired: list[dict[str, Any]],
    now: float,
    grace_seconds: float,
) -> list[dict[str, Any]]:
    """Delete versions replaced more than ``grace_seconds`` ago (never the previous one)."""
    keep: list[dict[str, Any]] = []
    when = {r["version"]: r["at"] for r in retired}
    for name in lake.folders(current_path(lake, table)):
        if not name.startswith("version="):
            continue
        v = int(name.split("=", 1)[1])
        if v >= version - 1:
            continue
        at = when.get(v)
        if at is None or now - at >= grace_seconds:
            lake.delete(current_path(lake, table, name))
    for r in retired:
        v = r["version"]
        if v >= version - 1 or now - r["at"] < grace_seconds:
            keep.append(r)
    return keep
