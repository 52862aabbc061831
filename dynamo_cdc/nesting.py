"""How deep an item may nest: DynamoDB's 32 levels, held the same way on every path.

DynamoDB allows maps and lists nested 32 levels deep: a map or list that is a top-level
attribute's value is level 1, a map or list inside it level 2, and so on (sets are values, not
levels). Anything deeper did not come from DynamoDB, and a reader that recursed through it would
run out of stack (Python's RecursionError at about a thousand levels, a segmentation fault in
pyarrow's JSON reader at ten thousand). So every reader refuses it before parsing it:

* the C readers (:mod:`dynamo_cdc.convert._native`) stop at level 33 (``MAX_DEPTH``) and hand the block
  or response to the Python path, which refuses it with the file and line;
* JSON text that no C reader took is measured first by :func:`line_depths`, bracket depth per
  line with strings left out, in one vectorised pass: a line deeper than any 32-level item can
  be is refused before orjson sees it; a line near the limit (a level-33
  empty map has the bracket depth of a set inside a level-32 map) is parsed and checked exactly
  by :func:`check_item`;
* items and stream images held as dicts are checked by :func:`check_item` (no recursion).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dynamo_cdc.convert import native

MAX_LEVELS = 32


def _json_limits(value_depth: int) -> tuple[int, int]:
    # A level-L map or list is at bracket depth value_depth + 2L - 1, its members' value
    # objects ({"S": ...}) one deeper, a set's array in those one deeper still: a 32-level item
    # reaches value_depth + 65. A level-33 empty map reaches the same depth, so lines that deep
    # are checked exactly on the parsed item.
    deepest = value_depth + 2 * MAX_LEVELS + 1
    return deepest, deepest


# (the deepest bracket depth a 32-level item reaches, the depth from which a line is checked
# exactly once parsed) of a line of a full or incremental export ({"Item":{"a":{"S":..}}}: value
# objects at depth 3), of a GetRecords response ({"Records":[{"dynamodb":{"NewImage":{"a":..}}}]}:
# depth 6), and of an Ion export line ($ion_1_0 {Item:{a:..}}: a level-L map or list at depth
# L + 2, a set or a blob's {{ }} in a level-32 map at 35 and 36).
EXPORT_LINES = _json_limits(3)
RECORDS_BODY = _json_limits(6)
ION_LINES = (MAX_LEVELS + 4, MAX_LEVELS + 3)


class TooDeep(Exception):
    """A line (or record) nests maps and lists deeper than DynamoDB's 32 levels.

    Attributes:
        line: the 0-based index of the line in the text measured (0 for a single value).
    """

    def __init__(self, line: int = 0) -> None:
        self.line = line
        super().__init__(f"maps and lists nested deeper than DynamoDB's {MAX_LEVELS} levels")


_DELTA = np.zeros(256, np.int8)
_DELTA[[ord("{"), ord("[")]] = 1
_DELTA[[ord("}"), ord("]")]] = -1


def line_depths(text: bytes, *, ion: bool = False) -> np.ndarray:
    """The deepest bracket depth of each line of ``text`` (newline-separated JSON values, or
    Ion values), brackets inside strings (and Ion's quoted symbols) left out: one pass in C
    (``_native.line_depths``, about 4 ms a MB on a busy CI machine) where it is built, else
    vectorised numpy for JSON (no Python per byte), a loop for Ion (the Ion reader is slower)."""
    if native.ENABLED and native.module is not None:
        return np.frombuffer(native.module.line_depths(text, ion), np.int32)
    if ion:
        lines = text.split(b"\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # a final newline ends the last line, it starts none
        return np.array([_ion_depth(line) for line in lines], np.int32)
    codes = np.frombuffer(text, np.uint8)
    n = len(codes)
    if n == 0:
        return np.zeros(1, np.int32)
    # A quote ends or starts a string unless an odd run of backslashes precedes it.
    quotes = np.flatnonzero(codes == ord('"'))
    if len(quotes):
        not_backslash = np.where(codes != ord("\\"), np.arange(n, dtype=np.int32), -1)
        last_plain = np.maximum.accumulate(not_backslash)
        before = quotes - 1
        run = before - last_plain[np.maximum(before, 0)]
        run[before < 0] = 0
        quotes = quotes[run % 2 == 0]
    is_newline = codes == ord("\n")
    newlines = np.flatnonzero(is_newline)
    toggles = np.zeros(n, np.int8)
    toggles[quotes] = 1
    # Quotes seen so far on the position's line (an unclosed string ends with its line, as in
    # the C pass): the position is inside a string when the count is odd, or on its closing quote.
    seen = np.cumsum(toggles, dtype=np.int32)
    line_id = np.cumsum(is_newline, dtype=np.int32) - is_newline
    seen -= np.concatenate([[0], seen[newlines]]).astype(np.int32)[line_id]
    inside = ((seen & 1) == 1) | (toggles == 1)
    delta = _DELTA[codes]
    delta[inside] = 0
    depth = np.cumsum(delta, dtype=np.int32)
    starts = np.concatenate([[0], newlines + 1])
    starts = starts[starts < n]
    # Each line counts from the depth the line before it ended at (0 unless malformed).
    base = np.concatenate([[0], depth[newlines]])[: len(starts)]
    out = np.maximum.reduceat(depth, starts) - base
    return np.maximum(out, 0).astype(np.int32)


def check_lines(text: bytes, limits: tuple[int, int], *, ion: bool = False) -> np.ndarray:
    """Raise :class:`TooDeep` (naming the first such line) when a line of ``text`` nests
    deeper than any 32-level item can; else return the indices of the lines near the limit,
    whose parsed values the caller checks with :func:`check_values`."""
    deepest, exact_from = limits
    depths = line_depths(text, ion=ion)
    over = np.flatnonzero(depths > deepest)
    if len(over):
        raise TooDeep(int(over[0]))
    return np.flatnonzero(depths >= exact_from)


def levels(value: Any) -> int:
    """The levels of maps and lists in one attribute value (0 for a scalar or a set); stops
    counting past 33. No recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        av, level = stack.pop()
        if not isinstance(av, Mapping) or len(av) != 1:
            continue
        ((tag, inner),) = av.items()
        if tag == "M" and isinstance(inner, Mapping):
            members: Any = inner.values()
        elif tag == "L" and isinstance(inner, list):
            members = inner
        else:
            continue
        deepest = max(deepest, level)
        if level > MAX_LEVELS:
            return deepest
        stack.extend((m, level + 1) for m in members)
    return deepest


def _ion_depth(line: bytes) -> int:
    depth = deepest = 0
    quote = 0
    escaped = False
    for c in line:
        if quote:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == quote:
                quote = 0
        elif c in b"\"'":
            quote = c
        elif c in b"{[(":
            depth += 1
            deepest = max(deepest, depth)
        elif c in b"}])":
            depth -= 1
    return deepest


def check_values(doc: Any) -> None:
    """:func:`check_item` on each item of an export line or a stream record: ``Item``, or
    ``Keys``, ``NewImage`` and ``OldImage`` (under ``dynamodb`` in a record)."""
    if not isinstance(doc, Mapping):
        return
    inner = doc.get("dynamodb", doc)
    if isinstance(inner, Mapping):
        for name in ("Item", "Keys", "NewImage", "OldImage"):
            check_item(inner.get(name))
    if inner is not doc:
        check_item(doc.get("Item"))


def check_item(item: Any) -> None:
    """Raise :class:`TooDeep` when a value of ``item`` (a dict of attribute values, or None)
    nests maps and lists deeper than DynamoDB's 32 levels."""
    if isinstance(item, Mapping):
        for value in item.values():
            if isinstance(value, Mapping) and ("M" in value or "L" in value):
                if levels(value) > MAX_LEVELS:
                    raise TooDeep()
