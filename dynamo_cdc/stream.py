"""Reading a table's DynamoDB stream: discovery, the shard tree, lineage-ordered bounded polls.

How a poll works (:meth:`StreamReader.poll`):

1. DescribeStream, paged by ``ExclusiveStartShardId`` / ``LastEvaluatedShardId``, lists the
   shards. A different stream ARN than the checkpoint's, a checkpoint older than the stream's
   retention, or an unfinished checkpointed shard missing from the listing is a gap
   (:class:`~dynamo_cdc.errors.StreamGapError`), never a silent skip.
2. Every listed shard enters the working checkpoint, except ancestors of shards already in it
   (those were read to their end and pruned). A shard is *ready* when it has no parent, its
   parent is neither listed nor checkpointed (trimmed away: it is a root), or its parent is
   finished. So a parent is always read to its end before its children.
3. Ready shards are served round-robin from one queue, starting after the shard the previous
   poll served last (fair with thousands of shards): up to ``read_threads`` GetRecords calls are
   in flight at once, on as many threads, and never two on one shard, so each shard's pages
   come back in order. The polling thread alone decides what is called next and applies each
   answer as it comes back (positions, budgets, lineage, the checkpoint); the threads only make
   the calls (boto3 clients are thread-safe, and :func:`read_records` keeps its state in the
   dicts botocore makes for each call). A shard is served at most five times per second (the
   time of each call is taken on its thread when its answer comes). New shards start at TRIM_HORIZON,
   known ones AFTER_SEQUENCE_NUMBER their checkpoint. A shard is finished when GetRecords
   returns no NextShardIterator (or the record at its EndingSequenceNumber was read); its
   children join the queue when that answer is applied, so a child is never called before its
   parent's last page is in the batch.
4. A shard that returned records is served again: GetRecords stops at 1 MB as well as at its
   Limit, so a short page says nothing about the tip. An open shard is caught up for this poll
   when a call returns no records, or when a record's ApproximateCreationDateTime (whole
   seconds) is later than the second the poll started in: everything written before the poll
   started is then read. The poll's start is taken on the stream's clock (the ``Date`` header
   of DynamoDB's answers, when it differs from the local clock by more than
   :data:`CLOCK_TOLERANCE_SECONDS`), so a skewed local clock neither stops a poll early nor
   keeps it chasing the tip.
5. The poll stops at its budget of records, bytes, seconds or calls, or when every ready shard
   is caught up. Calls in flight when a budget ends are awaited and their records kept; the
   record budget is exact (each call in flight holds its Limit), the byte budget may be passed
   by the responses in flight. It returns the records, a new checkpoint (committing it is the
   caller's job, after the Parquet is written) and its lag: how far behind the stream's tip
   the records it leaves unread are (:attr:`StreamBatch.lag_seconds`).

Throttling (LimitExceededException, ProvisionedThroughputExceededException, also after
botocore's own retries ran out) backs off exponentially with jitter, on the shard's thread, so
the other shards are read meanwhile; when it persists, that shard is left for the next poll
(``stopped_by="throttled"`` unless a budget ended the poll) and the others are read on. A
back-off gives up when a budget ended the poll or when it would outlast the poll's seconds.
ExpiredIteratorException gets a fresh iterator from the position reached.

Iterators, keyed by the position they continue from, and the answer times of each shard's last
five GetRecords are kept in memory for the stream, in this process, across readers (a capture
makes a new reader each time): the next capture needs no GetShardIterator where it continues,
and captures back to back keep to five calls a second per shard. The checkpoint never depends
on them.
"""

from __future__ import annotations

import base64
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from botocore.exceptions import ClientError

from dynamo_cdc import nesting
from dynamo_cdc.aws import error_code, raise_if_credentials
from dynamo_cdc.checkpoint import ShardCheckpoint, StreamCheckpoint
from dynamo_cdc.convert import RESPONSES, native_columns
from dynamo_cdc.errors import (
    StreamGapError,
    StreamNotEnabledError,
    StreamRecordError,
    TableNotFoundError,
)
from dynamo_cdc.times import STREAM_RETENTION_SECONDS, epoch_seconds, iso

log = logging.getLogger(__name__)

