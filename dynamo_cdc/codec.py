"""DynamoDB attribute values: DynamoDB JSON, Ion, boto3 records, Python values and canonical text.

The internal item representation, used by every module of this package, is a ``dict`` from
attribute name to a DynamoDB JSON attribute value exactly as an export writes it: one type tag
per value, numbers as text, binary as **base64 text**::

    {"pk": {"S": "a"}, "n": {"N": "1.5"}, "b": {"B": "aGk="}, "ss": {"SS": ["x", "y"]},
     "m": {"M": {"l": {"L": [{"NULL": true}, {"BOOL": false}]}}}}

Conversions (one test per row in ``tests/unit/test_codec.py``):

=====  ==========================  ==========================  ==========================
Tag    DynamoDB JSON value         Python (``deserialize_*``)  Ion (exports)
=====  ==========================  ==========================  ==========================
S      ``"text"``                  ``str``                     string
N      ``"1.5"`` (number as text)  ``decimal.Decimal``         decimal (int accepted)
B      ``"aGk="`` (base64 text)    ``bytes``                   blob
BOOL   ``true`` / ``false``        ``bool``                    bool
NULL   ``true``                    ``None``                    ``null``
M      ``{"k": <value>}``          ``dict``                    struct
L      ``[<value>, ...]``          ``list``                    list
SS     ``["a", "b"]``              ``frozenset[str]``          ``$dynamodb_SS::[...]``
NS     ``["1", "2.5"]``            ``frozenset[Decimal]``      ``$dynamodb_NS::[...]``
BS     ``["aGk=", ...]``           ``frozenset[bytes]``        ``$dynamodb_BS::[...]``
=====  ==========================  ==========================  ==========================

Numbers follow DynamoDB's limits: at most 38 significant digits, magnitude between 1E-130 and
9.9999999999999999999999999999999999999E+125 (or zero). Bad numbers and unknown tags raise
:class:`~dynamo_cdc.errors.CodecError` naming the attribute path. Floats are refused, as boto3
refuses them: a float cannot carry a DynamoDB number exactly.

Canonical number text (:func:`canonical_number_text`): trailing zeros dropped, ``-0`` written
``0``, plain notation while the number is short (``600``, ``1.5``, ``0.00012``, integers of up
to 39 digits) and ``<d>[.<ddd>]E<+|-><exp>`` beyond (``1E-130``, ``9.5E+125``). Every canonical
text is a valid JSON number and a valid DynamoDB number. Items are compared by decoded value, so
the text only needs to be stable.

Canonical item text (:func:`item_to_json_text`, the ``_item`` column): UTF-8 JSON, compact,
keys sorted at every level, numbers canonical, binary re-encoded as standard padded base64, set
members sorted (SS by code point, NS by value, BS by bytes).

Ion lines are written as DynamoDB's ION exports write them (``$ion_1_0 {Item:{...}}``), numbers
in the style of the documented examples and of ion-java's text writer: ``103.``, ``6d2``,
``1.5``, ``0.001``, ``1d-130``.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from dynamo_cdc.errors import CodecError

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

STRING = "S"
NUMBER = "N"
BINARY = "B"
BOOLEAN = "BOOL"
NULL = "NULL"
MAP = "M"
LIST = "L"
STRING_SET = "SS"
NUMBER_SET = "NS"
BINARY_SET = "BS"

TYPE_TAGS: frozenset[str] = frozenset(
    {STRING, NUMBER, BINARY, BOOLEAN, NULL, MAP, LIST, STRING_SET, NUMBER_SET, BINARY_SET}
)

MAX_DIGITS = 38
MIN_EXPONENT = -130  # smallest adjusted exponent of a non-zero number (1E-130)
MAX_EXPONENT = 125  # largest adjusted exponent (9.99...E+125)

# Arithmetic on DynamoDB numbers never rounds silently: every inexact operation raises.
DYNAMODB_CONTEXT = decimal.Context(
    prec=MAX_DIGITS,
    Emin=MIN_EXPONENT,
    Emax=MAX_EXPONENT,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.Clamped,
        decimal.Overflow,
        decimal.Inexact,
        decimal.Rounded,
        decimal.Underflow,
        decimal.InvalidOperation,
        decimal.DivisionByZero,
    ],
)

# Texts canonical_number_text would return unchanged: zero, or plain notation with no sign
# other than "-", no leading or trailing zeros, at most 39 integer digits and at most 6 zeros
# after the point before the first significant digit.
_CANONICAL_PLAIN_RE = re.compile(
    r"0|-?(?:[1-9]\d{0,38}(?:\.\d*[1-9])?|0\.0{0,6}[1-9](?:\d*[1-9])?)"
)


def _significant_digits(plain: str) -> int:
    return len(plain.lstrip("-").replace(".", "").lstrip("0").rstrip("0"))


# Decimal() also accepts "NaN", "Infinity", spaces and underscores; DynamoDB does not.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

ION_SET_ANNOTATIONS = {
    "$dynamodb_SS": STRING_SET,
    "$dynamodb_NS": NUMBER_SET,
    "$dynamodb_BS": BINARY_SET,
}
_ION_ANNOTATION_OF_SET = {tag: name for name, tag in ION_SET_ANNOTATIONS.items()}


# --------------------------------------------------------------------------------------------
# Numbers


def parse_number(text: Any) -> Decimal:
    """Parse and validate the text of a DynamoDB number.

    Args:
        text: the ``N`` text, e.g. ``"1.5"``, ``"-1E+125"``.

    Returns:
        The exact value as a Decimal.

    Raises:
        CodecError: not a number DynamoDB accepts (syntax, more than 38 significant digits,
            magnitude outside 1E-130 .. 9.99E+125).
    """
    if not isinstance(text, str) or _NUMBER_RE.fullmatch(text) is None:
        raise CodecError(f"{text!r} is not a DynamoDB number.")
    try:
        value = Decimal(text)
    except decimal.InvalidOperation:  # an exponent past what Decimal holds
        raise CodecError(f"{text[:60]!r} is outside DynamoDB's number range.") from None
    check_number(value)
    return value


def check_number(value: Decimal) -> None:
    """Raise :class:`CodecError` unless ``value`` is a number DynamoDB can store."""
    if not value.is_finite():
        raise CodecError(f"{value!r} is not a DynamoDB number (NaN and Infinity are not allowed).")
    if not value:
        return
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    significant = len(digits)
    # Trailing zeros are not significant (DynamoDB normalises 1.500 to 1.5, 600 to 6E+2).
    while significant > 1 and digits[significant - 1] == 0:
        significant -= 1
    if significant > MAX_DIGITS:
        raise CodecError(
            f"{value} has {significant} significant digits; DynamoDB keeps at most {MAX_DIGITS}."
        )
    adjusted = value.adjusted()
    if adjusted > MAX_EXPONENT or adjusted < MIN_EXPONENT:
        raise CodecError(
            f"{value} is outside DynamoDB's number range (1E-130 to 9.99E+125 in magnitude)."
        )


def _trimmed(value: Decimal) -> tuple[str, str, int]:
    """(sign prefix, coefficient digits without trailing zeros, exponent) of a non-zero number."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    end = len(digits)
    while end > 1 and digits[end - 1] == 0:
        end -= 1
    return ("-" if sign else ""), "".join(map(str, digits[:end])), exponent + len(digits) - end


