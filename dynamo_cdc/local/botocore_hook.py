"""Answer a boto3 ``dynamodbstreams`` client from a StreamSimulator, in-process.

Usage::

    attach(client, simulator)    # returns a detach() callable
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def attach(client: Any, simulator: Any) -> Callable[[], None]:
    """Answer every call of ``client`` from ``simulator``; returns a function that detaches."""
    raise NotImplementedError
