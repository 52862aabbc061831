"""The Arrow path of export -> Arrow: whole blocks of export lines, no Python object per value.

The same statistics and the same table as :mod:`dynamo_cdc.schema` (and
:mod:`dynamo_cdc.fastconvert`), built by Arrow's C++ code: ``pyarrow.json`` parses a block of
``{"Item":{...}}`` lines (8 MB) into nested struct arrays (DynamoDB JSON infers cleanly: every
value sits under its type tag, and each tag has one JSON shape), then each column is built with
compute kernels:

* typed columns are a field pick (``S``, ``BOOL``) or a cast (``N``) of the tag's child array;
* map and list columns get their plain JSON text (codec.value_to_plain_json) assembled column
  by column from the struct's fields, keys sorted, strings re-escaped as orjson escapes them;
* ``_item`` is a slice of each line's bytes: the export's own item text, never re-serialised;
* statistics (value counts per tag, number digits) are counts and min/max over the arrays.

Python runs once per column and block, not per value, except for rare shapes (binary values,
number sets, sets inside maps) that are converted value by value exactly as the reference does.

Anything this path cannot do exactly raises :class:`Unsupported`; the caller converts that
block with the per-item path, which gives the reference result or the reference error. Among
them: a line in another shape than AWS's, CRLF or blank lines, a value with no or several type
tags, an unknown tag, and maps so wide (more than :data:`MAX_FIELDS` distinct keys
in a block) that a struct array would cost more than the values.

Where the C extension :mod:`dynamo_cdc.convert._native` is built (the install compiles it when a C
compiler is there), a block is first read by it instead of ``pyarrow.json``: one pass in C that
checks the lines, gives each attribute's values per tag as Arrow arrays and renders maps and
lists (and the sets and binary values inside them) as their plain JSON directly. It refuses
what it does not read exactly (whitespace, a number inside a map or list that needs more than
cutting trailing zeros, binary there that is not canonical base64, invalid UTF-8, ...); a block
it refuses goes through ``pyarrow.json`` as before. ``DYNAMO_CDC_NATIVE=0`` turns it off.

``tests/unit/test_arrowconvert.py`` pins the equality of both readers with the reference path on
the bench generator's items, the all-types case and Hypothesis items.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from dynamo_cdc import codec, nesting, schema
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
from dynamo_cdc.convert import native
from dynamo_cdc.errors import CodecError
from dynamo_cdc.export import MAX_LINE_BYTES, open_gzip
from dynamo_cdc.schema import MIXED, ColumnStats, SchemaStats

# Whether BlockReader tries the C reader first (DYNAMO_CDC_NATIVE=0: never).
NATIVE = native.ENABLED
_native = native.module

# Decompressed bytes per block. Each block is parsed by one read_json call; 8 MB keeps the
# per-call overhead small and a worker's memory flat (about 4x the block while it is built).
BLOCK_BYTES = 8 << 20
# Most struct fields (over all nesting levels) a block may infer: beyond it, maps are being
# used as dictionaries with data in their keys, which the per-item path handles better.
MAX_FIELDS = 2_000
ITEM_PREFIX = b'{"Item":'
# codec._CANONICAL_PLAIN_RE, for Arrow's RE2.
_CANONICAL_PLAIN = r"^(?:0|-?(?:[1-9]\d{0,38}(?:\.\d*[1-9])?|0\.0{0,6}[1-9](?:\d*[1-9])?))$"
_STRING_TAGS = (STRING, NUMBER, BINARY)
_BOOL_TAGS = (BOOLEAN, NULL)
_SET_TAGS = (STRING_SET, NUMBER_SET, BINARY_SET)
_NULL_TEXT = pa.nulls(1, pa.string())[0]
# How orjson writes control characters in strings.
_CONTROL_ESCAPES = {chr(i): orjson.dumps(chr(i)).decode("ascii")[1:-1] for i in range(32)}


class Unsupported(Exception):
    """This block cannot take the Arrow path exactly; the caller uses the per-item path."""


class LineTooLong(Exception):
    """A line longer than :data:`dynamo_cdc.export.MAX_LINE_BYTES`: the first line after the
    blocks yielded so far."""


def iter_blocks(
    path: Path, block_bytes: int = BLOCK_BYTES, max_line: int = MAX_LINE_BYTES
) -> Iterator[bytes]:
    """Line-aligned blocks of a gzip file's text (each without its last newline).

    A line is held at most ``max_line`` bytes (plus one read): a longer one raises
    :class:`LineTooLong` before more of it is read. The pieces of a line that spans reads are
    joined once, when its end arrives (no growing copy per read).

    Raises:
        LineTooLong: a line longer than ``max_line``.
        EOFError, OSError, zlib.error: a truncated or damaged file (the caller words it).
    """
    pieces: list[bytes] = []  # the start of a line that spans reads
    held = 0
    with open_gzip(path) as fh:
        while data := fh.read(block_bytes):
            cut = data.rfind(b"\n")
            if cut < 0:
                pieces.append(data)
                held += len(data)
                if held > max_line:
                    raise LineTooLong()
                continue
            if pieces:
                first = data.find(b"\n")
                if held + first > max_line:
                    raise LineTooLong()
                pieces.append(data[:cut])
                block = b"".join(pieces)
                pieces, held = [], 0
            else:
                block = data[:cut]
            if cut + 1 < len(data):
                pieces, held = [data[cut + 1 :]], len(data) - cut - 1
            if block:
                yield block
            del block
    if pieces:
        yield b"".join(pieces)


class BlockReader:
    """Parses the blocks of one data file, learning its JSON schema as it goes.

    The schema learned from earlier blocks is given to the next read (with inference of new
    fields), so that strings Arrow would infer as timestamps are read as strings once learned.
    """

    def __init__(self, *, native: bool | None = None) -> None:
        self._schema: pa.Schema | None = None
        self.native = NATIVE if native is None else native
        if self.native and _native is None:
            raise RuntimeError(
                "dynamo_cdc.convert._native is not built (no C compiler at install?)"
            )

    def read(self, block: bytes) -> ArrowChunk:
        """Parse one block: by the C reader if it takes the block, else by ``pyarrow.json``.

        Raises:
            Unsupported: the block is not plain AWS export lines this path converts exactly.
        """
        if self.native:
            try:
                return read_native(block)
            except Unsupported:
                pass
        check_block_nesting(block)
        if not block or b"\r" in block or b"\n\n" in block or block.startswith(b"\n"):
            raise Unsupported("blank lines or CRLF line ends")
        lines = pc.split_pattern(pa.array([block], pa.large_binary()), b"\n").values
        if (
            not pc.all(pc.starts_with(lines, ITEM_PREFIX)).as_py()
            or not pc.all(pc.ends_with(lines, b"}")).as_py()
        ):
            raise Unsupported("a line in another shape than AWS's")
        table = self._parse(block)
        if table.num_rows != len(lines) or table.column_names != ["Item"]:
            raise Unsupported("a line that is not a plain item line")
        item = table.column("Item").combine_chunks()
        if item.null_count or not pa.types.is_struct(item.type):
            raise Unsupported("a line without an item")
        columns = {}
        for f, child in zip(item.type, item.flatten(), strict=True):
            wrapper = _Wrapper(child)
            if wrapper.present:
                columns[f.name] = wrapper
        # _item: each line less its {"Item": prefix and final brace (cast checks UTF-8 later).
        item_text = pc.binary_slice(lines, len(ITEM_PREFIX), -1)
        return ArrowChunk(len(item), columns, item_text, escapes=b"\\" in block)

    def _parse(self, block: bytes) -> pa.Table:
        read = pj.ReadOptions(use_threads=False, block_size=len(block) + 1)
        table = None
        if self._schema is not None:
            parse = pj.ParseOptions(explicit_schema=self._schema, unexpected_field_behavior="infer")
            try:
                table = pj.read_json(io.BytesIO(block), read_options=read, parse_options=parse)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                table = None  # e.g. a field learned as all-null now holds values: infer again
        if table is None:
            try:
                table = pj.read_json(io.BytesIO(block), read_options=read)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise Unsupported(f"pyarrow.json: {exc}") from None
        fixed, changed, width = _strings_not_timestamps(pa.struct(list(table.schema)))
        if width > MAX_FIELDS:
            raise Unsupported(f"maps with {width} distinct keys in one block")
        if changed:
            # Arrow inferred ISO-8601-looking strings as timestamps: read again as strings.
            self._schema = pa.schema(list(fixed))
            parse = pj.ParseOptions(explicit_schema=self._schema, unexpected_field_behavior="infer")
            try:
                table = pj.read_json(io.BytesIO(block), read_options=read, parse_options=parse)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise Unsupported(f"pyarrow.json: {exc}") from None
            if _strings_not_timestamps(pa.struct(list(table.schema)))[1]:
                raise Unsupported("strings keep being read as timestamps")
        else:
            self._schema = table.schema
        return table


def check_block_nesting(block: bytes) -> None:
    """Refuse a block with an item nested deeper than DynamoDB's 32 levels before a reader that
    recurses (``pyarrow.json``, orjson and the codec) sees it (the C reader refuses those itself).

    Raises:
        nesting.TooDeep: naming the line, counted from the block's first.
    """
    near = nesting.check_lines(block, nesting.EXPORT_LINES)
    if len(near):
        lines = block.split(b"\n")
        for index in near:
            try:
                doc = orjson.loads(lines[index])
            except orjson.JSONDecodeError:
                continue  # not JSON: the per-item path words it
            try:
                nesting.check_values(doc)
            except nesting.TooDeep:
                raise nesting.TooDeep(int(index)) from None


def read_native(block: bytes) -> ArrowChunk:
    """Read one block with the C reader (:mod:`dynamo_cdc.convert._native`).

    Raises:
        Unsupported: the C reader does not take this block (the reason says why).
    """
    if _native is None:
        raise Unsupported("dynamo_cdc.convert._native is not built")
    try:
        n, item_offsets, item_data, attributes = _native.scan_block(block)
    except ValueError as exc:
        raise Unsupported(f"C reader: {exc}") from None
    item_text = _string_array(n, None, item_offsets, item_data)
    columns = {}
    for name, arrays in attributes:
        columns[name] = _Wrapper.of_tags(
            n, {tag: _native_array(n, parts) for tag, *parts in arrays}
        )
    return ArrowChunk(n, columns, item_text, escapes=False, native=True)


def _string_array(n: int, valid: bytes | None, offsets: bytes, data: bytes) -> pa.Array:
    buffers = [None if valid is None else pa.py_buffer(valid), pa.py_buffer(offsets)]
    return pa.Array.from_buffers(pa.string(), n, [*buffers, pa.py_buffer(data)])


def _native_array(n: int, parts: list[Any]) -> pa.Array:
    """An Arrow array from the C reader's buffers (see dynamo_cdc/convert/_native/)."""
    if len(parts) == 2:  # BOOL, NULL: validity, values
        return pa.Array.from_buffers(pa.bool_(), n, [pa.py_buffer(p) for p in parts])
    if len(parts) == 3:  # S, N, B, M, L: validity, offsets, data
        return _string_array(n, *parts)
    valid, offsets, members, member_offsets, data = parts  # sets
    values = _string_array(members, None, member_offsets, data)
    return pa.Array.from_buffers(
        pa.list_(pa.string()), n, [pa.py_buffer(valid), pa.py_buffer(offsets)], children=[values]
    )