def canonical_number_text(value: Decimal | str) -> str:
    """The canonical text of a DynamoDB number (see the module docstring).

    Args:
        value: a Decimal, or a number text (validated).

    Returns:
        Text that DynamoDB accepts, that is a valid JSON number and that decodes to the same
        value; equal values give equal texts.
    """
    if isinstance(value, str):
        if _CANONICAL_PLAIN_RE.fullmatch(value) and _significant_digits(value) <= MAX_DIGITS:
            return value  # already canonical: most numbers AWS writes
        value = parse_number(value)
    if not value:
        return "0"
    prefix, coefficient, exponent = _trimmed(value)
    end = len(coefficient)
    adjusted = exponent + end - 1
    if exponent >= 0:
        if adjusted < 39:
            return prefix + coefficient + "0" * exponent
    elif adjusted >= -7:
        point = end + exponent  # digits before the decimal point
        if point > 0:
            return prefix + coefficient[:point] + "." + coefficient[point:]
        return prefix + "0." + "0" * (-point) + coefficient
    mantissa = coefficient[0] + ("." + coefficient[1:] if end > 1 else "")
    return f"{prefix}{mantissa}E{adjusted:+d}"


def _number_text_of(value: Any) -> str:
    if isinstance(value, Decimal):
        check_number(value)
        return canonical_number_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
        check_number(number)
        return canonical_number_text(number)
    if isinstance(value, float):
        raise CodecError(
            f"float {value!r} cannot be stored exactly in DynamoDB.",
            fix="pass a decimal.Decimal (e.g. Decimal(str(x))) or an int.",
        )
    raise CodecError(f"{value!r} ({type(value).__name__}) is not a number.")


# --------------------------------------------------------------------------------------------
# Binary


