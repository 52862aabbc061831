"""Plain JSON of M/L columns: C-speed regex transform of orjson.dumps(tagged, OPT_SORT_KEYS).

Every regex replacement is `operator.itemgetter(1)` (a C callable: the match's group 1, None ->
deleted), so no Python frame runs per match on CPython 3.11 (whose template substitution is
Python-level). Returns None (caller falls back to the reference `plain` path) when the blob holds
anything the transform does not cover: nested sets or binary, non-canonical numbers, map keys
named like a type tag, nesting deeper than DEPTH plain levels inside one wrapper.
"""
import re
from itertools import repeat
from operator import itemgetter
import orjson
import pyarrow as pa

_G1 = itemgetter(1)
_STR = rb'"(?:[^"\\]|\\.)*"'
_NUM = rb'(?:0|-?(?:[1-9]\d{0,38}(?:\.\d*[1-9])?|0\.0{0,6}[1-9](?:\d*[1-9])?))'  # codec._CANONICAL_PLAIN_RE
# {"S":"x"} -> "x" ; {"N":"12"} -> 12 (canonical only) ; {"BOOL":true} -> true   (one group)
_SCALAR = re.compile(
    rb'\{"(?:S":|N":"|BOOL":)((?<=:)' + _STR + rb'|(?<=")' + _NUM + rb'(?=")|(?<=:)(?:true|false))"?\}'
)
_TAGS = rb'(?:S|N|B|BOOL|NULL|SS|NS|BS|L|M)'
# map keys equal to a tag name (or a key containing a quote that looks so: harmless fallback)
_AMBIG = re.compile(rb'"(?:S|N|B|BOOL|NULL|SS|NS|BS|L)":\{|"M":\{"' + _TAGS + rb'":')
DEPTH = 4
def _nest(d):
    if d == 0:
        return rb'(?:' + _STR + rb'|[^"{}\[\]])*'
    inner = _nest(d - 1)
    return rb'(?:' + _STR + rb'|[^"{}\[\]]|\{(?!"[ML]":)' + inner + rb'\}|\[' + inner + rb'\])*'
_C = _nest(DEPTH)
_CONTAINER = re.compile(rb'\{"[ML]":(\{(?!"[ML]":)' + _C + rb'\}|\[' + _C + rb'\])\}')
_SENTINEL = "\x01"
_SEPARATOR = b',"\\u0001",'
_BAD = (b'{"SS":', b'{"NS":', b'{"BS":', b'{"B":')


def to_plain_blob(blob: bytes):
    """Tagged sorted JSON -> plain JSON (same bytes as codec.value_to_plain_json), or None."""
    for bad in _BAD:
        if bad in blob:
            return None
    if _AMBIG.search(blob):
        return None
    blob = blob.replace(b'{"NULL":true}', b"null")
    blob = _SCALAR.sub(_G1, blob)
    if b'{"S":' in blob or b'{"N":' in blob or b'{"BOOL":' in blob or b'{"NULL":' in blob:
        return None
    for _ in range(64):
        if b'{"M":' not in blob and b'{"L":' not in blob:
            return blob
        new = _CONTAINER.sub(_G1, blob)
        if len(new) == len(blob):
            return None  # deeper than DEPTH: no progress
        blob = new
    return None


def plain_column_regex(values, missing=None):
    """values: tagged M/L attribute values (None = missing). -> pa string array or None."""
    n = len(values)
    objs = [None] * (2 * n - 1)
    objs[1::2] = repeat(_SENTINEL, n - 1)
    objs[::2] = values
    text = to_plain_blob(orjson.dumps(objs, option=orjson.OPT_SORT_KEYS))
    if text is None:
        return None
    parts = text[1:-1].split(_SEPARATOR)
    if len(parts) != n:
        return None
    if missing is None:
        missing = values.count(None)
    if missing:
        parts = [None if v is None else p for v, p in zip(values, parts)]
    return pa.array(parts, pa.binary()).cast(pa.string())


def tagged_column(values, missing=None):
    """NOT the contract: DynamoDB JSON (sorted keys) text of each value, one dumps per column."""
    n = len(values)
    objs = [None] * (2 * n - 1)
    objs[1::2] = repeat(_SENTINEL, n - 1)
    objs[::2] = values
    parts = orjson.dumps(objs, option=orjson.OPT_SORT_KEYS)[1:-1].split(_SEPARATOR)
    if missing is None:
        missing = values.count(None)
    if missing:
        parts = [None if v is None else p for v, p in zip(values, parts)]
    return pa.array(parts, pa.binary()).cast(pa.string())
