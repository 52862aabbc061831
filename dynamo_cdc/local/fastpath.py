"""A fast JSON path for moto's item-heavy DynamoDB responses.

moto serialises every response by walking botocore's output shape, which costs about 4 ms per
item: a Scan of 10,000 items took over 30 s. For the read operations whose responses are only
items and counts (Scan, Query, GetItem, BatchGetItem) the DynamoDB JSON protocol is plain JSON
of what moto already built, so it is written directly. Errors and every other operation still go
through moto's serializer. ``tests/integration/test_local_server.py`` checks that both paths
give boto3 the same answer.
"""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

FAST_OPS = frozenset({"Scan", "Query", "GetItem", "BatchGetItem"})
_installed = False


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def install() -> None:
    """Patch moto's DynamoHandler once (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.serialized

    def serialized(self: Any, action_result: Any) -> Any:
        result = action_result.result
        if isinstance(result, dict) and self._get_action() in FAST_OPS:
            headers = dict(self.response_headers)
            headers["Content-Type"] = "application/x-amz-json-1.0"
            return 200, headers, orjson.dumps(result, default=_default).decode()
        return original(self, action_result)

    DynamoHandler.serialized = serialized  # type: ignore[method-assign]
    _installed = True
