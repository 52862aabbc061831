"""The local AWS: moto's server app wrapped by a WSGI app that adds what moto lacks.

Every request goes to moto (DynamoDB, DynamoDB Streams, S3, STS, ...) except:

* ``ExportTableToPointInTime``, ``DescribeExport`` and ``ListExports``: answered by
  :class:`~dynamo_cdc.local.exports.ExportManager` (AWS-faithful exports);
* the DynamoDB Streams API (``X-Amz-Target: DynamoDBStreams_20120810.*``): answered by the
  stream simulator of :mod:`dynamo_cdc.local.streams` (through :class:`StreamsRouter`, one
  simulator per account and region, on the server's clock) unless the app was made with
  ``streams="moto"``; any other handler can be plugged in
  (:meth:`LocalAwsApp.attach_streams_simulator`, :meth:`LocalAwsApp.set_streams_handler`);
* paths under ``/_dynamo_cdc/``: the control API (clock, forced export failures, TTL sweep,
  stream rotation and faults, credentials, reset), described in :data:`CONTROL_API`.

The control API and moto's own ``/moto-api/`` (reset, seeds, its dashboard) can switch checks
off and wipe state, so they are guarded, before anything else is looked at: a request must carry
the server's control token (header ``X-Dynamo-Cdc-Token``, see :data:`CONTROL_TOKEN_HEADER`;
``LocalAwsControl`` sends it) and a POST must say ``Content-Type: application/json`` (a web page
cannot send either to another origin without the browser asking first, which this server never
allows). Only ``GET /_dynamo_cdc/health`` is open. Every request, AWS APIs included, must name a
loopback host in its ``Host`` header (``127.0.0.1``, ``localhost``, ``*.localhost``, ``[::1]``,
or a name the server was told to accept), which defeats DNS rebinding: a page of
``evil.example`` whose name is made to point at 127.0.0.1 still sends ``Host: evil.example``.
:class:`LocalAwsServer` binds loopback addresses only unless told ``allow_remote=True``.

Credentials are not checked unless asked for (``--access-key-id``, ``access_key_id=`` or the
``credentials`` control route): then a request signed with another access key id is answered as
AWS answers an unknown key (see :func:`credentials_error`), so that code under test meets the
same error shapes as on AWS. Signatures themselves are not verified.

With the simulator, the stream lifecycle is the simulator's, never moto's: the
``StreamSpecification`` of CreateTable and UpdateTable is taken out of the request before moto
sees it (disabling a stream on moto breaks the table and re-enabling raises, see FACTS.md), the
simulator enables or disables the stream (DeleteTable disables it), and the TableDescription of
CreateTable, UpdateTable, DescribeTable and DeleteTable is rewritten to show the simulator's
``StreamSpecification`` (left out while the stream is off, as AWS does), ``LatestStreamArn`` and
``LatestStreamLabel`` (kept after a disable, as AWS does; a re-enabled stream has a new ARN).

Writes (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems and PartiQL writes)
are recorded in the write history of :mod:`dynamo_cdc.local.history`: the images of the keys a
request touches are read from moto's backend before and after moto runs it, and every key whose
image changed becomes one record. Hooking requests rather than moto's Table methods keeps the
history exact where moto's stream is not (an UpdateItem that creates an item is one INSERT, a
no-op write is nothing, a cancelled transaction leaves nothing). DynamoDB requests are handled one
at a time (moto's models are not thread-safe, and before/after must see no other writer).
"""

from __future__ import annotations

import base64
import hmac
import io
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

import orjson
from werkzeug.serving import BaseWSGIServer, make_server

from dynamo_cdc.local import glue
from dynamo_cdc.local.exports import AwsError, ExportManager, TableRef
from dynamo_cdc.local.history import (
    TTL_USER_IDENTITY,
    Clock,
    Item,
    TableHistory,
    WriteHistory,
    key_id,
    micros_to_datetime,
)
from dynamo_cdc.local.streams import VIEW_TYPES, SimulatedError, StreamSimulator

log = logging.getLogger(__name__)

DYNAMODB_PREFIX = "DynamoDB_20120810."
STREAMS_PREFIX = "DynamoDBStreams_20120810."
CONTROL_PREFIX = "/_dynamo_cdc/"
MOTO_API_PREFIX = "/moto-api"
#: The header carrying the control token (see the module docstring).
CONTROL_TOKEN_HEADER = "X-Dynamo-Cdc-Token"
#: The environment variable a launched local AWS reads its control token from.
CONTROL_TOKEN_ENV = "DYNAMO_CDC_LOCAL_AWS_TOKEN"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
EXPORT_OPS = {"ExportTableToPointInTime", "DescribeExport", "ListExports"}
KEYED_WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
PARTIQL_OPS = {"ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"}
#: Operations whose answer holds a TableDescription, and the member it is under.
TABLE_DESCRIPTION_OPS = {
    "CreateTable": "TableDescription",
    "UpdateTable": "TableDescription",
    "DeleteTable": "TableDescription",
    "DescribeTable": "Table",
}
STREAM_FIELDS = ("StreamSpecification", "LatestStreamArn", "LatestStreamLabel")
STREAMS_MODES = ("simulator", "moto")
DEFAULT_ACCOUNT = "123456789012"
PARTIQL_TABLE_RE = re.compile(
    r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?([A-Za-z0-9_.\-]+)\"?", re.IGNORECASE
)

#: The control API, served on the same port as the AWS APIs. Bodies and answers are JSON.
CONTROL_API = {
    "GET /_dynamo_cdc/health": "-> {ok: true}",
    "GET /_dynamo_cdc/clock": "-> {now: ISO-8601, now_micros, offset_seconds}",
    "POST /_dynamo_cdc/clock": '{"advance_seconds": N} or {"set_epoch_seconds": T} -> as GET',
    "POST /_dynamo_cdc/exports/fail-next": '{"failure_code"?, "failure_message"?}: the next '
    "export started ends FAILED",
    "POST /_dynamo_cdc/exports/config": '{"delay_seconds"?, "items_per_file"?, "max_files"?}',
    "POST /_dynamo_cdc/ttl/sweep": "delete items whose TTL attribute is <= now (by the clock), "
    "as the TTL service would -> {deleted: n}",
    "GET /_dynamo_cdc/streams": "-> {mode: simulator|moto|custom, config: {knobs}, streams: "
    "[{account, region, table, stream_arn, stream_label, view_type, enabled}], calls: {op: n}, "
    "errors: {code: n}}",
    "POST /_dynamo_cdc/streams/rotate": '{"table", "split"?: false, "region"?, "account"?}: close '
    "the open shards of the table's stream and open their children (two each with split) -> "
    "{shard_ids: [new ids]}; 400 when the table has no enabled stream",
    "POST /_dynamo_cdc/streams/config": '{"throttle_rate"?, "internal_error_rate"?, '
    '"enforce_read_limit"?, "rotate_every_records"? (0 or null: off)} -> {config: {knobs}}; '
    "applies to every simulator, now and later",
    "GET /_dynamo_cdc/credentials": "-> {access_key_id: the id requests must be signed with, or "
    "null when credentials are not checked}",
    "POST /_dynamo_cdc/credentials": '{"access_key_id": ID or null}: from now on answer requests '
    "signed with another access key id as AWS does (DynamoDB 400 UnrecognizedClientException, S3 "
    "403 InvalidAccessKeyId, STS 403 InvalidClientTokenId); null: accept any -> as GET",
    "POST /_dynamo_cdc/reset": "forget every table, bucket, export, history and stream; clock to "
    "wall time; stream fault knobs back to their start values (the credentials check stays)",
}