def _strings_not_timestamps(type_: pa.DataType) -> tuple[pa.DataType, bool, int]:
    """(type with every timestamp made a string, whether any was, struct fields counted)."""
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_) or pa.types.is_time(type_):
        return pa.string(), True, 0
    if pa.types.is_struct(type_):
        fields, changed, width = [], False, type_.num_fields
        for f in type_:
            inner, c, w = _strings_not_timestamps(f.type)
            changed, width = changed or c, width + w
            fields.append(f.with_type(inner))
        return pa.struct(fields), changed, width
    if pa.types.is_list(type_):
        inner, c, w = _strings_not_timestamps(type_.value_type)
        return pa.list_(inner), c, w
    return type_, False, 0


def _valid(array: pa.Array) -> int:
    return len(array) - array.null_count


class _Wrapper:
    """A column of DynamoDB JSON values ({tag: value} structs), checked: one tag per value."""

    __slots__ = ("n", "present", "tags")

    def __init__(self, array: pa.Array) -> None:
        self.n = len(array)
        self.tags: dict[str, pa.Array] = {}
        if pa.types.is_null(array.type):
            self.present = 0
            return
        if not pa.types.is_struct(array.type):
            raise Unsupported("an attribute value that is not an object")
        self.present = _valid(array)
        children = array.flatten()  # parent nulls pushed into the children
        for f, child in zip(array.type, children, strict=True):
            if _valid(child):
                if f.name not in TYPE_TAGS:
                    raise Unsupported(f"unknown type tag {f.name!r}")
                self.tags[f.name] = child
        for tag, child in self.tags.items():
            _check_tag_type(tag, child.type)
        counted = sum(_valid(c) for c in self.tags.values())
        if counted != self.present:
            raise Unsupported("a value with no type tag or several")
        if len(self.tags) > 1:
            per_row = None
            for child in self.tags.values():
                valid = pc.cast(pc.is_valid(child), pa.int8())
                per_row = valid if per_row is None else pc.add(per_row, valid)
            if pc.max(per_row).as_py() > 1:
                raise Unsupported("a value with several type tags")
        nulls = self.tags.get(NULL)
        if nulls is not None and pc.any(pc.invert(nulls)).as_py():
            raise Unsupported("NULL: false")

    @classmethod
    def of_tags(cls, n: int, tags: dict[str, pa.Array]) -> _Wrapper:
        """A column from its values per tag, checked by the caller (one tag per value)."""
        self = cls.__new__(cls)
        self.n = n
        self.tags = tags
        self.present = sum(_valid(c) for c in tags.values())
        return self

    def stats(self, name: str) -> ColumnStats:
        stats = ColumnStats(count=self.present, tags={t: _valid(c) for t, c in self.tags.items()})
        numbers = []
        if NUMBER in self.tags:
            numbers.append(self.tags[NUMBER].drop_null())
        if NUMBER_SET in self.tags:
            numbers.append(_members(self.tags[NUMBER_SET]))
        numbers = [a for a in numbers if len(a)]
        if numbers:
            texts = numbers[0] if len(numbers) == 1 else pa.concat_arrays(numbers)
            try:
                all_int64, int_digits, scale = _number_stats(texts, name)
            except CodecError as exc:
                raise Unsupported(str(exc)) from None
            stats.all_int64, stats.int_digits, stats.scale = all_int64, int_digits, scale
        return stats


