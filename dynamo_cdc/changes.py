"""Stream records -> change rows (Arrow).

Change rows (DESIGN.md's data contract), one per stream record:

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
BIGINT)``.) A key attribute named like one of the columns above, case-insensitively, is written
as ``key_<name>`` (:func:`key_column_name`).

The files they go to: :mod:`dynamo_cdc.changefiles`; one capture step: :mod:`dynamo_cdc.capture`.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import logging
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dynamo_cdc import codec, nesting
from dynamo_cdc.convert import native
from dynamo_cdc.errors import StreamRecordError
from dynamo_cdc.stream import (
    RecordPage,
)

log = logging.getLogger(__name__)

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
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_KEY_ARROW_TYPES = {"S": pa.string(), "N": pa.string(), "B": pa.binary()}


# -- canonical text, fast ---------------------------------------------------------------------

# Numbers whose text is already canonical (codec.canonical_number_text gives the same text):
# integers without leading zeros, and decimals with no trailing zero and an adjusted exponent of
# at least -7. At most 38 characters, so at most 38 significant digits.
_CANONICAL_NUMBER_RE = rb"(?:0|-?(?:[1-9][0-9]*(?:\.[0-9]*[1-9])?|0\.0{0,6}[1-9](?:[0-9]*[1-9])?))"
_CANONICAL_NUMBER = re.compile(_CANONICAL_NUMBER_RE)
# In orjson's output of an image, '"N":"' only starts a number value and '"SS":[' only starts a
# set: inside JSON strings every '"' is escaped, and a map attribute named "N" or "SS" is
# followed by '{'. So the spots where orjson's text can differ from the canonical text are found
# by one regex over the bytes: a number that is not already canonical, or a set (whose members
# may need sorting). They are fixed in place with the codec's own functions.
_JSON_STRING = rb'"(?:[^"\\]|\\.)*"'
_FIXABLE = re.compile(
    rb'"N":"(?!(?=[^"]{0,38}")'
    + _CANONICAL_NUMBER_RE
    + rb'")([^"]*)"|"([SNB]S)":(\['
    + _JSON_STRING
    + rb"(?:,"
    + _JSON_STRING
    + rb")*\])"
)


@functools.lru_cache(maxsize=65536)
def _canonical_number_bytes(text: bytes) -> bytes:
    return codec.canonical_number_text(text.decode("ascii")).encode("ascii")


@functools.lru_cache(maxsize=16384)
def _canonical_set_bytes(tag: bytes, members: bytes) -> bytes:
    name = tag.decode("ascii")
    return orjson.dumps(codec.canonical_value({name: orjson.loads(members)})[name])


def _fix(match: re.Match[bytes]) -> bytes:
    number = match.group(1)
    if number is not None:
        return b'"N":"' + _canonical_number_bytes(number) + b'"'
    tag = match.group(2)
    return b'"' + tag + b'":' + _canonical_set_bytes(tag, match.group(3))


def _b64(value: Any) -> str:
    # codec.encode_binary (base64.b64encode is this very call), without two Python frames:
    # orjson calls this once per binary value.
    if isinstance(value, bytes | bytearray | memoryview):
        return _b2a_base64(value, newline=False).decode("ascii")
    raise TypeError


_b2a_base64 = binascii.b2a_base64


def image_text(image: Mapping[str, Any] | None) -> str | None:
    """Canonical DynamoDB JSON text of a stream image (binary as bytes or base64), or None.

    Equal to :func:`dynamo_cdc.codec.item_to_json_text` (a property test pins it), but fast:
    orjson writes the image with sorted keys and binary as base64, then the numbers that are not
    already canonical and the sets are rewritten in place with the codec's
    ``canonical_number_text`` and ``canonical_value`` (cached: the same texts recur). Anything
    orjson cannot write goes to the codec whole.
    """
    if image is None:
        return None
    try:
        raw = orjson.dumps(image, option=orjson.OPT_SORT_KEYS, default=_b64)
    except TypeError:
        return codec.item_to_json_text(image)
    # One scan: sub() returns the same bytes when nothing needs fixing.
    return _FIXABLE.sub(_fix, raw).decode("utf-8")


# -- records -> Arrow ------------------------------------------------------------------------


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
        if kind not in _KEY_ARROW_TYPES:
            raise ValueError(f"key attribute {name!r} has type {kind!r}; keys are S, N or B")
        fields.append(pa.field(key_column_name(name, names), _KEY_ARROW_TYPES[kind]))
    fields += [pa.field(c, pa.string()) for c in IMAGE_COLUMNS]
    return pa.schema(fields)


def _key_value(av: Mapping[str, Any] | None, kind: str) -> Any:
    if av is None:
        return None
    value = av.get(kind)
    if value is None:
        return None
    if kind == "S":
        return value
    if kind == "N":
        return (
            value
            if len(value) <= 38 and _CANONICAL_NUMBER.fullmatch(value.encode())
            else codec.canonical_number_text(value)
        )
    return codec.decode_binary(value)


def newest_micros(records: Sequence[Mapping[str, Any]]) -> int:
    """The latest ApproximateCreationDateTime of a page's records (not empty), in µs."""
    if isinstance(records, RecordPage):
        return max(memoryview(records.columns["micros"]).cast("q"))
    return max(_micros(r["dynamodb"]["ApproximateCreationDateTime"]) for r in records)