REQUIRED_VIEW_TYPE = "NEW_AND_OLD_IMAGES"
THROTTLE_CODES = frozenset(
    {
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
TRANSIENT_CODES = THROTTLE_CODES | {"InternalServerError", "ServiceUnavailable"}
MAX_CALLS_PER_SHARD_PER_SECOND = 5
MAX_RECORDS_PER_CALL = 1000
DEFAULT_RETENTION_SECONDS = STREAM_RETENTION_SECONDS
# GetRecords calls in flight at once per reader: a call mostly waits on the network (20-50 ms on
# AWS), and about this many keep one Python process busy (docs/stream-capture.md).
DEFAULT_READ_THREADS = 16
# A Date header has whole seconds and the call took a while: within this, the clocks agree.
CLOCK_TOLERANCE_SECONDS = 2.0


# -- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamInfo:
    """What DescribeTable says about a table's stream and key.

    Attributes:
        table: the table name.
        stream_arn: LatestStreamArn.
        view_type: StreamViewType (always NEW_AND_OLD_IMAGES once discovered).
        key_attributes: ``(name, type)`` of the key attributes, HASH first then RANGE, with the
            type (``S``, ``N`` or ``B``) from AttributeDefinitions.
    """

    table: str
    stream_arn: str
    view_type: str
    key_attributes: tuple[tuple[str, str], ...]


def _enable_fix(table: str) -> str:
    return (
        f"aws dynamodb update-table --table-name {table} --stream-specification "
        f"StreamEnabled=true,StreamViewType={REQUIRED_VIEW_TYPE}"
    )


def discover(clients_or_dynamodb_client: Any, table: str) -> StreamInfo:
    """Find the table's stream and key attributes (DescribeTable).

    Args:
        clients_or_dynamodb_client: a :class:`dynamo_cdc.aws.Clients` or a boto3 DynamoDB client.
        table: the table name.

    Raises:
        TableNotFoundError: the table does not exist in this account and region.
        StreamNotEnabledError: no stream, or a view type other than NEW_AND_OLD_IMAGES.
    """
    client = getattr(clients_or_dynamodb_client, "dynamodb", clients_or_dynamodb_client)
    try:
        desc = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        raise_if_credentials(exc, f"describe table {table}")
        if error_code(exc) == "ResourceNotFoundException":
            raise TableNotFoundError(
                f"Table {table!r} does not exist in region "
                f"{client.meta.region_name} of this account.",
                fix="check the table name in the table list and the region/account settings.",
            ) from None
        raise
    spec = desc.get("StreamSpecification") or {}
    arn = desc.get("LatestStreamArn")
    view = spec.get("StreamViewType")
    if not spec.get("StreamEnabled") or not arn:
        raise StreamNotEnabledError(
            f"Table {table!r} has no DynamoDB stream, so its changes cannot be captured.",
            fix=_enable_fix(table),
        )
    if view != REQUIRED_VIEW_TYPE:
        raise StreamNotEnabledError(
            f"Table {table!r} streams {view}, but change capture needs {REQUIRED_VIEW_TYPE} "
            "(full old and new images).",
            fix="disable the stream, then " + _enable_fix(table),
        )
    types = {a["AttributeName"]: a["AttributeType"] for a in desc["AttributeDefinitions"]}
    keys = sorted(desc["KeySchema"], key=lambda k: k["KeyType"] != "HASH")
    return StreamInfo(
        table=table,
        stream_arn=arn,
        view_type=view,
        key_attributes=tuple((k["AttributeName"], types[k["AttributeName"]]) for k in keys),
    )


# -- shards ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One shard as DescribeStream lists it."""

    shard_id: str
    parent_shard_id: str | None = None
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None

    @property
    def closed(self) -> bool:
        """A closed shard takes no new records; it ends at ``ending_sequence_number``."""
        return self.ending_sequence_number is not None


def list_shards(
    streams_client: Any,
    stream_arn: str,
    *,
    page_size: int = 100,
    call: Callable[..., Any] | None = None,
) -> list[Shard]:
    """All shards of a stream, following DescribeStream's ``LastEvaluatedShardId`` pages.

    Args:
        streams_client: a boto3 ``dynamodbstreams`` client.
        stream_arn: the stream.
        page_size: DescribeStream's Limit (AWS allows up to 100).
        call: wraps each API call (the reader passes its throttling retry); default: direct.
    """
    invoke = call or (lambda fn, **kw: fn(**kw))
    shards: list[Shard] = []
    seen: set[str] = set()
    start: str | None = None
    while True:
        kwargs: dict[str, Any] = {"StreamArn": stream_arn, "Limit": page_size}
        if start:
            kwargs["ExclusiveStartShardId"] = start
        desc = invoke(streams_client.describe_stream, **kwargs)["StreamDescription"]
        for s in desc.get("Shards", []):
            if s["ShardId"] in seen:
                continue
            seen.add(s["ShardId"])
            rng = s.get("SequenceNumberRange") or {}
            shards.append(
                Shard(
                    shard_id=s["ShardId"],
                    parent_shard_id=s.get("ParentShardId"),
                    starting_sequence_number=rng.get("StartingSequenceNumber"),
                    ending_sequence_number=rng.get("EndingSequenceNumber"),
                )
            )
        start = desc.get("LastEvaluatedShardId")
        if not start:
            return shards


def shard_roots(shards: Iterable[Shard]) -> list[str]:
    """Shards without a listed parent (no parent, or the parent was trimmed away), sorted."""
    listed = {s.shard_id for s in shards if s}
    return sorted(
        s.shard_id for s in shards if not s.parent_shard_id or s.parent_shard_id not in listed
    )


def shard_children(shards: Iterable[Shard]) -> dict[str, list[str]]:
    """Parent shard id -> its listed children (sorted)."""
    out: dict[str, list[str]] = {}
    for s in shards:
        if s.parent_shard_id:
            out.setdefault(s.parent_shard_id, []).append(s.shard_id)
    return {p: sorted(c) for p, c in out.items()}


# -- polling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadBudget:
    """What one poll may spend before it returns.

    Attributes:
        max_records: records per poll.
        max_bytes: bytes per poll: the GetRecords responses' bodies as read (never the
            records' ``SizeBytes``, which the endpoint states); a poll stops at the first
            response that reaches it.
        max_seconds: wall time per poll.
        max_calls: GetRecords + GetShardIterator calls per poll (DescribeStream pages excluded).
        records_per_call: GetRecords Limit (at most 1,000).
    """

    max_records: int = 50_000
    max_bytes: int = 64 * 1024 * 1024
    max_seconds: float = 30.0
    max_calls: int = 2_000
    records_per_call: int = MAX_RECORDS_PER_CALL


@dataclass(frozen=True)
class ShardRange:
    """The records one poll read from one shard (sequence numbers as AWS gives them)."""

    shard_id: str
    first_sequence_number: str
    last_sequence_number: str
    count: int


class RecordPage(Sequence[dict[str, Any]]):
    """The records of one GetRecords response as the C reader read them
    (``dynamo_cdc.convert._native.scan_records``): their change-row columns as Arrow buffers, with no
    Python object per record or value. :func:`dynamo_cdc.convert.records_to_table` builds the
    rows from these columns; ``tests/unit/convert/test_records_differential.py`` pins them equal
    to the reference's rows of the same records read by orjson.

    As a sequence it is those records as orjson reads them, decoded from the response text on
    first use (tests, and anything that wants dicts).

    Attributes:
        columns: what ``scan_records`` returns (see ``dynamo_cdc/convert/_native/``).
    """

    __slots__ = ("_body", "_records", "columns")

    def __init__(self, body: bytes, columns: dict[str, Any]) -> None:
        self._body = body
        self.columns = columns
        self._records: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return int(self.columns["count"])

    def __getitem__(self, index: Any) -> Any:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._decoded())

    def _decoded(self) -> list[dict[str, Any]]:
        if self._records is None:
            span = memoryview(self._body)[self.columns["records_at"] : self.columns["records_end"]]
            self._records = orjson.loads(span)
        return self._records

    @property
    def first_sequence_number(self) -> str:
        return str(self.columns["first_sequence_number"])

    @property
    def last_sequence_number(self) -> str:
        return str(self.columns["last_sequence_number"])

    @property
    def size_bytes(self) -> int:
        """The sum of the records' SizeBytes."""
        return int(self.columns["size_bytes"])

    @property
    def last_creation_time(self) -> float:
        """The last record's ApproximateCreationDateTime (epoch seconds)."""
        return float(self.columns["last_creation_time"])


def page_summary(records: Sequence[dict[str, Any]]) -> tuple[str, str, int, Any]:
    """(first sequence number, last sequence number, sum of SizeBytes, last record's
    ApproximateCreationDateTime) of one GetRecords response's records (not empty)."""
    if isinstance(records, RecordPage):
        return (
            records.first_sequence_number,
            records.last_sequence_number,
            records.size_bytes,
            records.last_creation_time,
        )
    last = records[-1]["dynamodb"]
    size = sum(int(r["dynamodb"].get("SizeBytes", 0)) for r in records)
    first = records[0]["dynamodb"]["SequenceNumber"]
    return first, last["SequenceNumber"], size, last.get("ApproximateCreationDateTime")


@dataclass
class StreamBatch:
    """The result of one poll.

    Attributes:
        pages: ``(shard id, records)`` of each GetRecords response that returned records, in
            read order (parents before children). The records are a :class:`RecordPage` where
            the C reader read the response, else a list of dicts as boto3 returns them (binary
            values ``bytes``), or as :func:`read_records` leaves them (base64 text, epoch
            seconds).
        checkpoint: the position after these records; not committed yet.
        ranges: per shard, the range read.
        finished_shards: shards read to their end in this poll.
        calls: API calls made (GetRecords + GetShardIterator).
        bytes: bytes read: the GetRecords responses' bodies.
        throttled: throttled calls that were retried.
        stopped_by: why the poll ended: "caught_up", "records", "bytes", "seconds", "calls",
            or "throttled".
        lag_seconds: how far behind the stream's tip the poll left its table, in seconds: 0
            when every shard was read up to the poll's start; otherwise, over the shards left
            behind, the most of (the stream's now minus the creation time of the last record
            read from the shard, in this poll or before). None when no shard left behind was
            ever read (its oldest unread record is unknown).
    """

    pages: list[tuple[str, Sequence[dict[str, Any]]]]
    checkpoint: StreamCheckpoint
    ranges: dict[str, ShardRange] = field(default_factory=dict)
    finished_shards: list[str] = field(default_factory=list)
    calls: int = 0
    bytes: int = 0
    throttled: int = 0
    stopped_by: str = "caught_up"
    lag_seconds: float | None = 0.0

    @property
    def count(self) -> int:
        """The number of records."""
        return sum(len(records) for _, records in self.pages)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record as a dict, in read order (decodes the C reader's pages: for tests and
        small batches; the capture converts the pages as they are)."""
        return [record for _, records in self.pages for record in records]

    @property
    def shard_ids(self) -> list[str]:
        """The shard of each record of :attr:`records`."""
        return [sid for sid, records in self.pages for _ in range(len(records))]


class _Throttled(Exception):
    """Throttling persisted past the retries; the poll ends with what it has."""


@dataclass(frozen=True)
class _Fetched:
    """What a worker thread's GetRecords brought back: the response (None when throttling
    persisted) and the API calls it took (GetShardIterator included)."""

    response: dict[str, Any] | None
    calls: int


GET_RECORDS_EVENT = "before-parse.dynamodb-streams.GetRecords"
# The key read_records adds to a GetRecords response: the bytes of its body, as read.
BODY_BYTES = "DynamoCdcBodyBytes"


def read_records(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """botocore ``before-parse`` handler for GetRecords: the records are read by the C reader
    (a :class:`RecordPage` of change-row columns) or, where it is not built or refuses the
    response, by orjson (a list of dicts), instead of botocore's parser, which walks the service
    model in Python for every value (about 260 µs a record of 2 KB on the CI machine kind,
    against 28 µs for orjson and 4.5 µs for the C reader).

    orjson's records are the response's JSON as it stands: DynamoDB JSON whose binary values are
    base64 text (not bytes) and ``ApproximateCreationDateTime`` epoch seconds (not a datetime),
    both of which :func:`dynamo_cdc.convert.records_to_table` and this module take. The C reader
    refuses what it does not read exactly as that path (whitespace, a number that needs more
    than cutting trailing zeros to be canonical, binary that is not canonical base64, duplicate
    keys, ...). botocore still parses the rest of the response (``NextShardIterator``), errors
    and anything neither reader takes, as before.
    """
    if response_dict.get("status_code", 500) >= 300:
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes | bytearray):
        return
    columns = native_columns(RESPONSES, "scan_records", body)
    if columns is not None:
        customized_response_dict["Records"] = RecordPage(bytes(body), columns)
        customized_response_dict[BODY_BYTES] = len(body)
        at, end = columns["records_at"], columns["records_end"]
        response_dict["body"] = b"".join((body[:at], b"[]", body[end:]))
        return
    # Before orjson (or botocore's parser) recurses through it: JSON strings hold no newline,
    # so a body with newlines is measured as one line.
    flat = bytes(body).replace(b"\n", b" ") if b"\n" in body else bytes(body)
    near = len(nesting.check_lines(flat, nesting.RECORDS_BODY)) > 0
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(parsed, dict) or not isinstance(parsed.get("Records"), list):
        return
    if near:
        for record in parsed["Records"]:
            nesting.check_values(record)
    customized_response_dict["Records"] = parsed.pop("Records")
    customized_response_dict[BODY_BYTES] = len(body)
    response_dict["body"] = orjson.dumps(parsed)


def _json_bytes(records: Sequence[dict[str, Any]]) -> int:
    """The size of ``records`` as JSON, for a response :func:`read_records` did not see (a
    client without its handler): binary values counted as their base64 text."""

    def default(value: Any) -> str:
        if isinstance(value, bytes | bytearray):
            return base64.b64encode(value).decode()
        return str(value)

    return len(orjson.dumps(list(records), default=default))


def _server_time(response: Any) -> float | None:
    """Epoch seconds of a botocore response's ``Date`` header, or None."""
    try:
        return parsedate_to_datetime(
            response["ResponseMetadata"]["HTTPHeaders"]["date"]
        ).timestamp()
    except (KeyError, TypeError, ValueError, IndexError):
        return None


