"""The local AWS: moto's server app wrapped by a WSGI app that adds what moto lacks.

Every request goes to moto (DynamoDB, DynamoDB Streams, S3, STS, ...) except:

* ``ExportTableToPointInTime``, ``DescribeExport`` and ``ListExports``: answered by
  :class:`~dynamo_cdc.local.exports.ExportManager` (AWS-faithful exports);
* requests whose ``X-Amz-Target`` starts with ``DynamoDBStreams_20120810.``, when a streams
  handler is plugged in (:meth:`LocalAwsApp.attach_streams_simulator` or
  :meth:`LocalAwsApp.set_streams_handler`); otherwise moto answers them;
* paths under ``/_dynamo_cdc/``: the control API (clock, forced export failures, TTL sweep,
  reset), described in :data:`CONTROL_API`.

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
import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import orjson
from werkzeug.serving import BaseWSGIServer, make_server

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

log = logging.getLogger(__name__)

DYNAMODB_PREFIX = "DynamoDB_20120810."
STREAMS_PREFIX = "DynamoDBStreams_20120810."
CONTROL_PREFIX = "/_dynamo_cdc/"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
EXPORT_OPS = {"ExportTableToPointInTime", "DescribeExport", "ListExports"}
KEYED_WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
PARTIQL_OPS = {"ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"}
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
    "POST /_dynamo_cdc/reset": "forget every table, bucket, export and history; clock to wall time",
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
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
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


def _bytes_as_base64(value: Any) -> str:
    # moto keeps B/BS values as bytes; the history (like exports) holds base64 text.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"unexpected {type(value).__name__} in an item")


def _copy(item: Any) -> Item:
    """A private deep copy of a moto item image, in DynamoDB JSON with binary as base64."""
    return orjson.loads(orjson.dumps(item, default=_bytes_as_base64))


class LocalAwsApp:
    """The WSGI application of the local AWS (see the module docstring).

    Args:
        export_delay_seconds: how long exports stay IN_PROGRESS (wall time).
        export_items_per_file: items per export data file before another file is started.
        streams_simulator: plugged in at once with :meth:`attach_streams_simulator`.
    """

    def __init__(
        self,
        *,
        export_delay_seconds: float = 0.3,
        export_items_per_file: int = 100,
        streams_simulator: Any = None,
    ) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        from dynamo_cdc.local import fastpath

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
        self._streams_handler: StreamsHandler | None = None
        if streams_simulator is not None:
            self.attach_streams_simulator(streams_simulator)

    # -- plug points -------------------------------------------------------------------------

    def set_streams_handler(self, handler: StreamsHandler | None) -> None:
        """Route DynamoDB Streams API calls to ``handler.handle(operation, params) -> dict``.

        ``operation`` is the action name (``DescribeStream``, ``GetShardIterator``,
        ``GetRecords``, ``ListStreams``), ``params`` the decoded JSON body. An exception with
        ``.code``, ``.message`` and ``.status`` becomes an AWS error response. ``None`` routes
        the Streams API back to moto.
        """
        self._streams_handler = handler

    def attach_streams_simulator(self, simulator: Any) -> None:
        """Plug a DynamoDB Streams simulator in with one call: it is fed every write (its
        ``record(table_name, event_name, keys, old_image, new_image, when, user_identity=None)``
        is called after each change, ``when`` an aware UTC datetime from the local clock) and it
        answers the Streams API (its ``handle(operation, params)``)."""
        self.history.subscribe(simulator)
        self.set_streams_handler(simulator)

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self._control(environ, start_response, path[len(CONTROL_PREFIX) :])
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(STREAMS_PREFIX) and self._streams_handler is not None:
            return self._streams(environ, start_response, target[len(STREAMS_PREFIX) :])
        if target.startswith(DYNAMODB_PREFIX):
            return self._dynamodb(environ, start_response, target[len(DYNAMODB_PREFIX) :])
        return self._moto(environ, start_response)

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
        try:
            params = json.loads(body or b"{}")
            result = self._streams_handler.handle(op, params)  # type: ignore[union-attr]
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
        with self._lock:
            try:
                if op in EXPORT_OPS:
                    result = self._export_op(account, region, op, params)
                    return _json_response(start_response, 200, result, JSON_CONTENT_TYPE)
                status, headers, out = self._run_dynamodb(environ, account, region, op, params)
            except AwsError as exc:
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
            out = self._pitr_response(account, region, op, params, out)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(out))))
        return status, headers, out

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
                            self.history.record(
                                account, region, table.name, keys, old, None, TTL_USER_IDENTITY
                            )
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
        """Forget all AWS state (moto's too), histories and exports; clock back to wall time."""
        from moto.moto_api._internal.models import moto_api_backend

        with self._lock:
            moto_api_backend.reset()
            self.history.clear()
            self.exports.reset()
            self.clock.reset()

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


class LocalAwsServer:
    """A threaded HTTP server for :class:`LocalAwsApp` on 127.0.0.1.

    Args:
        port: the port, 0 for a free one (read :attr:`port` after construction).
        app: the application (a new :class:`LocalAwsApp` by default).
    """

    def __init__(
        self,
        port: int = 0,
        app: LocalAwsApp | None = None,
        host: str = "127.0.0.1",
        *,
        log_requests: bool = False,
    ) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler

        class Handler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                if log_requests:
                    super().log_request(*args, **kwargs)

        self.app = app or LocalAwsApp()
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
        self._server.serve_forever()

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-aws", daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