def _micros(when: Any) -> int:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return round(when.timestamp() * 1_000_000)
    return round(float(when) * 1_000_000)


def records_to_table(
    records: Sequence[Mapping[str, Any]],
    key_attributes: Sequence[tuple[str, str]],
    *,
    shard_ids: Sequence[str | None] | str | None = None,
    source: str = "stream",
) -> pa.Table:
    """Change rows of stream records (see the module docstring for the columns).

    Built a column at a time, 1024 records at a time: C-level ``map`` over the records,
    ``orjson`` over groups of images and numpy over the text it writes (see
    :func:`_image_chunk`). The rows are exactly those of :func:`image_text` and :func:`_micros`
    applied record by record (``tests/unit/test_change_rows_fast.py`` keeps that
    implementation and compares).

    A :class:`~dynamo_cdc.stream.RecordPage` (one response read by the C reader) is built from
    its columns (:func:`_columns_table`), with no Python object per record. A list of record
    dicts is read into the same columns by the C extension (``scan_record_dicts``, which walks
    the objects) where it is built; what that refuses (a value of an unexpected type, a number
    that needs the codec, a datetime in another kind of tzinfo, ...) takes the Python path
    below. Both give the same rows (``tests/unit/test_record_dicts_native.py``).

    Args:
        records: GetRecords records as boto3 returns them (binary as bytes) or with binary as
            base64 text; ``dynamodb.ApproximateCreationDateTime`` a datetime or epoch seconds.
            Or a :class:`~dynamo_cdc.stream.RecordPage`.
        key_attributes: ``(name, type)`` of the table's key attributes.
        shard_ids: the shard of each record (a sequence parallel to ``records``), one shard id
            for all, or None.
        source: ``stream`` or ``export``.

    Returns:
        A table with :func:`change_schema`'s schema, rows in the order given.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    if not isinstance(records, RecordPage | list):
        records = list(records)
    n = len(records)
    if not (shard_ids is None or isinstance(shard_ids, str)) and len(shard_ids) != n:
        raise ValueError("shard_ids must have one entry per record")
    if isinstance(records, RecordPage):
        return _columns_table(records.columns, key_attributes, shard_ids, source)
    if n and native.ENABLED and native.module is not None:
        try:
            columns = native.module.scan_record_dicts(records)
        except ValueError as exc:
            log.debug("records converted by the Python path, not the C extension: %s", exc)
        else:
            return _columns_table(columns, key_attributes, shard_ids, source)
    schema = change_schema(key_attributes)
    # Chunk by chunk: a chunk's records are still in the CPU cache for each column after the
    # first. The columns are joined at the end (a table of chunks would write other Parquet).
    chunks = [
        _chunk_columns(records, lo, key_attributes, shard_ids, source)
        for lo in range(0, n, _CHUNK_RECORDS)
    ]
    if not chunks:
        return schema.empty_table()
    columns = [
        parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
        for parts in zip(*(chunk.columns for chunk in chunks), strict=True)
    ]
    return pa.Table.from_arrays(columns + _join_images([c.images for c in chunks]), schema=schema)


def _columns_table(
    c: Mapping[str, Any],
    key_attributes: Sequence[tuple[str, str]],
    shard_ids: Sequence[str | None] | str | None,
    source: str,
) -> pa.Table:
    """The change rows of records the C extension read (``scan_records`` for a response's
    bytes, ``scan_record_dicts`` for record dicts): its buffers as Arrow arrays. The key columns
    come from the Keys' attributes as the C reader gives them (S unescaped, N and B as
    written): N made canonical and B decoded as :func:`_key_value` does."""
    schema = change_schema(key_attributes)  # first: it checks the key types
    n = int(c["count"])
    attributes = {name: {tag: parts for tag, *parts in tags} for name, tags in c["key_attributes"]}
    key_columns = []
    for name, kind in key_attributes:
        parts = attributes.get(name, {}).get(kind)
        if parts is None:
            key_columns.append(pa.nulls(n, _KEY_ARROW_TYPES[kind]))
            continue
        valid, offsets, data = parts
        values = _texts(n, (valid, offsets, data, None))
        if kind == "N":
            plain = pc.and_(
                pc.match_substring_regex(values, _CANONICAL_NUMBER_FULL),
                pc.less_equal(pc.binary_length(values), 38),
            )
            if not pc.all(plain).as_py():
                values = pa.array(
                    [_key_value({"N": v}, "N") for v in values.to_pylist()], pa.string()
                )
        elif kind == "B":
            values = pa.array([_key_value({"B": v}, "B") for v in values.to_pylist()], pa.binary())
        key_columns.append(values)
    columns = [
        _texts(n, c["event_id"]),
        _texts(n, c["event_name"]),
        _texts(n, c["sequence_number"]),
        _shard_column(shard_ids, 0, n),
        pa.Array.from_buffers(TIMESTAMP_TYPE, n, [None, pa.py_buffer(c["micros"])]),
        pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(c["ttl_delete"])]),
        pa.array([source] * n, pa.string()),
        *key_columns,
        _texts(n, c["_keys"]),
        _texts(n, c["_new_image"]),
        _texts(n, c["_old_image"]),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


_CANONICAL_NUMBER_FULL = "^" + _CANONICAL_NUMBER_RE.decode("ascii") + "$"


def _texts(n: int, parts: tuple[bytes, bytes, bytes, int | None]) -> pa.Array:
    """A string array from the C reader's (validity bitmap, offsets, data, null count)."""
    valid, offsets, data, nulls = parts
    validity = None if nulls == 0 else pa.py_buffer(valid)
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=-1 if nulls is None else nulls,
    )


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