def _number_stats(texts: pa.Array, name: str) -> tuple[bool, int, int]:
    """schema._number_stats of number texts, from lengths when every text is canonical.

    A failed int64 cast and the reference's regex extraction cost about 1 us a value; for
    canonical plain texts (no leading zeros, no trailing fraction zeros) the digits before and
    after the point are positions, and one fraction makes the column not all int64.
    """
    canonical = pc.match_substring_regex(texts, _CANONICAL_PLAIN)
    if not pc.all(canonical).as_py():
        # Exponents, trailing zeros and other shapes by the reference; the statistics of a
        # union are those of its parts joined (all integers: and; digits, scale: max).
        odd = schema._number_stats(texts.filter(pc.invert(canonical)), name)
        plain = texts.filter(canonical)
        if not len(plain):
            return odd
        even = _number_stats(plain, name)
        return odd[0] and even[0], max(odd[1], even[1]), max(odd[2], even[2])
    point = pc.find_substring(texts, ".")
    length = pc.binary_length(texts)
    has_point = pc.greater_equal(point, 0)
    int_digits = pc.subtract(
        pc.if_else(has_point, point, length), pc.cast(pc.starts_with(texts, "-"), pa.int32())
    )
    # "0", "0.5" and "-0.05" have no integer digit (the reference strips leading zeros).
    zero_int = pc.or_(pc.starts_with(texts, "0"), pc.starts_with(texts, "-0."))
    most = pc.max(pc.if_else(zero_int, 0, int_digits)).as_py()
    if pc.max(point).as_py() >= 0:
        scale = pc.max(pc.if_else(has_point, pc.subtract(pc.subtract(length, point), 1), 0))
        return False, most, scale.as_py()
    if most <= 18:
        return True, most, 0
    if most >= 20:
        return False, most, 0
    return schema._number_stats(texts, name)  # 19 digits: int64 or not by value