StreamsHandler = Any  # an object with handle(operation, params) -> dict (see set_streams_handler)


class _ObjectStore:
    """moto's S3 backend, seen through the ObjectStore protocol of the export module."""

    @staticmethod
    def _backend(account: str) -> Any:
        from moto.s3.models import s3_backends

        return s3_backends[account]["aws"]

    def bucket_exists(self, account: str, bucket: str) -> bool:
        return bucket in self._backend(account).buckets

    def put(self, account: str, bucket: str, key: str, body: bytes) -> str:
        obj = self._backend(account).put_object(bucket_name=bucket, key_name=key, value=body)
        return str(obj.etag).strip('"')


def _json_response(
    start_response: Callable[..., Any], status: int, payload: Any, content_type: str
) -> list[bytes]:
    body = orjson.dumps(payload)
    reason = {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        415: "Unsupported Media Type",
        500: "Internal Server Error",
    }
    start_response(
        f"{status} {reason.get(status, 'Error')}",
        [("Content-Type", content_type), ("Content-Length", str(len(body)))],
    )
    return [body]


def _aws_error(start_response: Callable[..., Any], exc: Any) -> list[bytes]:
    code = getattr(exc, "code", "InternalServerError")
    payload = {
        "__type": f"com.amazonaws.dynamodb.v20120810#{code}",
        "message": getattr(exc, "message", str(exc)),
    }
    return _json_response(
        start_response, int(getattr(exc, "status", 400)), payload, JSON_CONTENT_TYPE
    )


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    body = (
        stream.read(length)
        if length
        else (stream.read() if environ.get("wsgi.input_terminated") else b"")
    )
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _account_and_region(environ: dict[str, Any]) -> tuple[str, str]:
    """The account and region moto will file this request under (same rules as moto's)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    region = "us-east-1"
    access_key = "AKIAEXAMPLE"
    m = re.search(r"Credential=([^/]+)/\d{8}/([^/]+)/", auth)
    if m:
        access_key, region = m.group(1), m.group(2)
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"], region
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return environ["HTTP_X_MOTO_ACCOUNT_ID"], region
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key), region


def is_loopback_host(host: str) -> bool:
    """True for a loopback name or address (``localhost``, ``*.localhost``, 127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(environ: dict[str, Any]) -> str | None:
    """The host named by the request's Host header, without its port (None when absent)."""
    host = environ.get("HTTP_HOST")
    if not host:
        return None
    if host.startswith("["):  # [::1]:4566
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_credential(environ: dict[str, Any]) -> tuple[str | None, str]:
    """The access key id a request was signed with and the service it was signed for.

    SigV4 puts ``Credential=AKID/date/region/service/aws4_request`` in the Authorization header
    (or ``X-Amz-Credential`` in a presigned URL's query); SigV2 (old S3 clients) has
    ``AWS AKID:signature``. ``(None, "")`` for an unsigned request.
    """
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=([^/,\s]+)/\d{8}/[^/]+/([^/,\s]+)/", auth)
    if m:
        return m.group(1), m.group(2)
    credential = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
    parts = credential.split("/")
    if len(parts) >= 4 and parts[0]:
        return parts[0], parts[3]
    m = re.match(r"AWS ([^:\s]+):", auth)
    if m:
        return m.group(1), "s3"
    return None, ""


def credentials_error(
    start_response: Callable[..., Any], environ: dict[str, Any], access_key_id: str | None
) -> list[bytes]:
    """Answer as AWS answers a request signed with an access key id it does not know.

    DynamoDB (and DynamoDB Streams): HTTP 400 ``UnrecognizedClientException`` "The security
    token included in the request is invalid." (``MissingAuthenticationTokenException`` when
    unsigned). S3: HTTP 403 ``InvalidAccessKeyId`` (``AccessDenied`` when unsigned), no body for
    HEAD. Other (query-protocol) services such as STS: HTTP 403 ``InvalidClientTokenId``.
    """
    _, service = request_credential(environ)
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    request_id = uuid.uuid4().hex.upper()
    if service == "dynamodb" or target.startswith((DYNAMODB_PREFIX, STREAMS_PREFIX)):
        if access_key_id is None:
            code, message = (
                "MissingAuthenticationTokenException",
                ("Request is missing Authentication Token"),
            )
        else:
            code, message = (
                "UnrecognizedClientException",
                ("The security token included in the request is invalid."),
            )
        body = orjson.dumps({"__type": f"com.amazon.coral.service#{code}", "message": message})
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", JSON_CONTENT_TYPE),
                ("Content-Length", str(len(body))),
                ("x-amzn-RequestId", request_id),
            ],
        )
        return [body]
    if service in ("s3", ""):
        if access_key_id is None:
            code, message, extra = "AccessDenied", "Access Denied", ""
        else:
            code = "InvalidAccessKeyId"
            message = "The AWS Access Key Id you provided does not exist in our records."
            extra = f"<AWSAccessKeyId>{access_key_id}</AWSAccessKeyId>"
        text = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
            f"<RequestId>{request_id[:16]}</RequestId><HostId>{request_id}</HostId></Error>"
        )
    else:
        text = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            "<Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token "
            "included in the request is invalid.</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    body = b"" if environ.get("REQUEST_METHOD") == "HEAD" else text.encode()
    start_response(
        "403 Forbidden",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id[:16]),
        ],
    )
    return [body]


def _bytes_as_base64(value: Any) -> str:
    # moto keeps B/BS values as bytes; the history (like exports) holds base64 text.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"unexpected {type(value).__name__} in an item")


def _decimal_json(value: Any) -> Any:
    # Request bodies are parsed with Decimal floats; none of a table request's numbers needs
    # more than a float to be sent on to moto.
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"unexpected {type(value).__name__} in a request")