@dataclass
class _Chunk:
    columns: list[pa.Array]  # all but the image columns
    images: _ImageViews | list[pa.Array]


def _too_deep_record(record: Mapping[str, Any], image: str) -> StreamRecordError:
    dyn = record.get("dynamodb") or {}
    return StreamRecordError(
        f"Stream record {str(record.get('eventID'))[:80]!r} (sequence number "
        f"{str(dyn.get('SequenceNumber'))[:48]}) has a {image} nested deeper than DynamoDB's "
        f"{nesting.MAX_LEVELS} levels: DynamoDB never sends one.",
        fix="check that DYNAMO_CDC_ENDPOINT_URL points at DynamoDB Streams; nothing of this "
        "batch was committed.",
    )


def _chunk_columns(
    all_records: list[Mapping[str, Any]],
    offset: int,
    key_attributes: Sequence[tuple[str, str]],
    shard_ids: Sequence[str | None] | str | None,
    source: str,
) -> _Chunk:
    """The change rows of ``all_records[offset : offset + _CHUNK_RECORDS]``."""
    records = all_records[offset : offset + _CHUNK_RECORDS]
    n = len(records)
    dyn = list(map(_DYNAMODB, records))
    event_id = list(map(_EVENT_ID, records))
    event_name = list(map(_EVENT_NAME, records))
    digits = SEQUENCE_DIGITS
    seq = [None if s is None else s.zfill(digits) for s in _gets(dyn, "SequenceNumber")]
    micros = _micros_array(list(map(_CREATION_TIME, dyn)))
    ttl = _ttl_array(_gets(records, "userIdentity"))
    keys = _gets(dyn, "Keys")
    texts = [keys, _gets(dyn, "NewImage"), _gets(dyn, "OldImage")]
    for i, column in enumerate(texts):  # before anything recurses through them
        for j, image in enumerate(column):
            try:
                nesting.check_item(image)
            except nesting.TooDeep:
                raise _too_deep_record(records[j], ("Keys", "NewImage", "OldImage")[i]) from None
    images: _ImageViews | list[pa.Array] | None = _image_chunk(texts)
    if images is None:  # something orjson refuses: image by image
        images = [pa.array(list(map(image_text, column)), pa.string()) for column in texts]
    key_columns = [_key_array(keys, name, kind) for name, kind in key_attributes]
    columns = [
        pa.array(event_id, pa.string()),
        pa.array(event_name, pa.string()),
        pa.array(seq, pa.string()),
        _shard_column(shard_ids, offset, n),
        micros.cast(TIMESTAMP_TYPE),
        ttl,
        pa.array([source] * n, pa.string()),
        *key_columns,
    ]
    return _Chunk(columns, images)


