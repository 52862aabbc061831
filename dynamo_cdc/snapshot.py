"""An export -> the Parquet snapshot: typed columns, a lossless ``_item``, one schema.

How a snapshot is made, and why:

1. Each data file is verified (MD5 against the manifest) and converted by its own worker
   process (files are independent; workers are bounded by the cores). A worker streams its file
   in chunks, so memory is O(chunk), not O(file) or O(table).
2. Typing needs to see every value of a column (an N column is int64 only if every value is an
   integer), but a streaming writer needs a schema up front. A worker therefore writes with the
   schema its data so far calls for, and when a later chunk needs a wider one (a new attribute,
   an integer column that meets a fraction, a type conflict) it starts a new part file. Workers
   return their column statistics; the statistics merge into the dataset's final schema.
3. Parts whose schema differs from the final one are rewritten with an exact cast, row group by
   row group. On realistic data this is rare (most columns are decided by the first chunk), so
   the common cost is one pass.
4. The item count of every file is checked against the manifest; then a ``_lineage.json`` is
   written and the folder is published at once (see :mod:`dynamo_cdc.lake`). A failure anywhere
   publishes nothing.

For JSON exports ``_item`` is the item's own text from the export line (lossless and cheaper
than re-serialising); for ION exports it is the canonical DynamoDB JSON of the decoded item.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.abc
import json
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dynamo_cdc import catalog, codec, convert, nesting, schema
from dynamo_cdc.convert import native
from dynamo_cdc.errors import CodecError, ExportVerificationError
from dynamo_cdc.export import (
    DataFile,
    ExportManifest,
    ExportSource,
    LineTooLong,
    LocalExportSource,
    S3ExportSource,
    confine_data_files,
    iter_blocks,
    iter_lines,
    line_too_long,
    open_gzip,
    verified_data_file,
)
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import (
    LINEAGE_FILE,
    partition_date,
    snapshot_path,
    snapshot_staging_path,
)

log = logging.getLogger(__name__)

CHUNK_ITEMS = 32_768
# The tables of blocks (about 1.5 KB a row) are buffered into row groups of FAST_ROW_GROUP_ROWS.
FAST_ROW_GROUP_ROWS = 32_768
ROW_GROUP_ROWS = 131_072
GROUP_RESULT = "_group.json"
LINEAGE_KEY = b"dynamo_cdc.lineage"
PARQUET_COMPRESSION = "zstd"


@dataclass
class FileResult:
    """What a worker made of one data file."""

    index: int
    key: str
    items: int
    parts: list[str]
    stats: Any
    seconds: float
    # The file's blocks the C reader took and refused (convert.BLOCKS), logged once a snapshot.
    blocks: native.Tally = field(default_factory=native.Tally)


@dataclass
class SnapshotResult:
    """What :func:`write_snapshot` published."""

    table: str
    uri: str
    files: list[str]
    rows: int
    bytes: int
    lineage: dict[str, Any]
    seconds: float
    rewritten_parts: int = 0
    schema: pa.Schema | None = field(default=None, repr=False)


def _item_text_from_json_line(line: bytes) -> bytes | None:
    """The ``{...}`` of a ``{"Item":{...}}`` line, without parsing it, when the line has that
    exact shape (what AWS writes); None otherwise."""
    if line.startswith(b'{"Item":') and line.endswith(b"}"):
        return line[8:-1]
    return None


def iter_item_chunks(
    path: Path, fmt: str, describe: str, chunk_items: int = CHUNK_ITEMS
) -> Iterator[tuple[list[dict[str, Any]], list[str]]]:
    """Yield (items, item_texts) chunks of a verified data file.

    Raises:
        ExportVerificationError: a truncated gzip, a line that is not an item.
    """
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    lineno = 0
    try:
        with open_gzip(path) as fh:
            for lineno, line in iter_lines(fh, describe):
                if not line:
                    continue
                limits = nesting.ION_LINES if fmt == "ION" else nesting.EXPORT_LINES
                try:
                    near = len(nesting.check_lines(line, limits, ion=fmt == "ION")) > 0
                except nesting.TooDeep:
                    raise _too_deep(describe, lineno) from None
                if fmt == "ION":
                    try:
                        item = codec.ion_line_to_record(line)["Item"]
                    except (CodecError, KeyError) as exc:
                        raise ExportVerificationError(
                            f"{describe} line {lineno} is not an ION export item ({exc}).",
                            fix="the data file is damaged: request a new export.",
                        ) from None
                    if near:
                        try:
                            nesting.check_item(item)
                        except nesting.TooDeep:
                            raise _too_deep(describe, lineno) from None
                    text = codec.item_to_json_text(item)
                else:
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise ExportVerificationError(
                            f"{describe} line {lineno} is not JSON.",
                            fix="the data file is damaged: request a new export.",
                        ) from None
                    item = doc.get("Item") if isinstance(doc, dict) else None
                    if not isinstance(item, dict):
                        raise ExportVerificationError(
                            f"{describe} line {lineno} is not a full-export item "
                            '(expected {"Item": {...}}).',
                            fix="pass a FULL_EXPORT; incremental exports are read as changes.",
                        )
                    if near:
                        try:
                            nesting.check_item(item)
                        except nesting.TooDeep:
                            raise _too_deep(describe, lineno) from None
                    raw_text = _item_text_from_json_line(line)
                    text = raw_text.decode("utf-8") if raw_text else codec.item_to_json_text(item)
                items.append(item)
                texts.append(text)
                if len(items) >= chunk_items:
                    yield items, texts
                    items, texts = [], []
    except (EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, ExportVerificationError):
            raise
        raise ExportVerificationError(
            f"{describe} cannot be decompressed after line {lineno} ({exc}).",
            fix="the data file is truncated or damaged: request a new export.",
        ) from None
    if items:
        yield items, texts


def convert_data_file(
    index: int,
    path: str,
    data_file: DataFile,
    fmt: str,
    describe: str,
    key_attributes: list[str],
    out_dir: str,
    metadata: dict[bytes, bytes],
) -> FileResult:
    """Convert one verified data file into one or more Parquet parts in ``out_dir``.

    Runs in a worker process (or in the caller's when there is one worker). Part names are
    deterministic: ``part-<file>-<n>.parquet``. JSON files are converted a block at a time by
    :func:`dynamo_cdc.convert.read_block` (the C reader, or the reference for a block it
    refuses: the same table, byte for byte). A file with a line that is not an item line (a
    damaged line) is read again line by line by the reference path, which words the error.
    The cyclic GC is off while converting (see :func:`dynamo_cdc.convert.cyclic_gc_paused`).
    """
    started = time.perf_counter()
    try:
        with convert.cyclic_gc_paused():
            if fmt != "ION":
                try:
                    count, parts, stats = _convert_chunks(
                        _block_chunks(Path(path), describe),
                        index,
                        key_attributes,
                        out_dir,
                        metadata,
                    )
                except convert.NotItemLines as exc:
                    log.debug("%s: line by line (%s)", describe, exc)
                else:
                    return _checked(index, data_file, describe, count, parts, stats, started)
            count, parts, stats = _convert_chunks(
                _reference_chunks(Path(path), fmt, describe),
                index,
                key_attributes,
                out_dir,
                metadata,
            )
            return _checked(index, data_file, describe, count, parts, stats, started)
    except CodecError as exc:
        # a value that is not DynamoDB JSON/Ion: name the file, as for any damaged line
        raise ExportVerificationError(
            f"{describe} holds a value that is not a DynamoDB value: {exc}",
            fix="the data file is damaged or not a DynamoDB export: request a new export; "
            "nothing was published.",
        ) from None


def _checked(
    index: int,
    data_file: DataFile,
    describe: str,
    count: int,
    parts: list[str],
    stats: schema.SchemaStats,
    started: float,
) -> FileResult:
    if count != data_file.item_count:
        raise ExportVerificationError(
            f"{describe} holds {count} items but the manifest says {data_file.item_count}.",
            fix="the data file is damaged or incomplete: request a new export.",
        )
    seconds = time.perf_counter() - started
    blocks = native.drain(convert.BLOCKS)
    return FileResult(index, data_file.key, count, parts, stats, seconds, blocks)


# A chunk source yields (items, chunk statistics, table builder) per chunk.
_Chunk = tuple[int, schema.SchemaStats, Callable[[pa.Schema], pa.Table]]


def _block_chunks(path: Path, describe: str) -> Iterator[_Chunk]:
    """Chunks of a JSON data file, a block at a time (:func:`dynamo_cdc.convert.read_block`)."""
    lines_read = 0
    try:
        for block in iter_blocks(path):
            try:
                chunk = convert.read_block(block)
            except nesting.TooDeep as exc:
                raise _too_deep(describe, lines_read + exc.line + 1) from None
            yield chunk.n, chunk.stats(), chunk.table
            del chunk
            lines_read += block.count(b"\n") + 1
            del block
    except LineTooLong:
        raise line_too_long(describe, lines_read + 1) from None
    except (EOFError, zlib.error, OSError) as exc:
        raise ExportVerificationError(
            f"{describe} cannot be decompressed after line {lines_read} ({exc}).",
            fix="the data file is truncated or damaged: request a new export.",
        ) from None


def _too_deep(describe: str, lineno: int) -> ExportVerificationError:
    return ExportVerificationError(
        f"{describe} line {lineno} nests maps and lists deeper than DynamoDB's "
        f"{nesting.MAX_LEVELS} levels: it is not a DynamoDB export item.",
        fix="the data file is damaged or not a DynamoDB export: request a new export; nothing "
        "was published.",
    )


def _reference_chunks(path: Path, fmt: str, describe: str) -> Iterator[_Chunk]:
    for items, texts in iter_item_chunks(path, fmt, describe):
        stats = schema.SchemaStats.of(items)

        def build(wanted: pa.Schema, items: Any = items, texts: Any = texts) -> pa.Table:
            return convert.items_to_table(items, wanted, item_texts=texts)

        yield len(items), stats, build


def _convert_chunks(
    chunks: Iterator[_Chunk],
    index: int,
    key_attributes: list[str],
    out_dir: str,
    metadata: dict[bytes, bytes],
) -> tuple[int, list[str], schema.SchemaStats]:
    stats = schema.SchemaStats()
    parts: list[str] = []
    writer: pq.ParquetWriter | None = None
    current: pa.Schema | None = None
    count = 0
    buffered: list[pa.Table] = []

    def flush() -> None:
        if buffered:
            assert writer is not None
            table = pa.concat_tables(buffered).replace_schema_metadata(metadata)
            buffered.clear()
            writer.write_table(table, ROW_GROUP_ROWS)

    try:
        for n, chunk_stats, build in chunks:
            stats = stats.merge(chunk_stats)
            wanted = schema.decide_schema(stats, key_attributes)
            if current is None or not wanted.equals(current):
                flush()
                if writer is not None:
                    writer.close()
                name = f"part-{index:05d}-{len(parts):03d}.parquet"
                parts.append(name)
                current = wanted.with_metadata(metadata)
                writer = _parquet_writer(os.path.join(out_dir, name), current)
            buffered.append(build(wanted))
            del build  # the chunk's items go now, not when the next chunk is parsed
            if sum(t.num_rows for t in buffered) >= FAST_ROW_GROUP_ROWS:
                flush()
            count += n
        flush()
    except BaseException:
        buffered.clear()
        if writer is not None:
            writer.close()
            writer = None
        for name in parts:  # a failed or abandoned conversion leaves no parts behind
            Path(out_dir, name).unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.close()
    return count, parts, stats


def _parquet_writer(path: str, part_schema: pa.Schema) -> pq.ParquetWriter:
    # No dictionary encoding: measured on the bench export, zstd alone gives smaller files
    # (295 against 307 bytes an item) in less time (building dictionaries for keys, ids and
    # JSON texts, then dropping them, is wasted). No min/max statistics for _item: nothing
    # prunes on the whole item's text.
    stats = [f.name for f in part_schema if f.name != schema.ITEM_COLUMN]
    return pq.ParquetWriter(
        path,
        part_schema,
        compression=PARQUET_COMPRESSION,
        use_dictionary=False,
        write_statistics=stats,
    )


def _rewrite_part(source: pq.ParquetFile, dest: str, final: pa.Schema) -> None:
    """Write ``source`` (a part written with a narrower schema) to ``dest`` cast to the final
    schema, row group by row group."""
    with _parquet_writer(dest, final) as writer:
        for i in range(source.num_row_groups):
            table = source.read_row_group(i)
            writer.write_table(schema.cast_table_to_schema(table, final), ROW_GROUP_ROWS)


class _NoPandas(importlib.abc.MetaPathFinder):
    """Refuses to import pandas (see :func:`conversion_worker_setup`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not imported in a conversion worker", name=name)
        return None


def conversion_worker_setup() -> None:
    """Set up a conversion worker process (the pool's initializer; never any other process).

    - malloc keeps its heap between blocks (:func:`dynamo_cdc.convert.keep_heap`).
    - pandas cannot be imported, unless it already is. The conversion never uses it, but
      pyarrow imports it, to ask whether a Python scalar given to a compute function is a pandas
      object, the first time one is: 0.2-0.6 s of a worker's start, more than its other
      imports together.
    """
    convert.keep_heap()
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def default_workers(n_files: int) -> int:
    return max(1, min(n_files, os.cpu_count() or 1))


@dataclass(frozen=True)
class FileTask:
    """One data file to convert (picklable: it goes to a worker process with its verified
    local copy's path)."""

    index: int
    data_file: DataFile
    fmt: str
    describe: str
    key_attributes: list[str]
    out_dir: str
    metadata: dict[bytes, bytes]

    def run(self, path: Path) -> FileResult:
        return convert_data_file(
            self.index,
            str(path),
            self.data_file,
            self.fmt,
            self.describe,
            self.key_attributes,
            self.out_dir,
            self.metadata,
        )


def _convert_here(manifest: ExportManifest, tasks: list[FileTask]) -> Iterator[FileResult]:
    """The tasks' results, converted one after the other in this process."""
    for task in tasks:
        with verified_data_file(manifest, task.data_file) as path:
            yield task.run(path)


def _convert_in_pool(
    manifest: ExportManifest, tasks: list[FileTask], workers: int
) -> Iterator[FileResult]:
    """The tasks' results as they complete, one worker process a file; at most ``workers + 1``
    verified local copies exist at a time (each is removed once its file is converted)."""
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=conversion_worker_setup
    )
    in_flight: dict[Future[FileResult], ExitStack] = {}
    with pool, ExitStack() as cleanup:
        cleanup.callback(_drop_in_flight, in_flight)
        for task in tasks:
            while len(in_flight) >= workers + 1:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from _finished(done, in_flight)
            copy = ExitStack()
            path = copy.enter_context(verified_data_file(manifest, task.data_file))
            in_flight[pool.submit(task.run, path)] = copy
        while in_flight:
            yield from _finished([next(iter(in_flight))], in_flight)


def _finished(
    done: Iterable[Future[FileResult]], in_flight: dict[Future[FileResult], ExitStack]
) -> Iterator[FileResult]:
    """The results of the ``done`` futures, each file's local copy removed once it is in."""
    for fut in done:
        with in_flight.pop(fut):
            result = fut.result()
        yield result


def _drop_in_flight(in_flight: dict[Future[FileResult], ExitStack]) -> None:
    """Cancel what is still in flight (a conversion failed) and remove its local copies."""
    for fut, copy in in_flight.items():
        fut.cancel()
        copy.close()
    in_flight.clear()


def _convert_files(
    manifest: ExportManifest,
    indices: list[int],
    out_dir: Path,
    keys: list[str],
    metadata: dict[bytes, bytes],
    *,
    workers: int | None,
    say: Callable[[str], None],
) -> list[FileResult]:
    """Verify and convert the data files ``indices`` of ``manifest`` into parts in ``out_dir``,
    one worker process a file (bounded by the cores); the results in file order."""
    tasks = [
        FileTask(
            index=index,
            data_file=manifest.files[index],
            fmt=manifest.output_format,
            describe=manifest.source.describe(manifest.files[index].key),
            key_attributes=keys,
            out_dir=str(out_dir),
            metadata=metadata,
        )
        for index in indices
    ]
    workers = workers or default_workers(len(tasks))
    if workers == 1 or len(tasks) <= 1:
        converted = _convert_here(manifest, tasks)
    else:
        converted = _convert_in_pool(manifest, tasks, workers)
    results: list[FileResult] = []
    for result in converted:
        results.append(result)
        say(
            f"{manifest.table_name}: data file {len(results)}/{len(tasks)} converted "
            f"({result.items} items in {result.seconds:.1f} s)"
        )
    native.log_tally(convert.BLOCKS, sum((r.blocks for r in results), native.Tally()))
    return sorted(results, key=lambda r: r.index)


def _lineage_metadata(manifest: ExportManifest) -> dict[bytes, bytes]:
    return {LINEAGE_KEY: json.dumps(manifest.lineage(), sort_keys=True).encode()}


def _check_total(manifest: ExportManifest, rows: int) -> None:
    if rows != manifest.item_count:
        raise ExportVerificationError(
            f"Export {manifest.export_arn} produced {rows} items but its manifest says "
            f"{manifest.item_count}.",
            fix="request a new export; nothing was published.",
        )


def _final_schema(
    stats: list[schema.SchemaStats], keys: list[str], metadata: dict[bytes, bytes]
) -> pa.Schema:
    """The dataset's schema from the statistics of all its parts (merging is order-free)."""
    merged = stats[0]
    for more in stats[1:]:
        merged = merged.merge(more)
    return schema.decide_schema(merged, keys).with_metadata(metadata)


def _same_schema(a: pa.Schema, b: pa.Schema) -> bool:
    return a.remove_metadata().equals(b.remove_metadata())


@dataclass(frozen=True)
class ConvertedExport:
    """What :func:`convert_manifest` wrote."""

    rows: int
    parts: list[str]
    schema: pa.Schema | None
    rewritten_parts: int


def convert_manifest(
    manifest: ExportManifest,
    out_dir: Path,
    key_attributes: list[str] | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConvertedExport:
    """Convert every data file of ``manifest`` into Parquet parts in the local folder
    ``out_dir``, unified to one schema (no lake, no publishing: the benchmarks' entry): the
    files convert, their total is checked against the manifest, the statistics merge into the
    final schema, and the parts written narrower are rewritten to it."""
    keys = key_attributes or []
    metadata = _lineage_metadata(manifest)
    results = _convert_files(
        manifest,
        list(range(len(manifest.files))),
        out_dir,
        keys,
        metadata,
        workers=workers,
        say=progress or _log_progress,
    )
    rows = sum(r.items for r in results)
    _check_total(manifest, rows)
    if not results:
        return ConvertedExport(rows=0, parts=[], schema=None, rewritten_parts=0)
    final = _final_schema([r.stats for r in results], keys, metadata)
    parts = [p for r in results for p in r.parts]
    rewritten = [name for name in parts if _rewrite_if_narrower(out_dir / name, final)]
    return ConvertedExport(rows=rows, parts=parts, schema=final, rewritten_parts=len(rewritten))


def _rewrite_if_narrower(part: Path, final: pa.Schema) -> bool:
    """Rewrite the local part file to ``final`` unless it has that schema; whether it did."""
    if _same_schema(pq.read_schema(part), final):
        return False
    cast = part.with_name(part.name + ".cast")
    _rewrite_part(pq.ParquetFile(part), str(cast), final)
    os.replace(cast, part)
    return True


def _log_progress(message: str) -> None:
    log.info("%s", message)


# -- a snapshot as steps: plan -> convert groups (independent, anywhere) -> commit ------------


@dataclass(frozen=True)
class SnapshotPlan:
    """What every step of one snapshot needs, JSON-ready: the export's manifest (per data file
    its key, item count, MD5 and ETag: about 200 bytes a file), where the export lies, the
    groups of data files that convert steps take, and the partition it publishes.

    A convert step (:func:`convert_group`) and the commit (:func:`commit_snapshot`) may run in
    other processes or on other machines: they meet only in the lake, under
    :meth:`staging_rel`, which is named for the export and the plan (a different grouping of the
    same export never mixes with this one).
    """

    table: str
    export_date: str
    key_attributes: list[str]
    groups: list[list[int]]
    source: dict[str, str]
    summary: dict[str, Any]
    files: list[dict[str, Any]]
    # the table's CreationDateTime (ISO text), for the lineage: see write_snapshot
    table_created: str | None = None

    def __post_init__(self) -> None:
        # A plan may come back from JSON (a step's config): its partition names a folder.
        partition_date(self.export_date, f"snapshot partition of table {self.table!r}")

    @property
    def export_id(self) -> str:
        arn = str(self.summary.get("exportArn", ""))
        tail = arn.rsplit("/", 1)[-1]
        return tail if tail and tail.replace("-", "").isalnum() else "export"

    @property
    def fingerprint(self) -> str:
        body = json.dumps([self.groups, self.key_attributes, self.files], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def staging_rel(self, lake: Lake) -> str:
        return snapshot_staging_path(
            lake, self.table, self.export_date, f"{self.export_id}-{self.fingerprint}"
        )

    def group_rel(self, lake: Lake, index: int) -> str:
        return f"{self.staging_rel(lake)}/group-{index:05d}"

    def manifest(self, s3_client: Any = None) -> ExportManifest:
        """The export's manifest (already verified by the planner), with its source."""
        source: ExportSource
        if "s3_bucket" in self.source:
            source = S3ExportSource(s3_client, self.source["s3_bucket"])
        else:
            source = LocalExportSource(Path(self.source["local_dir"]))
        files = [DataFile(**f) for f in self.files]
        confine_data_files(source, self.summary, files)  # the plan may come back from JSON
        return ExportManifest(source=source, summary=self.summary, files=files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotPlan:
        return cls(**data)


@dataclass(frozen=True)
class GroupResult:
    """What a convert step left in the lake (its ``_group.json``): the parts, the items, the
    merged column statistics and each part's schema (so the commit decides which parts to cast
    without opening them)."""

    index: int
    items: int
    parts: list[str]
    stats: dict[str, Any]
    part_schemas: dict[str, str]
    seconds: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> GroupResult:
        return cls(**json.loads(data))

    def part_schema(self, name: str) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.part_schemas[name])))


def plan_snapshot(
    manifest: ExportManifest,
    table: str,
    export_date: str,
    key_attributes: list[str] | None = None,
    *,
    groups: int = 1,
) -> SnapshotPlan:
    """Split ``manifest``'s data files into at most ``groups`` groups of about equal item
    counts (largest file first to the lightest group), for as many convert steps."""
    files = manifest.files
    n = max(1, min(groups, len(files)))
    buckets: list[list[int]] = [[] for _ in range(n)]
    loads = [0] * n
    for index in sorted(range(len(files)), key=lambda i: (-files[i].item_count, i)):
        lightest = loads.index(min(loads))
        buckets[lightest].append(index)
        loads[lightest] += max(1, files[index].item_count)
    source = manifest.source
    where = (
        {"s3_bucket": source.bucket}
        if isinstance(source, S3ExportSource)
        else {"local_dir": str(getattr(source, "export_dir", ""))}
    )
    return SnapshotPlan(
        table=table,
        export_date=export_date,
        key_attributes=list(key_attributes or []),
        groups=[sorted(b) for b in buckets if b] or [[]],
        source=where,
        summary=manifest.summary,
        files=[asdict(f) for f in files],
        table_created=manifest.table_created,
    )


def convert_group(
    plan: SnapshotPlan,
    index: int,
    lake: Lake,
    *,
    s3_client: Any = None,
    manifest: ExportManifest | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> GroupResult:
    """Verify and convert group ``index`` of ``plan`` into parts under the plan's staging
    folder in the lake, ``_group.json`` last. Idempotent: a group already converted is not
    converted again, and a step killed mid-way leaves no ``_group.json``, so its retry converts
    the group again (replacing what it left); nothing is published here.

    Args:
        s3_client: reads the export when it lies on S3 (not needed with ``manifest``).
        manifest: the export's manifest, when the caller holds it already.
        workers: conversion processes for this group's files (default: one per core).
    """
    rel = plan.group_rel(lake, index)
    done = lake.read_bytes(f"{rel}/{GROUP_RESULT}")
    if done is not None:
        return GroupResult.from_json(done)
    started = time.perf_counter()
    manifest = manifest or plan.manifest(s3_client)
    say = progress or _log_progress
    metadata = _lineage_metadata(manifest)
    with lake.staging(plan.table) as out:
        results = _convert_files(
            manifest,
            plan.groups[index],
            out,
            plan.key_attributes,
            metadata,
            workers=workers,
            say=say,
        )
        parts = [p for r in results for p in r.parts]
        stats = schema.SchemaStats()
        for r in results:
            stats = stats.merge(r.stats)
        result = GroupResult(
            index=index,
            items=sum(r.items for r in results),
            parts=parts,
            stats=stats.to_dict(),
            part_schemas={
                p: base64.b64encode(pq.read_schema(out / p).serialize().to_pybytes()).decode()
                for p in parts
            },
            seconds=time.perf_counter() - started,
        )
        (out / GROUP_RESULT).write_bytes(result.to_json())
        lake.publish_dir(out, rel, marker=GROUP_RESULT)
    return result


def commit_snapshot(
    plan: SnapshotPlan,
    lake: Lake,
    *,
    progress: Callable[[str], None] | None = None,
) -> SnapshotResult:
    """Publish the snapshot partition of ``plan`` from its converted groups: merge their
    statistics into the final schema, cast only the parts written narrower (the others are
    carried over without reading them: a link locally, a server-side copy on S3), then publish
    at once with ``_lineage.json`` and remove the plan's staging folder.

    Raises:
        ExportVerificationError: a group was not converted, or the item counts disagree with the
            manifest; nothing is published.
    """
    started = time.perf_counter()
    say = progress or _log_progress
    rel = snapshot_path(lake, plan.table, plan.export_date, plan.key_attributes)
    manifest = plan.manifest()
    results: list[GroupResult] = []
    for index in range(len(plan.groups)):
        data = lake.read_bytes(f"{plan.group_rel(lake, index)}/{GROUP_RESULT}")
        if data is None:
            raise ExportVerificationError(
                f"Group {index} of {len(plan.groups)} of the snapshot of {plan.table!r} "
                f"({manifest.export_arn}) was not converted.",
                fix="run its convert step again (it is idempotent); nothing was published.",
            )
        results.append(GroupResult.from_json(data))
    rows = sum(r.items for r in results)
    _check_total(manifest, rows)
    metadata = _lineage_metadata(manifest)
    stats = [schema.SchemaStats.from_dict(r.stats) for r in results]
    final = _final_schema(stats, plan.key_attributes, metadata) if results else None
    carry: dict[str, str] = {}
    rewritten = 0
    fs, base = lake.arrow_filesystem()
    with lake.staging(plan.table) as staging:
        for r in results:
            group = plan.group_rel(lake, r.index)
            for name in r.parts:
                if final is not None and not _same_schema(r.part_schema(name), final):
                    with fs.open_input_file(f"{base}/{group}/{name}") as fh:
                        _rewrite_part(pq.ParquetFile(fh), str(staging / name), final)
                    rewritten += 1
                else:
                    carry[name] = f"{group}/{name}"
        parts = sorted([*carry, *(p.name for p in staging.iterdir())])
        lineage = manifest.lineage() | {
            "rows": rows,
            "files": parts,
            "key_attributes": plan.key_attributes,
            "export_date": plan.export_date,
        }
        if plan.table_created:
            lineage["table_created"] = plan.table_created
        (staging / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True))
        published = lake.publish_dir(staging, rel, marker=LINEAGE_FILE, carry=carry)
    size = sum(lake.size(p) for p in published if p.endswith(".parquet"))
    lake.delete(plan.staging_rel(lake))
    catalog.lake_changed(lake, plan.table, "snapshot", export_date=plan.export_date)
    say(f"{plan.table}: snapshot {plan.export_date} published ({rows} items, {len(parts)} parts)")
    return SnapshotResult(
        table=plan.table,
        uri=lake.uri(rel),
        files=[p for p in published if p.endswith(".parquet")],
        rows=rows,
        bytes=size,
        lineage=lineage,
        seconds=time.perf_counter() - started + sum(r.seconds for r in results),
        rewritten_parts=rewritten,
        schema=final,
    )


def write_snapshot(
    manifest: ExportManifest,
    lake: Lake,
    table: str,
    export_date: str,
    key_attributes: list[str] | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SnapshotResult:
    """Convert ``manifest``'s export and publish it as the snapshot partition ``export_date``,
    in this process: the plan's one group converted by ``workers`` processes, then the commit.

    Nothing is published unless every data file verified and converted. The manifest's
    ``table_created`` (the table's CreationDateTime) goes into the lineage: change rows older
    than it belong to an earlier table of the same name, which ``current`` must not replay.
    """
    plan = plan_snapshot(manifest, table, export_date, key_attributes)
    convert_group(plan, 0, lake, manifest=manifest, workers=workers, progress=progress)
    return commit_snapshot(plan, lake, progress=progress)


def convert_export_dir(export_dir: str, out_dir: str, workers: int | None = None) -> int:
    """Convert a local export folder (holding manifest-summary.json) into Parquet files in
    ``out_dir`` (no lake layout). Used by the benchmarks; returns the items written."""
    from dynamo_cdc.export import open_manifest

    manifest = open_manifest(export_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return convert_manifest(manifest, out, _guess_keys(manifest), workers=workers).rows


def _guess_keys(manifest: ExportManifest) -> list[str]:
    keys = manifest.summary.get("keySchema")
    if isinstance(keys, list):
        return [k["AttributeName"] for k in keys if "AttributeName" in k]
    return []


def key_attributes_of(table_description: dict[str, Any]) -> list[str]:
    """The table's key attribute names, hash key first."""
    ordered = sorted(table_description.get("KeySchema", []), key=lambda k: k["KeyType"] != "HASH")
    return [k["AttributeName"] for k in ordered]


def export_manifest(
    clients: Any,
    request: Any,
    *,
    poll_seconds: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> tuple[ExportManifest, datetime, list[str]]:
    """Request (or re-attach to) the export of ``request``, wait for it, read and verify its
    manifests: the first step of a snapshot.

    Returns:
        (the manifest, the export time, the table's key attributes)
    """
    from dynamo_cdc.export import (
        describe_table,
        manifest_from_export_description,
        request_export,
        wait_for_export,
    )

    desc = describe_table(clients, request.table)
    arn = request_export(clients, request)
    say = progress or _log_progress
    say(f"{request.table}: export {arn} requested")
    done = wait_for_export(clients, arn, table=request.table, poll_seconds=poll_seconds)
    manifest = manifest_from_export_description(clients, done)
    created = desc.get("CreationDateTime")
    manifest.table_created = created.astimezone(UTC).isoformat() if created else None
    when = done.get("ExportTime") or request.export_time or datetime.now(UTC)
    return manifest, when, key_attributes_of(desc)


def take_snapshot(
    clients: Any,
    lake: Lake,
    request: Any,
    *,
    export_date: str | None = None,
    workers: int | None = None,
    poll_seconds: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> SnapshotResult:
    """Export ``request.table`` at ``request.export_time`` and publish its snapshot partition,
    all steps in this process.

    Args:
        clients: a :class:`dynamo_cdc.aws.Clients`.
        lake: where the snapshot goes.
        request: a :class:`dynamo_cdc.export.ExportRequest`.
        export_date: the partition (``YYYY-MM-DD``); default: the export time's UTC date.
        workers: conversion processes (default: one per core).
        poll_seconds: first DescribeExport interval.
        progress: called with human-readable progress lines.
    """
    manifest, when, keys = export_manifest(
        clients, request, poll_seconds=poll_seconds, progress=progress
    )
    date = export_date or when.astimezone(UTC).strftime("%Y-%m-%d")
    return write_snapshot(
        manifest, lake, request.table, date, keys, workers=workers, progress=progress
    )
