"""The typed Arrow view of DynamoDB items: per-attribute statistics and the schema.

Every snapshot / current file has the key attributes as typed columns, then the other top-level
attributes as typed columns sorted by name, then ``_item`` (string, never null): the canonical
DynamoDB JSON of the whole item (:func:`dynamo_cdc.codec.item_to_json_text`), or the export
line's own item text. ``_item`` is the truth; typed columns are a convenience.

The type of a column is decided from the :class:`ColumnStats` of every value it holds; the type
mapping table, and how each value becomes a cell, is :mod:`dynamo_cdc.convert.items` (one test
per row in ``tests/unit/test_schema.py``).

Nested maps and lists are JSON text, not Arrow structs: DynamoDB maps are schemaless, so a
struct type would differ between files (breaking unification) and explode in width. DuckDB's
``json_extract`` and friends read the text directly.

Each field carries metadata ``dynamodb_type``: the tag above (``S``, ``N``, ... or ``MIXED``), so
a file can be converted without its statistics. Key columns are non-nullable.

Column names are attribute names, unchanged. Attributes that get **no** typed column (their
values are still in ``_item``):

* a non-key attribute named like a reserved column (``_item``, the table's snapshot partition
  column ``export_date`` (see :mod:`dynamo_cdc.layout`), plus whatever the caller reserves);
* non-key attributes whose names collide after case folding (``Name`` and ``name``), with each
  other, a key or a reserved name: engines such as DuckDB and Athena fold case;
* beyond ``max_columns`` non-key attributes, the least frequent ones (ties: by name).

Statistics are mergeable: compute :class:`SchemaStats` per chunk or per file (in parallel),
``merge`` them, decide one schema, and convert files written with a narrower per-chunk schema
with :func:`cast_table_to_schema` (exact; rebuilt from ``_item`` where a cast would not be).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
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
    TYPE_TAGS,
    AttributeValue,
    Item,
)
from dynamo_cdc.errors import CodecError
from dynamo_cdc.layout import partition_columns

ITEM_COLUMN = "_item"
MIXED = "MIXED"
TYPE_METADATA_KEY = b"dynamodb_type"
DEFAULT_MAX_COLUMNS = 1000
MAX_DECIMAL_PRECISION = 38

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Integer digits of the part of a plain number text (sign, leading zeros and a trailing-zero
# fraction dropped), for the vectorised statistics of decimals.
_PLAIN_NUMBER_RE = r"^[-+]?0*(?P<i>\d*?)(?:\.(?P<f>\d*?)0*)?$"


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass
class ColumnStats:
    """What one attribute's values looked like, enough to choose its Arrow type.

    Attributes:
        count: values seen (items holding the attribute).
        tags: type tag -> number of values with that tag.
        all_int64: every number seen (N values and NS members) is an integer within int64.
        int_digits: most digits before the decimal point of any number seen.
        scale: most digits after the decimal point of any number seen (trailing zeros dropped).
    """

    count: int = 0
    tags: dict[str, int] = field(default_factory=dict)
    all_int64: bool = True
    int_digits: int = 0
    scale: int = 0

    def update(self, values: Sequence[AttributeValue], name: str = "?") -> None:
        """Add attribute values (present ones only, no None) to these statistics."""
        if not values:
            return
        self.count += len(values)
        first: str = next(iter(values[0]), "")
        if first and all(first in av for av in values):
            batch = {first: len(values)}
        else:
            batch = dict(Counter(next(iter(av), "") for av in values))
        unknown = [tag for tag in batch if tag not in TYPE_TAGS]
        if unknown:
            raise CodecError(f"attribute {name}: unknown type tag {unknown[0]!r}.")
        for tag, n in batch.items():
            self.tags[tag] = self.tags.get(tag, 0) + n
        numbers: list[str] = []
        if NUMBER in batch:
            numbers = [av[NUMBER] for av in values if NUMBER in av]
        if NUMBER_SET in batch:
            numbers.extend(m for av in values if NUMBER_SET in av for m in av[NUMBER_SET])
        if numbers:
            all_int64, int_digits, scale = number_stats(numbers, name)
            self.all_int64 = self.all_int64 and all_int64
            self.int_digits = max(self.int_digits, int_digits)
            self.scale = max(self.scale, scale)

    def merge(self, other: ColumnStats) -> ColumnStats:
        """Statistics of both sets of values (neither input is changed)."""
        tags = dict(self.tags)
        for tag, n in other.tags.items():
            tags[tag] = tags.get(tag, 0) + n
        return ColumnStats(
            count=self.count + other.count,
            tags=tags,
            all_int64=self.all_int64 and other.all_int64,
            int_digits=max(self.int_digits, other.int_digits),
            scale=max(self.scale, other.scale),
        )

    @property
    def kind(self) -> str:
        """The column's DynamoDB type: one tag, ``NULL`` if only NULLs, or ``MIXED``."""
        tags = [tag for tag in self.tags if tag != NULL]
        if not tags:
            return NULL
        return tags[0] if len(tags) == 1 else MIXED

    def number_type(self) -> pa.DataType:
        """Arrow type of this column's numbers by the N rule."""
        if self.all_int64:
            return pa.int64()
        precision = max(self.int_digits + self.scale, 1)
        if precision <= MAX_DECIMAL_PRECISION:
            return pa.decimal128(precision, self.scale)
        return pa.string()

    def arrow_type(self) -> pa.DataType:
        """Arrow type of the column (see the module table)."""
        return _arrow_type(self.kind, self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for passing between processes or storing next to a file)."""
        return {
            "count": self.count,
            "tags": dict(sorted(self.tags.items())),
            "all_int64": self.all_int64,
            "int_digits": self.int_digits,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            count=int(data["count"]),
            tags={str(k): int(v) for k, v in data["tags"].items()},
            all_int64=bool(data["all_int64"]),
            int_digits=int(data["int_digits"]),
            scale=int(data["scale"]),
        )


@dataclass
class SchemaStats:
    """Per-attribute :class:`ColumnStats` of a set of items; mergeable across chunks/files."""

    columns: dict[str, ColumnStats] = field(default_factory=dict)
    items: int = 0

    @classmethod
    def of(cls, items: Iterable[Mapping[str, AttributeValue]]) -> SchemaStats:
        """Statistics of ``items``."""
        stats = cls()
        stats.update(items)
        return stats

    def update(self, items: Iterable[Mapping[str, AttributeValue]]) -> None:
        """Add items (internal representation) to the statistics."""
        values: defaultdict[str, list[AttributeValue]] = defaultdict(list)
        count = 0
        for item in items:
            count += 1
            for name, av in item.items():
                values[name].append(av)
        self.items += count
        for name, avs in values.items():
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = ColumnStats()
            column.update(avs, name)

    def merge(self, other: SchemaStats) -> SchemaStats:
        """Statistics of both sets of items (neither input is changed)."""
        columns = dict(self.columns)
        for name, column in other.columns.items():
            mine = columns.get(name)
            columns[name] = column.merge(ColumnStats()) if mine is None else mine.merge(column)
        return SchemaStats(columns=columns, items=self.items + other.items)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "items": self.items,
            "columns": {name: self.columns[name].to_dict() for name in sorted(self.columns)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SchemaStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            columns={k: ColumnStats.from_dict(v) for k, v in data["columns"].items()},
            items=int(data["items"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SchemaStats):
            return NotImplemented
        return self.to_dict() == other.to_dict()


def number_stats(texts: Sequence[str] | pa.Array, name: str) -> tuple[bool, int, int]:
    """(all integers in int64, max integer digits, max scale) of number texts (no nulls)."""
    array = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())
    try:
        ints = array.cast(pa.int64())
    except pa.ArrowInvalid:
        pass
    else:
        # Arrow parsed every text as an int64 in C: the common case, no Python per value.
        low, high = pc.min_max(ints).values()
        biggest = max(abs(low.as_py()), abs(high.as_py()))
        return True, len(str(biggest)) if biggest else 0, 0
    parts = pc.extract_regex(array, _PLAIN_NUMBER_RE)
    if parts.null_count == 0 and len(parts):
        int_digits = pc.max(pc.utf8_length(parts.field("i"))).as_py()
        scale = pc.max(pc.utf8_length(parts.field("f"))).as_py()
        if scale or int_digits > 19:
            # Not all integers, or some too big for any int64. Nineteen digits may or may not
            # fit: those go value by value below, so that the statistics of a column are those
            # of its values, however they are split into chunks.
            return False, int_digits, scale
    # Exponents, signs Arrow refuses, malformed texts: one Decimal per value.
    all_int64, int_digits, scale = True, 0, 0
    for text in array.to_pylist():
        try:
            value = codec.parse_number(text)
        except CodecError as exc:
            raise CodecError(f"attribute {name}: {exc}") from None
        if not value:
            continue
        _, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        end = len(digits)
        while end > 1 and digits[end - 1] == 0:
            end -= 1
        exponent += len(digits) - end
        if exponent >= 0:
            int_digits = max(int_digits, end + exponent)
            if all_int64 and not (_INT64_MIN <= int(value) <= _INT64_MAX):
                all_int64 = False
        else:
            all_int64 = False
            scale = max(scale, -exponent)
            int_digits = max(int_digits, end + exponent)
    return all_int64, int_digits, scale


def set_type(member: pa.DataType) -> pa.DataType:
    """The list type of a set column; its member field is named ``element``, as the Parquet
    format names it, so every view (snapshot, current) reads back the same type."""
    return pa.list_(pa.field("element", member))


def _arrow_type(kind: str, stats: ColumnStats | None) -> pa.DataType:
    number = stats.number_type() if stats is not None else pa.int64()
    if kind == STRING or kind in (MAP, LIST, MIXED, NULL):
        return pa.string()
    if kind == NUMBER:
        return number
    if kind == BINARY:
        return pa.binary()
    if kind == BOOLEAN:
        return pa.bool_()
    if kind == STRING_SET:
        return set_type(pa.string())
    if kind == NUMBER_SET:
        return set_type(number)
    if kind == BINARY_SET:
        return set_type(pa.binary())
    raise CodecError(f"unknown column kind {kind!r}.")


# --------------------------------------------------------------------------------------------
# Schema


def column_field(name: str, stats: ColumnStats, *, nullable: bool = True) -> pa.Field:
    """The Arrow field of one attribute, with its ``dynamodb_type`` metadata."""
    return pa.field(
        name, stats.arrow_type(), nullable=nullable, metadata={TYPE_METADATA_KEY: stats.kind}
    )


def decide_schema(
    stats: SchemaStats,
    key_attributes: Sequence[str],
    *,
    key_types: Mapping[str, str] | None = None,
    reserved: Iterable[str] = (ITEM_COLUMN,),
    max_columns: int = DEFAULT_MAX_COLUMNS,
) -> pa.Schema:
    """The typed schema of a dataset: keys first, other attributes by name, then ``_item``.

    Args:
        stats: statistics of every item the dataset holds (merge per-chunk stats first).
        key_attributes: hash key, then range key if any.
        key_types: ``S``/``N``/``B`` of each key (DescribeTable's AttributeDefinitions), used
            when ``stats`` has no value for a key (an empty chunk).
        reserved: column names no attribute may take (``_item`` and the table's snapshot
            partition column, :func:`dynamo_cdc.layout.partition_columns`, always are).
        max_columns: most non-key typed columns; the least frequent attributes beyond get none.

    Returns:
        The schema; deterministic for equal statistics.

    Raises:
        CodecError: a key attribute named ``_item``, or a key whose values are not S, N or B.
    """
    # The snapshot's partition column too: hive readers would shadow a column of that name.
    reserved_names = {ITEM_COLUMN, *partition_columns("snapshot", key_attributes), *reserved}
    fields = []
    for name in key_attributes:
        if name == ITEM_COLUMN:
            raise CodecError(
                f"key attribute {name!r} collides with the {ITEM_COLUMN} column.",
                fix="this table cannot be captured with typed key columns; report it.",
            )
        column = stats.columns.get(name)
        if column is None or column.count == 0:
            tag = (key_types or {}).get(name, STRING)
            column = ColumnStats(count=0, tags={tag: 0})
        if column.kind not in (STRING, NUMBER, BINARY):
            raise CodecError(
                f"key attribute {name!r} holds {column.kind} values; keys are S, N or B."
            )
        fields.append(column_field(name, column, nullable=False))

    keys = set(key_attributes)
    folded = Counter(name.casefold() for name in {*stats.columns, *keys, *reserved_names})
    candidates = [
        name
        for name in stats.columns
        if name not in keys
        and name not in reserved_names
        and folded[name.casefold()] == 1
        and stats.columns[name].count > 0
    ]
    if len(candidates) > max_columns:
        candidates.sort(key=lambda n: (-stats.columns[n].count, n))
        candidates = candidates[:max_columns]
    for name in sorted(candidates):
        fields.append(column_field(name, stats.columns[name]))
    fields.append(pa.field(ITEM_COLUMN, pa.string(), nullable=False))
    return pa.schema(fields)


def field_kind(f: pa.Field) -> str:
    """The ``dynamodb_type`` of a field, inferred from its Arrow type when it has no metadata."""
    if f.metadata and TYPE_METADATA_KEY in f.metadata:
        return f.metadata[TYPE_METADATA_KEY].decode()
    t = f.type
    if pa.types.is_integer(t) or pa.types.is_decimal(t):
        return NUMBER
    if pa.types.is_binary(t):
        return BINARY
    if pa.types.is_boolean(t):
        return BOOLEAN
    if pa.types.is_null(t):
        return NULL
    if pa.types.is_list(t):
        inner = t.value_type
        if pa.types.is_binary(inner):
            return BINARY_SET
        if pa.types.is_string(inner):
            return STRING_SET
        return NUMBER_SET
    # A plain string column without metadata: take every value's text form.
    return MIXED


# --------------------------------------------------------------------------------------------
# Narrower file -> final schema


def _cast_exact(column: pa.ChunkedArray, source: pa.Field, target: pa.Field) -> Any:
    """The column converted to the target type when that is known to be exact, else None."""
    s, t = source.type, target.type
    if s.equals(t) and field_kind(source) == field_kind(target):
        return column
    if pa.types.is_null(s):
        return pa.nulls(len(column), t)
    source_kind, target_kind = field_kind(source), field_kind(target)
    if target_kind == MIXED:
        if source_kind in (STRING, MAP, LIST, MIXED):
            return column  # already the text form: the string, or plain JSON
        if source_kind == BOOLEAN:
            return column.cast(t)  # Arrow writes "true" / "false", as value_to_text does
        if source_kind == NUMBER and pa.types.is_integer(s):
            return column.cast(t)  # Arrow's integer text is the canonical number text
        return None
    numbers = (source_kind, target_kind)
    if numbers not in ((NUMBER, NUMBER), (NUMBER_SET, NUMBER_SET)):
        return None
    is_list = pa.types.is_list(s)
    value_s = s.value_type if is_list else s
    value_t = t.value_type if is_list else t
    try:
        if pa.types.is_integer(value_s) and pa.types.is_decimal(value_t):
            # Arrow needs room for any int64 (19 digits) plus the scale in the first step.
            wide = pa.decimal128(min(19 + value_t.scale, 38), value_t.scale)
            return column.cast(pa.list_(wide) if is_list else wide).cast(t)
        if pa.types.is_integer(value_s) and pa.types.is_string(value_t):
            return column.cast(t)
        if pa.types.is_decimal(value_s) and pa.types.is_decimal(value_t):
            return column.cast(t)  # checked: raises rather than lose digits
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None


def cast_table_to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Convert a table written with a narrower schema exactly to ``schema``.

    Columns of the same type are kept; ``null`` columns become nulls of the target type; int64
    widens to decimal128 or to string, decimal128 to a wider decimal128, when Arrow's cast is
    exact; every other difference, and every column the table lacks, is rebuilt from
    ``_item`` (only the rows whose text can hold the attribute are parsed).

    Raises:
        CodecError: the table has no ``_item`` column and a column must be rebuilt, or a value
            does not fit the target schema.
    """
    arrays = []
    cache: dict[str, Any] = {}  # _item texts and parsed items, shared by rebuilt columns
    for target in schema:
        name = target.name
        index = table.schema.get_field_index(name)
        if index >= 0:
            cast = _cast_exact(table.column(index), table.schema.field(index), target)
            if cast is not None:
                arrays.append(cast)
                continue
        arrays.append(_rebuild(table, target, cache))
    return pa.Table.from_arrays(arrays, schema=schema)


def _rebuild(table: pa.Table, target: pa.Field, cache: dict[str, Any]) -> pa.Array:
    if ITEM_COLUMN not in table.column_names:
        raise CodecError(
            f"column {target.name!r} must be rebuilt from {ITEM_COLUMN}, which the table lacks."
        )
    column = table.column(ITEM_COLUMN)
    rows: Iterable[int] = range(len(table))
    needle = orjson.dumps(target.name).decode()
    if needle[1:-1] == target.name and target.name.isprintable() and target.name.isascii():
        # A name that every JSON writer spells the same way: skip rows that cannot hold it.
        hits = pc.match_substring(column, needle).to_pylist()
        rows = [i for i, hit in enumerate(hits) if hit]
    avs: list[AttributeValue | None] = [None] * len(table)
    items: dict[int, Item] = cache.setdefault("items", {})
    for i in rows:
        item = items.get(i)
        if item is None:
            texts = cache.get("texts")
            if texts is None:
                texts = cache["texts"] = column.to_pylist()
            item = items[i] = codec.item_from_json_text(texts[i])
        avs[i] = item.get(target.name)
    from dynamo_cdc.convert.items import build_column  # the conversion imports this module

    return build_column(avs, target)