def _shard_column(shard_ids: Sequence[str | None] | str | None, offset: int, n: int) -> pa.Array:
    """The shard_id column of records ``offset`` to ``offset + n``."""
    if shard_ids is None or isinstance(shard_ids, str):
        return pa.array([shard_ids] * n, pa.string())
    return pa.array(shard_ids[offset : offset + n], pa.string())


_DYNAMODB = operator.itemgetter("dynamodb")
_EVENT_ID = operator.itemgetter("eventID")
_EVENT_NAME = operator.itemgetter("eventName")
_CREATION_TIME = operator.itemgetter("ApproximateCreationDateTime")
_TZINFO = operator.attrgetter("tzinfo")
_FAST_TZINFO_TYPES = frozenset({type(None), timezone, ZoneInfo})
_DUMPS_SORTED = functools.partial(orjson.dumps, option=orjson.OPT_SORT_KEYS, default=_b64)


def _micros_array(whens: list[Any]) -> pa.Array:
    """``[_micros(w) for w in whens]`` as int64, computed by Arrow and numpy where they give the
    same numbers (datetimes with fixed-offset or zoneinfo zones, ints and floats; the float
    arithmetic of ``_micros`` is repeated exactly), record by record otherwise."""
    types = set(map(type, whens))
    if types == {datetime} and set(map(type, map(_TZINFO, whens))) <= _FAST_TZINFO_TYPES:
        # Arrow converts to exact UTC microseconds (naive as UTC, like _micros); _micros
        # rounds timestamp() * 1e6, where timestamp() is the double nearest exact/1e6.
        exact = pa.array(whens, TIMESTAMP_TYPE).cast(pa.int64()).to_numpy()
        if len(exact) == 0 or int(np.abs(exact).max()) < 2**53:  # exact as doubles
            return pa.array(np.rint(exact.astype(np.float64) / 1e6 * 1e6).astype(np.int64))
    elif types and types <= {int, float}:
        try:
            scaled = np.rint(np.array(whens, dtype=np.float64) * 1e6)
        except OverflowError:
            scaled = None
        if scaled is not None and bool(np.all((scaled >= -(2.0**63)) & (scaled < 2.0**63))):
            return pa.array(scaled.astype(np.int64))
    return pa.array(list(map(_micros, whens)), pa.int64())


def _ttl_array(identities: list[Any]) -> pa.Array:
    if identities.count(None) == len(identities):
        return pa.array(np.zeros(len(identities), dtype=bool))
    principal = TTL_PRINCIPAL
    return pa.array(
        [
            ident is not None
            and ident.get("Type") == "Service"
            and ident.get("PrincipalId") == principal
            for ident in identities
        ],
        pa.bool_(),
    )


def _gets(mappings: list[Any], key: str, *, none: bool = False) -> list[Any]:
    """``[m.get(key) for m in mappings]`` (with ``none``: None for a None mapping), by a C-level
    ``map`` of ``dict.get`` when all are plain dicts (by far the fastest call)."""
    if set(map(type, mappings)) <= _PLAIN_DICT:
        return list(map(dict.get, mappings, itertools.repeat(key)))
    if none:
        return [None if m is None else m.get(key) for m in mappings]
    return [m.get(key) for m in mappings]


_PLAIN_DICT = frozenset({dict})


def _key_array(keys: list[Any], name: str, kind: str) -> pa.Array:
    avs = _gets(keys, name, none=True)  # None: no Keys, no such key
    if kind == "S":
        values = _gets(avs, "S", none=True)
    else:
        values = [_key_value(av, kind) for av in avs]
    return pa.array(values, _KEY_ARROW_TYPES[kind])