@dataclass
class _ShardCalls:
    """What a process remembers of its calls to one stream's shards, beyond one reader: a
    capture makes a new reader each time, and captures run back to back.

    Attributes:
        iterators: shard id -> (iterator, the position it continues from): the next capture
            continues without a GetShardIterator (an expired one is replaced). Never persisted:
            the checkpoint never depends on them.
        times: shard id -> when its last five GetRecords were answered: the 5 calls/s hold
            across captures.
    """

    iterators: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    times: dict[str, deque[float]] = field(default_factory=dict)


# (stream ARN, the readers' clock) -> _ShardCalls, the most recently used last. Keyed by clock too,
# so readers on a test's clock never meet calls timed on another clock.
_SHARD_CALLS: dict[tuple[str, Callable[[], float]], _ShardCalls] = {}
_SHARD_CALLS_LOCK = threading.Lock()
_SHARD_CALLS_STREAMS = 256


def _shard_calls(stream_arn: str, clock: Callable[[], float]) -> _ShardCalls:
    with _SHARD_CALLS_LOCK:
        calls = _SHARD_CALLS.pop((stream_arn, clock), None) or _ShardCalls()
        _SHARD_CALLS[(stream_arn, clock)] = calls
        while len(_SHARD_CALLS) > _SHARD_CALLS_STREAMS:
            del _SHARD_CALLS[next(iter(_SHARD_CALLS))]
        return calls