def _check_tag_type(tag: str, type_: pa.DataType) -> None:
    if tag in _STRING_TAGS:
        ok = pa.types.is_string(type_)
    elif tag in _BOOL_TAGS:
        ok = pa.types.is_boolean(type_)
    elif tag == MAP:
        ok = pa.types.is_struct(type_)
    elif tag == LIST:
        ok = pa.types.is_list(type_)
    else:  # sets: lists of strings (an empty set is not a DynamoDB value)
        ok = pa.types.is_list(type_) and pa.types.is_string(type_.value_type)
    if not ok:
        raise Unsupported(f"{tag} value of JSON type {type_}")


def _members(lists: pa.Array) -> pa.Array:
    """The member values of a list array's valid rows, in order."""
    offsets = lists.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return lists.values.slice(start, end - start)


class ArrowChunk:
    """One parsed block: its statistics and its table for any target schema."""

    def __init__(
        self,
        n: int,
        columns: dict[str, _Wrapper],
        item_text: pa.Array,
        *,
        escapes: bool,
        native: bool = False,
    ) -> None:
        """
        Args:
            n: rows.
            columns: each attribute's values (attributes with at least one value).
            item_text: each row's item text, binary or string.
            escapes: whether strings may need escaping again in plain JSON.
            native: read by the C reader: map and list values are already plain JSON text.
        """
        self.n = n
        self.native = native
        self._item_text = item_text
        self._escapes = escapes
        self._columns = columns

    def stats(self) -> SchemaStats:
        """Statistics equal to ``SchemaStats.of(items)`` of the block's items."""
        return SchemaStats(
            columns={name: w.stats(name) for name, w in self._columns.items()}, items=self.n
        )

    def table(self, target: pa.Schema) -> pa.Table:
        """The table equal to ``schema.items_to_table(items, target, item_texts)``.

        Raises:
            Unsupported: a column this path cannot build exactly.
        """
        arrays = []
        for f in target:
            if f.name == schema.ITEM_COLUMN:
                item_text = self._item_text
                if not pa.types.is_string(item_text.type):
                    try:
                        item_text = item_text.cast(pa.large_string()).cast(pa.string())
                    except pa.ArrowInvalid as exc:
                        raise Unsupported(f"_item: {exc}") from None
                arrays.append(item_text)
                continue
            wrapper = self._columns.get(f.name)
            if wrapper is None:
                if not f.nullable:
                    raise Unsupported(f"key attribute {f.name} missing")
                arrays.append(pa.nulls(self.n, f.type))
                continue
            try:
                array = _Renderer(self._escapes, plain_ready=self.native).column(wrapper, f)
            except (
                pa.ArrowInvalid,
                pa.ArrowNotImplementedError,
                CodecError,
                binascii.Error,  # a binary set member that is not base64
            ) as exc:
                raise Unsupported(f"attribute {f.name}: {exc}") from None
            if not f.nullable and array.null_count:
                raise Unsupported(f"key attribute {f.name} missing")
            if not array.type.equals(f.type):
                raise Unsupported(f"attribute {f.name}: built {array.type}, not {f.type}")
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=target)