# Records per chunk: a chunk's buffers (a few MB) stay in the CPU cache from one step to the
# next, and in the allocator's heap (bigger ones would be fresh pages from the OS each time).
_CHUNK_RECORDS = 1024

# Between two images in the one list orjson writes: {"":""}. '"":""' is no DynamoDB JSON (no
# empty attribute name, no bare string value) and cannot be inside a JSON string (every '"'
# there is escaped), so it occurs only where it was put, unless an image is not DynamoDB JSON:
# then the count is off and the chunk is written image by image.
_SEPARATOR: dict[str, str] = {"": ""}
_SEPARATOR_SIZE = len(b',{"":""},')
# A set's span in orjson's output (as in _FIXABLE), matched where a set starts.
_SET_SPAN = re.compile(rb'"[SNB]S":\[' + _JSON_STRING + rb"(?:," + _JSON_STRING + rb")*\]")
_SET_FIXES: dict[bytes, bytes] = {}  # set span -> its _fix (b"" when unchanged)
_QUOTE, _COLON, _DOT, _MINUS, _ZERO = ord('"'), ord(":"), ord("."), ord("-"), ord("0")
_MAX_PLAIN = 38  # longest number text _FIXABLE leaves alone


def _image_chunk(columns: list[list[Any]]) -> _ImageViews | None:
    """``pa.array([image_text(x) for x in column], pa.string())`` for each column, as string
    views (:class:`_ImageViews`), or None if ``orjson`` refuses an image or an image is not
    DynamoDB JSON.

    The images are written in record order as one list, separated by ``_SEPARATOR``, by
    ``orjson`` with sorted keys (:func:`_dump_list`). One numpy pass over the ':' of that text
    finds the separators and every spot ``_FIXABLE`` matches (:func:`_edits`); only the texts
    that change are rewritten. The columns are Arrow string views into that text, cast to
    strings: no Python object per image, one copy of the text.
    """
    width = len(columns)
    n = len(columns[0])
    count = n * width
    row: list[Any] = [None] * count
    for c, column in enumerate(columns):
        row[c::width] = column
    mask = list(map(operator.is_not, row, itertools.repeat(None)))
    images = list(itertools.compress(row, mask))
    if not images:
        absent = np.zeros(n, bool)
        return _ImageViews([np.zeros((n, 4), np.int32)] * width, [absent] * width, [])
    items: list[Any] = [_SEPARATOR] * (2 * len(images) - 1)
    items[::2] = images
    raw = _dump_list(items)
    if raw is None or len(raw) >= 2**31:
        return None
    b = np.frombuffer(raw, np.uint8)
    found = _edits(raw, b)
    if found is None:
        return None
    separators, edits = found
    if len(separators) != len(images) - 1:
        return None
    starts = np.empty(len(images), np.int64)
    ends = np.empty(len(images), np.int64)
    starts[0], ends[-1] = 1, len(raw) - 1  # inside '[' ... ']'
    starts[1:] = separators + _SEPARATOR_SIZE
    ends[:-1] = separators
    buffers = [pa.py_buffer(raw)]
    where = np.zeros(len(images), np.int32)  # the data buffer of each text
    if edits:
        rewritten = _rewrite(raw, starts, ends, edits)
        if len(rewritten.data) >= 2**31:
            return None
        buffers.append(pa.py_buffer(rewritten.data))
        where[rewritten.texts] = 1
        starts[rewritten.texts] = rewritten.starts
        ends[rewritten.texts] = rewritten.ends
        b2 = np.frombuffer(rewritten.data, np.uint8)
    else:
        b2 = b
    views = np.zeros((count, 4), np.int32)  # length, prefix, buffer, offset (Arrow's layout)
    views[np.asarray(mask, bool)] = _views(b, b2, starts, ends, where)
    present = np.asarray(mask, bool)
    return _ImageViews(
        [np.ascontiguousarray(views[c::width]) for c in range(width)],
        [present[c::width] for c in range(width)],
        buffers,
    )


@dataclass
class _ImageViews:
    """Image texts of a chunk as Arrow string views: per column, the views and which are
    present, and the data buffers the views point into."""

    views: list[np.ndarray]
    present: list[np.ndarray]
    buffers: list[pa.Buffer]

    def arrays(self) -> list[pa.Array]:
        return _string_arrays(self.views, self.present, self.buffers)