def _copy(item: Any) -> Item:
    """A private deep copy of a moto item image, in DynamoDB JSON with binary as base64."""
    return orjson.loads(orjson.dumps(item, default=_bytes_as_base64))


def _with_body(headers: list[tuple[str, str]], body: bytes) -> list[tuple[str, str]]:
    """moto's headers for a rewritten body: Content-Length and the CRC32 botocore checks."""
    out = [(k, v) for k, v in headers if k.lower() not in ("content-length", "x-amz-crc32")]
    out.append(("Content-Length", str(len(body))))
    out.append(("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF)))
    return out


def _replace_body(environ: dict[str, Any], body: bytes) -> None:
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def _validation_error(message: str) -> SimulatedError:
    return SimulatedError("ValidationException", message)


@dataclass
class _LatestStream:
    arn: str
    label: str
    view_type: str


#: Fault and rotation knobs that can change while the server runs (``streams/config``).
STREAM_KNOBS = (
    "throttle_rate",
    "internal_error_rate",
    "enforce_read_limit",
    "rotate_every_records",
)


class StreamsRouter:
    """The DynamoDB Streams of the local AWS: a :class:`StreamSimulator` per account and region.

    It is what :meth:`LocalAwsApp.attach_streams_simulator` plugs in by default: fed every write
    of the write history (``record``), answering the Streams API (``handle_for``), and driven by
    the table lifecycle (``enable``, ``disable``, ``table_fields``). Each simulator is made on
    first use with the account and region in its StreamArns and records, the shared ``clock``
    and the current knobs.

    Args:
        clock: epoch seconds, shared by every simulator (the server's clock).
        seed: seeds shard ids, event ids, sequence gaps and faults (mixed with the account,
            region and reset generation, so two regions or two resets never repeat ARNs).
        simulator: one simulator to use for every account and region (a caller's own).
        **options: more :class:`StreamSimulator` keyword arguments (``retention_seconds``,
            ``iterator_ttl_seconds``, ``rotate_every_seconds``, the :data:`STREAM_KNOBS`...).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        seed: int = 0,
        simulator: StreamSimulator | None = None,
        **options: Any,
    ) -> None:
        self.clock = clock
        self._seed = seed
        self._fixed = simulator
        self._initial_options = dict(options)
        self._options = dict(options)
        self._sims: dict[tuple[str, str], StreamSimulator] = {}
        self._latest: dict[tuple[str, str, str], _LatestStream] = {}
        self._generation = 0
        self._lock = threading.RLock()
        self._where = threading.local()

    # -- which account and region a call is for ---------------------------------------------

    @contextmanager
    def context(self, account: str, region: str) -> Iterator[None]:
        """Writes recorded within this block (in this thread) belong to account and region."""
        previous = getattr(self._where, "value", None)
        self._where.value = (account, region)
        try:
            yield
        finally:
            self._where.value = previous

    def simulator(
        self, account: str = DEFAULT_ACCOUNT, region: str = "us-east-1"
    ) -> StreamSimulator:
        """The simulator of an account and region (made on first use)."""
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            sim = self._sims.get((account, region))
            if sim is None:
                seed = zlib.crc32(f"{self._seed}:{account}:{region}:{self._generation}".encode())
                sim = StreamSimulator(
                    clock=self.clock,
                    region=region,
                    account_id=account,
                    seed=seed,
                    **self._options,
                )
                self._sims[(account, region)] = sim
            return sim

    def _simulators(self) -> list[StreamSimulator]:
        with self._lock:
            return [self._fixed] if self._fixed is not None else list(self._sims.values())

    # -- fed by the write history ------------------------------------------------------------

    def record(
        self,
        table_name: str,
        event_name: str,
        keys: Item,
        old_image: Item | None,
        new_image: Item | None,
        when: Any,
        user_identity: dict[str, str] | None = None,
    ) -> None:
        """One change (a :class:`~dynamo_cdc.local.history.WriteSubscriber`): appended to the
        table's stream, if it has one, in the account and region of :meth:`context`."""
        where = getattr(self._where, "value", None)
        if where is None:
            # Written outside a request (a caller's own code): the table's only enabled stream.
            with self._lock:
                matches = [k for k in self._latest if k[2] == table_name]
            if len(matches) != 1:
                return
            where = matches[0][:2]
        self.simulator(*where).record(
            table_name, event_name, keys, old_image, new_image, when, user_identity
        )

    # -- the Streams API ---------------------------------------------------------------------

    def handle_for(
        self, account: str, region: str, operation: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Answer a Streams API call made with the credentials of ``account`` in ``region``."""
        return self.simulator(account, region).handle(operation, params)

    def handle(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Answer a Streams API call in the account and region of :meth:`context` (default
        account, us-east-1 outside it)."""
        account, region = getattr(self._where, "value", None) or (DEFAULT_ACCOUNT, "us-east-1")
        return self.handle_for(account, region, operation, params)

    # -- the table lifecycle -----------------------------------------------------------------

    def is_enabled(self, account: str, region: str, table: str) -> bool:
        """Whether the table has an enabled stream."""
        with self._lock:
            latest = self._latest.get((account, region, table))
            return latest is not None and (
                self.simulator(account, region).stream_arn(table) == latest.arn
            )

    def enable(
        self,
        account: str,
        region: str,
        table: str,
        view_type: str,
        key_schema: list[dict[str, str]] | None,
    ) -> str:
        """Start a new stream on the table (always a new StreamArn); returns it."""
        with self._lock:
            sim = self.simulator(account, region)
            arn = sim.enable_stream(table, view_type, None, key_schema=key_schema)
            label = arn.rsplit("/stream/", 1)[1]
            self._latest[(account, region, table)] = _LatestStream(arn, label, view_type)
            return arn

    def disable(self, account: str, region: str, table: str) -> None:
        """Stop the table's stream: open shards close, records stay readable for 24 h."""
        with self._lock:
            self.simulator(account, region).disable_stream(table)

    def forget(self, account: str, region: str, table: str) -> None:
        """The table was deleted: disable its stream (if on) and forget its latest stream."""
        with self._lock:
            if self.is_enabled(account, region, table):
                self.disable(account, region, table)
            self._latest.pop((account, region, table), None)

    def table_fields(self, account: str, region: str, table: str) -> dict[str, Any]:
        """The stream members of the table's TableDescription, as AWS shows them."""
        with self._lock:
            latest = self._latest.get((account, region, table))
            if latest is None:
                return {}
            fields: dict[str, Any] = {
                "LatestStreamLabel": latest.label,
                "LatestStreamArn": latest.arn,
            }
            if self.is_enabled(account, region, table):
                fields["StreamSpecification"] = {
                    "StreamEnabled": True,
                    "StreamViewType": latest.view_type,
                }
            return fields

    # -- control -----------------------------------------------------------------------------

    def rotate(
        self,
        table: str,
        split: bool = False,
        *,
        account: str | None = None,
        region: str | None = None,
    ) -> list[str]:
        """Close the open shards of the table's enabled stream and open their children.

        Args:
            table: the table.
            split: two children per closed shard instead of one.
            account / region: where the table is; needed only when tables of that name have
                streams in several accounts or regions.

        Returns:
            The new shard ids.

        Raises:
            ValueError: no enabled stream (or several) matches.
        """
        with self._lock:
            matches = [
                (a, r)
                for (a, r, t) in self._latest
                if t == table
                and (account is None or a == account)
                and (region is None or r == region)
                and self.is_enabled(a, r, t)
            ]
            if len(matches) != 1:
                what = "no table" if not matches else f"{len(matches)} tables"
                raise ValueError(
                    f"{what} named {table!r} with an enabled stream"
                    + (": give region and account" if matches else "")
                )
            return self.simulator(*matches[0]).rotate(table, split=split)

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change :data:`STREAM_KNOBS` on every simulator, now and for those made later.

        ``rotate_every_records`` 0 or None turns automatic rotation off.
        """
        unknown = set(knobs) - set(STREAM_KNOBS)
        if unknown:
            raise ValueError(f"unknown stream knobs {sorted(unknown)}; known: {STREAM_KNOBS}")
        clean: dict[str, Any] = {}
        for name, value in knobs.items():
            if name in ("throttle_rate", "internal_error_rate"):
                value = float(value)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{name} must be between 0 and 1, not {value}")
            elif name == "enforce_read_limit":
                if not isinstance(value, bool):
                    raise TypeError("enforce_read_limit must be true or false")
            elif name == "rotate_every_records":
                value = int(value) if value else None
                if value is not None and value < 1:
                    raise ValueError("rotate_every_records must be positive (0 or null: off)")
            clean[name] = value
        with self._lock:
            self._options.update(clean)
            for sim in self._simulators():
                for name, value in clean.items():
                    setattr(sim, name, value)
            return self.config()

    def config(self) -> dict[str, Any]:
        """The current knobs."""
        with self._lock:
            sims = self._simulators()
            probe = sims[0] if sims else StreamSimulator(clock=self.clock, **self._options)
            return {name: getattr(probe, name) for name in STREAM_KNOBS}

    def status(self) -> dict[str, Any]:
        """Every table's latest stream, and the simulators' call and error counters."""
        with self._lock:
            streams = [
                {
                    "account": a,
                    "region": r,
                    "table": t,
                    "stream_arn": latest.arn,
                    "stream_label": latest.label,
                    "view_type": latest.view_type,
                    "enabled": self.is_enabled(a, r, t),
                }
                for (a, r, t), latest in self._latest.items()
            ]
            calls: dict[str, int] = {}
            errors: dict[str, int] = {}
            for sim in self._simulators():
                for op, n in sim.calls.items():
                    calls[op] = calls.get(op, 0) + n
                for code, n in sim.errors.items():
                    errors[code] = errors.get(code, 0) + n
            return {"config": self.config(), "streams": streams, "calls": calls, "errors": errors}

    def reset(self) -> None:
        """Forget every stream; knobs back to their start values (a caller's own simulator is
        kept but cannot be emptied: its streams are disabled)."""
        with self._lock:
            self._generation += 1
            self._sims.clear()
            self._options = dict(self._initial_options)
            if self._fixed is not None:
                for account, region, table in list(self._latest):
                    self.forget(account, region, table)
            self._latest.clear()


class LocalAwsApp:
    """The WSGI application of the local AWS (see the module docstring).

    Args:
        export_delay_seconds: how long exports stay IN_PROGRESS (wall time).
        export_items_per_file: items per export data file before another file is started.
        streams: ``"simulator"`` (default): DynamoDB Streams from :class:`StreamsRouter` on this
            app's clock; ``"moto"``: moto's own streams (one shard, no trims; for comparison).
        streams_options: more :class:`StreamsRouter` / :class:`StreamSimulator` keyword
            arguments (``seed``, ``rotate_every_records``, ``throttle_rate``...).
        streams_simulator: a caller's own simulator, plugged in at once with
            :meth:`attach_streams_simulator` (instead of the default one).
        access_key_id: answer requests signed with any other access key id as AWS answers
            an unknown key (see :func:`credentials_error`); None (default) accepts any.
        control_token: the token the control API and ``/moto-api/`` require (default: a new
            random one, read it from :attr:`control_token`).
        allowed_hosts: Host header names accepted besides loopback ones (for a server bound
            to another address on purpose).
    """

    def __init__(
        self,
        *,
        export_delay_seconds: float = 0.3,
        export_items_per_file: int = 100,
        streams: str = "simulator",
        streams_options: dict[str, Any] | None = None,
        streams_simulator: Any = None,
        access_key_id: str | None = None,
        control_token: str | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        from dynamo_cdc.local import fastpath

        if streams not in STREAMS_MODES:
            raise ValueError(f"streams must be one of {STREAMS_MODES}, not {streams!r}")
        fastpath.install()

        self.clock = Clock()
        self.history = WriteHistory(self.clock)
        self.exports = ExportManager(
            self.clock,
            _ObjectStore(),
            delay_seconds=export_delay_seconds,
            items_per_file=export_items_per_file,
        )
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._lock = threading.RLock()
        #: The access key id every AWS request must be signed with, or None to accept any.
        self.required_access_key_id: str | None = access_key_id
        #: What the control API and moto's /moto-api/ require in :data:`CONTROL_TOKEN_HEADER`.
        self.control_token = control_token or secrets.token_urlsafe(32)
        self.allowed_hosts = frozenset(h.strip("[]").lower() for h in allowed_hosts)
        self._streams_handler: StreamsHandler | None = None
        self._subscriber: Any = None
        #: The stream simulators driving the table lifecycle, or None when moto's streams (or
        #: a caller's handler without a lifecycle) are used.
        self.streams: StreamsRouter | None = None
        if streams_simulator is not None:
            self.attach_streams_simulator(streams_simulator)
        elif streams == "simulator":
            self.attach_streams_simulator(
                StreamsRouter(self.clock_seconds, **(streams_options or {}))
            )

    def clock_seconds(self) -> float:
        """The clock's now in epoch seconds (what the stream simulators read)."""
        return self.clock.peek_micros() / 1_000_000

    @property
    def streams_mode(self) -> str:
        """``simulator``, ``moto`` or ``custom`` (a caller's handler without a lifecycle)."""
        if self.streams is not None:
            return "simulator"
        return "moto" if self._streams_handler is None else "custom"

    # -- plug points -------------------------------------------------------------------------

    def set_streams_handler(self, handler: StreamsHandler | None) -> None:
        """Route DynamoDB Streams API calls to ``handler.handle(operation, params) -> dict``.

        ``operation`` is the action name (``DescribeStream``, ``GetShardIterator``,
        ``GetRecords``, ``ListStreams``), ``params`` the decoded JSON body. An exception with
        ``.code``, ``.message`` and ``.status`` becomes an AWS error response. ``None`` routes
        the Streams API back to moto. (Low level: the write feed and the table lifecycle are
        left as they are; see :meth:`attach_streams_simulator` and :meth:`detach_streams`.)
        """
        self._streams_handler = handler

    def attach_streams_simulator(self, simulator: Any) -> None:
        """Plug a DynamoDB Streams simulator in with one call, replacing the current one.

        It is fed every write (its ``record(table_name, event_name, keys, old_image, new_image,
        when, user_identity=None)`` is called after each change, ``when`` an aware UTC datetime
        from the local clock) and it answers the Streams API (its ``handle(operation,
        params)``). A :class:`StreamSimulator` or :class:`StreamsRouter` also takes over the
        stream lifecycle of CreateTable, UpdateTable and DeleteTable (from tables created after
        this call); any other object leaves the lifecycle to moto.
        """
        self.detach_streams()
        if isinstance(simulator, StreamSimulator):
            simulator = StreamsRouter(self.clock_seconds, simulator=simulator)
        self.streams = simulator if isinstance(simulator, StreamsRouter) else None
        self._subscriber = simulator
        self.history.subscribe(simulator)
        self.set_streams_handler(simulator)

    def detach_streams(self) -> None:
        """Unplug the streams simulator (or handler): moto's streams answer again."""
        if self._subscriber is not None:
            self.history.unsubscribe(self._subscriber)
        self._subscriber = None
        self.streams = None
        self.set_streams_handler(None)

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        refusal = self._refusal(environ, path)
        if refusal is not None:
            _read_body(environ)  # drain it, so the connection stays usable
            status, message = refusal
            return _json_response(start_response, status, {"error": message}, "application/json")
        if path.startswith(CONTROL_PREFIX):
            return self._control(environ, start_response, path[len(CONTROL_PREFIX) :])
        if path.startswith(MOTO_API_PREFIX):
            return self._moto(environ, start_response)
        if self.required_access_key_id is not None:
            access_key_id, _ = request_credential(environ)
            if access_key_id != self.required_access_key_id:
                _read_body(environ)  # drain it, so the connection stays usable
                return credentials_error(start_response, environ, access_key_id)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(STREAMS_PREFIX) and self._streams_handler is not None:
            return self._streams(environ, start_response, target[len(STREAMS_PREFIX) :])
        if target.startswith(DYNAMODB_PREFIX):
            return self._dynamodb(environ, start_response, target[len(DYNAMODB_PREFIX) :])
        if target == f"{glue.GLUE_PREFIX}UpdateTable":  # what moto's Glue lacks: see local/glue.py
            with self._lock:
                try:
                    params = json.loads(_read_body(environ) or b"{}")
                    glue.check_update_table(*_account_and_region(environ), params)
                except glue.GlueError as exc:
                    return _aws_error(start_response, exc)
                except ValueError:
                    pass  # moto answers a malformed body
                return self._moto(environ, start_response)
        return self._moto(environ, start_response)

    def _refusal(self, environ: dict[str, Any], path: str) -> tuple[int, str] | None:
        """Why this request is refused (status, message), or None (see the module docstring)."""
        host = _host_name(environ)
        if host is not None and not (
            is_loopback_host(host) or host.strip("[]").lower() in self.allowed_hosts
        ):
            return 403, f"the local AWS answers loopback hosts only, not Host {host!r}"
        if not path.startswith((CONTROL_PREFIX, MOTO_API_PREFIX)):
            return None
        method = environ.get("REQUEST_METHOD", "GET")
        if path == CONTROL_PREFIX + "health" and method == "GET":
            return None
        token = environ.get("HTTP_" + CONTROL_TOKEN_HEADER.upper().replace("-", "_"), "")
        if not hmac.compare_digest(token.encode(), self.control_token.encode()):
            return 403, (
                f"the control API needs the server's token in the {CONTROL_TOKEN_HEADER} header "
                "(LocalAwsControl sends it; a launched server reads it from "
                f"{CONTROL_TOKEN_ENV}, one started by hand prints it)"
            )
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if method not in ("GET", "HEAD", "OPTIONS") and content_type != "application/json":
            return 415, "the control API takes Content-Type: application/json only"
        return None

    def _call_moto(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = self._moto(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        return captured["status"], captured["headers"], body

    def _streams(
        self, environ: dict[str, Any], start_response: Callable[..., Any], op: str
    ) -> list[bytes]:
        body = _read_body(environ)
        handler = self._streams_handler
        try:
            params = json.loads(body or b"{}")
            if isinstance(handler, StreamsRouter):
                result = handler.handle_for(*_account_and_region(environ), op, params)
            else:
                result = handler.handle(op, params)  # type: ignore[union-attr]
        except Exception as exc:
            if not hasattr(exc, "code"):
                log.exception("streams handler failed on %s", op)
            return _aws_error(start_response, exc)
        return _json_response(start_response, 200, result, JSON_CONTENT_TYPE)

    def _dynamodb(
        self, environ: dict[str, Any], start_response: Callable[..., Any], op: str
    ) -> Iterable[bytes]:
        body = _read_body(environ)
        account, region = _account_and_region(environ)
        try:
            params = json.loads(body or b"{}", parse_float=Decimal)
        except ValueError:
            params = {}
        with self._lock, self._streams_context(account, region):
            try:
                if op in EXPORT_OPS:
                    result = self._export_op(account, region, op, params)
                    return _json_response(start_response, 200, result, JSON_CONTENT_TYPE)
                if self.streams is not None and op in TABLE_DESCRIPTION_OPS:
                    status, headers, out = self._run_table_op(
                        environ, self.streams, account, region, op, params
                    )
                else:
                    status, headers, out = self._run_dynamodb(environ, account, region, op, params)
            except (AwsError, SimulatedError) as exc:
                return _aws_error(start_response, exc)
        start_response(status, headers)
        return [out]

    # -- DynamoDB with history -----------------------------------------------------------------

    def _backend(self, account: str, region: str) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[account][region]

    def _table(self, account: str, region: str, name_or_arn: str | None) -> Any:
        if not name_or_arn:
            return None
        try:
            return self._backend(account, region).get_table(name_or_arn)
        except Exception:
            return None

    def _ensure_history(self, account: str, region: str, table: Any) -> TableHistory:
        """The history of ``table``, started now if the table is new to us (or re-created).

        A table that reached moto without our seeing its writes (restored from a backup, made
        through moto's backend directly) starts with its current items, stamped now.
        """
        h = self.history.get(account, region, table.name)
        if h is not None and h.moto_created_at == table.created_at:
            return h
        now = self.clock.tick_micros()
        h = TableHistory(
            table_name=table.name,
            table_arn=table.table_arn,
            key_attributes=tuple(table.table_key_attrs),
            created_micros=now,
            moto_created_at=table.created_at,
        )
        if self._pitr_status(table) == "ENABLED":
            h.pitr_since_micros = now
        from dynamo_cdc.local.history import WriteRecord

        items = table.all_items()
        if items:
            stamp = self.clock.tick_micros()
            for item in items:
                image = _copy(item.to_json()["Attributes"])
                keys = {k: image[k] for k in h.key_attributes}
                h.append(WriteRecord(stamp, keys, None, image))
        return self.history.register(account, region, h)

    @staticmethod
    def _pitr_status(table: Any) -> str:
        desc = table.continuous_backups.get("PointInTimeRecoveryDescription", {})
        return str(desc.get("PointInTimeRecoveryStatus", "DISABLED"))

    @staticmethod
    def _image(table: Any, keys: Item) -> Item | None:
        from moto.dynamodb.models.dynamo_type import DynamoType

        try:
            hash_key = DynamoType(keys[table.hash_key_attr])
            range_key = DynamoType(keys[table.range_key_attr]) if table.range_key_attr else None
            item = table.get_item(hash_key, range_key)
        except Exception:  # a malformed key: moto will reject the request itself
            return None
        return _copy(item.to_json()["Attributes"]) if item is not None else None

    def _touched(
        self, account: str, region: str, op: str, params: dict[str, Any]
    ) -> list[tuple[Any, Item]]:
        """(table, key) pairs a keyed write request may change."""
        out: list[tuple[Any, Item]] = []

        def add(table_name: str | None, item_or_key: dict[str, Any] | None) -> None:
            table = self._table(account, region, table_name)
            if table is None or not isinstance(item_or_key, dict):
                return
            keys = {k: item_or_key[k] for k in table.table_key_attrs if k in item_or_key}
            if len(keys) == len(table.table_key_attrs):
                out.append((table, keys))

        if op == "PutItem":
            add(params.get("TableName"), params.get("Item"))
        elif op in ("UpdateItem", "DeleteItem"):
            add(params.get("TableName"), params.get("Key"))
        elif op == "BatchWriteItem":
            for table_name, requests in (params.get("RequestItems") or {}).items():
                for req in requests or []:
                    if "PutRequest" in req:
                        add(table_name, req["PutRequest"].get("Item"))
                    elif "DeleteRequest" in req:
                        add(table_name, req["DeleteRequest"].get("Key"))
        elif op == "TransactWriteItems":
            for action in params.get("TransactItems") or []:
                for kind, body in action.items():
                    if kind == "Put":
                        add(body.get("TableName"), body.get("Item"))
                    elif kind in ("Update", "Delete"):
                        add(body.get("TableName"), body.get("Key"))
        return out

    def _partiql_tables(
        self, account: str, region: str, op: str, params: dict[str, Any]
    ) -> list[Any]:
        if op == "ExecuteStatement":
            statements = [params.get("Statement", "")]
        else:
            statements = [
                s.get("Statement", "")
                for s in params.get("Statements") or params.get("TransactStatements") or []
            ]
        tables = []
        for statement in statements:
            m = PARTIQL_TABLE_RE.match(statement or "")
            table = self._table(account, region, m.group(1)) if m else None
            if table is not None and table not in tables:
                tables.append(table)
        return tables

    def _snapshot(self, table: Any) -> dict[str, Item]:
        out = {}
        for item in table.all_items():
            image = _copy(item.to_json()["Attributes"])
            out[key_id({k: image[k] for k in table.table_key_attrs})] = image
        return out

    def _run_dynamodb(
        self, environ: dict[str, Any], account: str, region: str, op: str, params: dict[str, Any]
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        if op in KEYED_WRITE_OPS:
            touched = self._touched(account, region, op, params)
            before = [self._image(t, k) for t, k in touched]
            status, headers, out = self._call_moto(environ)
            if status.startswith("200"):
                seen: set[tuple[int, str]] = set()
                for (table, keys), old in zip(touched, before, strict=True):
                    marker = (id(table), key_id(keys))
                    if marker in seen:
                        continue
                    seen.add(marker)
                    self._ensure_history(account, region, table)
                    new = self._image(table, keys)
                    self.history.record(account, region, table.name, keys, old, new)
            return status, headers, out
        if op in PARTIQL_OPS:
            tables = self._partiql_tables(account, region, op, params)
            before_tables = {id(t): self._snapshot(t) for t in tables}
            status, headers, out = self._call_moto(environ)
            if status.startswith("200"):
                for table in tables:
                    self._ensure_history(account, region, table)
                    old_state, new_state = before_tables[id(table)], self._snapshot(table)
                    for kid in sorted(set(old_state) | set(new_state)):
                        old, new = old_state.get(kid), new_state.get(kid)
                        keys = orjson.loads(kid)
                        self.history.record(account, region, table.name, keys, old, new)
            return status, headers, out
        status, headers, out = self._call_moto(environ)
        if not status.startswith("200"):
            return status, headers, out
        if op == "CreateTable":
            table = self._table(account, region, params.get("TableName"))
            if table is not None:
                self._ensure_history(account, region, table)
        elif op == "DeleteTable":
            table = self._table(account, region, params.get("TableName"))
            if table is None:
                name = str(params.get("TableName", "")).rsplit("/", 1)[-1]
                self.history.drop(account, region, name)
        elif op in ("UpdateContinuousBackups", "DescribeContinuousBackups"):
            rewritten = self._pitr_response(account, region, op, params, out)
            if rewritten is not out:
                out, headers = rewritten, _with_body(headers, rewritten)
        return status, headers, out

    # -- the stream lifecycle (simulator) ------------------------------------------------------

    @contextmanager
    def _streams_context(self, account: str, region: str) -> Iterator[None]:
        streams = self.streams
        if streams is None:
            yield
        else:
            with streams.context(account, region):
                yield

    def _run_table_op(
        self,
        environ: dict[str, Any],
        streams: StreamsRouter,
        account: str,
        region: str,
        op: str,
        params: dict[str, Any],
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """CreateTable, UpdateTable, DeleteTable, DescribeTable with the simulator's streams.

        The StreamSpecification never reaches moto; it is checked before moto runs (so a bad
        one changes nothing) and applied to the simulator after moto succeeded.
        """
        name = str(params.get("TableName", "")).rsplit("/", 1)[-1]
        spec = params.get("StreamSpecification")
        enable: str | None = None  # the view type to enable
        disable = False
        if op in ("CreateTable", "UpdateTable") and spec is not None:
            if op == "CreateTable" or self._table(account, region, name) is not None:
                # (UpdateTable of a missing table: moto answers ResourceNotFoundException)
                enable, disable = self._check_stream_spec(streams, account, region, op, name, spec)
            stripped = {k: v for k, v in params.items() if k != "StreamSpecification"}
            _replace_body(environ, orjson.dumps(stripped, default=_decimal_json))
        fields_before = streams.table_fields(account, region, name)
        status, headers, out = self._call_moto(environ)
        if not status.startswith("200"):
            return status, headers, out
        table = self._table(account, region, name)
        if op == "CreateTable":
            streams.forget(account, region, name)  # a leftover of a table moto lost
            if table is not None:
                self._ensure_history(account, region, table)
            if enable:
                streams.enable(account, region, name, enable, params.get("KeySchema"))
        elif op == "UpdateTable":
            if disable:
                streams.disable(account, region, name)
            elif enable:
                key_schema = table.schema if table is not None else None
                streams.enable(account, region, name, enable, key_schema)
        elif op == "DeleteTable":
            streams.forget(account, region, name)
            if table is None:
                self.history.drop(account, region, name)
        fields = fields_before if op == "DeleteTable" else None
        created = None
        if table is not None and op != "DeleteTable":
            created = self._ensure_history(account, region, table).created_micros / 1_000_000
        out = self._with_stream_fields(streams, account, region, op, out, fields, created)
        return status, _with_body(headers, out), out

    @staticmethod
    def _check_stream_spec(
        streams: StreamsRouter, account: str, region: str, op: str, name: str, spec: Any
    ) -> tuple[str | None, bool]:
        """(view type to enable or None, whether to disable), or the ValidationException AWS
        answers for this StreamSpecification."""
        if not isinstance(spec, dict) or not isinstance(spec.get("StreamEnabled"), bool):
            raise _validation_error(
                "1 validation error detected: Value null at 'streamSpecification.streamEnabled' "
                "failed to satisfy constraint: Member must not be null"
            )
        if spec["StreamEnabled"]:
            view = spec.get("StreamViewType")
            if view not in VIEW_TYPES:
                raise _validation_error(
                    f"1 validation error detected: Value '{view}' at "
                    "'streamSpecification.streamViewType' failed to satisfy constraint: Member "
                    f"must satisfy enum value set: [{', '.join(VIEW_TYPES)}]"
                )
            if op == "UpdateTable" and streams.is_enabled(account, region, name):
                raise _validation_error(f"Table already has an enabled stream: TableName: {name}")
            return str(view), False
        if op == "UpdateTable":
            if not streams.is_enabled(account, region, name):
                raise _validation_error(f"Table does not have an enabled stream: {name}")
            return None, True
        return None, False

    @staticmethod
    def _with_stream_fields(
        streams: StreamsRouter,
        account: str,
        region: str,
        op: str,
        out: bytes,
        fields: dict[str, Any] | None,
        created: float | None = None,
    ) -> bytes:
        """moto's TableDescription with the simulator's stream members in place of moto's, and
        ``created`` (epoch seconds by the local clock, not moto's wall clock) as its
        CreationDateTime."""
        doc = orjson.loads(out)
        desc = doc.get(TABLE_DESCRIPTION_OPS[op])
        if not isinstance(desc, dict) or "TableName" not in desc:
            return out
        for member in STREAM_FIELDS:
            desc.pop(member, None)
        if fields is None:
            fields = streams.table_fields(account, region, desc["TableName"])
        desc.update(fields)
        if created is not None:
            desc["CreationDateTime"] = created
        return orjson.dumps(doc)

    def _pitr_response(
        self, account: str, region: str, op: str, params: dict[str, Any], out: bytes
    ) -> bytes:
        """Track when PITR was turned on, and report the PITR window by the local clock."""
        table = self._table(account, region, params.get("TableName"))
        if table is None:
            return out
        h = self._ensure_history(account, region, table)
        enabled = self._pitr_status(table) == "ENABLED"
        if op == "UpdateContinuousBackups":
            if enabled and h.pitr_since_micros is None:
                h.pitr_since_micros = self.clock.tick_micros()
            elif not enabled:
                h.pitr_since_micros = None
        if not enabled or h.pitr_since_micros is None:
            return out
        doc = orjson.loads(out)
        desc = doc.get("ContinuousBackupsDescription", {}).get("PointInTimeRecoveryDescription")
        if desc is None:
            return out
        now = self.clock.peek_micros()
        days = int(desc.get("RecoveryPeriodInDays") or 35)
        earliest = max(h.pitr_since_micros, now - days * 86_400_000_000)
        desc["EarliestRestorableDateTime"] = earliest / 1_000_000
        desc["LatestRestorableDateTime"] = now / 1_000_000
        return orjson.dumps(doc)

    # -- exports -------------------------------------------------------------------------------

    def _table_ref(self, account: str, region: str, table_arn: str | None) -> TableRef:
        table = self._table(account, region, table_arn)
        if table is None:
            raise AwsError("TableNotFoundException", f"Table not found: {table_arn}")
        h = self._ensure_history(account, region, table)
        desc = table.continuous_backups.get("PointInTimeRecoveryDescription", {})
        return TableRef(
            account=account,
            region=region,
            history=h,
            pitr_enabled=self._pitr_status(table) == "ENABLED",
            recovery_period_days=int(desc.get("RecoveryPeriodInDays") or 35),
        )

    def _export_op(
        self, account: str, region: str, op: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        if op == "ExportTableToPointInTime":
            ref = self._table_ref(account, region, params.get("TableArn"))
            return {"ExportDescription": self.exports.export_table(ref, params)}
        if op == "DescribeExport":
            return {
                "ExportDescription": self.exports.describe_export(
                    account, region, params.get("ExportArn", "")
                )
            }
        return self.exports.list_exports(account, region, params)

    # -- TTL -----------------------------------------------------------------------------------

    def ttl_sweep(self) -> int:
        """Delete every item whose TTL attribute (epoch seconds) is at or before the clock's
        now, in tables with TTL enabled, as the TTL service does; the deletes are recorded with
        the service's user identity. Returns how many items were deleted."""
        from moto.dynamodb.models import dynamodb_backends

        now_seconds = Decimal(self.clock.peek_micros()) / 1_000_000
        deleted = 0
        with self._lock:
            for account, regions in list(dynamodb_backends.items()):
                for region, backend in list(regions.items()):
                    for table in list(backend.tables.values()):
                        ttl = table.ttl
                        attr = ttl.get("AttributeName")
                        if ttl.get("TimeToLiveStatus") != "ENABLED" or not attr:
                            continue
                        self._ensure_history(account, region, table)
                        deleted += self._ttl_sweep_table(account, region, table, attr, now_seconds)
        return deleted

    def _ttl_sweep_table(
        self, account: str, region: str, table: Any, attr: str, now_seconds: Decimal
    ) -> int:
        deleted = 0
        with self._streams_context(account, region):
            for item in list(table.all_items()):
                value = item.attrs.get(attr)
                if value is None or value.type != "N":
                    continue
                try:
                    expired = Decimal(value.value) <= now_seconds
                except ArithmeticError:
                    continue
                if not expired:
                    continue
                old = _copy(item.to_json()["Attributes"])
                table.delete_item(item.hash_key, item.range_key)
                keys = {k: old[k] for k in table.table_key_attrs}
                self.history.record(account, region, table.name, keys, old, None, TTL_USER_IDENTITY)
                deleted += 1
        return deleted

    # -- control API ---------------------------------------------------------------------------

    def _clock_state(self) -> dict[str, Any]:
        micros = self.clock.peek_micros()
        return {
            "now": micros_to_datetime(micros).isoformat(),
            "now_micros": micros,
            "offset_seconds": self.clock.offset_seconds,
        }

    def reset(self) -> None:
        """Forget all AWS state (moto's too), histories, exports and streams; clock back to
        wall time."""
        from moto.moto_api._internal.models import moto_api_backend

        with self._lock:
            moto_api_backend.reset()
            self.history.clear()
            self.exports.reset()
            if self.streams is not None:
                self.streams.reset()
            self.clock.reset()

    def _require_streams(self) -> StreamsRouter:
        if self.streams is None:
            raise ValueError(
                f"the DynamoDB Streams simulator is off (streams mode {self.streams_mode}); "
                "start the local AWS without --moto-streams"
            )
        return self.streams

    def _streams_state(self) -> dict[str, Any]:
        if self.streams is None:
            return {
                "mode": self.streams_mode,
                "config": {},
                "streams": [],
                "calls": {},
                "errors": {},
            }
        return {"mode": self.streams_mode, **self.streams.status()}

    def _control(
        self, environ: dict[str, Any], start_response: Callable[..., Any], route: str
    ) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        body = _read_body(environ)
        try:
            payload = json.loads(body) if body.strip() else {}
            if route == "health":
                result: Any = {"ok": True}
            elif route == "clock" and method == "GET":
                result = self._clock_state()
            elif route == "clock" and method == "POST":
                if "advance_seconds" in payload:
                    self.clock.advance(float(payload["advance_seconds"]))
                if "set_epoch_seconds" in payload:
                    self.clock.set(float(payload["set_epoch_seconds"]))
                result = self._clock_state()
            elif route == "exports/fail-next" and method == "POST":
                self.exports.fail_next(
                    payload.get("failure_code", "InternalError"), payload.get("failure_message")
                )
                result = {"ok": True}
            elif route == "exports/config" and method == "POST":
                self.exports.configure(
                    delay_seconds=payload.get("delay_seconds"),
                    items_per_file=payload.get("items_per_file"),
                    max_files=payload.get("max_files"),
                )
                result = {"ok": True}
            elif route == "ttl/sweep" and method == "POST":
                result = {"deleted": self.ttl_sweep()}
            elif route == "streams" and method == "GET":
                result = self._streams_state()
            elif route == "streams/rotate" and method == "POST":
                table = payload.get("table")
                if not isinstance(table, str) or not table:
                    raise ValueError('streams/rotate needs {"table": name}')
                result = {
                    "shard_ids": self._require_streams().rotate(
                        table,
                        split=bool(payload.get("split", False)),
                        account=payload.get("account"),
                        region=payload.get("region"),
                    )
                }
            elif route == "streams/config" and method == "POST":
                result = {"config": self._require_streams().configure(**payload)}
            elif route == "credentials" and method == "GET":
                result = {"access_key_id": self.required_access_key_id}
            elif route == "credentials" and method == "POST":
                key = payload.get("access_key_id")
                if key is not None and (not isinstance(key, str) or not key):
                    raise ValueError('credentials needs {"access_key_id": a non-empty id or null}')
                self.required_access_key_id = key
                result = {"access_key_id": key}
            elif route == "reset" and method == "POST":
                self.reset()
                result = {"ok": True}
            else:
                return _json_response(
                    start_response,
                    404,
                    {"error": f"no control route {method} {route}", "routes": CONTROL_API},
                    "application/json",
                )
        except (ValueError, TypeError) as exc:
            return _json_response(start_response, 400, {"error": str(exc)}, "application/json")
        return _json_response(start_response, 200, result, "application/json")


#: How often the serving loop looks for a shutdown request. socketserver's default (0.5 s) made
#: every stop wait up to half a second for nothing; a select() wake-up 20 times a second costs
#: nothing measurable.
SHUTDOWN_POLL_SECONDS = 0.05


class LocalAwsServer:
    """A threaded HTTP server for :class:`LocalAwsApp` on 127.0.0.1.

    Args:
        port: the port, 0 for a free one (read :attr:`port` after construction).
        app: the application (a new :class:`LocalAwsApp` by default).
        host: the address to bind; a loopback one unless ``allow_remote``.
        allow_remote: bind a non-loopback address all the same (the local AWS checks no
            signature: anyone who reaches it can read and change everything in it).

    Raises:
        ValueError: ``host`` is not a loopback address and ``allow_remote`` is False.
    """

    def __init__(
        self,
        port: int = 0,
        app: LocalAwsApp | None = None,
        host: str = "127.0.0.1",
        *,
        log_requests: bool = False,
        allow_remote: bool = False,
    ) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler

        if not is_loopback_host(host) and not allow_remote:
            raise ValueError(
                f"Refusing to serve the local AWS on {host!r}: it checks no signature, so anyone "
                "who can reach it could read and change everything in it. Bind 127.0.0.1, or "
                "force it (--allow-remote, allow_remote=True) on a network you trust."
            )
        self.app = app or LocalAwsApp()
        clock = self.app.clock_seconds

        class Handler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                if log_requests:
                    super().log_request(*args, **kwargs)

            def date_time_string(self, timestamp: float | None = None) -> str:
                # The Date header: AWS's answers carry AWS's time, which clients may read (the
                # stream reader does, to learn the stream's clock).
                return formatdate(clock() if timestamp is None else timestamp, usegmt=True)

        self._server: BaseWSGIServer = make_server(
            host, port, self.app, threaded=True, request_handler=Handler
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`shutdown`."""
        self._server.serve_forever(poll_interval=SHUTDOWN_POLL_SECONDS)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="local-aws", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