class _Renderer:
    """Builds typed columns and plain JSON text, column-wise."""

    def __init__(self, escapes: bool, *, plain_ready: bool = False) -> None:
        # Without a backslash anywhere in the block, no string holds '"', '\\' or a control
        # character (JSON would have escaped them): string literals need no escaping.
        self.escapes = escapes
        # Map and list values are already their plain JSON text (the C reader's).
        self.plain_ready = plain_ready

    def column(self, w: _Wrapper, target: pa.Field) -> pa.Array:
        kind = schema.field_kind(target)
        type_ = target.type
        if kind == MIXED:
            return self._texts(w)
        other = [t for t in w.tags if t not in (kind, NULL)]
        if other:
            raise Unsupported(f"{other[0]} value in a {kind} column")
        if kind == NULL or kind not in w.tags:  # only NULLs (or missing)
            return pa.nulls(w.n, type_)
        c = w.tags[kind]
        if kind in (MAP, LIST):
            return c if self.plain_ready else self.plain(_Wrapper(_wrap(kind, c)))
        if kind in (STRING, BOOLEAN):
            return c
        if kind == NUMBER:
            if pa.types.is_string(type_):
                return _canonical_numbers(c, short=True)
            try:
                return c.cast(type_)
            except pa.ArrowInvalid:  # exponents and the like: the reference, value by value
                return schema._numbers_array(c.to_pylist(), type_, target.name)
        if kind == BINARY:
            return _binary(c)
        if kind == STRING_SET:
            return _sorted_lists(c, _members(c))
        if kind == NUMBER_SET:
            try:
                if pa.types.is_string(type_.value_type):
                    raise pa.ArrowInvalid("number text: sorted by value, not as text")
                return _sorted_lists(c, _members(c).cast(type_.value_type))
            except pa.ArrowInvalid:  # the reference, value by value
                return schema._number_list_array(c.to_pylist(), type_, target.name)
        if kind == BINARY_SET:
            return pa.array(
                [None if v is None else sorted(map(schema._b64, v)) for v in c.to_pylist()],
                type_,
            )
        raise Unsupported(f"{kind} column")

    def _texts(self, w: _Wrapper) -> pa.Array:
        """value_to_text of each value (a MIXED column)."""
        alts = []
        for tag, c in w.tags.items():
            if tag == STRING:
                alts.append(c)
            elif tag == NUMBER:
                alts.append(_canonical_numbers(c, short=True))
            elif tag == BOOLEAN:
                alts.append(pc.if_else(c, "true", "false"))
            elif tag == NULL:
                continue
            elif tag in (MAP, LIST):
                alts.append(c if self.plain_ready else self.plain(_Wrapper(_wrap(tag, c))))
            else:
                alts.append(_per_value(tag, c, codec.value_to_text))
        if not alts:
            return pa.nulls(w.n, pa.string())
        return alts[0] if len(alts) == 1 else pc.coalesce(*alts)

    def _escaped(self, c: pa.Array) -> pa.Array:
        """Each string's JSON literal without its quotes, escaped as orjson escapes it."""
        if self.escapes:
            c = pc.replace_substring(c, "\\", "\\\\")
            c = pc.replace_substring(c, '"', '\\"')
            if pc.any(pc.match_substring_regex(c, r"[\x00-\x1f]")).as_py():
                for char, escaped in _CONTROL_ESCAPES.items():
                    c = pc.replace_substring(c, char, escaped)
        return c

    def plain(self, w: _Wrapper) -> pa.Array:
        """Plain JSON text (value_to_plain_json) of each value; null where w is null."""
        return _join(self._pieces(w))

    def _pieces(self, w: _Wrapper) -> list[Any]:
        """Literal texts and string arrays whose row-wise concatenation is the plain JSON of
        each value (null where w is null): one join at the end instead of one per level."""
        if len(w.tags) == 1:
            ((tag, c),) = w.tags.items()
            if tag == STRING:
                return ['"', self._escaped(c), '"']
            if tag == MAP:
                return self._map_pieces(c)
            if tag == LIST:
                return ["[", self._list_body(c), "]"]
        alts = []
        for tag, c in w.tags.items():
            if tag == STRING:
                text = _join(['"', self._escaped(c), '"'])
            elif tag == NUMBER:
                text = _canonical_numbers(c, short=False)
            elif tag == BOOLEAN:
                text = pc.if_else(c, "true", "false")
            elif tag == NULL:
                text = pc.if_else(c, "null", "null")
            elif tag == MAP:
                text = _join(self._map_pieces(c))
            elif tag == LIST:
                text = _join(["[", self._list_body(c), "]"])
            else:  # binary and sets inside maps and lists: rare, the reference per value
                text = _per_value(tag, c, codec.value_to_plain_json)
            alts.append(text)
        if not alts:
            return [pa.nulls(w.n, pa.string())]
        return [alts[0] if len(alts) == 1 else pc.coalesce(*alts)]

    def _map_pieces(self, m: pa.StructArray) -> list[Any]:
        fields = dict(zip([f.name for f in m.type], m.flatten(), strict=True))
        values = {k: _Wrapper(v) for k, v in sorted(fields.items())}
        values = {k: v for k, v in values.items() if v.present}
        if not values:
            return [pc.if_else(pc.is_valid(m), "{}", _NULL_TEXT)]
        if all(v.present == len(m) - m.null_count for v in values.values()):
            # Every key in every map (the common case): literal keys between the values.
            pieces: list[Any] = []
            for key, value in values.items():
                pieces.append(("," if pieces else "{") + _key_text(key))
                pieces.extend(self._pieces(value))
            pieces.append("}")
            return pieces
        # Some keys missing from some maps: a member per key ("" where missing) and the
        # leading comma cut. (null_handling="skip" returned a wrong length on pyarrow 26:
        # "replace" with "" does the same here.)
        members = [_join(["," + _key_text(k), *self._pieces(v)]) for k, v in values.items()]
        body = pc.binary_join_element_wise(
            *members, "", null_handling="replace", null_replacement=""
        )
        text = _join(["{", pc.utf8_slice_codeunits(body, 1), "}"])
        if len(text) != len(m):
            raise Unsupported("pyarrow join length")
        if m.null_count:
            text = pc.if_else(pc.is_valid(m), text, _NULL_TEXT)
        return [text]

    def _list_body(self, lists: pa.ListArray) -> pa.Array:
        """The members' plain JSON joined by commas (null where the list is null)."""
        members = _members(lists)
        if len(members):
            wrapper = _Wrapper(members)
            if wrapper.present != len(members):
                raise Unsupported("a list member that is not a value")
            texts = self.plain(wrapper)
        else:
            texts = pa.array([], pa.string())
        offsets = pc.subtract(lists.offsets, lists.offsets[0])
        rebuilt = pa.ListArray.from_arrays(offsets, texts, mask=lists.is_null())
        return pc.binary_join(rebuilt, ",")


