"""A DynamoDB Streams simulator: the parts of the Streams API that moto cannot show.

moto has one shard per stream that never closes, trims or expires (see FACTS.md). This module
keeps, per table, streams with shards that rotate and split, a 24-hour trim horizon, iterators
that expire after 15 minutes, throttling, and a new StreamArn after disable + enable, all on a
controllable clock. It answers the four Streams operations (DescribeStream, GetShardIterator,
GetRecords, ListStreams) with the exact JSON that AWS puts on the wire, so boto3 parses it as
it would on AWS. (Work in progress: the API below is final; the implementation follows.)

Public API::

    clock = ManualClock(start=1_700_000_000.0)        # epoch seconds; clock.advance(seconds)
    sim = StreamSimulator(clock=clock, region="us-east-1", account_id="123456789012", seed=0)
    arn = sim.enable_stream("orders", "NEW_AND_OLD_IMAGES", when=None)  # when: epoch s or None
    sim.record("orders", "INSERT", keys={"pk": {"S": "a"}}, old_image=None,
               new_image={"pk": {"S": "a"}, "n": {"N": "1"}}, when=None)  # -> wire record | None
    sim.rotate("orders", split=True)                   # close open shards, open 1 or 2 children
    sim.disable_stream("orders", when=None)            # a later enable_stream -> a NEW StreamArn
    sim.handle("GetRecords", {"ShardIterator": it})   # JSON request dict -> JSON response dict
    # errors: SimulatedError(code, message, status); to_http(exc) -> (status, headers, body)

In-process with boto3 (see ``dynamo_cdc.local.botocore_hook.attach``)::

    client = boto3.client("dynamodbstreams", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    attach(client, sim)
    client.describe_stream(StreamArn=arn)              # answered by ``sim``, parsed by botocore
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

Clock = Callable[[], float]
"""Anything callable that returns the current time as epoch seconds (float)."""

TTL_IDENTITY = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}


class ManualClock:
    """A clock that only moves when told to; call it to read epoch seconds."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` and return the new time."""
        self.now += float(seconds)
        return self.now


class SimulatedError(Exception):
    """An AWS error response: ``code`` (e.g. ``TrimmedDataAccessException``), message, status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def to_http(exc: SimulatedError) -> tuple[int, dict[str, str], bytes]:
    """Turn a SimulatedError into an AWS JSON 1.0 error response (status, headers, body)."""
    raise NotImplementedError


class StreamSimulator:
    """DynamoDB Streams for any number of tables, on a controllable clock."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        seed: int = 0,
        retention_seconds: float = 24 * 3600,
        iterator_ttl_seconds: float = 15 * 60,
        rotate_every_records: int | None = None,
        rotate_every_seconds: float | None = None,
        throttle_rate: float = 0.0,
        internal_error_rate: float = 0.0,
        enforce_read_limit: bool = False,
        first_sequence_number: int | None = None,
    ) -> None:
        raise NotImplementedError

    def enable_stream(
        self,
        table_name: str,
        view_type: str,
        when: float | datetime | None = None,
        *,
        key_schema: list[dict[str, str]] | None = None,
        shard_count: int = 1,
    ) -> str:
        """Start a new stream on the table and return its StreamArn."""
        raise NotImplementedError

    def disable_stream(self, table_name: str, when: float | datetime | None = None) -> None:
        """Stop recording; the stream stays readable (DISABLED) until its records are trimmed."""
        raise NotImplementedError

    def record(
        self,
        table_name: str,
        event_name: str,
        keys: Mapping[str, Any],
        old_image: Mapping[str, Any] | None,
        new_image: Mapping[str, Any] | None,
        when: float | datetime | None = None,
        user_identity: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """Append one change; returns the wire record, or None when the table has no stream."""
        raise NotImplementedError

    def rotate(self, table_name: str, split: bool = False) -> list[str]:
        """Close the table's open shards and open children; returns the new shard ids."""
        raise NotImplementedError

    def stream_arn(self, table_name: str) -> str | None:
        """The table's current (enabled) StreamArn, or None."""
        raise NotImplementedError

    def handle(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one Streams API call (JSON request body -> JSON response body)."""
        raise NotImplementedError
