"""A DynamoDB Streams simulator: the parts of the Streams API that moto cannot show.

moto has one shard per stream that never closes, trims or expires (see FACTS.md). This module
keeps, per table, streams whose shards rotate and split, a 24-hour trim horizon, iterators that
expire after 15 minutes, throttling, and a new StreamArn after disable + enable, all on a
controllable clock. It answers the four Streams operations (DescribeStream, GetShardIterator,
GetRecords, ListStreams) with the JSON that AWS puts on the wire, so boto3 parses it exactly as
it would on AWS; the tests check every response against botocore's service model.

Public API::

    clock = ManualClock(start=1_700_000_000.0)         # epoch seconds; clock.advance(seconds)
    sim = StreamSimulator(clock=clock, region="us-east-1", account_id="123456789012", seed=0)
    arn = sim.enable_stream("orders", "NEW_AND_OLD_IMAGES", when=None,
                            key_schema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    sim.record("orders", "INSERT", keys={"pk": {"S": "a"}}, old_image=None,
               new_image={"pk": {"S": "a"}, "n": {"N": "1"}}, when=None)  # -> wire record | None
    sim.record("orders", "REMOVE", keys=..., old_image=..., new_image=None,
               user_identity=TTL_IDENTITY)             # a TTL delete
    sim.rotate("orders", split=True)                    # close open shards, open 1 or 2 children
    sim.disable_stream("orders")                        # a later enable_stream -> a NEW StreamArn
    sim.handle("GetRecords", {"ShardIterator": it})    # JSON request dict -> JSON response dict
    # errors: SimulatedError(code, message, status); to_http(exc) -> (status, headers, body)
    # success: http_response(result) -> (200, headers, body)
    sim.stream_arn("orders")                            # enabled StreamArn or None
    sim.tick()                                          # apply trims/rotations due by the clock
    sim.calls["GetRecords"], sim.errors["LimitExceededException"]   # counters for tests

In-process with boto3 (no server; see ``dynamo_cdc.local.botocore_hook.attach``)::

    client = boto3.client("dynamodbstreams", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    attach(client, sim)
    client.describe_stream(StreamArn=arn)               # answered by ``sim``, parsed by botocore

Behaviour (AWS's, as documented; knobs in ``StreamSimulator.__init__``):

- ``when`` arguments are epoch seconds (float), a datetime, or None for ``clock()``. They set
  ApproximateCreationDateTime (rounded down to the second, as AWS does) and the record's age.
- Items and keys are DynamoDB JSON in the wire representation: ``{"B": "<base64 text>"}``.
  ``bytes`` values of B/BS are accepted and base64-encoded. The view type decides which images a
  record carries. Every change you feed is recorded (AWS drops no-op writes: the caller decides).
- Records are routed to the open shard whose hash range holds the md5 of the partition key
  (all keys when the key schema is unknown), so one item's changes stay in order in one shard.
- Sequence numbers increase across the whole simulator (so within a shard), with random gaps,
  21 to 40 digits. A shard's StartingSequenceNumber is drawn when it opens, its
  EndingSequenceNumber when it closes.
- ShardIds look like AWS's: ``shardId-<20-digit creation epoch ms>-<8 hex>``; shards are listed
  in creation order. DescribeStream pages with Limit (max 100) / ExclusiveStartShardId and sets
  LastEvaluatedShardId only when more shards follow; ShardFilter CHILD_SHARDS is supported.
- Rotation: ``rotate()`` by hand, or automatically every ``rotate_every_records`` records of a
  shard or ``rotate_every_seconds`` of its age (AWS rotates about every 4 hours).
- Trim horizon: records older than ``retention_seconds`` (24 h) are dropped. TRIM_HORIZON starts
  at the oldest kept record; AT/AFTER_SEQUENCE_NUMBER before it, or GetRecords on an iterator
  that points before it, raise TrimmedDataAccessException. A closed shard vanishes from
  DescribeStream ``retention_seconds`` after it closed; a disabled stream vanishes (from
  ListStreams, and DescribeStream answers ResourceNotFoundException) once all its shards did.
- Iterators are opaque strings ``<StreamArn>|1|<base64>`` that expire ``iterator_ttl_seconds``
  (15 min) after issue: ExpiredIteratorException. GetRecords returns up to Limit (max 1000)
  records and at most 1 MB; NextShardIterator is absent once a closed shard is read to its end.
- Faults (seeded): ``throttle_rate`` of GetRecords calls raise LimitExceededException (the only
  throttling error botocore's model defines for Streams); ``internal_error_rate`` of all calls
  raise InternalServerError (HTTP 500); ``enforce_read_limit`` throttles a sixth GetRecords on one
  shard within one second of the simulated clock; GetRecords on a shard in ``throttled_shards``
  is always throttled (a hot shard).
- Latency: ``latency_seconds=(least, most)`` makes each call wait that long in wall-clock time
  before it is answered, outside the lock, as calls wait on the network;
  ``most_in_flight`` is the most calls answered at once.
- userIdentity is written with the member names of botocore's model (``Type``, ``PrincipalId``),
  which is what boto3 returns; ``record`` accepts the Lambda-event spelling (``type``,
  ``principalId``) too.
- Error codes are those of botocore's model (ResourceNotFoundException, LimitExceededException,
  InternalServerError, ExpiredIteratorException, TrimmedDataAccessException) plus AWS's common
  ValidationException for malformed requests.

Thread-safe (one lock): the local AWS server may call it from several threads.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import logging
import random
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dynamo_cdc.times import iso

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Anything callable that returns the current time as epoch seconds (float)."""

