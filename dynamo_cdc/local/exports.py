"""ExportTableToPointInTime, DescribeExport and ListExports, faithful to AWS.

moto's own export ignores ExportTime, writes one file without manifests and gets the ION and
incremental formats wrong (see FACTS.md). This module replaces it. An export:

* is validated like AWS: PITR must be on (PointInTimeRecoveryUnavailableException), ExportTime
  and the incremental window must lie in the PITR window and not in the future
  (InvalidExportTimeException), the incremental window is 15 minutes to 24 hours
  (ValidationException), a ClientToken reused within 8 hours with other parameters is an
  ExportConflictException (the error botocore's model of ExportTableToPointInTime names) and
  with the same parameters returns the same export;
* reads the table's state at ExportTime (or the net changes of the incremental window) from the
  write history, so items deleted after ExportTime are in it and items created after are not;
* writes the real layout, under ``{S3Prefix}/AWSDynamoDB/{ExportId}/``: ``_started`` at once,
  then ``data/<26 chars>.json.gz`` (or ``.ion.gz``) files, ``manifest-files.json`` (JSON lines:
  itemCount, md5Checksum = base64 MD5 of the .gz, etag, dataFileS3Key) and
  ``manifest-summary.json``, each with a ``.checksum`` file (hex MD5 of the manifest), the
  summary last. Incremental exports put their data files in the shared
  ``{S3Prefix}/AWSDynamoDB/data/`` folder, as AWS does; manifests stay per export. Every key in
  a manifest is the object's full key in the bucket (S3Prefix included);
* stays IN_PROGRESS for ``delay_seconds`` (wall time), then turns COMPLETED, or FAILED with a
  FailureCode/FailureMessage when the bucket is gone or a failure was forced
  (:meth:`ExportManager.fail_next`).

Line formats: full exports ``{"Item": {...}}`` (DynamoDB JSON) or ``$ion_1_0 {Item:{...}}``
(Ion text written by :mod:`dynamo_cdc.codec`: N as decimal, B as blob, sets as lists
annotated ``$dynamodb_SS/NS/BS``); incremental
exports ``{"Metadata":{"WriteTimestampMicros":{"N":"..."}},"Keys":{...},"NewImage":{...},
"OldImage":{...}}`` with NewImage absent for a deleted item and OldImage absent for a new item
or in the NEW_IMAGE view.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from dynamo_cdc.local.history import (
    Clock,
    Item,
    ItemChange,
    TableHistory,
    datetime_to_micros,
    micros_to_datetime,
)
from dynamo_cdc.times import iso

log = logging.getLogger(__name__)

MIN_INCREMENTAL_MICROS = 15 * 60 * 1_000_000
MAX_INCREMENTAL_MICROS = 24 * 3600 * 1_000_000
CLIENT_TOKEN_TTL_MICROS = 8 * 3600 * 1_000_000
FULL_MANIFEST_VERSION = "2020-06-30"
INCREMENTAL_MANIFEST_VERSION = "2023-08-01"
EXPORT_FORMATS = ("DYNAMODB_JSON", "ION")
EXPORT_TYPES = ("FULL_EXPORT", "INCREMENTAL_EXPORT")
VIEW_TYPES = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
SSE_ALGORITHMS = ("AES256", "KMS")


class AwsError(Exception):
    """An error the way the DynamoDB API returns it (``__type`` code, message, HTTP status)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ObjectStore(Protocol):
    """Where exports are written (the server passes moto's S3 backend behind this)."""

    def bucket_exists(self, account: str, bucket: str) -> bool: ...

    def put(self, account: str, bucket: str, key: str, body: bytes) -> str:
        """Store the object and return its ETag without quotes."""
        ...


@dataclass
class TableRef:
    """What an export needs to know about the table, resolved by the server from moto."""

    account: str
    region: str
    history: TableHistory
    pitr_enabled: bool
    recovery_period_days: int = 35


