"""Stream records -> change rows: the contract, and its reference implementation.

Change rows, one per stream record:

=========================  ===============================  ===================================
column                     Arrow type                       from
=========================  ===============================  ===================================
event_id                   string                           eventID
event_name                 string                           eventName (INSERT, MODIFY, REMOVE)
sequence_number            string                           SequenceNumber left-padded with
                                                            zeros to 40 digits, so text order
                                                            is numeric order
shard_id                   string                           the shard read (null for exports)
approximate_creation_time  timestamp[us, tz=UTC]            ApproximateCreationDateTime
                                                            (a datetime, naive meaning UTC, or
                                                            epoch seconds), rounded to µs
ttl_delete                 bool                             userIdentity is Service /
                                                            dynamodb.amazonaws.com (a TTL
                                                            delete)
source                     string                           ``stream`` or ``export``
<key attributes>           S -> string, N -> string,        Keys, named as in the table
                           B -> binary
_keys                      string                           Keys as canonical DynamoDB JSON
_new_image, _old_image     string (null where absent)       NewImage / OldImage, canonical
                                                            DynamoDB JSON
=========================  ===============================  ===================================

Key columns take their type from the table's AttributeDefinitions, never from the values, so
every change file of a table has the same schema. An ``N`` key is the canonical number text
(:func:`dynamo_cdc.codec.canonical_number_text`): DynamoDB numbers have 38 digits and exponents
from -130 to +125, which neither int64 nor one decimal128 scale holds, and a rule that looked at
the values would give files whose schemas do not unify. (Cast in queries: ``CAST(id AS
BIGINT)``.) A ``B`` key is its bytes. A key attribute that is absent, or of another type than
its definition, is null. A key attribute named like one of the columns above,
case-insensitively, is written as ``key_<name>`` (:func:`key_column_name`).

An image's text is :func:`dynamo_cdc.codec.item_to_json_text`, one dispatch per type tag
(:func:`dynamo_cdc.codec.canonical_value`): UTF-8 JSON, compact, keys sorted at every level,
numbers canonical, binary (bytes as boto3 gives them, or base64 text as the response holds it)
as padded base64, set members sorted. A value that is not DynamoDB JSON raises
:class:`~dynamo_cdc.errors.CodecError`; an image nested deeper than DynamoDB's 32 levels raises
:class:`~dynamo_cdc.errors.StreamRecordError`.

This module is the specification, written plainly, record by record
(:func:`reference_table`). The C readers (``dynamo_cdc/convert/_native/records.c``) give the
same rows fast (:func:`native_table` makes them Arrow); :func:`dynamo_cdc.convert.records_to_table`
picks one, and ``tests/unit/convert/test_records_differential.py`` holds them equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dynamo_cdc import codec, nesting
from dynamo_cdc.errors import StreamRecordError

SEQUENCE_DIGITS = 40
SOURCES = ("stream", "export")
TTL_PRINCIPAL = "dynamodb.amazonaws.com"
CHANGE_COLUMNS = (
    "event_id",
    "event_name",
    "sequence_number",
    "shard_id",
    "approximate_creation_time",
    "ttl_delete",
    "source",
)
IMAGE_COLUMNS = ("_keys", "_new_image", "_old_image")
IMAGES = ("Keys", "NewImage", "OldImage")  # the record's images, in IMAGE_COLUMNS' order
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
KEY_ARROW_TYPES = {"S": pa.string(), "N": pa.string(), "B": pa.binary()}

ShardIds = Sequence[str | None] | str | None

_OUR_COLUMNS = frozenset(c.casefold() for c in (*CHANGE_COLUMNS, *IMAGE_COLUMNS))


def key_column_name(name: str, key_names: Sequence[str] = ()) -> str:
    """The change-row column of key attribute ``name``: ``key_<name>`` when ``name`` is one of
    the change-row columns above, case-insensitively (DuckDB, Athena and Spark fold case), again
    until it is free of those and of the table's other ``key_names``."""
    taken = _OUR_COLUMNS | {k.casefold() for k in key_names if k != name}
    column = name
    while column.casefold() in taken:
        column = f"key_{column}"
    return column


