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

import importlib.abc
import json
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from dynamo_cdc import arrowconvert, codec, fastconvert, schema
from dynamo_cdc.errors import CodecError, ExportVerificationError
from dynamo_cdc.export import DataFile, ExportManifest, open_gzip, verified_data_file
from dynamo_cdc.lake import Lake

log = logging.getLogger(__name__)

CHUNK_ITEMS = 32_768
# Parsed items take about 10 KB of Python objects each (a dict per attribute value): the fast
# path parses 4,096 at a time (about 40 MB, measured flat) and buffers their Arrow tables
# (about 1.5 KB a row) into row groups of FAST_ROW_GROUP_ROWS.
FAST_CHUNK_ITEMS = 4_096
FAST_ROW_GROUP_ROWS = 32_768
ROW_GROUP_ROWS = 131_072
LINEAGE_FILE = "_lineage.json"
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
            for raw in fh:
                lineno += 1
                line = raw.rstrip(b"\r\n")
                if not line:
                    continue
                if fmt == "ION":
                    try:
                        item = codec.ion_line_to_record(line)["Item"]
                    except (CodecError, KeyError) as exc:
                        raise ExportVerificationError(
                            f"{describe} line {lineno} is not an ION export item ({exc}).",
                            fix="the data file is damaged: request a new export.",
                        ) from None
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
    :mod:`dynamo_cdc.arrowconvert` (Arrow's JSON reader and compute kernels); a block it cannot
    convert exactly goes item by item through :mod:`dynamo_cdc.fastconvert`; both give the
    reference table, byte for byte. A file neither can take (a line in another shape than AWS's
    ``{"Item":{...}}``, a damaged line) is converted again by the reference path, which also
    words the errors. The cyclic GC is off while converting (see
    :func:`dynamo_cdc.fastconvert.cyclic_gc_paused`).
    """
    started = time.perf_counter()
    try:
        with fastconvert.cyclic_gc_paused():
            if fmt != "ION":
                try:
                    count, parts, stats = _convert_chunks(
                        _fast_chunks(Path(path), describe), index, key_attributes, out_dir, metadata
                    )
                except fastconvert.FastPathUnavailable as exc:
                    log.debug("%s: reference path (%s)", describe, exc)
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
    return FileResult(index, data_file.key, count, parts, stats, time.perf_counter() - started)


# A chunk source yields (items, chunk statistics, table builder) per chunk.
_Chunk = tuple[int, schema.SchemaStats, Callable[[pa.Schema], pa.Table]]


def _fast_chunks(path: Path, describe: str) -> Iterator[_Chunk]:
    """Chunks of a JSON data file: a block at a time through :mod:`dynamo_cdc.arrowconvert`,
    or through :mod:`dynamo_cdc.fastconvert` for a block the Arrow path cannot take exactly."""
    reader = arrowconvert.BlockReader()
    lines_read = 0
    try:
        for block in arrowconvert.iter_blocks(path):
            lines = None  # the block's lines, counted here unless the C reader counted them
            try:
                chunk = reader.read(block)
                stats = chunk.stats()
            except arrowconvert.Unsupported as exc:
                log.debug("%s: block after line %d by items (%s)", describe, lines_read, exc)
                yield from _item_chunks(block)
            else:
                yield chunk.n, stats, _arrow_builder(chunk, block)
                if chunk.native:  # it takes a block only if every line is an item
                    lines = chunk.n
                del chunk
            lines_read += block.count(b"\n") + 1 if lines is None else lines
            del block
    except (EOFError, zlib.error, OSError) as exc:
        raise ExportVerificationError(
            f"{describe} cannot be decompressed after line {lines_read} ({exc}).",
            fix="the data file is truncated or damaged: request a new export.",
        ) from None


def _arrow_builder(chunk: arrowconvert.ArrowChunk, block: bytes) -> Callable[[pa.Schema], pa.Table]:
    def build(wanted: pa.Schema) -> pa.Table:
        try:
            return chunk.table(wanted)
        except arrowconvert.Unsupported as exc:
            log.debug("a block's table by items (%s)", exc)
            return pa.concat_tables(make(wanted) for _, _, make in _item_chunks(block))

    return build


def _item_chunks(block: bytes) -> Iterator[_Chunk]:
    """Chunks of a block's lines through the per-item fast path (FastPathUnavailable: the
    caller converts the whole file by the reference path)."""
    lines = fastconvert.block_lines(block)
    for start in range(0, len(lines), FAST_CHUNK_ITEMS):
        items, texts = fastconvert.parse_item_lines(lines[start : start + FAST_CHUNK_ITEMS])
        columns = fastconvert.ChunkColumns(items, texts)
        del items, texts
        yield columns.n, columns.stats(), columns.table
        del columns  # one chunk of items alive at a time


def _reference_chunks(path: Path, fmt: str, describe: str) -> Iterator[_Chunk]:
    for items, texts in iter_item_chunks(path, fmt, describe):
        stats = schema.SchemaStats.of(items)

        def build(wanted: pa.Schema, items: Any = items, texts: Any = texts) -> pa.Table:
            return schema.items_to_table(items, wanted, item_texts=texts)

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


def _rewrite_part(path: str, final: pa.Schema) -> None:
    """Cast a part written with a narrower schema to the final one, row group by row group."""
    tmp = path + ".cast"
    source = pq.ParquetFile(path)
    with _parquet_writer(tmp, final) as writer:
        for i in range(source.num_row_groups):
            table = source.read_row_group(i)
            writer.write_table(schema.cast_table_to_schema(table, final), ROW_GROUP_ROWS)
    os.replace(tmp, path)


class _NoPandas(importlib.abc.MetaPathFinder):
    """Refuses to import pandas (see :func:`conversion_worker_setup`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not imported in a conversion worker", name=name)
        return None


def conversion_worker_setup() -> None:
    """Set up a conversion worker process (the pool's initializer; never any other process).

    - malloc keeps its heap between blocks (:func:`dynamo_cdc.fastconvert.keep_heap`).
    - pandas cannot be imported, unless it already is. The conversion never uses it, but
      pyarrow imports it, to ask whether a Python scalar given to a compute function is a pandas
      object, the first time one is: 0.2-0.6 s of a worker's start, more than its other
      imports together.
    """
    fastconvert.keep_heap()
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def default_workers(n_files: int) -> int:
    return max(1, min(n_files, os.cpu_count() or 1))


def convert_manifest(
    manifest: ExportManifest,
    out_dir: Path,
    key_attributes: list[str] | None = None,
    *,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[int, list[str], pa.Schema | None, int]:
    """Convert every data file of ``manifest`` into Parquet parts in ``out_dir``, unify them.

    Returns:
        (rows, part names, final schema, parts rewritten to the final schema)
    """
    fmt = manifest.output_format
    keys = key_attributes or []
    lineage = manifest.lineage()
    metadata = {LINEAGE_KEY: json.dumps(lineage, sort_keys=True).encode()}
    workers = workers or default_workers(len(manifest.files))
    results: list[FileResult] = []
    say = progress or (lambda msg: log.info("%s", msg))
    total = len(manifest.files)

    def collect(fut: Future[FileResult]) -> None:
        res = fut.result()
        results.append(res)
        say(
            f"{manifest.table_name}: data file {len(results)}/{total} converted "
            f"({res.items} items in {res.seconds:.1f} s)"
        )

    if workers == 1 or total <= 1:
        for index, data_file in enumerate(manifest.files):
            with verified_data_file(manifest, data_file) as path:
                describe = manifest.source.describe(data_file.key)
                res = convert_data_file(
                    index, str(path), data_file, fmt, describe, keys, str(out_dir), metadata
                )
            results.append(res)
            say(
                f"{manifest.table_name}: data file {index + 1}/{total} converted ({res.items} items)"
            )
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=conversion_worker_setup
        ) as pool:
            in_flight: dict[Future[FileResult], Any] = {}
            for index, data_file in enumerate(manifest.files):
                while len(in_flight) >= workers + 1:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        in_flight.pop(fut).__exit__(None, None, None)
                        collect(fut)
                copy = verified_data_file(manifest, data_file)
                path = copy.__enter__()
                fut = pool.submit(
                    convert_data_file,
                    index,
                    str(path),
                    data_file,
                    fmt,
                    manifest.source.describe(data_file.key),
                    keys,
                    str(out_dir),
                    metadata,
                )
                in_flight[fut] = copy
            try:
                for fut in list(in_flight):
                    try:
                        collect(fut)
                    finally:
                        in_flight.pop(fut).__exit__(None, None, None)
            finally:
                for fut, copy in in_flight.items():
                    fut.cancel()
                    copy.__exit__(None, None, None)
    results.sort(key=lambda r: r.index)
    rows = sum(r.items for r in results)
    if rows != manifest.item_count:
        raise ExportVerificationError(
            f"Export {manifest.export_arn} produced {rows} items but its manifest says "
            f"{manifest.item_count}.",
            fix="request a new export; nothing was published.",
        )
    parts = [p for r in results for p in r.parts]
    if not results:
        return 0, [], None, 0
    merged = results[0].stats
    for r in results[1:]:
        merged = merged.merge(r.stats)
    final = schema.decide_schema(merged, keys).with_metadata(metadata)
    rewritten = 0
    for name in parts:
        part_path = os.path.join(out_dir, name)
        if not pq.read_schema(part_path).remove_metadata().equals(final.remove_metadata()):
            _rewrite_part(part_path, final)
            rewritten += 1
    return rows, parts, final, rewritten


def snapshot_path(lake: Lake, table: str, export_date: str) -> str:
    """``<table>/snapshot/export_date=YYYY-MM-DD``."""
    return lake.table_path(table, "snapshot", f"export_date={export_date}")


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
    """Convert ``manifest``'s export and publish it as the snapshot partition ``export_date``.

    Nothing is published unless every data file verified and converted.
    """
    started = time.perf_counter()
    rel = snapshot_path(lake, table, export_date)
    with lake.staging(table) as staging:
        rows, parts, final, rewritten = convert_manifest(
            manifest, staging, key_attributes, workers=workers, progress=progress
        )
        lineage = manifest.lineage() | {
            "rows": rows,
            "files": parts,
            "key_attributes": key_attributes or [],
            "export_date": export_date,
        }
        (staging / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True))
        size = sum((staging / p).stat().st_size for p in parts)
        published = lake.publish_dir(staging, rel, marker=LINEAGE_FILE)
    return SnapshotResult(
        table=table,
        uri=lake.uri(rel),
        files=[p for p in published if p.endswith(".parquet")],
        rows=rows,
        bytes=size,
        lineage=lineage,
        seconds=time.perf_counter() - started,
        rewritten_parts=rewritten,
        schema=final,
    )