def decode_binary(value: Any) -> bytes:
    """Bytes of a ``B`` value given as base64 text (exports) or as bytes (boto3)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise CodecError(f"binary value {value[:40]!r} is not valid base64: {exc}.") from exc
    raise CodecError(f"binary value of type {type(value).__name__} is neither base64 nor bytes.")


def encode_binary(value: bytes | bytearray | memoryview) -> str:
    """Standard padded base64 text of ``value`` (as exports write it)."""
    return base64.b64encode(value).decode("ascii")


def _canonical_binary_text(value: Any) -> str:
    return encode_binary(decode_binary(value))


# --------------------------------------------------------------------------------------------
# DynamoDB JSON <-> Python values


def _single(av: Any) -> tuple[str, Any]:
    try:
        ((tag, value),) = av.items()  # one C-level unpack: the hot path of every conversion
    except (AttributeError, ValueError):
        raise CodecError(
            f"{av!r:.80} is not an attribute value (one type tag, one value)."
        ) from None
    return tag, value


def _wrap(exc: CodecError, segment: str) -> CodecError:
    """Prefix the attribute path of an error raised deeper in a value (only on the error path)."""
    path = [segment, *getattr(exc, "path", [])]
    reason = getattr(exc, "reason", str(exc))
    text = path[0] + "".join(p if p.startswith("[") else "." + p for p in path[1:])
    wrapped = CodecError(f"attribute {text}: {reason}")
    wrapped.path = path  # type: ignore[attr-defined]
    wrapped.reason = reason  # type: ignore[attr-defined]
    return wrapped


def deserialize_value(av: AttributeValue) -> Any:
    """Decode one DynamoDB JSON attribute value into a Python value (see the module table).

    Raises:
        CodecError: unknown type tag, malformed value or bad number.
    """
    tag, value = _single(av)
    if tag == STRING:
        if not isinstance(value, str):
            raise CodecError(f"S value {value!r:.80} is not a string.")
        return value
    if tag == NUMBER:
        return parse_number(value)
    if tag == BOOLEAN:
        if not isinstance(value, bool):
            raise CodecError(f"BOOL value {value!r:.80} is not true or false.")
        return value
    if tag == NULL:
        if value is not True:
            raise CodecError(f"NULL value {value!r:.80} is not true.")
        return None
    if tag == BINARY:
        return decode_binary(value)
    if tag == MAP:
        if not isinstance(value, dict):
            raise CodecError(f"M value {value!r:.80} is not an object.")
        return _deserialize_attributes(value)
    if tag == LIST:
        if not isinstance(value, list):
            raise CodecError(f"L value {value!r:.80} is not an array.")
        items = []
        for index, inner in enumerate(value):
            try:
                items.append(deserialize_value(inner))
            except CodecError as exc:
                raise _wrap(exc, f"[{index}]") from None
        return items
    if tag in (STRING_SET, NUMBER_SET, BINARY_SET):
        if not isinstance(value, list) or not value:
            raise CodecError(f"{tag} value {value!r:.80} is not a non-empty array.")
        if tag == STRING_SET:
            if not all(isinstance(member, str) for member in value):
                raise CodecError(f"SS value {value!r:.80} has a member that is not a string.")
            return frozenset(value)
        if tag == NUMBER_SET:
            return frozenset(parse_number(member) for member in value)
        return frozenset(decode_binary(member) for member in value)
    raise CodecError(f"unknown type tag {tag!r}; DynamoDB has {', '.join(sorted(TYPE_TAGS))}.")


def deserialize_item(item: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """Decode a whole item (internal representation) into Python values.

    Raises:
        CodecError: naming the attribute path of the first bad value.
    """
    if not isinstance(item, Mapping):
        raise CodecError(f"an item must be an object of attributes, not {type(item).__name__}.")
    return _deserialize_attributes(item)


def _deserialize_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """Decode each value of an item or a map; an error names the attribute's path."""
    out = {}
    for name, av in attributes.items():
        try:
            out[name] = deserialize_value(av)
        except CodecError as exc:
            raise _wrap(exc, name) from None
    return out


