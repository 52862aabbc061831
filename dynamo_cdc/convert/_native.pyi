"""Types of the C extension built from ``dynamo_cdc/convert/_native/`` (see the sources).

Every function raises ValueError, with the reason, for input it does not read exactly (a
refusal: the caller takes the reference path), and MemoryError when out of memory.
"""

from collections.abc import Sequence
from typing import Any, TypeAlias

_Bytes: TypeAlias = bytes | bytearray | memoryview

# One Arrow array of an attribute's values of one tag, as buffers:
#   S, N, B, M, L     (tag, validity bitmap, int32 offsets, data)
#   BOOL, NULL        (tag, validity bitmap, values bitmap)
#   SS, NS, BS        (tag, validity bitmap, int32 list offsets, member count, int32 member
#                     offsets, member data)
Column: TypeAlias = (
    tuple[str, bytes, bytes, bytes]
    | tuple[str, bytes, bytes]
    | tuple[str, bytes, bytes, int, bytes, bytes]
)
# (name, its columns), attributes in order of first appearance
Attributes: TypeAlias = list[tuple[str, list[Column]]]

def scan_block(block: _Bytes, /) -> tuple[int, bytes, bytes, Attributes]:
    """A block of export lines: (rows, item offsets, item data, attributes) (block.c)."""

def decode_base64(n: int, offsets: _Bytes, data: _Bytes, /) -> tuple[bytes, bytes]:
    """n canonical base64 texts (string array buffers) as binary array buffers (block.c)."""

def line_depths(text: _Bytes, ion: bool, /) -> bytes:
    """The deepest bracket depth of each line, an int32 a line (block.c)."""

def scan_records(body: _Bytes, /) -> dict[str, Any]:
    """A GetRecords response's change-row columns (records.c)."""

def scan_record_dicts(records: Sequence[dict[str, Any]], /) -> dict[str, Any]:
    """A list of record dicts' change-row columns (records.c)."""