def gap_fix(table: str) -> str:
    """The fix text of a stream gap on ``table``."""
    return (
        f"heal the window with a PITR incremental export of table {table!r} (or take a fresh "
        f"snapshot), then reset the stream checkpoint ({table}/_state/stream/checkpoint.json) "
        "so capture restarts from the stream's trim horizon."
    )


class StreamReader:
    """Reads a table's stream in lineage order within a budget (see the module docstring).

    Args:
        streams_client: a boto3 ``dynamodbstreams`` client.
        table: the table name (for errors and the checkpoint).
        checkpoint: the committed checkpoint to start from.
        budget: the per-poll budget.
        stream_arn: the table's LatestStreamArn (from :func:`discover`); defaults to the
            checkpoint's. A checkpoint of another ARN is a gap.
        clock: epoch seconds now (injectable so tests drive time).
        sleep: waits (injectable so tests do not wait).
        rng: jitter source.
        retention_seconds: the stream's retention; a checkpoint older than this is a gap
            (records may have been trimmed from shards it never read). None disables the check.
        max_retries: retries of one throttled call before the poll gives up for now.
        backoff_base: first back-off delay in seconds (doubled per retry, capped).
        backoff_cap: longest back-off delay in seconds.
        read_threads: GetRecords calls in flight at once, on as many threads (at most one per
            shard; 1 reads the shards one call at a time, in the polling thread).
        shard_filter: given the stream's listed shards, the ids of those this reader reads (the
            others are left out as if unlisted); default: every shard. A shard group's filter
            (:func:`dynamo_cdc.shardgroups.shard_filter`) keeps whole lineage trees, so a
            parent it leaves out has no child it keeps.
    """

    def __init__(
        self,
        streams_client: Any,
        table: str,
        checkpoint: StreamCheckpoint,
        budget: ReadBudget | None = None,
        *,
        stream_arn: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
        rng: random.Random | None = None,
        retention_seconds: float | None = DEFAULT_RETENTION_SECONDS,
        max_retries: int = 8,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        read_threads: int = DEFAULT_READ_THREADS,
        shard_filter: Callable[[list[Shard]], Collection[str]] | None = None,
    ) -> None:
        self.client = streams_client
        self.shard_filter = shard_filter
        events = getattr(getattr(streams_client, "meta", None), "events", None)
        if events is not None:  # a botocore client (tests may pass a stand-in)
            events.register(GET_RECORDS_EVENT, read_records, unique_id="dynamo_cdc.records")
        self.table = table
        self.checkpoint = checkpoint
        self.budget = budget or ReadBudget()
        arn = stream_arn or checkpoint.stream_arn
        if not arn:
            raise ValueError("StreamReader needs stream_arn (from discover()) or a checkpoint")
        self.stream_arn: str = arn
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.retention_seconds = retention_seconds
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        # Kept for the stream in this process, across readers (see _ShardCalls).
        calls = _shard_calls(self.stream_arn, clock)
        self._iterators = calls.iterators
        self._call_times = calls.times
        self.throttled = 0
        self.read_threads = read_threads
        self._count_lock = threading.Lock()
        # Set when a poll's budget is spent: threads in a throttling back-off give up.
        self._stop = threading.Event()
        self._poll_started = self._clock()
        # How far the stream's clock (DynamoDB's Date header) is ahead of ``clock``; 0 when
        # they agree within CLOCK_TOLERANCE_SECONDS.
        self._skew = 0.0

    # -- public ----------------------------------------------------------------------------

    def acknowledge(self, batch: StreamBatch) -> None:
        """Continue from ``batch.checkpoint`` (call after committing it)."""
        self.checkpoint = batch.checkpoint

    def poll(self) -> StreamBatch:
        """Read what the budget allows, parents before children.

        Returns:
            the records read and the checkpoint that covers them (not committed).

        Raises:
            StreamGapError: changes may have been lost (see the module docstring).
        """
        started = self._poll_started = self._clock()
        self.throttled = 0
        self._stop.clear()
        ckpt = self.checkpoint
        self._check_arn(ckpt, self._now())
        self._check_age(ckpt, started)
        try:
            shards = list_shards(self.client, self.stream_arn, call=self._call)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise self._gap(
                    "stream_not_found",
                    f"stream {self.stream_arn} no longer exists",
                    ckpt.last_change_time(),
                    self._now(),
                ) from None
            raise
        except _Throttled:
            return StreamBatch([], replace(ckpt), stopped_by="throttled", lag_seconds=None)
        if self.shard_filter is not None:
            keep = self.shard_filter(shards)
            shards = [s for s in shards if s.shard_id in keep]
        listed = {s.shard_id: s for s in shards}
        working = self._working_set(ckpt, listed, self._now())
        return self._read(ckpt, working, listed, started)

    def _now(self) -> float:
        """Now on the stream's clock (epoch seconds)."""
        return self._clock() + self._skew

    # -- checks ----------------------------------------------------------------------------

    def _gap(self, reason: str, what: str, start: str | None, now: float) -> StreamGapError:
        end = iso(now)
        window = f"from {start or 'the start of capture'} to {end}"
        return StreamGapError(
            f"Stream gap on table {self.table!r}: {what}. Changes {window} may be missing "
            "from the change partitions.",
            table=self.table,
            reason=reason,
            window_start=start,
            window_end=end,
            fix=gap_fix(self.table),
        )

    def _check_arn(self, ckpt: StreamCheckpoint, now: float) -> None:
        if ckpt.stream_arn and ckpt.stream_arn != self.stream_arn:
            raise self._gap(
                "stream_arn_changed",
                f"the table's stream is now {self.stream_arn} but the checkpoint follows "
                f"{ckpt.stream_arn} (the stream was disabled and enabled again)",
                ckpt.last_change_time(),
                now,
            )

    def _check_age(self, ckpt: StreamCheckpoint, now: float) -> None:
        if self.retention_seconds is None or ckpt.updated_at is None or not ckpt.shards:
            return
        if now - ckpt.updated_at > self.retention_seconds:
            raise self._gap(
                "checkpoint_behind_trim_horizon",
                f"the checkpoint was last advanced at {iso(ckpt.updated_at)}, longer ago than "
                f"the stream keeps records ({self.retention_seconds / 3600:g} h)",
                ckpt.oldest_unfinished_change_time() or iso(ckpt.updated_at),
                now - self.retention_seconds,
            )

    def _working_set(
        self, ckpt: StreamCheckpoint, listed: dict[str, Shard], now: float
    ) -> dict[str, ShardCheckpoint]:
        working: dict[str, ShardCheckpoint] = {}
        for sid, sc in ckpt.shards.items():
            if sid in listed:
                working[sid] = sc
            elif not sc.finished:
                raise self._gap(
                    "shard_vanished",
                    f"shard {sid} disappeared from the stream before it was read to its end "
                    f"(read up to {sc.last_sequence_number or 'nothing'})",
                    sc.last_change_time or ckpt.oldest_unfinished_change_time(),
                    now,
                )
            # A finished shard that left the listing was trimmed after being read: drop it.
        # Ancestors of known shards were read to their end and pruned: do not read them again.
        done: set[str] = set()
        for sid, sc in working.items():
            parent = listed[sid].parent_shard_id or sc.parent_shard_id
            while parent and parent not in working and parent not in done:
                done.add(parent)
                parent = listed[parent].parent_shard_id if parent in listed else None
        for sid, shard in listed.items():
            if sid not in working and sid not in done:
                working[sid] = ShardCheckpoint(parent_shard_id=shard.parent_shard_id)
        return working

    # -- reading ---------------------------------------------------------------------------

    def _read(
        self,
        ckpt: StreamCheckpoint,
        working: dict[str, ShardCheckpoint],
        listed: dict[str, Shard],
        started: float,
    ) -> StreamBatch:
        """Serve the ready shards, up to ``read_threads`` GetRecords in flight (one per shard).

        Every decision (what to call next, budgets, lineage, the checkpoint) is taken here, in
        the polling thread, as each call's answer comes back; the worker threads only make the
        calls (see the module docstring).
        """
        budget = self.budget
        pages: list[tuple[str, Sequence[dict[str, Any]]]] = []
        count = 0
        ranges: dict[str, list[Any]] = {}
        finished: list[str] = []
        calls = 0
        size = 0
        empties: dict[str, int] = {}
        caught_up: set[str] = set()  # open shards read up to the poll's start
        set_aside: set[str] = set()  # shards whose throttling persisted: read again next poll
        # a record created in a later second than the poll's start was written after it
        start_second = math.floor(self._now())
        last_served = ckpt.rotation_cursor
        stopped_by: str | None = None

        def ready(sid: str) -> bool:
            sc = working[sid]
            if sc.finished:
                return False
            parent = sc.parent_shard_id
            return not parent or parent not in working or working[parent].finished

        order = sorted(working)
        if ckpt.rotation_cursor:
            cut = next((i for i, s in enumerate(order) if s > ckpt.rotation_cursor), 0)
            order = order[cut:] + order[:cut]
        # Ready shards in the order they are served (round-robin: a shard that must be read
        # again goes to the back); shards that spent their 5 calls of the last second wait aside.
        queue = deque(sid for sid in order if ready(sid))
        waiting: list[str] = []
        position = {sid: working[sid].last_sequence_number for sid in working}
        in_flight: dict[Future[_Fetched], tuple[str, int, int]] = {}
        reserved_records = reserved_calls = 0
        failure: BaseException | None = None
        threads = max(1, self.read_threads)
        pool = ThreadPoolExecutor(threads, "dynamo-cdc-shards") if threads > 1 else None

        def apply(sid: str, fetched: _Fetched) -> None:
            nonlocal count, calls, size
            calls += fetched.calls
            if fetched.response is None:  # throttling persisted: leave the shard for later
                set_aside.add(sid)
                return
            resp = fetched.response
            recs = resp.get("Records") or []
            next_it = resp.get("NextShardIterator")
            sc = working[sid]
            # What was read, not the records' SizeBytes: a lying endpoint cannot make a poll
            # read more than its budget (by more than the responses in flight).
            size += resp.get(BODY_BYTES) or (_json_bytes(recs) if recs else 0)
            past_start = False
            if recs:
                first, last, _, when = page_summary(recs)
                past_start = when is not None and epoch_seconds(when) > start_second
                pages.append((sid, recs))
                count += len(recs)
                rng = ranges.setdefault(sid, [first, last, 0])
                rng[1] = last
                rng[2] += len(recs)
                position[sid] = last
                sc = replace(
                    sc,
                    last_sequence_number=last,
                    last_change_time=iso(when) if when is not None else sc.last_change_time,
                )
            ending = listed[sid].ending_sequence_number
            done = next_it is None or (
                ending is not None and position[sid] is not None and position[sid] == ending
            )
            if next_it is not None and not done:
                self._iterators[sid] = (next_it, position[sid])
            else:
                self._iterators.pop(sid, None)
            if done:
                sc = replace(sc, finished=True)
                finished.append(sid)
            working[sid] = sc
            if done:
                # Children become ready now; serve them in this poll, right after.
                for child in sorted(c for c in working if working[c].parent_shard_id == sid):
                    if ready(child) and child not in queue:
                        queue.append(child)
            elif recs and (listed[sid].closed or not past_start):
                # More may follow, however short the page (GetRecords stops at 1 MB).
                empties[sid] = 0
                queue.append(sid)
            elif listed[sid].closed:
                # A closed shard may answer empty before its end; try a few times.
                empties[sid] = empties.get(sid, 0) + 1
                if empties[sid] < 3:
                    queue.append(sid)
                else:
                    caught_up.add(sid)
            else:
                # An open shard that answered nothing, or reached records written after the
                # poll started, is caught up for this poll.
                caught_up.add(sid)

        try:
            while True:
                if stopped_by is None and failure is None:
                    stopped_by = self._over_budget(count, size, calls, started)
                if stopped_by is None and failure is None:
                    waiting, freed = [], waiting
                    for sid in freed:
                        (queue if self._may_call(sid) else waiting).append(sid)
                    while queue and len(in_flight) < threads:
                        limit = min(
                            budget.records_per_call, budget.max_records - count - reserved_records
                        )
                        cached = self._iterators.get(queue[0])
                        cost = 1 if cached and cached[1] == position[queue[0]] else 2
                        if in_flight and (
                            limit < 1 or calls + reserved_calls + cost > budget.max_calls
                        ):
                            break  # wait: what is in flight may leave room in the budget
                        sid = queue.popleft()
                        if not self._may_call(sid):
                            waiting.append(sid)
                            continue
                        last_served = sid
                        limit = max(1, limit)
                        future = self._submit(pool, sid, position[sid], limit)
                        in_flight[future] = (sid, limit, cost)
                        reserved_records += limit
                        reserved_calls += cost
                else:
                    self._stop.set()  # threads in a back-off give up; nothing new is sent
                if not in_flight:
                    if stopped_by is not None or failure is not None:
                        break
                    if queue:
                        continue
                    if not waiting:
                        break
                    # Every remaining shard hit its 5 calls/s: wait for the first to free up.
                    self._sleep(self._rate_wait(waiting))
                    continue
                # Wake for a shard freed from its rate limit, and to see the time budget end.
                left = budget.max_seconds - (self._clock() - started)
                timeout = max(0.001, min(left, self._rate_wait(waiting) if waiting else left))
                done_now, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in sorted(done_now, key=lambda f: in_flight[f][0]):
                    sid, limit, cost = in_flight.pop(future)
                    reserved_records -= limit
                    reserved_calls -= cost
                    try:
                        fetched = future.result()
                    except BaseException as exc:  # noqa: BLE001 - raised below, once all return
                        failure = failure or exc
                        continue
                    if failure is None:
                        apply(sid, fetched)
        finally:
            self._stop.set()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            raise failure

        behind = [
            sid
            for sid in working
            if ready(sid) and sid not in caught_up and not working[sid].finished
        ]
        if stopped_by is None:
            stopped_by = "throttled" if set_aside else "caught_up"
        new = StreamCheckpoint(
            table=self.table,
            stream_arn=self.stream_arn,
            shards=working,
            updated_at=started,
            rotation_cursor=last_served,
        ).pruned()
        return StreamBatch(
            pages=pages,
            checkpoint=new,
            ranges={sid: ShardRange(sid, r[0], r[1], r[2]) for sid, r in ranges.items()},
            finished_shards=finished,
            calls=calls,
            bytes=size,
            throttled=self.throttled,
            stopped_by=stopped_by,
            lag_seconds=self._lag([working[sid] for sid in behind]),
        )

    def _submit(
        self, pool: ThreadPoolExecutor | None, sid: str, pos: str | None, limit: int
    ) -> Future[_Fetched]:
        """Start one GetRecords on a worker thread (or, with one thread, make it now)."""
        if pool is not None:
            return pool.submit(self._fetch, sid, pos, limit)
        future: Future[_Fetched] = Future()
        try:
            future.set_result(self._fetch(sid, pos, limit))
        except BaseException as exc:  # noqa: BLE001 - handed over as a thread's would be
            future.set_exception(exc)
        return future

    def _fetch(self, sid: str, pos: str | None, limit: int) -> _Fetched:
        """One GetRecords on ``sid`` from ``pos`` (a worker thread's whole job)."""
        calls = [0]
        try:
            return _Fetched(self._get_records(sid, pos, limit, calls), calls[0])
        except _Throttled:
            return _Fetched(None, calls[0])

    def _lag(self, behind: Sequence[ShardCheckpoint]) -> float | None:
        """See :attr:`StreamBatch.lag_seconds`."""
        if not behind:
            return 0.0
        known = [epoch_seconds(sc.last_change_time) for sc in behind if sc.last_change_time]
        if not known:
            return None
        return max(0.0, self._now() - min(known))

    def _over_budget(self, n: int, size: int, calls: int, started: float) -> str | None:
        b = self.budget
        if n >= b.max_records:
            return "records"
        if size >= b.max_bytes:
            return "bytes"
        if calls >= b.max_calls:
            return "calls"
        if self._clock() - started >= b.max_seconds:
            return "seconds"
        return None

    def _may_call(self, sid: str) -> bool:
        times = self._call_times.setdefault(sid, deque(maxlen=MAX_CALLS_PER_SHARD_PER_SECOND))
        if len(times) < MAX_CALLS_PER_SHARD_PER_SECOND:
            return True
        return self._clock() - times[0] >= 1.0

    def _rate_wait(self, sids: Sequence[str]) -> float:
        now = self._clock()
        waits = [
            1.0 - (now - self._call_times[s][0])
            for s in sids
            if len(self._call_times.get(s, ())) == MAX_CALLS_PER_SHARD_PER_SECOND
        ]
        return max(0.001, min(waits) if waits else 0.001)

    def _get_records(
        self, sid: str, pos: str | None, limit: int, calls: list[int]
    ) -> dict[str, Any]:
        """One GetRecords on ``sid`` from ``pos``; counts the calls made in ``calls[0]``."""
        cached = self._iterators.get(sid)
        iterator = cached[0] if cached and cached[1] == pos else None
        for _attempt in range(3):
            if iterator is None:
                calls[0] += 1
                iterator = self._get_iterator(sid, pos)
            try:
                calls[0] += 1
                return dict(
                    self._call(self.client.get_records, ShardIterator=iterator, Limit=limit)
                )
            except nesting.TooDeep:
                raise StreamRecordError(
                    f"Shard {sid} of table {self.table!r} answered GetRecords after sequence "
                    f"number {pos} with a record nested deeper than DynamoDB's "
                    f"{nesting.MAX_LEVELS} levels: DynamoDB never sends one.",
                    fix="check that DYNAMO_CDC_ENDPOINT_URL points at DynamoDB Streams; the "
                    "checkpoint did not move.",
                ) from None
            except ClientError as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException":
                    log.info("iterator of %s/%s expired; getting a fresh one", self.table, sid)
                    self._iterators.pop(sid, None)
                    iterator = None
                    continue
                self._raise_shard_error(exc, sid, pos)
            finally:
                # When the answer came, not when the call left: DynamoDB counted the call on
                # its arrival, in between, so five answers a second never make six arrivals.
                times = self._call_times.setdefault(
                    sid, deque(maxlen=MAX_CALLS_PER_SHARD_PER_SECOND)
                )
                times.append(self._clock())
        raise _Throttled  # iterators kept expiring: stop for now, the next poll retries

    def _get_iterator(self, sid: str, pos: str | None) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": sid}
        if pos is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["SequenceNumber"] = pos
        try:
            return str(self._call(self.client.get_shard_iterator, **kwargs)["ShardIterator"])
        except ClientError as exc:
            self._raise_shard_error(exc, sid, pos)
            raise  # unreachable; keeps type checkers calm

    def _raise_shard_error(self, exc: ClientError, sid: str, pos: str | None) -> None:
        code = error_code(exc)
        sc = self.checkpoint.shards.get(sid)
        start = (sc.last_change_time if sc else None) or self.checkpoint.last_change_time()
        now = self._now()
        if code == "TrimmedDataAccessException":
            raise self._gap(
                "trimmed",
                f"shard {sid} no longer holds the records after sequence number "
                f"{pos or '(trim horizon)'}: they were trimmed (the stream keeps 24 hours)",
                start,
                now,
            ) from None
        if code == "ResourceNotFoundException":
            raise self._gap(
                "shard_vanished",
                f"shard {sid} disappeared before it was read to its end",
                start,
                now,
            ) from None
        raise_if_credentials(exc, f"read the stream of table {self.table}")
        raise exc

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """Call ``fn``; back off with jitter on throttling, give up with _Throttled."""
        for attempt in range(self.max_retries + 1):
            try:
                response = fn(**kwargs)
            except ClientError as exc:
                raise_if_credentials(exc, f"read the stream of table {self.table!r}")
                if error_code(exc) not in TRANSIENT_CODES:
                    raise
                with self._count_lock:
                    self.throttled += 1
                delay = min(self.backoff_cap, self.backoff_base * 2**attempt)
                delay *= 0.5 + self._rng.random() / 2
                if (
                    attempt == self.max_retries
                    or self._stop.is_set()
                    or self._clock() + delay - self._poll_started >= self.budget.max_seconds
                ):
                    log.warning(
                        "%s: %s throttled %d times; left for the next poll",
                        self.table,
                        getattr(fn, "__name__", "call"),
                        attempt + 1,
                    )
                    raise _Throttled from None
                self._sleep(delay)
                continue
            server = _server_time(response)
            if server is not None:
                skew = server - self._clock()
                self._skew = skew if abs(skew) > CLOCK_TOLERANCE_SECONDS else 0.0
            return response
        raise AssertionError("unreachable")
