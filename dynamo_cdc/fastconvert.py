"""The fast path of export -> Arrow: the same table as :func:`dynamo_cdc.schema.items_to_table`.

Where the time goes on an export of realistic items (about 1 KB of DynamoDB JSON, 15
attributes, nested maps and lists; measured per item on one core of the 2-core bench machine):
``orjson.loads`` of the line 7-10 us (the floor: every value is a small dict), the plain JSON of
map and list columns 10-20 us with the reference code, statistics and typed columns 20-30 us with
the reference code. This module cuts the last two without changing a byte of the result:

* each attribute's values are gathered **once** per chunk (``map(dict.get, ...)``, C loops)
  and shared by the statistics and the column builder; a column whose values all carry one type
  tag (nearly all columns) takes its statistics from counts, not from a per-value scan;
* map and list columns are rendered by one ``orjson.dumps`` call per column and chunk (the
  values separated by a sentinel string that cannot occur elsewhere in orjson's output, then
  split in C), instead of one call per value;
* ``_item`` is the export line's own item text, kept as bytes (no decode / re-encode).

Whatever this path cannot do exactly (a column with several tags, an unknown tag, an empty
attribute value, a value orjson cannot write) is handed to the reference code of
:mod:`dynamo_cdc.schema` for that column, which also raises the reference errors. The equality
with the reference path is pinned by ``tests/unit/test_fastconvert.py`` on the bench generator's
items, the all-types case and Hypothesis items.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any

import orjson
import pyarrow as pa

from dynamo_cdc import codec, schema
from dynamo_cdc.codec import (
    BINARY,
    BINARY_SET,
    BOOLEAN,
    LIST,
    MAP,
    NULL,
    NUMBER,
    NUMBER_SET,
    STRING,
    STRING_SET,
    TYPE_TAGS,
)
from dynamo_cdc.errors import CodecError
from dynamo_cdc.schema import ITEM_COLUMN, ColumnStats, SchemaStats

ITEM_PREFIX = b'{"Item":'
# One element of the column list orjson writes between two values: a JSON string whose only
# character is U+0001 (written \u0001). A value holding that string as a list member also holds
# the separator; then the split yields more parts than values, and the column takes the
# reference path. Equal counts prove that no value held it, so the split is exact.
_SENTINEL = "\x01"
_SEPARATOR = b',"\\u0001",'


class FastPathUnavailable(Exception):
    """This chunk cannot take the fast path; the caller uses the reference path."""


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


def block_lines(block: bytes) -> list[bytes]:
    """The non-empty lines of a block of export text, without line terminators (a ``\\r``
    before ``\\n`` is removed, as the reference reader does)."""
    lines = block.split(b"\n")
    if any(line.endswith(b"\r") for line in lines):
        lines = [line.rstrip(b"\r\n") for line in lines]
    if b"" in lines:
        lines = [line for line in lines if line]
    return lines


def parse_item_lines(lines: Sequence[bytes]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """(items, item texts) of ``{"Item":{...}}`` lines.

    Raises:
        FastPathUnavailable: a line that is not JSON, not an item line, or not in AWS's exact
            ``{"Item":...}`` shape; the reference reader handles (or reports) it.
    """
    try:
        docs = list(map(orjson.loads, lines))
        items = [doc["Item"] for doc in docs]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise FastPathUnavailable("a line is not an item line") from None
    if set(map(type, items)) != {dict} or set(map(len, docs)) != {1}:
        raise FastPathUnavailable("a line is not a plain item line")
    n = len(lines)
    if (
        sum(map(bytes.startswith, lines, repeat(ITEM_PREFIX))) != n
        or sum(map(bytes.endswith, lines, repeat(b"}"))) != n
    ):
        raise FastPathUnavailable("a line has another shape")
    return items, [line[8:-1] for line in lines]


class _Column:
    """One attribute's values in a chunk, gathered once."""

    __slots__ = ("name", "values", "tag", "raw", "present", "stats")

    def __init__(self, name: str, items: Sequence[dict[str, Any]]) -> None:
        self.name = name
        # None where the item lacks the attribute.
        self.values: list[Any] = list(map(dict.get, items, repeat(name)))
        self.present = len(self.values) - self.values.count(None)
        self.tag: str | None = None  # the one tag of every value, when that holds
        self.raw: list[Any] | None = None  # untagged values (None where missing)
        self.stats = ColumnStats()
        self._single_tag()
        if self.tag is None:
            # Several tags, NULLs, unknown tags, malformed values: the reference statistics
            # (which raise the reference errors).
            self.stats.update([v for v in self.values if v is not None], name)
            return
        tag = self.tag
        self.stats.count = self.present
        self.stats.tags = {tag: self.present}
        numbers: Any = None
        if tag == NUMBER:
            numbers = [v for v in self.raw if v is not None] if self.missing else self.raw
        elif tag == NUMBER_SET:
            numbers = [m for v in self.raw if v is not None for m in v]
        if numbers:
            all_int64, int_digits, scale = schema._number_stats(numbers, name)
            self.stats.all_int64 = all_int64
            self.stats.int_digits = int_digits
            self.stats.scale = scale

    @property
    def missing(self) -> int:
        return len(self.values) - self.present

    def _single_tag(self) -> None:
        # Mirrors ColumnStats.update and schema._raw_values: the tag is the first key of the
        # first value; the fast path holds when every present value has a non-null value under
        # it (then the reference counts every value under that tag and reads the same values).
        values = self.values
        if not self.present:
            return
        first = values[0] if values[0] is not None else next(v for v in values if v is not None)
        if type(first) is not dict or not first:
            return
        tag = next(iter(first))
        if tag not in TYPE_TAGS:
            return
        try:
            if self.missing:
                raw = [None if v is None else v.get(tag) for v in values]
            else:
                raw = list(map(dict.get, values, repeat(tag)))
        except (TypeError, AttributeError):  # a value that is not a dict
            return
        if raw.count(None) != self.missing:
            return
        self.tag, self.raw = tag, raw

    def array(self, target: pa.Field) -> pa.Array:
        """The column of ``target``'s type: exactly :func:`schema.build_column`'s result."""
        kind = schema.field_kind(target)
        if self.tag is None or kind != self.tag:
            return schema.build_column(self.values, target)
        try:
            array = self._fast(kind, target.type)
        except (CodecError, ValueError, TypeError, pa.ArrowException, OverflowError):
            array = None
        if array is None:
            return schema.build_column(self.values, target)
        if not target.nullable and array.null_count:
            return schema.build_column(self.values, target)  # raises the reference error
        return array

    def _fast(self, kind: str, type_: pa.DataType) -> pa.Array | None:
        raw = self.raw
        assert raw is not None
        if kind in (STRING, BOOLEAN):
            return pa.array(raw, type_)
        if kind == NUMBER:
            return schema._numbers_array(raw, type_, self.name)
        if kind in (MAP, LIST):
            return _plain_json_column(self.values, self.missing)
        if kind == NULL:
            return pa.nulls(len(raw), type_)
        if kind == BINARY:
            b64 = schema._b64
            return pa.array([None if v is None else b64(v) for v in raw], type_)
        if kind == STRING_SET:
            return pa.array([None if v is None else sorted(v) for v in raw], type_)
        if kind == NUMBER_SET:
            return schema._number_list_array(raw, type_, self.name)
        if kind == BINARY_SET:
            b64 = schema._b64
            return pa.array([None if v is None else sorted(map(b64, v)) for v in raw], type_)
        return None


