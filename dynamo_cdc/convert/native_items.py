"""The native conversion of export items: a block read by the C reader (``scan_block``,
``dynamo_cdc/convert/_native/block.c``), its columns built from the reader's Arrow buffers.

The C reader checks the lines, gives each attribute's values per tag as Arrow arrays and renders
maps and lists (and the sets and binary values inside them) as their plain JSON; it refuses
(``ValueError``, with the reason) what it does not read exactly: whitespace, CRLF or blank
lines, a number inside a map, list or set that needs more than cutting trailing zeros to be
canonical, invalid UTF-8, nesting deeper than DynamoDB's, ... Here the typed columns are built
from those arrays with Arrow's compute kernels (a cast, a sort, a decode), Python running once a
column and block, not once a value. Whatever this cannot build exactly raises
:class:`Unsupported`; the caller takes the reference (:mod:`dynamo_cdc.convert.items`), which
gives the same table, or the reference error.
"""

from __future__ import annotations

import binascii
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dynamo_cdc import codec
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
)
from dynamo_cdc.convert import items, native
from dynamo_cdc.errors import CodecError
from dynamo_cdc.schema import ITEM_COLUMN, MIXED, ColumnStats, SchemaStats, field_kind
from dynamo_cdc.schema import number_stats as _reference_number_stats

# codec._CANONICAL_PLAIN_RE, for Arrow's RE2.
_CANONICAL_PLAIN = r"^(?:0|-?(?:[1-9]\d{0,38}(?:\.\d*[1-9])?|0\.0{0,6}[1-9](?:\d*[1-9])?))$"


class Unsupported(Exception):
    """This block or column cannot take the native path exactly; the caller takes the
    reference."""


def read_block(block: bytes) -> NativeChunk:
    """Read one block with the C reader.

    Raises:
        Unsupported: the C reader is off or refuses the block (the reason says why).
    """
    if not native.ENABLED or native.module is None:
        raise Unsupported(native.off_reason())
    try:
        n, item_offsets, item_data, attributes = native.module.scan_block(block)
    except ValueError as exc:
        raise Unsupported(str(exc)) from None
    item_text = _string_array(n, None, item_offsets, item_data)
    columns = {
        name: _Column(n, {tag: _array(n, parts) for tag, *parts in arrays})
        for name, arrays in attributes
    }
    return NativeChunk(n, columns, item_text)


def _string_array(n: int, valid: bytes | None, offsets: bytes, data: bytes) -> pa.Array:
    buffers = [None if valid is None else pa.py_buffer(valid), pa.py_buffer(offsets)]
    return pa.Array.from_buffers(pa.string(), n, [*buffers, pa.py_buffer(data)])


def _array(n: int, parts: list[Any]) -> pa.Array:
    """An Arrow array from the C reader's buffers (see ``_native.pyi``)."""
    if len(parts) == 2:  # BOOL, NULL: validity, values
        return pa.Array.from_buffers(pa.bool_(), n, [pa.py_buffer(p) for p in parts])
    if len(parts) == 3:  # S, N, B, M, L: validity, offsets, data
        return _string_array(n, *parts)
    valid, offsets, members, member_offsets, data = parts  # sets
    values = _string_array(members, None, member_offsets, data)
    return pa.Array.from_buffers(
        pa.list_(pa.string()), n, [pa.py_buffer(valid), pa.py_buffer(offsets)], children=[values]
    )


def _valid(array: pa.Array) -> int:
    return len(array) - array.null_count


def _members(lists: pa.Array) -> pa.Array:
    """The member values of a list array's valid rows, in order."""
    offsets = lists.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return lists.values.slice(start, end - start)


