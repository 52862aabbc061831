"""DynamoDB JSON to Arrow: the one conversion contract of the export and the stream readers.

Exports: :func:`read_block` makes a block of export lines (``{"Item":{...}}`` lines, bytes, no
last newline) a :class:`Chunk`: its row count, its statistics (what the schema is decided from)
and its table for any schema decided from statistics that cover it.

Two implementations stand behind the contract, and give the same chunks: the reference
(:mod:`dynamo_cdc.convert.items`, the specification written plainly, with the type mapping) and
the native one (the C readers of ``dynamo_cdc/convert/_native/``, through
:mod:`dynamo_cdc.convert.native_items`). A block the native reader refuses takes the reference;
refusals are counted and logged once a run (:mod:`dynamo_cdc.convert.native`).

Stream records: :func:`records_to_table` makes stream records (a GetRecords response the C
reader read, or a list of record dicts) change rows, :func:`pages_to_table` a poll's pages. The
reference is :mod:`dynamo_cdc.convert.records` (with the change-row columns), the native one the
C readers ``scan_records`` and ``scan_record_dicts`` (:func:`native_columns`); what they refuse
takes the reference, counted as ``RESPONSES`` or ``RECORD_LISTS``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import pyarrow as pa

from dynamo_cdc.convert import items, native, native_items
from dynamo_cdc.convert.items import NotItemLines, build_column, items_to_table
from dynamo_cdc.convert.records import (
    CHANGE_COLUMNS,
    IMAGE_COLUMNS,
    SEQUENCE_DIGITS,
    SOURCES,
    TTL_PRINCIPAL,
    ShardIds,
    change_schema,
    image_text,
    key_column_name,
    native_table,
    newest_micros,
    reference_table,
)
from dynamo_cdc.schema import SchemaStats

__all__ = [
    "BLOCKS",
    "CHANGE_COLUMNS",
    "IMAGE_COLUMNS",
    "RECORD_LISTS",
    "RESPONSES",
    "SEQUENCE_DIGITS",
    "SOURCES",
    "TTL_PRINCIPAL",
    "Chunk",
    "NotItemLines",
    "build_column",
    "change_schema",
    "cyclic_gc_paused",
    "image_text",
    "items_to_table",
    "keep_heap",
    "key_column_name",
    "native_columns",
    "newest_micros",
    "pages_to_table",
    "read_block",
    "records_to_table",
]

# The kinds of input counted in native's refusal tally.
BLOCKS = "export blocks"
RESPONSES = "stream responses"  # GetRecords response bodies (dynamo_cdc.stream.read_records)
RECORD_LISTS = "stream record lists"  # lists of record dicts given to records_to_table


class Chunk(Protocol):
    """The items of one export block."""

    n: int

    def stats(self) -> SchemaStats:
        """Statistics equal to ``SchemaStats.of(items)`` of the block's items."""
        ...

    def table(self, target: pa.Schema) -> pa.Table:
        """The typed table of the block's items, exactly of ``target`` (see
        :func:`dynamo_cdc.convert.items.items_to_table`).

        Raises:
            CodecError: an item does not fit ``target``, or a key attribute is missing.
        """
        ...


class _Native:
    """A chunk the C reader read; a column it cannot build exactly is built by the reference
    (which gives the same table, or words the error)."""

    def __init__(self, chunk: native_items.NativeChunk, stats: SchemaStats, block: bytes) -> None:
        self.n = chunk.n
        self._chunk = chunk
        self._stats = stats
        self._block = block

    def stats(self) -> SchemaStats:
        return self._stats

    def table(self, target: pa.Schema) -> pa.Table:
        try:
            return self._chunk.table(target)
        except native_items.Unsupported:
            return items.ItemsChunk.of_block(self._block).table(target)