# Number text -> its orjson fragment in plain JSON (codec._plain_number's result). Numbers
# recur (quantities, small counts), and the lookup is cheaper than the regex and the Fragment.
_NUMBER_FRAGMENTS: dict[str, orjson.Fragment] = {}
_NUMBER_CACHE_SIZE = 1 << 16


def _number_fragment(text: Any) -> orjson.Fragment:
    if type(text) is not str:
        return codec._plain_number(text)
    fragment = codec._plain_number(text)
    if len(_NUMBER_FRAGMENTS) >= _NUMBER_CACHE_SIZE:
        _NUMBER_FRAGMENTS.clear()
    _NUMBER_FRAGMENTS[text] = fragment
    return fragment


def plain(av: Any) -> Any:
    """What ``codec._plain`` returns for ``av`` (orjson writes both to the same text), faster.

    S and N leaves of maps and lists are taken inline (no call); numbers through a cache.
    Anything else goes through this function again or, for sets and binary, through codec.
    """
    ((tag, value),) = av.items()  # ValueError for a malformed value: the caller falls back
    if tag == MAP:
        out = {}
        for key, inner in value.items():
            if STRING in inner:
                out[key] = inner[STRING]
            elif NUMBER in inner and len(inner) == 1:
                number = inner[NUMBER]
                fragment = _NUMBER_FRAGMENTS.get(number) if type(number) is str else None
                out[key] = fragment if fragment is not None else _number_fragment(number)
            else:
                out[key] = plain(inner)
        return out
    if tag == LIST:
        members = []
        for inner in value:
            if STRING in inner:
                members.append(inner[STRING])
            elif NUMBER in inner and len(inner) == 1:
                number = inner[NUMBER]
                fragment = _NUMBER_FRAGMENTS.get(number) if type(number) is str else None
                members.append(fragment if fragment is not None else _number_fragment(number))
            else:
                members.append(plain(inner))
        return members
    if tag == NUMBER:
        return _number_fragment(value)
    return codec._plain(av)


