"""DynamoDB JSON to Arrow: the one conversion contract of the export and the stream readers.

Exports: :func:`read_block` makes a block of export lines (``{"Item":{...}}`` lines, bytes, no
last newline) a :class:`Chunk`: its row count, its statistics (what the schema is decided from)
and its table for any schema decided from statistics that cover it.

Two implementations stand behind the contract, and give the same chunks: the reference
(:mod:`dynamo_cdc.convert.items`, the specification written plainly, with the type mapping) and
the native one (the C readers of ``dynamo_cdc/convert/_native/``, through
:mod:`dynamo_cdc.convert.native_items`). A block the native reader refuses takes the reference;
refusals are counted and logged once a run (:mod:`dynamo_cdc.convert.native`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa

from dynamo_cdc.convert import items, native, native_items
from dynamo_cdc.convert.items import NotItemLines, build_column, items_to_table
from dynamo_cdc.schema import SchemaStats

__all__ = [
    "BLOCKS",
    "Chunk",
    "NotItemLines",
    "build_column",
    "cyclic_gc_paused",
    "items_to_table",
    "keep_heap",
    "read_block",
]

# The kind of input counted in native's refusal tally.
BLOCKS = "export blocks"


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