def read_block(block: bytes) -> Chunk:
    """The chunk of an export block: by the C reader, or by the reference when the reader is
    off or refuses the block (counted in :mod:`dynamo_cdc.convert.native` as ``BLOCKS``).

    Raises:
        dynamo_cdc.nesting.TooDeep: an item nested deeper than DynamoDB allows (the line, from the
            block's first).
        NotItemLines: a line that is not a ``{"Item": {...}}`` JSON line.
        CodecError: a value that is not a DynamoDB value.
    """
    try:
        chunk = native_items.read_block(block)
        stats = chunk.stats()
    except native_items.Unsupported as exc:
        native.refused(BLOCKS, str(exc))
        return items.ItemsChunk.of_block(block)
    native.took(BLOCKS)
    return _Native(chunk, stats, block)


# -- stream records ------------------------------------------------------------------------------


def records_to_table(
    records: Sequence[Mapping[str, Any]],
    key_attributes: Sequence[tuple[str, str]],
    *,
    shard_ids: ShardIds = None,
    source: str = "stream",
) -> pa.Table:
    """Change rows of stream records (the columns: :mod:`dynamo_cdc.convert.records`).

    A :class:`~dynamo_cdc.stream.RecordPage` (a response the C reader read) is made from its
    columns. A list of record dicts goes to the C reader of dicts (``scan_record_dicts``); what
    it refuses (a value of an unexpected type, a number it does not make canonical, ...), or
    every list when the C readers are off, is converted by the reference, and counted
    (``RECORD_LISTS``).

    Args:
        records: GetRecords records as boto3 returns them (binary as bytes) or as the response
            holds them (binary as base64 text, ``ApproximateCreationDateTime`` epoch seconds),
            or a :class:`~dynamo_cdc.stream.RecordPage`.
        key_attributes: ``(name, type)`` of the table's key attributes.
        shard_ids: the shard of each record (parallel to ``records``), one for all, or None.
        source: ``stream`` or ``export``.

    Returns:
        A table with :func:`change_schema`'s schema, rows in the order given.
    """
    columns = getattr(records, "columns", None)  # a RecordPage: the C reader read its response
    if columns is not None:
        return native_table(columns, key_attributes, shard_ids, source)
    if not isinstance(records, list):
        records = list(records)
    if records:
        columns = native_columns(RECORD_LISTS, "scan_record_dicts", records)
        if columns is not None:
            return native_table(columns, key_attributes, shard_ids, source)
    return reference_table(records, key_attributes, shard_ids=shard_ids, source=source)


def native_columns(kind: str, reader: str, data: Any) -> dict[str, Any] | None:
    """The columns the C reader ``reader`` (``scan_records``, ``scan_record_dicts``) gives for
    ``data``, or None when the C readers are off or it refuses ``data``: counted as ``kind`` in
    :mod:`dynamo_cdc.convert.native`'s tally either way."""
    if not (native.ENABLED and native.module is not None):
        native.refused(kind, native.off_reason())
        return None
    try:
        columns: dict[str, Any] = getattr(native.module, reader)(data)
    except ValueError as exc:
        native.refused(kind, str(exc))
        return None
    native.took(kind)
    return columns


def pages_to_table(
    pages: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    key_attributes: Sequence[tuple[str, str]],
) -> pa.Table:
    """The change rows of a poll's records (:attr:`dynamo_cdc.stream.StreamBatch.pages`), page
    by page (see :func:`records_to_table`), as one table."""
    tables = [records_to_table(records, key_attributes, shard_ids=sid) for sid, records in pages]
    if not tables:
        return change_schema(key_attributes).empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)  # a chunk per page


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cyclic GC off for the block, then back as it was.

    For work that builds many small acyclic objects and keeps them alive a while (an export
    chunk's items, a stream batch's records from GetRecords): generational collections would
    rescan them over and over (parsing and converting a batch of stream records measured 2.5x
    slower with the GC on). Reference counting still frees them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_heap(megabytes: int = 32) -> bool:
    """Make this process's malloc keep freed memory for reuse instead of handing it back to the
    OS (glibc only; returns whether it could). For the conversion's own worker processes: each
    block's buffers are megabytes, and memory handed back is faulted in again page by page for
    the next block. Never called in a process the package does not own."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc
        return False
    size = megabytes << 20
    return bool(mallopt(_M_MMAP_THRESHOLD, size)) and bool(mallopt(_M_TRIM_THRESHOLD, 16 * size))