def _canonical_numbers(c: pa.Array, *, short: bool) -> pa.Array:
    """Canonical text of each number text (nulls stay null).

    ``short=False``: codec._plain_number's rule (a text matching the canonical plain pattern
    stays as it is); ``short=True``: canonical_number_text's (also at most 38 characters). Texts
    that are not canonical get their trailing fraction zeros cut by Arrow ("15.90" -> "15.9",
    "2.0" -> "2": the same value, so the same canonical text); what is still not canonical
    goes through codec, value by value.
    """

    def canonical(texts: pa.Array) -> pa.Array:
        ok = pc.match_substring_regex(texts, _CANONICAL_PLAIN)
        if short:
            ok = pc.and_(ok, pc.less_equal(pc.utf8_length(texts), 38))
        return pc.fill_null(ok, True)

    ok = canonical(c)
    if pc.all(ok).as_py():
        return c
    bad = pc.invert(ok)
    fixed = c.filter(bad)
    fixed = pc.replace_substring_regex(fixed, r"^(-?\d+)\.0+$", r"\1")
    fixed = pc.replace_substring_regex(fixed, r"^(-?\d+\.\d*?[1-9])0+$", r"\1")
    still = canonical(fixed)
    if not pc.all(still).as_py():
        texts = fixed.to_pylist()
        flags = still.to_pylist()
        fixed = pa.array(
            [
                t if flag else codec.canonical_number_text(t)
                for t, flag in zip(texts, flags, strict=True)
            ],
            pa.string(),
        )
    return pc.replace_with_mask(c, bad, fixed)