@dataclass
class ExportJob:
    arn: str
    export_id: str
    account: str
    region: str
    table_arn: str
    table_id: str
    params: dict[str, Any]
    start_micros: int
    ready_at: float
    export_type: str
    export_format: str
    export_time_micros: int | None = None
    incremental: dict[str, Any] | None = None
    lines: list[tuple[str, bytes]] = field(default_factory=list, repr=False)
    billed_size_bytes: int = 0
    status: str = "IN_PROGRESS"
    end_micros: int | None = None
    item_count: int | None = None
    manifest_key: str | None = None
    forced_failure: tuple[str, str] | None = None
    failure: tuple[str, str] | None = None


def _ion_line(record: dict[str, Any]) -> bytes:
    """One Ion-text line (``$ion_1_0 {...}``) of a record whose images are in DynamoDB JSON; the
    shared codec writes it, so exports and readers agree on one Ion mapping."""
    from dynamo_cdc.codec import ion_record_to_text

    if "Metadata" in record:
        record = dict(record)
        record["Metadata"] = {k: int(v["N"]) for k, v in record["Metadata"].items()}
    return ion_record_to_text(record).encode() + b"\n"


def _aws_time(micros: int) -> str:
    """A time as AWS writes it in an export's description and manifest (milliseconds, Z)."""
    return iso(micros_to_datetime(micros), "milliseconds")


def _epoch(micros: int) -> float:
    return micros / 1_000_000


def _file_name() -> str:
    return base64.b32encode(os.urandom(16)).decode().lower().rstrip("=")


def _time_param(value: Any, name: str) -> int:
    try:
        return datetime_to_micros(value)
    except (TypeError, ValueError):
        raise AwsError("ValidationException", f"{name} must be a timestamp") from None