def _string_arrays(
    views: list[np.ndarray], present: list[np.ndarray], buffers: list[pa.Buffer]
) -> list[pa.Array]:
    out = []
    for column_views, here in zip(views, present, strict=True):
        n = len(here)
        nulls = n - int(here.sum())
        validity = pa.py_buffer(np.packbits(here, bitorder="little")) if nulls else None
        column = pa.Array.from_buffers(
            pa.string_view(), n, [validity, pa.py_buffer(column_views), *buffers], nulls
        )
        out.append(column.cast(pa.string()))  # the one copy of the text
    return out


def _join_images(chunks: list[_ImageViews | list[pa.Array]]) -> list[pa.Array]:
    """The image columns of all chunks: the views of all chunks as one array per column (its
    views pointing into every chunk's buffers), cast to strings at once."""
    if not all(isinstance(chunk, _ImageViews) for chunk in chunks):  # some image by image
        parts = [c.arrays() if isinstance(c, _ImageViews) else c for c in chunks]
        return [p[0] if len(p) == 1 else pa.concat_arrays(p) for p in zip(*parts, strict=True)]
    fast = [chunk for chunk in chunks if isinstance(chunk, _ImageViews)]
    views: list[list[np.ndarray]] = [[] for _ in fast[0].views]
    buffers: list[pa.Buffer] = []
    for chunk in fast:
        for column, chunk_views in zip(views, chunk.views, strict=True):
            if buffers:  # buffer indices (of texts over 12 bytes) follow the earlier chunks'
                chunk_views = chunk_views.copy()
                chunk_views[chunk_views[:, 0] > 12, 2] += len(buffers)
            column.append(chunk_views)
        buffers += chunk.buffers
    present = [np.concatenate([c.present[i] for c in fast]) for i in range(len(views))]
    return _string_arrays([np.concatenate(v) for v in views], present, buffers)


# Images per orjson call: orjson first walks each such group unsorted, in the order the
# objects were made (about the order they lie in memory), which loads them into the CPU cache
# faster than the sorted walk that writes the text; a group fits in the cache.
_GROUP = 64


def _dump_list(items: list[Any]) -> bytes | None:
    """``orjson.dumps(items, option=OPT_SORT_KEYS, default=_b64)``, or None if orjson refuses
    an item. Written a group at a time, each group first walked unsorted (``default=len``: it
    only loads the objects into the cache) and discarded."""
    parts: list[memoryview] = []
    try:
        for lo in range(0, len(items), _GROUP):
            group = items[lo : lo + _GROUP]
            try:
                orjson.dumps(group, default=len)
            except TypeError:
                pass  # the real write below decides
            parts.append(memoryview(_DUMPS_SORTED(group))[1:-1])
    except TypeError:
        return None
    return b"".join((b"[", b",".join(parts), b"]"))


def _views(
    b: np.ndarray, b2: np.ndarray, starts: np.ndarray, ends: np.ndarray, where: np.ndarray
) -> np.ndarray:
    """Arrow string views (int32 length, prefix, buffer index, offset) of the texts
    ``[starts, ends)`` in buffer ``where`` (0: ``b``, 1: ``b2``); texts of up to 12 bytes are
    inline (length, then the bytes)."""
    views = np.zeros((len(starts), 4), np.int32)
    lengths = ends - starts
    views[:, 0] = lengths
    raw = views.view(np.uint8).reshape(len(starts), 16)
    for buffer, data in ((0, b), (1, b2)):
        here = where == buffer
        if buffer and not here.any():
            continue
        long_ = np.flatnonzero(here & (lengths > 12))
        raw[long_, 4:8] = data[starts[long_, None] + np.arange(4)]
        views[long_, 2] = buffer
        views[long_, 3] = starts[long_]
        for i in np.flatnonzero(here & (lengths <= 12)).tolist():  # "{}" and such: rare
            raw[i, 4 : 4 + lengths[i]] = data[starts[i] : ends[i]]
    return views


@dataclass
class _Rewritten:
    data: bytes  # the rewritten texts, one after the other
    texts: np.ndarray  # which texts
    starts: np.ndarray  # where each is in data
    ends: np.ndarray