class _Column:
    """One attribute's values: an array per tag, valid where the item's value has that tag
    (the C reader checked one tag per value; maps and lists are their plain JSON text)."""

    __slots__ = ("n", "present", "tags")

    def __init__(self, n: int, tags: dict[str, pa.Array]) -> None:
        self.n = n
        self.tags = tags
        self.present = sum(_valid(c) for c in tags.values())

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

    def array(self, target: pa.Field) -> pa.Array:
        """The column of ``target``'s type, as the reference builds it."""
        kind = field_kind(target)
        type_ = target.type
        if kind == MIXED:
            return self._texts()
        other = [t for t in self.tags if t not in (kind, NULL)]
        if other:
            raise Unsupported(f"{other[0]} value in a {kind} column")
        if kind == NULL or kind not in self.tags:  # only NULLs (or missing)
            return pa.nulls(self.n, type_)
        c = self.tags[kind]
        if kind in (MAP, LIST, STRING, BOOLEAN):
            return c
        if kind == NUMBER:
            if pa.types.is_string(type_):
                return _canonical_numbers(c)
            try:
                return c.cast(type_)
            except pa.ArrowInvalid:  # exponents and the like: the reference, value by value
                return items.numbers_array(c.to_pylist(), type_, target.name)
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
                return items.number_sets_array(c.to_pylist(), type_, target.name)
        if kind == BINARY_SET:
            return items.binary_sets_array(c.to_pylist(), type_, target.name)
        raise Unsupported(f"{kind} column")

    def _texts(self) -> pa.Array:
        """value_to_text of each value (a MIXED column)."""
        alts = []
        for tag, c in self.tags.items():
            if tag in (STRING, MAP, LIST):
                alts.append(c)
            elif tag == NUMBER:
                alts.append(_canonical_numbers(c))
            elif tag == BOOLEAN:
                alts.append(pc.if_else(c, "true", "false"))
            elif tag != NULL:  # binary and sets: the reference, value by value
                values = c.to_pylist()
                alts.append(
                    pa.array(
                        [None if v is None else codec.value_to_text({tag: v}) for v in values],
                        pa.string(),
                    )
                )
        if not alts:
            return pa.nulls(self.n, pa.string())
        return alts[0] if len(alts) == 1 else pc.coalesce(*alts)


class NativeChunk:
    """One block read by the C reader: its statistics and its table for any target schema."""

    def __init__(self, n: int, columns: dict[str, _Column], item_text: pa.Array) -> None:
        self.n = n
        self._columns = columns
        self._item_text = item_text

    def stats(self) -> SchemaStats:
        """Statistics equal to ``SchemaStats.of(items)`` of the block's items.

        Raises:
            Unsupported: a number the reference words an error about.
        """
        return SchemaStats(
            columns={name: c.stats(name) for name, c in self._columns.items()}, items=self.n
        )

    def table(self, target: pa.Schema) -> pa.Table:
        """The table equal to ``items.items_to_table`` of the block's items and texts.

        Raises:
            Unsupported: a column this path cannot build exactly (or the reference refuses).
        """
        arrays = []
        for f in target:
            if f.name == ITEM_COLUMN:
                arrays.append(self._item_text)
                continue
            column = self._columns.get(f.name)
            if column is None:
                if not f.nullable:
                    raise Unsupported(f"key attribute {f.name} missing")
                arrays.append(pa.nulls(self.n, f.type))
                continue
            try:
                array = column.array(f)
            except (
                pa.ArrowInvalid,
                pa.ArrowNotImplementedError,
                CodecError,
                binascii.Error,
            ) as exc:
                raise Unsupported(f"attribute {f.name}: {exc}") from None
            if not f.nullable and array.null_count:
                raise Unsupported(f"key attribute {f.name} missing")
            if not array.type.equals(f.type):
                raise Unsupported(f"attribute {f.name}: built {array.type}, not {f.type}")
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=target)


def _number_stats(texts: pa.Array, name: str) -> tuple[bool, int, int]:
    """schema.number_stats of number texts, from lengths when every text is canonical.

    A failed int64 cast and the reference's regex extraction cost about 1 us a value; for
    canonical plain texts (no leading zeros, no trailing fraction zeros) the digits before and
    after the point are positions, and one fraction makes the column not all int64.
    """
    canonical = pc.match_substring_regex(texts, _CANONICAL_PLAIN)
    if not pc.all(canonical).as_py():
        # Exponents, trailing zeros and other shapes by the reference; the statistics of a
        # union are those of its parts joined (all integers: and; digits, scale: max).
        odd = _reference_number_stats(texts.filter(pc.invert(canonical)), name)
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
    return _reference_number_stats(texts, name)  # 19 digits: int64 or not by value


def _canonical_numbers(c: pa.Array) -> pa.Array:
    """codec.canonical_number_text of each number text (nulls stay null).

    Texts that are not canonical (or longer than 38 characters) get their trailing fraction
    zeros cut by Arrow ("15.90" -> "15.9", "2.0" -> "2": the same value, so the same canonical
    text); what is still not canonical goes through codec, value by value.
    """

    def canonical(texts: pa.Array) -> pa.Array:
        ok = pc.match_substring_regex(texts, _CANONICAL_PLAIN)
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


def _binary(c: pa.Array) -> pa.Array:
    """The bytes of base64 texts: by the C decoder when every text is canonical, else one
    binascii call a value (which also takes unpadded or otherwise lax forms)."""
    if native.module is not None and c.offset == 0 and pa.types.is_string(c.type):
        valid, offsets, data = c.buffers()
        try:
            decoded = native.module.decode_base64(len(c), offsets, b"" if data is None else data)
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