class ExportManager:
    """Runs exports over the write history and answers the three export operations.

    Args:
        clock: the local clock (StartTime, EndTime and the PITR window use it).
        store: where the files go.
        delay_seconds: how long (wall time) an export stays IN_PROGRESS.
        items_per_file: items per data file before another file is started (at least one file
            is always written, empty when the export has no items).
        max_files: upper bound on data files per export.
    """

    def __init__(
        self,
        clock: Clock,
        store: ObjectStore,
        *,
        delay_seconds: float = 0.3,
        items_per_file: int = 100,
        max_files: int = 16,
    ) -> None:
        self.clock = clock
        self.store = store
        self.delay_seconds = delay_seconds
        self.items_per_file = items_per_file
        self.max_files = max_files
        self._jobs: dict[str, ExportJob] = {}
        self._order: list[str] = []
        self._tokens: dict[tuple[str, str, str], tuple[int, dict[str, Any], str]] = {}
        self._forced: list[tuple[str, str]] = []
        self._lock = threading.RLock()

    # -- control -----------------------------------------------------------------------------

    def configure(
        self,
        *,
        delay_seconds: float | None = None,
        items_per_file: int | None = None,
        max_files: int | None = None,
    ) -> None:
        if delay_seconds is not None:
            self.delay_seconds = float(delay_seconds)
        if items_per_file is not None:
            self.items_per_file = max(1, int(items_per_file))
        if max_files is not None:
            self.max_files = max(1, int(max_files))

    def fail_next(
        self, failure_code: str = "InternalError", failure_message: str | None = None
    ) -> None:
        """Make the next export that is started end FAILED with this code and message."""
        with self._lock:
            self._forced.append(
                (failure_code, failure_message or "Export failed (forced by the local AWS).")
            )

    def reset(self) -> None:
        with self._lock:
            self._jobs.clear()
            self._order.clear()
            self._tokens.clear()
            self._forced.clear()

    # -- API ---------------------------------------------------------------------------------

    def export_table(self, table: TableRef, params: dict[str, Any]) -> dict[str, Any]:
        """ExportTableToPointInTime: validate, fix the data to export, schedule completion."""
        h = table.history
        if params.get("FilterSpecification"):
            raise AwsError(
                "ValidationException", "FilterSpecification is not supported by the local AWS"
            )
        bucket = params.get("S3Bucket")
        if not bucket:
            raise AwsError("ValidationException", "S3Bucket must be provided")
        export_format = params.get("ExportFormat", "DYNAMODB_JSON")
        export_type = params.get("ExportType", "FULL_EXPORT")
        sse = params.get("S3SseAlgorithm", "AES256")
        for name, value, allowed in (
            ("exportFormat", export_format, EXPORT_FORMATS),
            ("exportType", export_type, EXPORT_TYPES),
            ("s3SseAlgorithm", sse, SSE_ALGORITHMS),
        ):
            if value not in allowed:
                raise AwsError(
                    "ValidationException",
                    f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
                    f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]",
                )
        token = params.get("ClientToken")
        compared = {k: v for k, v in params.items() if k != "ClientToken"}
        now = self.clock.peek_micros()
        with self._lock:
            if token:
                seen = self._tokens.get((table.account, table.region, token))
                if seen and now - seen[0] < CLIENT_TOKEN_TTL_MICROS:
                    if seen[1] != compared:
                        raise AwsError(
                            "ExportConflictException",
                            "There was a conflict when attempting to export: the ClientToken "
                            f"{token!r} was already used with different parameters",
                        )
                    return self._describe(self._jobs[seen[2]])
            if not table.pitr_enabled or h.pitr_since_micros is None:
                raise AwsError(
                    "PointInTimeRecoveryUnavailableException",
                    f"Point in time recovery is not enabled for table '{h.table_name}'",
                )
            earliest = max(h.pitr_since_micros, now - table.recovery_period_days * 86_400_000_000)
            job = self._new_job(table, params, now, export_type, export_format)
            if export_type == "FULL_EXPORT":
                at = (
                    _time_param(params["ExportTime"], "ExportTime")
                    if "ExportTime" in params
                    else now
                )
                self._check_in_window(at, earliest, now, "ExportTime")
                job.export_time_micros = at
                self._render_full(job, h.state_at(at))
            else:
                self._prepare_incremental(job, h, params, earliest, now)
            if self._forced:
                job.forced_failure = self._forced.pop(0)
            self._jobs[job.arn] = job
            self._order.append(job.arn)
            if token:
                self._tokens[(table.account, table.region, token)] = (now, compared, job.arn)
            self._write_started(job)
            description = self._describe(job)
        timer = threading.Timer(max(0.0, self.delay_seconds), self._complete, args=(job,))
        timer.daemon = True
        timer.start()
        return description

    def describe_export(self, account: str, region: str, export_arn: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(export_arn or "")
            if job is None or (job.account, job.region) != (account, region):
                raise AwsError("ExportNotFoundException", f"Export not found: {export_arn}")
        self._complete_if_due(job)
        return self._describe(job)

    def list_exports(self, account: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        table_arn = params.get("TableArn")
        max_results = int(params.get("MaxResults") or 25)
        if not 1 <= max_results <= 25:
            raise AwsError(
                "ValidationException",
                f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to "
                "satisfy constraint: Member must have value between 1 and 25",
            )
        with self._lock:
            jobs = [
                self._jobs[a]
                for a in self._order
                if self._jobs[a].account == account
                and self._jobs[a].region == region
                and (not table_arn or self._jobs[a].table_arn == table_arn)
            ]
        start = 0
        token = params.get("NextToken")
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
                start = next(i for i, j in enumerate(jobs) if j.arn == after) + 1
            except Exception:
                raise AwsError("ValidationException", "Invalid NextToken") from None
        page = jobs[start : start + max_results]
        for job in page:
            self._complete_if_due(job)
        out: dict[str, Any] = {
            "ExportSummaries": [
                {"ExportArn": j.arn, "ExportStatus": j.status, "ExportType": j.export_type}
                for j in page
            ]
        }
        if start + max_results < len(jobs):
            out["NextToken"] = base64.urlsafe_b64encode(page[-1].arn.encode()).decode()
        return out

    # -- internals ---------------------------------------------------------------------------

    def _new_job(
        self, table: TableRef, params: dict[str, Any], now: int, export_type: str, fmt: str
    ) -> ExportJob:
        export_id = f"{now // 1000:014d}-{secrets.token_hex(4)}"
        h = table.history
        return ExportJob(
            arn=f"{h.table_arn}/export/{export_id}",
            export_id=export_id,
            account=table.account,
            region=table.region,
            table_arn=h.table_arn,
            table_id=h.table_id,
            params=dict(params),
            start_micros=now,
            ready_at=time.monotonic() + self.delay_seconds,
            export_type=export_type,
            export_format=fmt,
        )

    @staticmethod
    def _check_in_window(at: int, earliest: int, now: int, name: str) -> None:
        if at > now:
            raise AwsError(
                "InvalidExportTimeException",
                f"{name} {_aws_time(at)} is in the future (now is {_aws_time(now)})",
            )
        if at < earliest:
            raise AwsError(
                "InvalidExportTimeException",
                f"{name} {_aws_time(at)} is before the earliest restorable time {_aws_time(earliest)} of "
                "the point in time recovery window",
            )

    def _prepare_incremental(
        self, job: ExportJob, h: TableHistory, params: dict[str, Any], earliest: int, now: int
    ) -> None:
        spec = params.get("IncrementalExportSpecification") or {}
        if "ExportFromTime" not in spec:
            raise AwsError(
                "ValidationException",
                "IncrementalExportSpecification.ExportFromTime is required for INCREMENTAL_EXPORT",
            )
        start = _time_param(spec["ExportFromTime"], "ExportFromTime")
        end = _time_param(spec["ExportToTime"], "ExportToTime") if "ExportToTime" in spec else now
        view = spec.get("ExportViewType", "NEW_AND_OLD_IMAGES")
        if view not in VIEW_TYPES:
            raise AwsError(
                "ValidationException",
                f"1 validation error detected: Value '{view}' at 'exportViewType' failed to "
                f"satisfy constraint: Member must satisfy enum value set: [{', '.join(VIEW_TYPES)}]",
            )
        if end <= start:
            raise AwsError("ValidationException", "ExportFromTime must be before ExportToTime")
        if end - start < MIN_INCREMENTAL_MICROS:
            raise AwsError(
                "ValidationException",
                "The incremental export period must be at least 15 minutes "
                f"(ExportFromTime {_aws_time(start)}, ExportToTime {_aws_time(end)})",
            )
        if end - start > MAX_INCREMENTAL_MICROS:
            raise AwsError(
                "ValidationException",
                "The incremental export period must not be longer than 24 hours "
                f"(ExportFromTime {_aws_time(start)}, ExportToTime {_aws_time(end)})",
            )
        self._check_in_window(start, earliest, now, "ExportFromTime")
        self._check_in_window(end, earliest, now, "ExportToTime")
        job.incremental = {"ExportFromTime": start, "ExportToTime": end, "ExportViewType": view}
        self._render_incremental(job, h.changes_between(start, end), view)

    def _render_full(self, job: ExportJob, state: dict[str, Item]) -> None:
        ion = job.export_format == "ION"
        for kid in sorted(state):
            item = state[kid]
            line = _ion_line({"Item": item}) if ion else orjson.dumps({"Item": item}) + b"\n"
            job.lines.append((kid, line))
            job.billed_size_bytes += len(orjson.dumps(item))

    def _render_incremental(self, job: ExportJob, changes: list[ItemChange], view: str) -> None:
        ion = job.export_format == "ION"
        for ch in sorted(changes, key=lambda c: orjson.dumps(c.keys, option=orjson.OPT_SORT_KEYS)):
            rec: dict[str, Any] = {
                "Metadata": {"WriteTimestampMicros": {"N": str(ch.last_write_micros)}},
                "Keys": ch.keys,
            }
            if ch.new_image is not None:
                rec["NewImage"] = ch.new_image
            if view == "NEW_AND_OLD_IMAGES" and ch.old_image is not None:
                rec["OldImage"] = ch.old_image
            line = _ion_line(rec) if ion else orjson.dumps(rec) + b"\n"
            job.lines.append((orjson.dumps(ch.keys, option=orjson.OPT_SORT_KEYS).decode(), line))
            job.billed_size_bytes += len(line)

    def _base_key(self, job: ExportJob) -> str:
        prefix = (job.params.get("S3Prefix") or "").rstrip("/")
        return f"{prefix}/AWSDynamoDB/{job.export_id}" if prefix else f"AWSDynamoDB/{job.export_id}"

    def _data_folder(self, job: ExportJob) -> str:
        if job.export_type == "INCREMENTAL_EXPORT":
            prefix = (job.params.get("S3Prefix") or "").rstrip("/")
            return f"{prefix}/AWSDynamoDB/data" if prefix else "AWSDynamoDB/data"
        return f"{self._base_key(job)}/data"

    def _write_started(self, job: ExportJob) -> None:
        bucket = job.params["S3Bucket"]
        if self.store.bucket_exists(job.account, bucket):
            self.store.put(job.account, bucket, f"{self._base_key(job)}/_started", b"")

    def _complete_if_due(self, job: ExportJob) -> None:
        if job.status == "IN_PROGRESS" and time.monotonic() >= job.ready_at:
            self._complete(job)

    def _complete(self, job: ExportJob) -> None:
        with self._lock:
            if job.status != "IN_PROGRESS":
                return
            try:
                if job.forced_failure:
                    self._fail(job, *job.forced_failure)
                elif not self.store.bucket_exists(job.account, job.params["S3Bucket"]):
                    self._fail(job, "S3NoSuchBucket", "The specified bucket does not exist")
                else:
                    self._write_files(job)
            except Exception as exc:  # the export fails, the server does not
                log.exception("export %s failed", job.arn)
                self._fail(job, "InternalError", f"Export failed: {exc}")

    def _fail(self, job: ExportJob, code: str, message: str) -> None:
        job.failure = (code, message)
        job.status = "FAILED"
        job.end_micros = self.clock.peek_micros()
        job.lines = []

    def _write_files(self, job: ExportJob) -> None:
        bucket = job.params["S3Bucket"]
        ext = "ion.gz" if job.export_format == "ION" else "json.gz"
        n_files = max(1, min(self.max_files, math.ceil(len(job.lines) / self.items_per_file)))
        groups: list[list[bytes]] = [[] for _ in range(n_files)]
        for kid, line in job.lines:
            # Spread by a hash of the key, as DynamoDB spreads items over partitions.
            groups[int.from_bytes(hashlib.md5(kid.encode()).digest()[:4], "big") % n_files].append(
                line
            )
        folder = self._data_folder(job)
        manifest_lines = []
        for lines in groups:
            body = gzip.compress(b"".join(lines), mtime=0)
            key = f"{folder}/{_file_name()}.{ext}"
            etag = self.store.put(job.account, bucket, key, body)
            manifest_lines.append(
                orjson.dumps(
                    {
                        "itemCount": len(lines),
                        "md5Checksum": base64.b64encode(hashlib.md5(body).digest()).decode(),
                        "etag": etag,
                        "dataFileS3Key": key,
                    }
                )
                + b"\n"
            )
        base = self._base_key(job)
        files_key = f"{base}/manifest-files.json"
        files_body = b"".join(manifest_lines)
        self.store.put(job.account, bucket, files_key, files_body)
        self.store.put(
            job.account,
            bucket,
            f"{base}/manifest-files.checksum",
            hashlib.md5(files_body).hexdigest().encode(),
        )
        job.end_micros = self.clock.peek_micros()
        job.item_count = len(job.lines)
        summary = self._summary(job, files_key)
        summary_body = orjson.dumps(summary)
        summary_key = f"{base}/manifest-summary.json"
        self.store.put(job.account, bucket, summary_key, summary_body)
        self.store.put(
            job.account,
            bucket,
            f"{base}/manifest-summary.checksum",
            hashlib.md5(summary_body).hexdigest().encode(),
        )
        job.manifest_key = summary_key
        job.status = "COMPLETED"
        job.lines = []

    def _summary(self, job: ExportJob, files_key: str) -> dict[str, Any]:
        p = job.params
        s: dict[str, Any] = {
            "version": FULL_MANIFEST_VERSION,
            "exportArn": job.arn,
            "startTime": _aws_time(job.start_micros),
            "endTime": _aws_time(job.end_micros or job.start_micros),
            "tableArn": job.table_arn,
            "tableId": job.table_id,
        }
        if job.incremental:
            s["version"] = INCREMENTAL_MANIFEST_VERSION
            s["exportFromTime"] = _aws_time(job.incremental["ExportFromTime"])
            s["exportToTime"] = _aws_time(job.incremental["ExportToTime"])
        else:
            s["exportTime"] = _aws_time(job.export_time_micros or job.start_micros)
        s.update(
            {
                "s3Bucket": p["S3Bucket"],
                "s3Prefix": p.get("S3Prefix"),
                "s3SseAlgorithm": p.get("S3SseAlgorithm", "AES256"),
                "s3SseKmsKeyId": p.get("S3SseKmsKeyId"),
                "manifestFilesS3Key": files_key,
                "billedSizeBytes": job.billed_size_bytes,
                "itemCount": job.item_count,
                "outputFormat": job.export_format,
            }
        )
        if job.incremental:
            s["outputView"] = job.incremental["ExportViewType"]
            s["exportType"] = "INCREMENTAL_EXPORT"
        return s

    def _describe(self, job: ExportJob) -> dict[str, Any]:
        p = job.params
        d: dict[str, Any] = {
            "ExportArn": job.arn,
            "ExportStatus": job.status,
            "StartTime": _epoch(job.start_micros),
        }
        if job.end_micros is not None:
            d["EndTime"] = _epoch(job.end_micros)
        if job.manifest_key:
            d["ExportManifest"] = job.manifest_key
        d["TableArn"] = job.table_arn
        d["TableId"] = job.table_id
        if job.export_time_micros is not None:
            d["ExportTime"] = _epoch(job.export_time_micros)
        if p.get("ClientToken"):
            d["ClientToken"] = p["ClientToken"]
        d["S3Bucket"] = p["S3Bucket"]
        for name in ("S3BucketOwner", "S3Prefix"):
            if p.get(name):
                d[name] = p[name]
        d["S3SseAlgorithm"] = p.get("S3SseAlgorithm", "AES256")
        if p.get("S3SseKmsKeyId"):
            d["S3SseKmsKeyId"] = p["S3SseKmsKeyId"]
        if job.failure:
            d["FailureCode"], d["FailureMessage"] = job.failure
        d["ExportFormat"] = job.export_format
        if job.status == "COMPLETED":
            d["BilledSizeBytes"] = job.billed_size_bytes
            d["ItemCount"] = job.item_count
        d["ExportType"] = job.export_type
        if job.incremental:
            d["IncrementalExportSpecification"] = {
                "ExportFromTime": _epoch(job.incremental["ExportFromTime"]),
                "ExportToTime": _epoch(job.incremental["ExportToTime"]),
                "ExportViewType": job.incremental["ExportViewType"],
            }
        return d