def _plain_json_column(values: list[Any], missing: int) -> pa.Array | None:
    """Plain JSON text (codec.value_to_text) of map/list values, one orjson call for all."""
    objs: list[Any] = [None] * (2 * len(values) - 1)
    objs[1::2] = repeat(_SENTINEL, len(values) - 1)
    try:
        objs[::2] = [None if v is None else plain(v) for v in values]
        text = orjson.dumps(objs, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError, AttributeError, CodecError):
        return None  # the reference path gives the reference result or error
    parts: list[bytes | None] = text[1:-1].split(_SEPARATOR)  # type: ignore[assignment]
    if len(parts) != len(values):
        return None
    if missing:
        for i, v in enumerate(values):
            if v is None:
                parts[i] = None
    return pa.array(parts, pa.binary()).cast(pa.string())


class ChunkColumns:
    """The attribute values of one chunk of items, gathered once.

    Args:
        items: items (internal representation).
        item_texts: each item's ``_item`` text (bytes or str).
    """

    def __init__(self, items: Sequence[dict[str, Any]], item_texts: Sequence[Any]) -> None:
        if len(item_texts) != len(items):
            raise ValueError(f"{len(item_texts)} item texts for {len(items)} items.")
        self.n = len(items)
        self.item_texts = item_texts
        names: set[str] = set().union(*items)
        self.columns = {name: _Column(name, items) for name in names}

    def stats(self) -> SchemaStats:
        """Statistics equal to ``SchemaStats.of(items)``."""
        return SchemaStats(
            columns={name: col.stats for name, col in self.columns.items()}, items=self.n
        )

    def table(self, target_schema: pa.Schema) -> pa.Table:
        """The table equal to ``schema.items_to_table(items, target_schema, item_texts)``."""
        arrays = []
        for target in target_schema:
            if target.name == ITEM_COLUMN:
                texts = self.item_texts
                if texts and isinstance(texts[0], bytes):
                    arrays.append(pa.array(texts, pa.binary()).cast(pa.string()))
                else:
                    arrays.append(pa.array(texts, pa.string()))
                continue
            column = self.columns.get(target.name)
            if column is None:
                arrays.append(schema.build_column([None] * self.n, target))
            else:
                arrays.append(column.array(target))
        return pa.Table.from_arrays(arrays, schema=target_schema)


def items_to_table(
    items: Sequence[dict[str, Any]], target_schema: pa.Schema, item_texts: Sequence[Any]
) -> pa.Table:
    """Same result as :func:`dynamo_cdc.schema.items_to_table` (given item texts), faster."""
    return ChunkColumns(items, item_texts).table(target_schema)


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