def convert_export_dir(export_dir: str, out_dir: str, workers: int | None = None) -> int:
    """Convert a local export folder (holding manifest-summary.json) into Parquet files in
    ``out_dir`` (no lake layout). Used by the benchmarks; returns the items written."""
    from dynamo_cdc.export import open_manifest

    manifest = open_manifest(export_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, _, _, _ = convert_manifest(manifest, out, _guess_keys(manifest), workers=workers)
    return rows


def _guess_keys(manifest: ExportManifest) -> list[str]:
    keys = manifest.summary.get("keySchema")
    if isinstance(keys, list):
        return [k["AttributeName"] for k in keys if "AttributeName" in k]
    return []


def key_attributes_of(table_description: dict[str, Any]) -> list[str]:
    """The table's key attribute names, hash key first."""
    ordered = sorted(table_description.get("KeySchema", []), key=lambda k: k["KeyType"] != "HASH")
    return [k["AttributeName"] for k in ordered]


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
    """Export ``request.table`` at ``request.export_time`` and publish its snapshot partition.

    Args:
        clients: a :class:`dynamo_cdc.aws.Clients`.
        lake: where the snapshot goes.
        request: a :class:`dynamo_cdc.export.ExportRequest`.
        export_date: the partition (``YYYY-MM-DD``); default: the export time's UTC date.
        workers: conversion processes (default: one per core).
        poll_seconds: first DescribeExport interval.
        progress: called with human-readable progress lines.
    """
    from datetime import UTC, datetime

    from dynamo_cdc.export import (
        describe_table,
        manifest_from_export_description,
        request_export,
        wait_for_export,
    )

    desc = describe_table(clients, request.table)
    arn = request_export(clients, request)
    say = progress or (lambda msg: log.info("%s", msg))
    say(f"{request.table}: export {arn} requested")
    done = wait_for_export(clients, arn, table=request.table, poll_seconds=poll_seconds)
    manifest = manifest_from_export_description(clients, done)
    when = done.get("ExportTime") or request.export_time or datetime.now(UTC)
    date = export_date or when.astimezone(UTC).strftime("%Y-%m-%d")
    return write_snapshot(
        manifest,
        lake,
        request.table,
        date,
        key_attributes_of(desc),
        workers=workers,
        progress=say,
    )