TTL_IDENTITY: dict[str, str] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
"""The userIdentity of a TTL delete, spelled as botocore's model (and so boto3) has it."""

VIEW_TYPES = ("NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES", "KEYS_ONLY")
EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")
ITERATOR_TYPES = (
    "TRIM_HORIZON",
    "LATEST",
    "AT_SEQUENCE_NUMBER",
    "AFTER_SEQUENCE_NUMBER",
    "AT_TIMESTAMP",
)
MAX_GET_RECORDS_LIMIT = 1000
MAX_GET_RECORDS_BYTES = 1024 * 1024
MAX_DESCRIBE_LIMIT = 100
READS_PER_SHARD_PER_SECOND = 5
_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_HASH_SPACE = 1 << 128
_MAX_SEQUENCE = 10**40 - 1


class ManualClock:
    """A clock that only moves when told to; call it to read epoch seconds."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward.

        Args:
            seconds: How far to move (must not be negative: time does not run backwards).

        Returns:
            The new time, epoch seconds.
        """
        if seconds < 0:
            raise ValueError("ManualClock cannot go backwards")
        self.now += float(seconds)
        return self.now


class SimulatedError(Exception):
    """An AWS error response: ``code`` (e.g. ``TrimmedDataAccessException``), message, status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _json_headers(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/x-amz-json-1.0",
        "Content-Length": str(len(body)),
        "x-amzn-RequestId": str(uuid.uuid4()),
        # DynamoDB sends a CRC32 of the body; botocore checks it where it knows to.
        "x-amz-crc32": str(zlib.crc32(body) & 0xFFFFFFFF),
    }


def to_http(exc: SimulatedError) -> tuple[int, dict[str, str], bytes]:
    """Turn a SimulatedError into an AWS JSON 1.0 error response.

    Args:
        exc: The error ``StreamSimulator.handle`` raised.

    Returns:
        ``(status, headers, body)``; the body is
        ``{"__type": "com.amazonaws.dynamodb.v20120810#<Code>", "message": ...}``.
    """
    body = json.dumps({"__type": _ERROR_PREFIX + exc.code, "message": exc.message}).encode()
    return exc.status, _json_headers(body), body


def http_response(result: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """Turn a ``handle`` result into a 200 AWS JSON 1.0 response ``(status, headers, body)``."""
    body = json.dumps(result, separators=(",", ":")).encode()
    return 200, _json_headers(body), body


def _validation(message: str) -> SimulatedError:
    return SimulatedError("ValidationException", message)


def _not_found(message: str) -> SimulatedError:
    return SimulatedError("ResourceNotFoundException", f"Requested resource not found: {message}")


def _epoch(when: float | datetime | None, clock: Clock) -> float:
    if when is None:
        return float(clock())
    if isinstance(when, datetime):
        return when.timestamp()
    return float(when)


def _wire_value(value: Mapping[str, Any]) -> dict[str, Any]:
    """Copy one attribute value into the wire form (B and BS as base64 text)."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError(f"not a DynamoDB JSON attribute value: {value!r}")
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": _b64(inner)}
    if tag == "BS":
        return {"BS": [_b64(v) for v in inner]}
    if tag == "M":
        return {"M": _wire_item(inner)}
    if tag == "L":
        return {"L": [_wire_value(v) for v in inner]}
    if tag in ("SS", "NS"):
        return {tag: list(inner)}
    return {tag: inner}


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _wire_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _wire_value(value) for name, value in item.items()}