def change_schema(key_attributes: Sequence[tuple[str, str]]) -> pa.Schema:
    """The Arrow schema of a table's change rows.

    Args:
        key_attributes: ``(name, type)`` pairs, HASH key first, type ``S``, ``N`` or ``B``
            (from AttributeDefinitions; see :class:`dynamo_cdc.stream.StreamInfo`).
    """
    fields = [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_name", pa.string(), nullable=False),
        pa.field("sequence_number", pa.string()),
        pa.field("shard_id", pa.string()),
        pa.field("approximate_creation_time", TIMESTAMP_TYPE, nullable=False),
        pa.field("ttl_delete", pa.bool_(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
    names = [name for name, _ in key_attributes]
    for name, kind in key_attributes:
        if kind not in KEY_ARROW_TYPES:
            raise ValueError(f"key attribute {name!r} has type {kind!r}; keys are S, N or B")
        fields.append(pa.field(key_column_name(name, names), KEY_ARROW_TYPES[kind]))
    fields += [pa.field(c, pa.string()) for c in IMAGE_COLUMNS]
    return pa.schema(fields)


def check_call(n: int, shard_ids: ShardIds, source: str) -> None:
    """Raise ValueError unless ``source`` is a source and ``shard_ids`` fits ``n`` records."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    if not (shard_ids is None or isinstance(shard_ids, str)) and len(shard_ids) != n:
        raise ValueError("shard_ids must have one entry per record")


# -- one record, value by value ------------------------------------------------------------------


def image_text(image: Mapping[str, Any] | None) -> str | None:
    """Canonical DynamoDB JSON text of a stream image (binary as bytes or base64), or None."""
    return None if image is None else codec.item_to_json_text(image)


def key_value(keys: Mapping[str, Any] | None, name: str, kind: str) -> Any:
    """The key column's value of attribute ``name`` of type ``kind`` in a record's Keys."""
    av = None if keys is None else keys.get(name)
    value = None if av is None else av.get(kind)
    if value is None:
        return None
    if kind == "S":
        return value
    if kind == "N":
        return codec.canonical_number_text(value)
    return codec.decode_binary(value)  # B


def creation_micros(when: Any) -> int:
    """Microseconds since the epoch of an ApproximateCreationDateTime: a datetime (naive is
    UTC), as boto3 gives it, or epoch seconds, as the response holds it."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return round(when.timestamp() * 1_000_000)
    return round(float(when) * 1_000_000)


def is_ttl_delete(identity: Mapping[str, Any] | None) -> bool:
    """Whether a record's userIdentity is DynamoDB's TTL service."""
    return (
        identity is not None
        and identity.get("Type") == "Service"
        and identity.get("PrincipalId") == TTL_PRINCIPAL
    )


def _too_deep(record: Mapping[str, Any], image: str) -> StreamRecordError:
    dyn = record.get("dynamodb") or {}
    return StreamRecordError(
        f"Stream record {str(record.get('eventID'))[:80]!r} (sequence number "
        f"{str(dyn.get('SequenceNumber'))[:48]}) has a {image} nested deeper than DynamoDB's "
        f"{nesting.MAX_LEVELS} levels: DynamoDB never sends one.",
        fix="check that DYNAMO_CDC_ENDPOINT_URL points at DynamoDB Streams; nothing of this "
        "batch was committed.",
    )


def change_row(
    record: Mapping[str, Any], key_attributes: Sequence[tuple[str, str]]
) -> tuple[Any, ...]:
    """A record's change-row values, but shard_id and source: event_id, event_name,
    sequence_number, approximate_creation_time (µs), ttl_delete, the key columns, then the
    three image texts."""
    dyn = record["dynamodb"]
    images = [dyn.get(name) for name in IMAGES]
    for name, image in zip(IMAGES, images, strict=True):  # before anything recurses
        try:
            nesting.check_item(image)
        except nesting.TooDeep:
            raise _too_deep(record, name) from None
    sequence = dyn.get("SequenceNumber")
    return (
        record["eventID"],
        record["eventName"],
        None if sequence is None else sequence.zfill(SEQUENCE_DIGITS),
        creation_micros(dyn["ApproximateCreationDateTime"]),
        is_ttl_delete(record.get("userIdentity")),
        *(key_value(images[0], name, kind) for name, kind in key_attributes),
        *map(image_text, images),
    )


def reference_table(
    records: Sequence[Mapping[str, Any]],
    key_attributes: Sequence[tuple[str, str]],
    *,
    shard_ids: ShardIds = None,
    source: str = "stream",
) -> pa.Table:
    """Change rows of record dicts, record by record (:func:`change_row`).

    Args:
        records: GetRecords records as boto3 returns them (binary as bytes) or as the response
            holds them (binary as base64 text, ``ApproximateCreationDateTime`` epoch seconds).
        key_attributes: ``(name, type)`` of the table's key attributes.
        shard_ids: the shard of each record (parallel to ``records``), one for all, or None.
        source: ``stream`` or ``export``.
    """
    schema = change_schema(key_attributes)  # first: it checks the key types
    check_call(len(records), shard_ids, source)
    rows = [change_row(record, key_attributes) for record in records]
    n = len(rows)
    if not n:
        return schema.empty_table()
    columns = list(zip(*rows, strict=True))
    event_id, event_name, sequence, micros, ttl = columns[:5]
    keys, images = columns[5:-3], columns[-3:]
    arrays = [
        pa.array(event_id, pa.string()),
        pa.array(event_name, pa.string()),
        pa.array(sequence, pa.string()),
        shard_column(shard_ids, n),
        pa.array(micros, pa.int64()).cast(TIMESTAMP_TYPE),
        pa.array(ttl, pa.bool_()),
        pa.array([source] * n, pa.string()),
        *(
            pa.array(values, KEY_ARROW_TYPES[kind])
            for values, (_, kind) in zip(keys, key_attributes, strict=True)
        ),
        *(pa.array(texts, pa.string()) for texts in images),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def shard_column(shard_ids: ShardIds, n: int) -> pa.Array:
    """The shard_id column of ``n`` records."""
    if shard_ids is None or isinstance(shard_ids, str):
        return pa.array([shard_ids] * n, pa.string())
    return pa.array(shard_ids, pa.string())


# -- the C readers' columns ----------------------------------------------------------------------


def native_table(
    c: Mapping[str, Any],
    key_attributes: Sequence[tuple[str, str]],
    shard_ids: ShardIds,
    source: str,
) -> pa.Table:
    """The change rows of the columns a C reader gave (``scan_records`` for a response's bytes,
    ``scan_record_dicts`` for record dicts), its buffers as Arrow arrays. The key columns come
    from the Keys' attributes as the reader gives them (S unescaped, N and B as written): N
    made canonical and B decoded by :func:`key_value` where needed."""
    schema = change_schema(key_attributes)
    n = int(c["count"])
    check_call(n, shard_ids, source)
    attributes = {name: {tag: parts for tag, *parts in tags} for name, tags in c["key_attributes"]}
    key_columns = []
    for name, kind in key_attributes:
        parts = attributes.get(name, {}).get(kind)
        if parts is None:
            key_columns.append(pa.nulls(n, KEY_ARROW_TYPES[kind]))
            continue
        values = _texts(n, (*parts, None))
        if kind == "B" or (kind == "N" and not pc.all(_canonical(values)).as_py()):
            values = pa.array(
                [key_value({name: {kind: v}}, name, kind) for v in values.to_pylist()],
                KEY_ARROW_TYPES[kind],
            )
        key_columns.append(values)
    columns = [
        _texts(n, c["event_id"]),
        _texts(n, c["event_name"]),
        _texts(n, c["sequence_number"]),
        shard_column(shard_ids, n),
        pa.Array.from_buffers(TIMESTAMP_TYPE, n, [None, pa.py_buffer(c["micros"])]),
        pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(c["ttl_delete"])]),
        pa.array([source] * n, pa.string()),
        *key_columns,
        _texts(n, c["_keys"]),
        _texts(n, c["_new_image"]),
        _texts(n, c["_old_image"]),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


# Number texts canonical_number_text returns unchanged (integers without leading zeros, decimals
# without trailing zeros down to 0.0000001), up to 38 characters: the rest go through it.
_CANONICAL_NUMBER = r"^(?:0|-?(?:[1-9][0-9]*(?:\.[0-9]*[1-9])?|0\.0{0,6}[1-9](?:[0-9]*[1-9])?))$"


def _canonical(values: pa.Array) -> pa.Array:
    return pc.and_(
        pc.match_substring_regex(values, _CANONICAL_NUMBER),
        pc.less_equal(pc.binary_length(values), 38),
    )


def _texts(n: int, parts: tuple[bytes, bytes, bytes, int | None]) -> pa.Array:
    """A string array from a C reader's (validity bitmap, offsets, data, null count)."""
    valid, offsets, data, nulls = parts
    validity = None if nulls == 0 else pa.py_buffer(valid)
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=-1 if nulls is None else nulls,
    )


def newest_micros(records: Sequence[Mapping[str, Any]]) -> int:
    """The latest ApproximateCreationDateTime of a page's records (not empty), in µs."""
    columns = getattr(records, "columns", None)  # a RecordPage: the C reader's columns
    if columns is not None:
        return max(memoryview(columns["micros"]).cast("q"))
    return max(creation_micros(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records)