def _key_text(key: str) -> str:
    return orjson.dumps(key).decode("utf-8") + ":"


def _join(pieces: list[Any]) -> pa.Array:
    """Row-wise concatenation of literal texts and string arrays (null where any is null)."""
    if len(pieces) == 1:
        return pieces[0]
    return pc.binary_join_element_wise(*pieces, "")


def _wrap(tag: str, c: pa.Array) -> pa.StructArray:
    """{tag: c} as a wrapper struct array (null where c is null)."""
    return pa.StructArray.from_arrays([c], [tag], mask=c.is_null())


def _per_value(tag: str, c: pa.Array, convert: Any) -> pa.Array:
    """convert({tag: value}) of each value, in Python (rare shapes only)."""
    values = c.to_pylist()
    return pa.array([None if v is None else convert({tag: v}) for v in values], pa.string())


def _binary(c: pa.Array) -> pa.Array:
    """The bytes of base64 texts: by the C reader's decoder when every text is canonical, else
    one binascii call a value (which also takes unpadded or otherwise lax forms)."""
    if NATIVE and _native is not None and c.offset == 0 and pa.types.is_string(c.type):
        valid, offsets, data = c.buffers()
        try:
            decoded = _native.decode_base64(len(c), offsets, b"" if data is None else data)
        except ValueError:
            pass
        else:
            buffers = [valid, *map(pa.py_buffer, decoded)]
            return pa.Array.from_buffers(pa.binary(), len(c), buffers, c.null_count)
    b64 = binascii.a2b_base64
    try:
        return pa.array(
            [None if v is None else b64(v, strict_mode=True) for v in c.to_pylist()], pa.binary()
        )
    except binascii.Error as exc:
        raise Unsupported(f"binary value: {exc}") from None


def _sorted_lists(lists: pa.ListArray, members: pa.Array) -> pa.ListArray:
    """``lists`` with ``members`` as values, each row's members sorted ascending."""
    offsets = pc.subtract(lists.offsets, lists.offsets[0])
    out = pa.ListArray.from_arrays(offsets, members, mask=lists.is_null())
    n = len(members)
    if n > 1:
        parent = pc.list_parent_indices(out)
        same_row = pc.equal(parent.slice(0, n - 1), parent.slice(1))
        in_order = pc.or_(
            pc.invert(same_row), pc.less_equal(members.slice(0, n - 1), members.slice(1))
        )
        if not pc.all(in_order).as_py():
            order = pc.sort_indices(
                pa.table({"row": parent, "value": members}),
                [("row", "ascending"), ("value", "ascending")],
            )
            out = pa.ListArray.from_arrays(offsets, members.take(order), mask=lists.is_null())
    return out