def _normalise_identity(identity: Mapping[str, str]) -> dict[str, str]:
    # Accept the Lambda-event spelling; the API wire uses the model's member names.
    principal = identity.get("PrincipalId", identity.get("principalId"))
    kind = identity.get("Type", identity.get("type"))
    out: dict[str, str] = {}
    if principal is not None:
        out["PrincipalId"] = str(principal)
    if kind is not None:
        out["Type"] = str(kind)
    return out


@dataclass
class _Record:
    seq: int
    when: float
    size: int
    wire: dict[str, Any]


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    start_seq: int
    created_at: float
    hash_lo: int
    hash_hi: int
    end_seq: int | None = None
    closed_at: float | None = None
    records: list[_Record] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    trimmed: int = 0  # absolute position of records[0]; positions never shift
    last_trimmed_seq: int | None = None
    reads: deque[float] = field(default_factory=deque)

    @property
    def total(self) -> int:
        return self.trimmed + len(self.records)

    @property
    def is_open(self) -> bool:
        return self.end_seq is None

    def describe(self) -> dict[str, Any]:
        seq_range: dict[str, str] = {"StartingSequenceNumber": str(self.start_seq)}
        if self.end_seq is not None:
            seq_range["EndingSequenceNumber"] = str(self.end_seq)
        out: dict[str, Any] = {"ShardId": self.shard_id, "SequenceNumberRange": seq_range}
        if self.parent_id is not None:
            out["ParentShardId"] = self.parent_id
        return out


@dataclass
class _Stream:
    arn: str
    label: str
    table_name: str
    view_type: str
    created_at: float
    key_schema: list[dict[str, str]] | None
    status: str = "ENABLED"
    disabled_at: float | None = None
    shards: list[_Shard] = field(default_factory=list)
    by_id: dict[str, _Shard] = field(default_factory=dict)
    # every shard id ever created -> creation index, so paging past a vanished shard still works
    creation_index: dict[str, int] = field(default_factory=dict)
    # the open shards sorted by hash_lo and their hash_lo, for routing (None: rebuild)
    _routing: tuple[list[int], list[_Shard]] | None = None

    def open_shards(self) -> list[_Shard]:
        return [s for s in self.shards if s.is_open]

    def partition_key_names(self) -> list[str] | None:
        if not self.key_schema:
            return None
        return [k["AttributeName"] for k in self.key_schema if k.get("KeyType") == "HASH"]