def _rewrite(
    raw: bytes, starts: np.ndarray, ends: np.ndarray, edits: list[tuple[int, int, bytes]]
) -> _Rewritten:
    """The texts holding edits, with the edits applied (edits never cross a text's end)."""
    edits.sort()
    owner = (np.searchsorted(starts, [e[0] for e in edits], side="right") - 1).tolist()
    pieces: list[bytes] = []
    texts, new_starts, new_ends = [], [], []
    size = 0
    current = -1
    done = 0
    for text, (start, end, fixed) in zip(owner, edits, strict=True):
        if text != current:
            if current >= 0:
                pieces.append(raw[done : int(ends[current])])
                size += int(ends[current]) - done
                new_ends.append(size)
            current = text
            texts.append(text)
            new_starts.append(size)
            done = int(starts[text])
        pieces.append(raw[done:start])
        pieces.append(fixed)
        size += start - done + len(fixed)
        done = end
    pieces.append(raw[done : int(ends[current])])
    size += int(ends[current]) - done
    new_ends.append(size)
    return _Rewritten(b"".join(pieces), np.array(texts), np.array(new_starts), np.array(new_ends))


def _edits(raw: bytes, b: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, bytes]]] | None:
    """Where the separators start in ``raw`` (orjson's text of the list of images and
    separators), and the edits ``(start, end, text)`` that make each image's text
    ``_FIXABLE.sub(_fix, text)``.

    ``_FIXABLE`` matches at ``"N":"`` (a number that is not already canonical) and at
    ``"SS":[`` / ``"NS":[`` / ``"BS":[`` (a set): in orjson's output both only occur outside
    JSON strings (inside, every '"' is escaped), so every such spot is one of its matches and
    none overlaps another. They are found here from the positions of ':' with numpy: the
    numbers' texts are classified without Python per number, and each set is looked up in a
    cache of its ``_fix`` (sets recur); only the spans whose text changes are edited.
    """
    if len(b) < 16:
        return None
    colons = np.flatnonzero(b[4:-4] == _COLON) + 4
    after = b[colons + 1]  # most colons are followed by '{' (a map entry, a tag M or L)
    colons = colons[((after == _QUOTE) | (after == ord("["))) & (b[colons - 1] == _QUOTE)]
    after, key = b[colons + 1], b[colons - 2]
    number = colons[(key == ord("N")) & (after == _QUOTE)]
    number = number[b[number - 3] == _QUOTE]
    maybe_set = colons[(key == ord("S")) & (after == ord("["))]
    tag = b[maybe_set - 3]
    maybe_set = maybe_set[
        ((tag == ord("S")) | (tag == ord("N")) | (tag == ord("B"))) & (b[maybe_set - 4] == _QUOTE)
    ]
    separator = colons[(key == _QUOTE) & (after == _QUOTE)]
    separator = separator[
        (b[separator - 3] == ord("{"))
        & (b[separator - 4] == ord(","))
        & (b[separator + 2] == _QUOTE)
        & (b[separator + 3] == ord("}"))
        & (b[separator + 4] == ord(","))
    ]
    edits = _number_edits(raw, b, number + 2)
    edits += _set_edits(raw, (maybe_set - 4).tolist())
    return separator - 4, edits


# Classes of the bytes of a number text, as bits: a digit is 0.
_NUM_DOT, _NUM_MINUS, _NUM_OTHER, _NUM_END = 1, 2, 4, 8
_NUMBER_CLASS = np.full(256, _NUM_OTHER, np.uint8)
_NUMBER_CLASS[ord("0") : ord("9") + 1] = 0
_NUMBER_CLASS[ord(".")] = _NUM_DOT
_NUMBER_CLASS[ord("-")] = _NUM_MINUS
_NUMBER_CLASS[ord('"')] = _NUM_END