def serialize_value(value: Any) -> AttributeValue:
    """Encode a Python value as a DynamoDB JSON attribute value (binary as base64 text).

    ``str`` -> S, ``bool`` -> BOOL, ``int``/``Decimal`` -> N, ``bytes`` -> B, ``None`` -> NULL,
    mappings -> M, lists and tuples -> L, non-empty sets of str / numbers / bytes -> SS / NS / BS.

    Raises:
        CodecError: floats, empty or mixed sets, non-string map keys, other types.
    """
    if isinstance(value, str):
        return {STRING: value}
    if isinstance(value, bool):
        return {BOOLEAN: value}
    if value is None:
        return {NULL: True}
    if isinstance(value, int | Decimal | float):
        return {NUMBER: _number_text_of(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {BINARY: encode_binary(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, inner in value.items():
            if not isinstance(key, str):
                raise CodecError(f"map key {key!r} is not a string.")
            try:
                out[key] = serialize_value(inner)
            except CodecError as exc:
                raise _wrap(exc, key) from None
        return {MAP: out}
    if isinstance(value, list | tuple):
        values = []
        for index, inner in enumerate(value):
            try:
                values.append(serialize_value(inner))
            except CodecError as exc:
                raise _wrap(exc, f"[{index}]") from None
        return {LIST: values}
    if isinstance(value, set | frozenset):
        return _serialize_set(value)
    raise CodecError(f"{type(value).__name__} values cannot be stored in DynamoDB.")


def _serialize_set(value: set[Any] | frozenset[Any]) -> AttributeValue:
    if not value:
        raise CodecError("DynamoDB does not store empty sets.", fix="omit the attribute.")
    if all(isinstance(member, str) for member in value):
        return {STRING_SET: sorted(value)}
    if all(
        isinstance(member, int | Decimal | float) and not isinstance(member, bool)
        for member in value
    ):
        return {NUMBER_SET: [_number_text_of(member) for member in sorted(value)]}
    if all(isinstance(member, bytes | bytearray | memoryview) for member in value):
        return {BINARY_SET: [encode_binary(member) for member in sorted(map(bytes, value))]}
    raise CodecError("a set must hold only strings, only numbers or only bytes.")


def serialize_item(item: Mapping[str, Any]) -> Item:
    """Encode a dict of Python values as an item (internal representation).

    Raises:
        CodecError: naming the attribute of the first value that cannot be stored.
    """
    out = {}
    for name, value in item.items():
        if not isinstance(name, str) or not name:
            raise CodecError(f"attribute name {name!r} must be a non-empty string.")
        try:
            out[name] = serialize_value(value)
        except CodecError as exc:
            raise _wrap(exc, name) from None
    return out


# --------------------------------------------------------------------------------------------
# boto3 records


def _normalize_stream_value(av: AttributeValue) -> AttributeValue:
    tag, value = _single(av)
    if tag == BINARY:
        return {BINARY: value if isinstance(value, str) else encode_binary(value)}
    if tag == BINARY_SET:
        return {BINARY_SET: [m if isinstance(m, str) else encode_binary(m) for m in value]}
    if tag == MAP:
        return {MAP: {k: _normalize_stream_value(v) for k, v in value.items()}}
    if tag == LIST:
        return {LIST: [_normalize_stream_value(v) for v in value]}
    return av


def normalize_stream_item(item: Mapping[str, AttributeValue]) -> Item:
    """Convert an item from a boto3 low-level client into the internal representation.

    boto3 (GetItem, Scan, Query, DynamoDB Streams GetRecords) returns ``B`` and ``BS`` members
    as ``bytes``; exports and this package use base64 text. Idempotent: values already in base64
    text are kept. Other values are shared with the input, not copied.
    """
    return {name: _normalize_stream_value(av) for name, av in item.items()}


def to_boto3_item(item: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """The inverse of :func:`normalize_stream_item`: binary as bytes, for boto3 write calls."""
    return {name: _to_boto3_value(av) for name, av in item.items()}


def _to_boto3_value(av: AttributeValue) -> AttributeValue:
    tag, value = _single(av)
    if tag == BINARY:
        return {BINARY: decode_binary(value)}
    if tag == BINARY_SET:
        return {BINARY_SET: [decode_binary(m) for m in value]}
    if tag == MAP:
        return {MAP: {k: _to_boto3_value(v) for k, v in value.items()}}
    if tag == LIST:
        return {LIST: [_to_boto3_value(v) for v in value]}
    return av


# --------------------------------------------------------------------------------------------
# Canonical DynamoDB JSON text


def canonical_value(av: AttributeValue) -> AttributeValue:
    """The canonical form of one attribute value (numbers, binary and set order normalised).

    Raises:
        CodecError: malformed value.
    """
    tag, value = _single(av)
    if tag == STRING or tag == BOOLEAN or tag == NULL:
        return av
    if tag == NUMBER:
        return {NUMBER: canonical_number_text(value)}
    if tag == BINARY:
        return {BINARY: _canonical_binary_text(value)}
    if tag == MAP:
        if not isinstance(value, dict):
            raise CodecError(f"M value {value!r:.80} is not an object.")
        return {MAP: {k: canonical_value(v) for k, v in value.items()}}
    if tag == LIST:
        if not isinstance(value, list):
            raise CodecError(f"L value {value!r:.80} is not an array.")
        return {LIST: [canonical_value(v) for v in value]}
    if tag == STRING_SET:
        return {STRING_SET: sorted(value)}
    if tag == NUMBER_SET:
        numbers = sorted(parse_number(member) for member in value)
        return {NUMBER_SET: [canonical_number_text(n) for n in numbers]}
    if tag == BINARY_SET:
        members = sorted(decode_binary(member) for member in value)
        return {BINARY_SET: [encode_binary(m) for m in members]}
    raise CodecError(f"unknown type tag {tag!r}; DynamoDB has {', '.join(sorted(TYPE_TAGS))}.")


def canonical_item(item: Mapping[str, AttributeValue]) -> Item:
    """The canonical form of an item (see :func:`canonical_value`)."""
    out = {}
    for name, av in item.items():
        try:
            out[name] = canonical_value(av)
        except CodecError as exc:
            raise _wrap(exc, name) from None
    return out


def item_to_json_bytes(item: Mapping[str, AttributeValue]) -> bytes:
    """UTF-8 bytes of :func:`item_to_json_text`."""
    try:
        return orjson.dumps(canonical_item(item), option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson: str with lone surrogates, non-str keys, ...
        raise CodecError(f"item cannot be written as JSON: {exc}.") from exc


def item_to_json_text(item: Mapping[str, AttributeValue]) -> str:
    """Canonical DynamoDB JSON text of an item, as stored in the ``_item`` column.

    Deterministic: keys sorted at every level, compact separators, numbers canonical, set
    members sorted, non-ASCII characters kept as UTF-8.
    """
    return item_to_json_bytes(item).decode("utf-8")


def item_from_json_text(text: str | bytes, *, validate: bool = False) -> Item:
    """Parse DynamoDB JSON text of one item (e.g. an ``_item`` value).

    Args:
        text: JSON object of attributes.
        validate: also check every value (tags, numbers, base64), at a cost.

    Raises:
        CodecError: not JSON, not an object, or (with ``validate``) a bad value.
    """
    try:
        item = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"item text is not JSON: {exc}.") from exc
    if not isinstance(item, dict):
        raise CodecError(f"item text is JSON but not an object: {str(text)[:80]!r}.")
    if validate:
        deserialize_item(item)
    return item


# --------------------------------------------------------------------------------------------
# Plain JSON (typed view of maps, lists and sets)


def _plain_number(text: Any) -> orjson.Fragment:
    if isinstance(text, str) and _CANONICAL_PLAIN_RE.fullmatch(text):
        return orjson.Fragment(text)  # canonical plain text is a JSON number as it stands
    return orjson.Fragment(canonical_number_text(text))


def _plain(av: AttributeValue) -> Any:
    # Hot for maps and lists in the typed view: the tag unpack is inlined on purpose.
    try:
        ((tag, value),) = av.items()
    except (AttributeError, ValueError):
        tag, value = _single(av)
    if tag == STRING or tag == BOOLEAN:
        return value
    if tag == MAP:
        # Strings are the most common leaves: take them without a call.
        return {k: v[STRING] if STRING in v else _plain(v) for k, v in value.items()}
    if tag == NUMBER:
        return _plain_number(value)
    if tag == LIST:
        return [v[STRING] if STRING in v else _plain(v) for v in value]
    if tag == NULL:
        return None
    if tag == BINARY:
        return _canonical_binary_text(value)
    canonical = canonical_value(av)[tag]
    if tag == NUMBER_SET:
        return [orjson.Fragment(member) for member in canonical]
    return canonical


def value_to_plain_json(av: AttributeValue) -> str:
    """Plain JSON text of a value: no type tags, numbers as their exact decimal text.

    Maps -> objects (sorted keys), lists -> arrays, sets -> sorted arrays, binary -> base64
    strings, NULL -> null. Lossy on purpose (a string ``"1"`` and a number ``1`` differ, but a
    set and a list look alike): it is for the typed view; ``_item`` keeps the truth.
    """
    try:
        return orjson.dumps(_plain(av), option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except TypeError as exc:
        raise CodecError(f"value cannot be written as JSON: {exc}.") from exc


def value_to_text(av: AttributeValue) -> str | None:
    """Text form of a value for a column whose type differs between items.

    S -> the string, N -> canonical number text, B -> base64, BOOL -> ``true``/``false``,
    NULL -> None (a null cell), M / L / sets -> plain JSON (:func:`value_to_plain_json`).
    """
    tag, value = _single(av)
    if tag == STRING:
        return value
    if tag == NUMBER:
        return canonical_number_text(value)
    if tag == NULL:
        return None
    if tag == BOOLEAN:
        return "true" if value else "false"
    if tag == BINARY:
        return _canonical_binary_text(value)
    return value_to_plain_json(av)


# --------------------------------------------------------------------------------------------
# Ion


_ion: dict[str, Any] = {}


def _ion_modules() -> tuple[Any, Any]:
    # Imported once, lazily: amazon.ion is only needed for ION exports.
    if not _ion:
        from amazon.ion import simpleion
        from amazon.ion.core import IonType
        from amazon.ion.simple_types import IonPyNull

        model = simpleion.IonPyValueModel
        _ion.update(
            simpleion=simpleion,
            IonType=IonType,
            IonPyNull=IonPyNull,
            fast_model=model.MAY_BE_BARE | model.STRUCT_AS_STD_DICT,
        )
    return _ion["simpleion"], _ion["IonType"]


def _is_ion_null(value: Any) -> bool:
    _ion_modules()
    return value is None or isinstance(value, _ion["IonPyNull"])


def ion_value_to_av(value: Any) -> AttributeValue:
    """Convert one value read by ``amazon.ion.simpleion`` into a DynamoDB JSON attribute value.

    Accepts the IonPy objects of the default value model and the bare Python values of
    ``IonPyValueModel.MAY_BE_BARE | STRUCT_AS_STD_DICT`` (which reads about 3x faster).
    Ion int and decimal both become N (canonical text); lists annotated ``$dynamodb_SS`` /
    ``$dynamodb_NS`` / ``$dynamodb_BS`` become sets; blobs become base64 text.

    Raises:
        CodecError: an Ion type DynamoDB exports never write (float, timestamp, symbol, ...).
    """
    # Bare values first, by exact type: the common case with the fast value model.
    bare = type(value)
    if bare is str:
        return {STRING: value}
    if bare is Decimal:
        return {NUMBER: _ion_number(value)}
    if bare is dict:
        return {MAP: _ion_fields(value.items())}
    if bare is bool:
        return {BOOLEAN: value}
    if bare is list:
        return {LIST: _ion_members(value)}
    if bare is int:
        return {NUMBER: _ion_number(Decimal(value))}
    if bare is bytes:
        return {BINARY: encode_binary(value)}
    if value is None:
        return {NULL: True}
    return _ion_py_value_to_av(value)


def _ion_number(number: Decimal) -> str:
    check_number(number)
    return canonical_number_text(number)


def _ion_fields(fields: Iterable[tuple[Any, Any]]) -> dict[str, AttributeValue]:
    out = {}
    for key, inner in fields:
        key = str(key)
        try:
            out[key] = ion_value_to_av(inner)
        except CodecError as exc:
            raise _wrap(exc, key) from None
    return out


def _ion_members(values: Iterable[Any]) -> list[AttributeValue]:
    members = []
    for index, inner in enumerate(values):
        try:
            members.append(ion_value_to_av(inner))
        except CodecError as exc:
            raise _wrap(exc, f"[{index}]") from None
    return members


def _ion_py_value_to_av(value: Any) -> AttributeValue:
    _, ion_type = _ion_modules()
    kind = getattr(value, "ion_type", None)
    if kind is None:
        raise CodecError(f"{type(value).__name__} {value!r:.60} is not a DynamoDB value.")
    if kind == ion_type.NULL:
        return {NULL: True}
    if _is_ion_null(value):
        raise CodecError(f"typed Ion null (null.{kind.name.lower()}) is not a DynamoDB value.")
    if kind == ion_type.STRING:
        return {STRING: str(value)}
    if kind == ion_type.DECIMAL or kind == ion_type.INT:
        return {NUMBER: _ion_number(Decimal(value))}
    if kind == ion_type.BOOL:
        return {BOOLEAN: bool(value)}
    if kind == ion_type.BLOB:
        return {BINARY: encode_binary(bytes(value))}
    if kind == ion_type.STRUCT:
        return {MAP: _ion_fields(value.items())}
    if kind == ion_type.LIST:
        annotations = [getattr(a, "text", a) for a in getattr(value, "ion_annotations", ())]
        set_tag = ION_SET_ANNOTATIONS.get(annotations[0]) if annotations else None
        if annotations and set_tag is None:
            raise CodecError(f"unknown Ion list annotation {annotations[0]!r}.")
        members = _ion_members(value)
        if set_tag is None:
            return {LIST: members}
        member_tag = {STRING_SET: STRING, NUMBER_SET: NUMBER, BINARY_SET: BINARY}[set_tag]
        if not members or any(member_tag not in m for m in members):
            raise CodecError(f"Ion {annotations[0]} list must hold only {member_tag} values.")
        return {set_tag: [m[member_tag] for m in members]}
    raise CodecError(f"Ion {kind.name} values do not occur in DynamoDB exports.")


def ion_item_to_item(struct: Any) -> Item:
    """Convert an Ion struct of attributes (the ``Item`` of an export line) into an item.

    Args:
        struct: the attributes struct, or a whole line's top-level struct ``{Item: {...}}``
            (then its ``Item`` is used), or the text of one line.

    Raises:
        CodecError: naming the attribute path of a value that is not a DynamoDB value.
    """
    if isinstance(struct, str | bytes):
        record = ion_line_to_record(struct)
        if "Item" not in record:
            raise CodecError("Ion line has no Item field.")
        return record["Item"]
    if "Item" in struct and len(struct) == 1 and _is_struct(struct["Item"]):
        struct = struct["Item"]
    av = ion_value_to_av(struct)
    if MAP not in av:
        raise CodecError("an Ion item must be a struct of attributes.")
    return av[MAP]


def _is_struct(value: Any) -> bool:
    _, ion_type = _ion_modules()
    return isinstance(value, dict) or getattr(value, "ion_type", None) == ion_type.STRUCT


_ION_IMAGES = ("Item", "Keys", "NewImage", "OldImage")
_ION_BUFFER = 1 << 20


def ion_line_to_record(line: str | bytes) -> dict[str, Any]:
    """Parse one line of an ION export into plain Python.

    ``Item``, ``Keys``, ``NewImage`` and ``OldImage`` become items (internal representation);
    ``Metadata`` becomes a dict of plain values (``WriteTimestampMicros`` as int).

    Raises:
        CodecError: not Ion, not one struct, or a value that is not a DynamoDB value.
    """
    simpleion, ion_type = _ion_modules()
    try:
        # The C reader refuses text values over its buffer (4 KB by default); an item can be
        # 400 KB, and its base64 blobs a third longer.
        value = simpleion.loads(
            line,
            text_buffer_size_limit=max(_ION_BUFFER, len(line)),
            # Plain Python values where Ion has no annotation (3x faster to read); the
            # annotated set lists stay IonPyList with their annotations.
            value_model=_ion["fast_model"],
        )
    except Exception as exc:  # amazon.ion raises plain Exceptions / IonException
        raise CodecError(f"line is not Ion text: {exc}.") from exc
    if not isinstance(value, dict):
        raise CodecError("an Ion export line must hold one struct.")
    record: dict[str, Any] = {}
    for key, inner in value.items():
        key = str(key)
        if key in _ION_IMAGES:
            try:
                record[key] = ion_item_to_item(inner)
            except CodecError as exc:
                raise _wrap(exc, key) from None
        elif key == "Metadata":
            record[key] = {str(k): _ion_plain(v) for k, v in inner.items()}
        else:
            record[key] = _ion_plain(inner)
    return record


def _ion_plain(value: Any) -> Any:
    _, ion_type = _ion_modules()
    kind = getattr(value, "ion_type", None)
    if kind is None:  # a bare value of the fast value model
        if isinstance(value, dict):
            return {str(k): _ion_plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [_ion_plain(v) for v in value]
        return value
    if kind == ion_type.NULL or _is_ion_null(value):
        return None
    if kind == ion_type.INT:
        return int(value)
    if kind == ion_type.BOOL:
        return bool(value)
    if kind == ion_type.DECIMAL:
        return Decimal(value)
    if kind == ion_type.STRUCT:
        return {str(k): _ion_plain(v) for k, v in value.items()}
    if kind == ion_type.LIST:
        return [_ion_plain(v) for v in value]
    if kind == ion_type.BLOB:
        return bytes(value)
    return str(value) if kind in (ion_type.STRING, ion_type.SYMBOL) else value


def ion_decimal_text(value: Decimal | str) -> str:
    """Ion text of a DynamoDB number, as DynamoDB's ION exports write it.

    Trailing zeros go into the exponent: 103 -> ``103.``, 600 -> ``6d2``, 1.5 -> ``1.5``,
    0.001 -> ``0.001``, 1E-130 -> ``1d-130``, zero -> ``0.``.
    """
    if isinstance(value, str):
        value = parse_number(value)
    if not value:
        return "0."
    prefix, coefficient, exponent = _trimmed(value)
    end = len(coefficient)
    if exponent == 0:
        return prefix + coefficient + "."
    if exponent > 0:
        return f"{prefix}{coefficient}d{exponent}"
    point = end + exponent
    if point > 0:
        return prefix + coefficient[:point] + "." + coefficient[point:]
    if exponent + end - 1 >= -6:
        return prefix + "0." + "0" * (-point) + coefficient
    return f"{prefix}{coefficient}d{exponent}"


_ION_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ION_KEYWORDS = frozenset({"null", "true", "false", "nan"})
_ION_ESCAPES = {
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\x00": "\\0",
}
_ION_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f\\\"']")


def _ion_escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ION_ESCAPES:
        return _ION_ESCAPES[char]
    if char in "\"'":
        return "\\" + char
    return f"\\x{ord(char):02x}"


def _ion_string(text: str) -> str:
    return '"' + _ION_NEEDS_ESCAPE.sub(_ion_escape_char, text) + '"'


def _ion_symbol(name: str) -> str:
    if _ION_IDENTIFIER.fullmatch(name) and name not in _ION_KEYWORDS:
        return name
    return "'" + _ION_NEEDS_ESCAPE.sub(_ion_escape_char, name) + "'"


def _ion_text(av: AttributeValue, out: list[str]) -> None:
    tag, value = _single(av)
    if tag == STRING:
        out.append(_ion_string(value))
    elif tag == NUMBER:
        out.append(ion_decimal_text(value))
    elif tag == BOOLEAN:
        out.append("true" if value else "false")
    elif tag == NULL:
        out.append("null")
    elif tag == BINARY:
        out.append("{{" + _canonical_binary_text(value) + "}}")
    elif tag == MAP:
        _ion_struct(value, out)
    elif tag == LIST:
        out.append("[")
        for index, inner in enumerate(value):
            if index:
                out.append(",")
            _ion_text(inner, out)
        out.append("]")
    elif tag in _ION_ANNOTATION_OF_SET:
        members = canonical_value(av)[tag]
        if tag == STRING_SET:
            texts = [_ion_string(m) for m in members]
        elif tag == NUMBER_SET:
            texts = [ion_decimal_text(m) for m in members]
        else:
            texts = ["{{" + m + "}}" for m in members]
        out.append(_ION_ANNOTATION_OF_SET[tag] + "::[" + ",".join(texts) + "]")
    else:
        raise CodecError(f"unknown type tag {tag!r}; DynamoDB has {', '.join(sorted(TYPE_TAGS))}.")


def _ion_struct(attributes: Mapping[str, AttributeValue], out: list[str]) -> None:
    out.append("{")
    for index, name in enumerate(sorted(attributes)):
        if index:
            out.append(",")
        out.append(_ion_symbol(name))
        out.append(":")
        try:
            _ion_text(attributes[name], out)
        except CodecError as exc:
            raise _wrap(exc, name) from None
    out.append("}")


def item_to_ion_text(item: Mapping[str, AttributeValue]) -> str:
    """One line of a full ION export for ``item``: ``$ion_1_0 {Item:{...}}`` (no newline).

    Attributes are sorted by name, set members sorted; numbers as :func:`ion_decimal_text`.
    """
    return ion_record_to_text({"Item": item})


def ion_record_to_text(record: Mapping[str, Any]) -> str:
    """One line of an ION export from a record of images and metadata (no newline).

    Args:
        record: any of ``Metadata`` (dict of ints/strings), ``Keys``, ``NewImage``,
            ``OldImage``, ``Item`` (items); written in that order.
    """
    out = ["$ion_1_0 {"]
    first = True
    for key in ("Metadata", "Keys", "NewImage", "OldImage", "Item"):
        if key not in record or record[key] is None:
            continue
        if not first:
            out.append(",")
        first = False
        out.append(key + ":")
        if key == "Metadata":
            out.append(_ion_metadata(record[key]))
        else:
            try:
                _ion_struct(record[key], out)
            except CodecError as exc:
                raise _wrap(exc, key) from None
    out.append("}")
    return "".join(out)


def _ion_metadata(metadata: Mapping[str, Any]) -> str:
    parts = []
    for name in metadata:
        value = metadata[name]
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, str):
            text = _ion_string(value)
        else:
            raise CodecError(f"metadata {name!r} of type {type(value).__name__} is not supported.")
        parts.append(f"{_ion_symbol(name)}:{text}")
    return "{" + ",".join(parts) + "}"


def iter_ion_records(text: str) -> Iterable[dict[str, Any]]:
    """Records of an ION export file's text, one per non-blank line."""
    for line in text.splitlines():
        if line.strip():
            yield ion_line_to_record(line)