class StreamSimulator:
    """DynamoDB Streams for any number of tables, on a controllable clock.

    Args:
        clock: Returns epoch seconds; defaults to ``ManualClock()`` (time stands still until
            advanced), so pass ``time.time`` for wall-clock behaviour.
        region: Goes into StreamArns and each record's ``awsRegion``.
        account_id: Goes into StreamArns.
        seed: Seeds shard ids, event ids, sequence gaps and fault injection.
        retention_seconds: The trim horizon (AWS: 24 hours).
        iterator_ttl_seconds: Iterator lifetime (AWS: 15 minutes).
        rotate_every_records: Rotate a shard after it holds this many records (None: never).
        rotate_every_seconds: Rotate a shard this long after it opened (AWS: about 4 hours).
        throttle_rate: Fraction of GetRecords calls that raise LimitExceededException.
        internal_error_rate: Fraction of all calls that raise InternalServerError (HTTP 500).
        enforce_read_limit: Throttle more than 5 GetRecords per shard per simulated second.
        first_sequence_number: The first sequence number drawn (default: a random 21-digit one);
            set it near ``10**k`` to make numbers change length mid-stream.
        latency_seconds: ``(least, most)`` wall-clock seconds each call waits before it is
            answered, drawn uniformly (AWS answers in 20-50 ms from another host): calls from
            several threads wait at the same time, as on the network. Default: no wait.
    """

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
        latency_seconds: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.region = region
        self.account_id = account_id
        self.retention_seconds = float(retention_seconds)
        self.iterator_ttl_seconds = float(iterator_ttl_seconds)
        self.rotate_every_records = rotate_every_records
        self.rotate_every_seconds = rotate_every_seconds
        self.throttle_rate = throttle_rate
        self.internal_error_rate = internal_error_rate
        self.enforce_read_limit = enforce_read_limit
        # Separate generators: the fault sequence must not depend on how many records were fed.
        self._id_rng = random.Random(f"{seed}:ids")
        self._seq_rng = random.Random(f"{seed}:seq")
        self._fault_rng = random.Random(f"{seed}:faults")
        if not 0 <= latency_seconds[0] <= latency_seconds[1]:
            raise ValueError("latency_seconds must be (least, most) with 0 <= least <= most")
        self.latency_seconds = latency_seconds
        self._latency_rng = random.Random(f"{seed}:latency")
        if first_sequence_number is None:
            first_sequence_number = 10**20 + self._seq_rng.randrange(10**19)
        if not 10**20 <= first_sequence_number <= _MAX_SEQUENCE:
            raise ValueError("first_sequence_number must have 21 to 40 digits")
        self._seq = first_sequence_number - 1
        # The earliest time at which a trim, a vanishing shard or an age rotation is due:
        # housekeeping is skipped before it, so a call costs O(1), not O(shards).
        self._next_housekeeping = float("-inf")
        self._streams: dict[str, _Stream] = {}  # by StreamArn, in creation order
        self._enabled: dict[str, str] = {}  # table name -> StreamArn of its enabled stream
        self._lock = threading.RLock()
        self.calls: Counter[str] = Counter()
        """Calls answered per operation (errors included)."""
        self.errors: Counter[str] = Counter()
        """Errors raised per error code."""
        self.throttled_shards: set[str] = set()
        """Shard ids whose every GetRecords raises LimitExceededException (a hot shard)."""
        self.most_in_flight = 0
        """The most calls that were being answered at once (with ``latency_seconds``: the
        concurrency a client reached)."""
        self._in_flight = 0
        self._flight_lock = threading.Lock()

    # ------------------------------------------------------------------ feeding (server side)

    def enable_stream(
        self,
        table_name: str,
        view_type: str,
        when: float | datetime | None = None,
        *,
        key_schema: list[dict[str, str]] | None = None,
        shard_count: int = 1,
    ) -> str:
        """Start a new stream on the table.

        Args:
            table_name: The table.
            view_type: NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES or KEYS_ONLY.
            when: When the stream was enabled (its label); None for now.
            key_schema: The table's KeySchema (``[{"AttributeName", "KeyType"}]``); when None it
                is guessed from the first record's keys (first HASH, second RANGE).
            shard_count: How many shards the stream opens with.

        Returns:
            The new StreamArn (always new: its label is the enable time, made unique).

        Raises:
            SimulatedError: ValidationException when the table already has an enabled stream
                or the view type is unknown.
        """
        if view_type not in VIEW_TYPES:
            raise _validation(f"Invalid StreamViewType: {view_type}")
        if shard_count < 1:
            raise ValueError("shard_count must be at least 1")
        if not 3 <= len(table_name) <= 255:
            raise ValueError(f"DynamoDB table names have 3 to 255 characters: {table_name!r}")
        with self._lock:
            if table_name in self._enabled:
                raise _validation(f"Table already has an enabled stream: {table_name}")
            at = _epoch(when, self.clock)
            ms = int(at * 1000)
            while True:
                label = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
                label += f"{ms % 1000:03d}"
                arn = (
                    f"arn:aws:dynamodb:{self.region}:{self.account_id}:table/{table_name}"
                    f"/stream/{label}"
                )
                if arn not in self._streams:
                    break
                ms += 1  # re-enabled within the same millisecond: the ARN must still be new
            stream = _Stream(
                arn=arn,
                label=label,
                table_name=table_name,
                view_type=view_type,
                created_at=at,
                key_schema=[dict(k) for k in key_schema] if key_schema else None,
            )
            step = _HASH_SPACE // shard_count
            for i in range(shard_count):
                hi = _HASH_SPACE if i == shard_count - 1 else (i + 1) * step
                self._open_shard(stream, None, i * step, hi, at)
            self._streams[arn] = stream
            self._enabled[table_name] = arn
            logger.debug("stream enabled: %s (%s)", arn, view_type)
            return arn

    def disable_stream(self, table_name: str, when: float | datetime | None = None) -> None:
        """Stop recording: close every open shard; the stream stays readable (DISABLED).

        Raises:
            SimulatedError: ValidationException when the table has no enabled stream.
        """
        with self._lock:
            arn = self._enabled.pop(table_name, None)
            if arn is None:
                raise _validation(f"Table does not have an enabled stream: {table_name}")
            stream = self._streams[arn]
            at = _epoch(when, self.clock)
            for shard in stream.open_shards():
                self._close_shard(shard, at)
            stream.status = "DISABLED"
            stream.disabled_at = at
            logger.debug("stream disabled: %s", arn)

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
        """Append one change to the table's stream.

        Args:
            table_name: The table written.
            event_name: INSERT, MODIFY or REMOVE.
            keys: The item's key attributes, DynamoDB JSON.
            old_image: The item before the write (None for INSERT).
            new_image: The item after the write (None for REMOVE).
            when: When the write happened; None for ``clock()``.
            user_identity: ``TTL_IDENTITY`` for a TTL delete (either spelling), else None.

        Returns:
            The record as GetRecords will return it on the wire, or None when the table has no
            enabled stream (nothing is recorded then, as on AWS).
        """
        if event_name not in EVENT_NAMES:
            raise ValueError(f"event_name must be one of {EVENT_NAMES}, not {event_name!r}")
        with self._lock:
            arn = self._enabled.get(table_name)
            if arn is None:
                return None
            now = float(self.clock())
            self._housekeep(now)
            stream = self._streams[arn]
            at = _epoch(when, self.clock)
            wire_keys = _wire_item(keys)
            if stream.key_schema is None:
                names = list(wire_keys)
                stream.key_schema = [{"AttributeName": names[0], "KeyType": "HASH"}]
                if len(names) > 1:
                    stream.key_schema.append({"AttributeName": names[1], "KeyType": "RANGE"})
            shard = self._route(stream, wire_keys)
            body: dict[str, Any] = {
                "ApproximateCreationDateTime": int(at),  # AWS rounds down to the second
                "Keys": wire_keys,
            }
            view = stream.view_type
            if new_image is not None and view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
                body["NewImage"] = _wire_item(new_image)
            if old_image is not None and view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
                body["OldImage"] = _wire_item(old_image)
            seq = self._next_seq()
            body["SequenceNumber"] = str(seq)
            images = {k: body[k] for k in ("Keys", "NewImage", "OldImage") if k in body}
            body["SizeBytes"] = max(1, len(json.dumps(images, separators=(",", ":"))))
            body["StreamViewType"] = view
            wire: dict[str, Any] = {
                "eventID": f"{self._id_rng.getrandbits(128):032x}",
                "eventName": event_name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": self.region,
                "dynamodb": body,
            }
            if user_identity:
                wire["userIdentity"] = _normalise_identity(user_identity)
            size = len(json.dumps(wire, separators=(",", ":")))
            shard.records.append(_Record(seq=seq, when=at, size=size, wire=wire))
            shard.seqs.append(seq)
            self._due(at + self.retention_seconds)
            if self.rotate_every_records and shard.total >= self.rotate_every_records:
                self._rotate_shard(stream, shard, split=False, now=now)
            return wire

    def rotate(self, table_name: str, split: bool = False) -> list[str]:
        """Close the open shards of the table's enabled stream and open their children.

        Args:
            table_name: The table.
            split: Two children per closed shard (each with half its hash range) instead of one.

        Returns:
            The new shard ids, in creation order.

        Raises:
            ValueError: The table has no enabled stream.
        """
        with self._lock:
            arn = self._enabled.get(table_name)
            if arn is None:
                raise ValueError(f"table {table_name!r} has no enabled stream")
            now = float(self.clock())
            self._housekeep(now)
            stream = self._streams[arn]
            new: list[str] = []
            for shard in stream.open_shards():
                new.extend(self._rotate_shard(stream, shard, split=split, now=now))
            return new

    def stream_arn(self, table_name: str) -> str | None:
        """The table's enabled StreamArn, or None when its stream is off."""
        with self._lock:
            return self._enabled.get(table_name)

    def tick(self) -> None:
        """Apply the clock now: trim old records, drop vanished shards, rotate by age.

        Every call does this anyway; call it to see the effect without an API call.
        """
        with self._lock:
            self._housekeep(float(self.clock()))

    # ------------------------------------------------------------------ the API

    def handle(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one Streams API call.

        Args:
            operation: DescribeStream, GetShardIterator, GetRecords or ListStreams (the part of
                ``X-Amz-Target`` after the dot).
            params: The JSON request body, decoded.

        Returns:
            The JSON response body (do not mutate: records are shared with the simulator).

        Raises:
            SimulatedError: The AWS error to send back (``to_http`` builds the response).
        """
        handlers: dict[str, Callable[[Mapping[str, Any], float], dict[str, Any]]] = {
            "DescribeStream": self._describe_stream,
            "GetShardIterator": self._get_shard_iterator,
            "GetRecords": self._get_records,
            "ListStreams": self._list_streams,
        }
        with self._flight_lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            least, most = self.latency_seconds
            if most:  # the network: outside the lock, so concurrent calls wait together
                time.sleep(self._latency_rng.uniform(least, most))
            with self._lock:
                self.calls[operation] += 1
                try:
                    method = handlers.get(operation)
                    if method is None:
                        raise SimulatedError(
                            "UnknownOperationException", f"Unknown operation: {operation}"
                        )
                    now = float(self.clock())
                    self._housekeep(now)
                    if (
                        self.internal_error_rate
                        and self._fault_rng.random() < self.internal_error_rate
                    ):
                        raise SimulatedError("InternalServerError", "Internal server error", 500)
                    return method(params, now)
                except SimulatedError as exc:
                    self.errors[exc.code] += 1
                    raise
        finally:
            with self._flight_lock:
                self._in_flight -= 1

    def _stream(self, params: Mapping[str, Any]) -> _Stream:
        arn = params.get("StreamArn")
        if not isinstance(arn, str) or not arn:
            raise _validation("1 validation error detected: StreamArn must not be null")
        stream = self._streams.get(arn)
        if stream is None:
            raise _not_found(f"Stream: {arn} not found")
        return stream

    @staticmethod
    def _limit(params: Mapping[str, Any], maximum: int, default: int) -> int:
        limit = params.get("Limit", default)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
            raise _validation(
                f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                f"constraint: Member must have value less than or equal to {maximum} and "
                "greater than or equal to 1"
            )
        return limit

    def _describe_stream(self, params: Mapping[str, Any], now: float) -> dict[str, Any]:
        stream = self._stream(params)
        limit = self._limit(params, MAX_DESCRIBE_LIMIT, MAX_DESCRIBE_LIMIT)
        shards = stream.shards
        shard_filter = params.get("ShardFilter")
        if shard_filter:
            if shard_filter.get("Type") != "CHILD_SHARDS" or not shard_filter.get("ShardId"):
                raise _validation("ShardFilter needs Type CHILD_SHARDS and a ShardId")
            shards = [s for s in shards if s.parent_id == shard_filter["ShardId"]]
        start = params.get("ExclusiveStartShardId")
        if start is not None:
            index = stream.creation_index.get(start)
            if index is None:
                raise _validation(f"Invalid ExclusiveStartShardId: {start}")
            shards = [s for s in shards if stream.creation_index[s.shard_id] > index]
        page = shards[:limit]
        description: dict[str, Any] = {
            "StreamArn": stream.arn,
            "StreamLabel": stream.label,
            "StreamStatus": stream.status,
            "StreamViewType": stream.view_type,
            "CreationRequestDateTime": stream.created_at,
            "TableName": stream.table_name,
        }
        if stream.key_schema:
            description["KeySchema"] = [dict(k) for k in stream.key_schema]
        description["Shards"] = [s.describe() for s in page]
        if len(shards) > limit:
            description["LastEvaluatedShardId"] = page[-1].shard_id
        return {"StreamDescription": description}

    def _list_streams(self, params: Mapping[str, Any], now: float) -> dict[str, Any]:
        limit = self._limit(params, MAX_DESCRIBE_LIMIT, MAX_DESCRIBE_LIMIT)
        table = params.get("TableName")
        streams = [s for s in self._streams.values() if table is None or s.table_name == table]
        start = params.get("ExclusiveStartStreamArn")
        if start is not None:
            arns = [s.arn for s in streams]
            if start not in arns:
                raise _validation(f"Invalid ExclusiveStartStreamArn: {start}")
            streams = streams[arns.index(start) + 1 :]
        page = streams[:limit]
        out: dict[str, Any] = {
            "Streams": [
                {"StreamArn": s.arn, "TableName": s.table_name, "StreamLabel": s.label}
                for s in page
            ]
        }
        if len(streams) > limit:
            out["LastEvaluatedStreamArn"] = page[-1].arn
        return out

    def _get_shard_iterator(self, params: Mapping[str, Any], now: float) -> dict[str, Any]:
        stream = self._stream(params)
        shard_id = params.get("ShardId")
        shard = stream.by_id.get(shard_id) if isinstance(shard_id, str) else None
        if shard is None:
            raise _not_found(f"Shard: {shard_id} in Stream: {stream.arn} not found")
        kind = params.get("ShardIteratorType")
        if kind not in ITERATOR_TYPES:
            raise _validation(f"Invalid ShardIteratorType: {kind}")
        if kind == "TRIM_HORIZON":
            position = shard.trimmed
        elif kind == "LATEST":
            position = shard.total
        elif kind == "AT_TIMESTAMP":
            ts = params.get("Timestamp")
            if not isinstance(ts, int | float) or isinstance(ts, bool):
                raise _validation("AT_TIMESTAMP needs a Timestamp")
            position = shard.trimmed + bisect.bisect_left(shard.records, ts, key=lambda r: r.when)
        else:
            position = self._position_of(stream, shard, kind, params.get("SequenceNumber"))
        return {"ShardIterator": self._encode_iterator(stream, shard, position, now)}

    def _position_of(self, stream: _Stream, shard: _Shard, kind: str, raw: Any) -> int:
        if not isinstance(raw, str) or not raw.isdigit() or not 21 <= len(raw) <= 40:
            raise _validation(f"Invalid SequenceNumber for {kind}: {raw}")
        seq = int(raw)
        if seq < shard.start_seq or (shard.end_seq is not None and seq > shard.end_seq):
            raise _validation(
                f"Invalid SequenceNumber {raw} for shard {shard.shard_id} of {stream.arn}: "
                "it is outside the shard's SequenceNumberRange"
            )
        last_trimmed = shard.last_trimmed_seq
        if last_trimmed is not None and (
            seq < last_trimmed or (seq == last_trimmed and kind == "AT_SEQUENCE_NUMBER")
        ):
            raise SimulatedError(
                "TrimmedDataAccessException",
                f"The sequence number {raw} in shard {shard.shard_id} is beyond the trim "
                f"horizon of stream {stream.arn}: the data was trimmed",
            )
        if kind == "AT_SEQUENCE_NUMBER":
            return shard.trimmed + bisect.bisect_left(shard.seqs, seq)
        return shard.trimmed + bisect.bisect_right(shard.seqs, seq)

    def _get_records(self, params: Mapping[str, Any], now: float) -> dict[str, Any]:
        token = params.get("ShardIterator")
        if not isinstance(token, str) or not token:
            raise _validation("1 validation error detected: ShardIterator must not be null")
        limit = self._limit(params, MAX_GET_RECORDS_LIMIT, MAX_GET_RECORDS_LIMIT)
        arn, shard_id, position, issued = self._decode_iterator(token)
        if now - issued > self.iterator_ttl_seconds:
            raise SimulatedError(
                "ExpiredIteratorException",
                f"Iterator expired. The iterator was created at time {iso(issued)} while right "
                f"now it is {iso(now)} which is further in the future than the tolerated delay "
                f"of {int(self.iterator_ttl_seconds * 1000)} milliseconds.",
            )
        stream = self._streams.get(arn)
        if stream is None:
            raise _not_found(f"Stream: {arn} not found")
        shard = stream.by_id.get(shard_id)
        if shard is None:
            raise _not_found(f"Shard: {shard_id} in Stream: {arn} not found")
        if shard_id in self.throttled_shards or (
            self.throttle_rate and self._fault_rng.random() < self.throttle_rate
        ):
            raise _throttled(shard_id)
        if self.enforce_read_limit:
            while shard.reads and shard.reads[0] <= now - 1.0:
                shard.reads.popleft()
            if len(shard.reads) >= READS_PER_SHARD_PER_SECOND:
                raise _throttled(shard_id)
            shard.reads.append(now)
        if position < shard.trimmed:
            raise SimulatedError(
                "TrimmedDataAccessException",
                f"The iterator points at data of shard {shard_id} that was trimmed from stream "
                f"{arn} (older than {self.retention_seconds:.0f} s)",
            )
        start = min(position - shard.trimmed, len(shard.records))
        records: list[dict[str, Any]] = []
        budget = MAX_GET_RECORDS_BYTES
        index = start
        while index < len(shard.records) and len(records) < limit:
            rec = shard.records[index]
            if records and rec.size > budget:
                break
            records.append(rec.wire)
            budget -= rec.size
            index += 1
        out: dict[str, Any] = {"Records": records}
        next_position = shard.trimmed + index
        if shard.is_open or next_position < shard.total:
            out["NextShardIterator"] = self._encode_iterator(stream, shard, next_position, now)
        return out

    # ------------------------------------------------------------------ internals

    def _encode_iterator(self, stream: _Stream, shard: _Shard, position: int, now: float) -> str:
        payload = json.dumps([shard.shard_id, position, now], separators=(",", ":")).encode()
        return f"{stream.arn}|1|{base64.b64encode(payload).decode('ascii')}"

    @staticmethod
    def _decode_iterator(token: str) -> tuple[str, str, int, float]:
        try:
            arn, version, payload = token.rsplit("|", 2)
            if version != "1":
                raise ValueError(version)
            shard_id, position, issued = json.loads(base64.b64decode(payload, validate=True))
            return arn, str(shard_id), int(position), float(issued)
        except (ValueError, TypeError) as exc:
            raise _validation("Invalid ShardIterator") from exc

    def _next_seq(self) -> int:
        self._seq += self._seq_rng.randint(1, 10_000)  # AWS numbers are not contiguous
        if self._seq > _MAX_SEQUENCE:
            raise OverflowError("sequence numbers exhausted (40 digits)")
        return self._seq

    def _open_shard(
        self, stream: _Stream, parent: str | None, lo: int, hi: int, now: float
    ) -> _Shard:
        while True:
            shard_id = f"shardId-{int(now * 1000):020d}-{self._id_rng.getrandbits(32):08x}"
            if shard_id not in stream.creation_index:
                break
        shard = _Shard(
            shard_id=shard_id,
            parent_id=parent,
            start_seq=self._next_seq(),
            created_at=now,
            hash_lo=lo,
            hash_hi=hi,
        )
        if self.rotate_every_seconds:
            self._due(now + self.rotate_every_seconds)
        stream.creation_index[shard_id] = len(stream.creation_index)
        stream._routing = None
        stream.shards.append(shard)
        stream.by_id[shard_id] = shard
        return shard

    def _close_shard(self, shard: _Shard, now: float) -> None:
        shard.end_seq = self._next_seq()
        shard.closed_at = now
        self._due(now + self.retention_seconds)

    def _rotate_shard(
        self, stream: _Stream, shard: _Shard, *, split: bool, now: float
    ) -> list[str]:
        self._close_shard(shard, now)
        lo, hi = shard.hash_lo, shard.hash_hi
        if split and hi - lo >= 2:
            mid = (lo + hi) // 2
            ranges = [(lo, mid), (mid, hi)]
        else:
            ranges = [(lo, hi)]
        return [self._open_shard(stream, shard.shard_id, a, b, now).shard_id for a, b in ranges]

    def _route(self, stream: _Stream, keys: Mapping[str, Any]) -> _Shard:
        names = stream.partition_key_names() or sorted(keys)
        material = json.dumps({n: keys.get(n) for n in names}, sort_keys=True).encode()
        point = int.from_bytes(hashlib.md5(material).digest(), "big")
        # A bisect over the open shards' ranges: a stream may have thousands of shards.
        for _ in range(2):
            if stream._routing is None:
                opened = sorted(stream.open_shards(), key=lambda s: s.hash_lo)
                stream._routing = ([s.hash_lo for s in opened], opened)
            los, opened = stream._routing
            at = bisect.bisect_right(los, point) - 1
            if at >= 0 and opened[at].is_open and opened[at].hash_lo <= point < opened[at].hash_hi:
                return opened[at]
            stream._routing = None  # a shard closed since: index the open ones again
        raise AssertionError("open shards do not cover the hash space")  # pragma: no cover

    def _due(self, at: float) -> None:
        self._next_housekeeping = min(self._next_housekeeping, at)

    def _housekeep(self, now: float) -> None:
        if now < self._next_housekeeping:
            return
        horizon = now - self.retention_seconds
        for arn, stream in list(self._streams.items()):
            for shard in list(stream.shards):
                cut = bisect.bisect_left(shard.records, horizon, key=lambda r: r.when)
                if cut:
                    shard.last_trimmed_seq = shard.records[cut - 1].seq
                    del shard.records[:cut]
                    del shard.seqs[:cut]
                    shard.trimmed += cut
                if shard.closed_at is not None and shard.closed_at <= horizon and not shard.records:
                    stream.shards.remove(shard)
                    del stream.by_id[shard.shard_id]
                elif (
                    self.rotate_every_seconds
                    and shard.is_open
                    and stream.status == "ENABLED"
                    and now - shard.created_at >= self.rotate_every_seconds
                ):
                    self._rotate_shard(stream, shard, split=False, now=now)
            if stream.status == "DISABLED" and not stream.shards:
                del self._streams[arn]
        self._next_housekeeping = self._next_deadline()

    def _next_deadline(self) -> float:
        deadline = float("inf")
        for stream in self._streams.values():
            for shard in stream.shards:
                if shard.records:
                    deadline = min(deadline, shard.records[0].when + self.retention_seconds)
                if shard.closed_at is not None:
                    deadline = min(deadline, shard.closed_at + self.retention_seconds)
                elif self.rotate_every_seconds and stream.status == "ENABLED":
                    deadline = min(deadline, shard.created_at + self.rotate_every_seconds)
        return deadline


def _throttled(shard_id: str) -> SimulatedError:
    return SimulatedError(
        "LimitExceededException",
        f"Rate exceeded for shard {shard_id}: too many GetRecords calls",
    )
