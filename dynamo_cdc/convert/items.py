"""The reference conversion of export items to Arrow: the specification, written plainly.

The native reader (:mod:`dynamo_cdc.convert.native_items`) must give exactly these tables and
statistics; ``tests/unit/convert/test_items_differential.py`` pins it. A block the native reader
refuses is converted here.

Type mapping of a column, decided from the :class:`~dynamo_cdc.schema.ColumnStats` of every
value it holds (:func:`dynamo_cdc.schema.decide_schema`; one test per row in
``tests/unit/test_schema.py``), and what each value becomes in it (one builder per type tag,
:data:`_BUILDERS`):

==========================  =====================================================================
DynamoDB values             Arrow column
==========================  =====================================================================
S                           ``string``
N, all integers in int64    ``int64``
N, otherwise                ``decimal128(p, s)`` with p = max integer digits + max scale <= 38,
                            else ``string`` (canonical number text); never float64
B                           ``binary`` (the base64 text decoded)
BOOL                        ``bool``
only NULL                   ``string``, every cell null (not Arrow's ``null`` type: Parquet's
                            NULL logical type is refused by Athena and Spark)
M                           ``string``: plain JSON (sorted keys, numbers as exact decimal text,
                            binary as base64, sets as sorted arrays)
L                           ``string``: plain JSON, as M
SS                          ``list<element: string>`` (members sorted)
NS                          ``list<int64 | decimal128(p, s) | string>`` by the N rule (sorted)
BS                          ``list<binary>`` (members sorted)
two or more types           ``string``: text form of each value (S itself, N canonical text,
                            B base64, BOOL ``true``/``false``, M/L/sets plain JSON)
attribute missing           null
NULL next to another type   null cell in that type's column (NULL does not make a conflict)
==========================  =====================================================================

A value of another tag than its column's (statistics that did not cover it), a number that does
not fit the column's type and a key attribute missing are errors (:class:`CodecError`).

``_item`` is the export line's own item text when the line has AWS's exact ``{"Item":{...}}``
shape, else the item's canonical DynamoDB JSON (:func:`dynamo_cdc.codec.item_to_json_text`).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping, Sequence
from decimal import InvalidOperation
from typing import Any

import orjson
import pyarrow as pa

from dynamo_cdc import codec, nesting
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
    AttributeValue,
)
from dynamo_cdc.errors import CodecError
from dynamo_cdc.schema import ITEM_COLUMN, MIXED, SchemaStats, field_kind

ITEM_PREFIX = b'{"Item":'


class NotItemLines(Exception):
    """A block holds a line that is not a ``{"Item": {...}}`` JSON line: the caller reads the
    file again line by line to name it (``snapshot.iter_item_chunks`` words the error)."""


# --------------------------------------------------------------------------------------------
# Values of one tag -> an Arrow array (None: the item lacks the attribute, or its value is NULL)


def _as_is(values: list[Any], type_: pa.DataType, name: str) -> pa.Array:
    return pa.array(values, type_)


def _int_of(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = codec.parse_number(text)
        if value != value.to_integral_value():
            raise CodecError(f"{text} is not an integer.") from None
        return int(value)


def numbers_array(texts: list[Any], type_: pa.DataType, name: str) -> pa.Array:
    if pa.types.is_string(type_):
        return pa.array(
            [None if t is None else codec.canonical_number_text(t) for t in texts], type_
        )
    try:
        return pa.array(texts, pa.string()).cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        if pa.types.is_integer(type_):
            return pa.array([None if t is None else _int_of(t) for t in texts], type_)
        return pa.array([None if t is None else codec.parse_number(t) for t in texts], type_)
    except (pa.ArrowInvalid, OverflowError, InvalidOperation, CodecError) as exc:
        raise CodecError(
            f"attribute {name}: a number does not fit the column type {type_}: {exc}",
            fix="decide the schema from statistics that include these items.",
        ) from None


def _b64(text: str) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)


def _binaries(values: list[Any], type_: pa.DataType, name: str) -> pa.Array:
    return pa.array([None if v is None else _b64(v) for v in values], type_)


def _string_sets(values: list[Any], type_: pa.DataType, name: str) -> pa.Array:
    return pa.array([None if v is None else sorted(v) for v in values], type_)


def number_sets_array(sets: list[Any], type_: pa.DataType, name: str) -> pa.Array:
    offsets = [0]
    flat: list[str] = []
    valid = []
    for members in sets:
        if members is None:
            valid.append(False)
        else:
            valid.append(True)
            flat.extend(sorted(members, key=codec.parse_number))  # CodecError if not a number
        offsets.append(len(flat))
    values = numbers_array(flat, type_.value_type, name)
    mask = pa.array([not v for v in valid], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=type_, mask=mask)


def binary_sets_array(values: list[Any], type_: pa.DataType, name: str) -> pa.Array:
    return pa.array([None if v is None else sorted(_b64(m) for m in v) for v in values], type_)


# The column of each tag, from the values under that tag.
_BUILDERS: dict[str, Callable[[list[Any], pa.DataType, str], pa.Array]] = {
    STRING: _as_is,
    NUMBER: numbers_array,
    BINARY: _binaries,
    BOOLEAN: _as_is,
    STRING_SET: _string_sets,
    NUMBER_SET: number_sets_array,
    BINARY_SET: binary_sets_array,
}


def _raw_values(avs: Sequence[AttributeValue | None], tag: str, name: str) -> list[Any]:
    """The untagged values of ``tag`` (None where missing or NULL); any other tag is an error."""
    values = [None if av is None else av.get(tag) for av in avs]
    if values.count(None) != avs.count(None):
        for av in avs:
            if av is not None and tag not in av and NULL not in av:
                raise CodecError(
                    f"attribute {name}: a {next(iter(av), '?')} value in a {tag} column.",
                    fix="decide the schema from statistics that include these items.",
                )
    return values


def _build(
    avs: Sequence[AttributeValue | None], kind: str, type_: pa.DataType, name: str
) -> pa.Array:
    if kind in (MAP, LIST):
        _raw_values(avs, kind, name)
    if kind in (MIXED, MAP, LIST):  # text: plain JSON of maps and lists, text form of the rest
        return pa.array([None if av is None else codec.value_to_text(av) for av in avs], type_)
    if kind == NULL:
        _raw_values(avs, NULL, name)
        return pa.nulls(len(avs), type_)
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise CodecError(f"attribute {name}: cannot build a {type_} column from {kind} values.")
    return builder(_raw_values(avs, kind, name), type_, name)


def build_column(avs: Sequence[AttributeValue | None], target: pa.Field) -> pa.Array:
    """One typed column from the attribute values of each row (None = attribute missing).

    Args:
        avs: one value per row, in the internal representation.
        target: the field (its type and ``dynamodb_type`` metadata say how to convert).

    Raises:
        CodecError: a value that does not fit the field (other tag, number out of range),
            or a null in a non-nullable (key) field.
    """
    name, type_ = target.name, target.type
    try:
        array = _build(avs, field_kind(target), type_, name)
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"attribute {name}: {exc}") from None
    if not target.nullable and array.null_count:
        raise CodecError(
            f"attribute {name}: {array.null_count} item(s) lack this key attribute.",
            fix="keys must be present in every item; check the key attribute names.",
        )
    return array


def items_to_table(
    items: Sequence[Mapping[str, AttributeValue]],
    schema: pa.Schema,
    item_texts: Sequence[str] | None = None,
) -> pa.Table:
    """The typed table of ``items``, exactly of ``schema``.

    Args:
        items: items in the internal representation.
        schema: from :func:`dynamo_cdc.schema.decide_schema` (statistics that cover these
            items).
        item_texts: the ``_item`` text of each item, e.g. the export line's own item JSON;
            canonical JSON is written when omitted.

    Raises:
        CodecError: an item does not fit the schema, or a key attribute is missing.
    """
    if item_texts is not None and len(item_texts) != len(items):
        raise ValueError(f"{len(item_texts)} item texts for {len(items)} items.")
    arrays = []
    for target in schema:
        if target.name == ITEM_COLUMN:
            texts = item_texts
            if texts is None:
                texts = [codec.item_to_json_text(item) for item in items]
            arrays.append(pa.array(texts, pa.string()))
        else:
            name = target.name
            arrays.append(build_column([item.get(name) for item in items], target))
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------------------------
# An export block


def check_block_nesting(block: bytes) -> None:
    """Refuse a block with an item nested deeper than DynamoDB's 32 levels before a reader that
    recurses (orjson and the codec) sees it (the C reader refuses those itself).

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
                continue  # not JSON: the line-by-line reading words it
            try:
                nesting.check_values(doc)
            except nesting.TooDeep:
                raise nesting.TooDeep(int(index)) from None