def _number_edits(data: bytes, b: np.ndarray, starts: np.ndarray) -> list[tuple[int, int, bytes]]:
    """Edits of the numbers whose texts start at ``starts`` (after ``"N":"``) and are not
    canonical: over 38 characters, or not matching ``_CANONICAL_NUMBER_RE``, which is: '0', or
    an optional '-', then digits without a leading zero, or '0.' and at most six zeros before
    a non-zero digit; then optionally '.' and digits not ending in '0'. Classified a byte of
    every open number per round (most numbers are short)."""
    count = len(starts)
    if not count:
        return []
    length = np.full(count, _MAX_PLAIN + 1, np.int64)
    odd = np.zeros(count, bool)  # a character other than a digit or '.', or '-' after the start
    dots = np.zeros(count, np.int64)
    ids = np.arange(count)  # the numbers still open
    pos = starts.copy()
    for k in range(_MAX_PLAIN + 1):
        cls = _NUMBER_CLASS[b[pos]]  # pos stays in the text: the closing '"' ends it
        closed = cls == _NUM_END
        if closed.any():
            length[ids[closed]] = k
            keep = ~closed
            ids, pos, cls = ids[keep], pos[keep], cls[keep]
            if not len(ids):
                break
        odd[ids] |= cls >= (_NUM_MINUS if k else _NUM_OTHER)
        dots[ids] += cls == _NUM_DOT
        pos += 1
        if 7 <= k < _MAX_PLAIN and len(ids) * 8 < count:  # the few long ones: all the rest
            rest = _MAX_PLAIN - k
            window = _NUMBER_CLASS[b[np.minimum(pos[:, None] + np.arange(rest), len(b) - 1)]]
            end = window == _NUM_END
            closed = end.any(axis=1)
            stop = np.where(closed, end.argmax(axis=1), rest)
            inside = np.arange(rest) < stop[:, None]
            odd[ids] |= ((window >= _NUM_MINUS) & inside).any(axis=1)
            dots[ids] += ((window == _NUM_DOT) & inside).sum(axis=1)
            length[ids[closed]] = k + 1 + stop[closed]
            ids = ids[~closed]
            break
    for i in ids.tolist():  # over 38 characters: not canonical, whatever they hold
        length[i] = data.find(b'"', int(starts[i])) - int(starts[i])
    negative = b[starts] == _MINUS
    size = length - negative  # without the sign
    at = starts + negative
    limit = len(b) - 1
    first, second = b[at], b[np.minimum(at + 1, limit)]
    final = b[np.maximum(starts + length - 1, 0)]
    bad = odd | (length > _MAX_PLAIN) | (dots > 1) | (size <= 0) | (first == _DOT)
    bad |= (first == _ZERO) & (size > 1) & (second != _DOT)  # a leading zero: "007"
    bad |= negative & (size == 1) & (first == _ZERO)  # "-0"
    bad |= (dots == 1) & ((final == _ZERO) | (final == _DOT))  # "1.50", "1."
    small = np.flatnonzero(~bad & (first == _ZERO) & (second == _DOT) & (size >= 9))
    if len(small):  # "0." and 7 zeros: too small for plain notation
        zeros = b[at[small, None] + np.arange(2, 9)] == _ZERO
        bad[small[zeros.all(axis=1)]] = True
    edits = []
    for start, n in zip(starts[bad].tolist(), length[bad].tolist(), strict=True):
        fixed = b'"N":"' + _canonical_number_bytes(data[start : start + n]) + b'"'
        if fixed != data[start - 5 : start + n + 1]:
            edits.append((start - 5, start + n + 1, fixed))
    return edits


def _set_edits(data: bytes, starts: list[int]) -> list[tuple[int, int, bytes]]:
    """Edits of the sets starting at ``starts`` (``"SS":[``...) that ``_fix`` changes."""
    if not starts:
        return []
    cache = _SET_FIXES
    # The end is the first ']' unless a member holds one; only whole sets are in the cache,
    # so a hit is a whole set. Cached b"" means "unchanged".
    ends = list(map(data.find, itertools.repeat(b"]"), starts))
    spans = list(map(data.__getitem__, map(slice, starts, map(_PLUS_ONE, ends))))
    fixes = list(map(cache.get, spans))
    if fixes.count(b"") == len(fixes):
        return []
    edits = []
    for start, end, span, fixed in zip(starts, ends, spans, fixes, strict=True):
        end += 1
        if fixed is None:
            match = _SET_SPAN.match(data, start)
            if match is None:
                continue  # not a list of strings (not DynamoDB JSON): _FIXABLE skips it too
            span, end = match.group(), match.end()
            fixed = cache.get(span)
            if fixed is None:
                whole = _FIXABLE.match(span)
                assert whole is not None and whole.end() == len(span)
                fixed = _fix(whole)
                fixed = b"" if fixed == span else fixed
                if len(cache) >= 65536:
                    cache.clear()
                cache[span] = fixed
        if fixed:
            edits.append((start, end, fixed))
    return edits


_PLUS_ONE = functools.partial(operator.add, 1)