def block_items(block: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """(items, ``_item`` texts) of a block's lines; blank lines and ``\\r`` before ``\\n`` are
    skipped, as the line-by-line reading of a file skips them.

    Raises:
        nesting.TooDeep: a line nested deeper than DynamoDB allows.
        NotItemLines: a line that is not a ``{"Item": {...}}`` JSON line.
    """
    check_block_nesting(block)
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise NotItemLines("a line that is not JSON") from None
        item = doc.get("Item") if isinstance(doc, dict) else None
        if not isinstance(item, dict):
            raise NotItemLines("a line that is not an item line")
        if line.startswith(ITEM_PREFIX) and line.endswith(b"}"):
            text = line[len(ITEM_PREFIX) : -1].decode("utf-8")
        else:
            text = codec.item_to_json_text(item)
        items.append(item)
        texts.append(text)
    return items, texts


class ItemsChunk:
    """Items (and their ``_item`` texts): their statistics and their table for any schema."""

    def __init__(self, items: Sequence[Mapping[str, AttributeValue]], texts: Sequence[str]) -> None:
        self.n = len(items)
        self._items = items
        self._texts = texts

    @classmethod
    def of_block(cls, block: bytes) -> ItemsChunk:
        """The chunk of an export block's lines (see :func:`block_items`)."""
        return cls(*block_items(block))

    def stats(self) -> SchemaStats:
        return SchemaStats.of(self._items)

    def table(self, target: pa.Schema) -> pa.Table:
        return items_to_table(self._items, target, item_texts=self._texts)
