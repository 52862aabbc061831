"""PITR exports: request one, wait for it, read and verify its manifests, stream its items.

An export as AWS writes it (ExportTableToPointInTime)::

    <prefix>/AWSDynamoDB/<ExportId>/_started
    <prefix>/AWSDynamoDB/<ExportId>/manifest-summary.json      (+ manifest-summary.md5)
    <prefix>/AWSDynamoDB/<ExportId>/manifest-files.json        (+ manifest-files.md5)
    <prefix>/AWSDynamoDB/<ExportId>/data/<id>.json.gz          (or .ion.gz)

``manifest-files.json`` holds one JSON object per line: ``itemCount``, ``md5Checksum`` (base64 of
the data file's MD5), ``etag`` and ``dataFileS3Key``. Every data file is checked against it
before any of its items is used: a flipped byte or a dropped line fails with
:class:`~dynamo_cdc.errors.ExportVerificationError` naming the file and the export.

The same reader serves an export in S3 and one downloaded to a local folder
(``dynamo-cdc export-to-parquet``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn, cast

from botocore.exceptions import ClientError

from dynamo_cdc.aws import Clients, error_code, raise_if_credentials
from dynamo_cdc.config import Settings
from dynamo_cdc.errors import (
    BucketError,
    ExportBucketError,
    ExportFailedError,
    ExportVerificationError,
    PitrNotEnabledError,
    PitrWindowError,
    TableNotFoundError,
)
from dynamo_cdc.times import iso

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# The longest line of an export data file read. A DynamoDB item is at most 400 KB; as export
# JSON its text is longer (binary as base64: 4/3; a string of control characters escaped as
# \u00XX: 6x), and an incremental export line holds two images: 2 x 6 x 400 KB = 4.8 MB is the
# worst a real line can be. Past 8 MiB a line is refused, before it is held whole.
MAX_LINE_BYTES = 8 << 20


# -- requesting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where. ``export_time`` None means "now" (AWS's default).

    ``request_id`` tells "now" requests apart: each new request (a CLI call, a Dagster run of
    a partition) is a new export, while retries of the same request, which pass the same
    request object or id, re-attach to the export it started. Requests at a given time (or
    incremental windows) ignore it: the same time is the same data, so a re-run may reuse it.
    """

    table: str
    bucket: str
    prefix: str = "dynamo-cdc/exports"
    export_time: datetime | None = None
    export_format: str = "DYNAMODB_JSON"
    bucket_owner: str | None = None
    sse_algorithm: str | None = None
    kms_key_id: str | None = None
    incremental_from: datetime | None = None
    incremental_to: datetime | None = None
    incremental_view: str = "NEW_AND_OLD_IMAGES"
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def for_settings(cls, settings: Settings, table: str, **fields: Any) -> ExportRequest:
        """A request for ``table`` with the export bucket, prefix, encryption and bucket owner
        of ``settings``; ``fields`` (export_time, export_format, incremental_...) win."""
        base: dict[str, Any] = {
            "table": table,
            "bucket": settings.export_bucket or "",
            "prefix": settings.export_prefix,
            "sse_algorithm": settings.export_sse_algorithm,
            "kms_key_id": settings.export_kms_key_id,
            "bucket_owner": settings.export_bucket_owner,
        }
        return cls(**(base | fields))

    @property
    def is_incremental(self) -> bool:
        return self.incremental_from is not None

    def client_token(self, table_arn: str) -> str:
        """A token derived from the request, so a retried call never starts a second export.

        DynamoDB returns the export of a token used in the last 8 hours: a "now" export's token
        holds ``request_id``, else a second "now" snapshot would get the first one's data.
        """
        # The times' text as first released (+00:00, not Z): a token that an upgrade changed
        # would start a second export of the same request.
        at, start, end = (
            "" if t is None else iso(t).replace("Z", "+00:00")
            for t in (self.export_time, self.incremental_from, self.incremental_to)
        )
        if self.export_time is None:
            at = "now" if self.is_incremental else f"now:{self.request_id}"
        parts = [
            table_arn,
            self.bucket,
            self.prefix,
            self.export_format,
            self.bucket_owner or "",
            self.sse_algorithm or "",
            self.kms_key_id or "",
            at,
            start,
            end,
            self.incremental_view if self.is_incremental else "",
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:36]


def describe_table(clients: Clients, table: str) -> dict[str, Any]:
    """DescribeTable, with a missing table turned into :class:`TableNotFoundError`."""
    try:
        return clients.dynamodb.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        raise_if_credentials(exc, f"describe table {table!r}")
        if error_code(exc) == "ResourceNotFoundException":
            raise TableNotFoundError(
                f"Table {table!r} does not exist in region {clients.region}.",
                fix="check the table list and DYNAMO_CDC_REGION (or AWS_REGION).",
            ) from None
        raise


def pitr_window(clients: Clients, table: str) -> tuple[datetime, datetime]:
    """The (earliest, latest) restorable times; raises when PITR is off."""
    try:
        desc = clients.dynamodb.describe_continuous_backups(TableName=table)
    except ClientError as exc:
        raise_if_credentials(exc, f"describe continuous backups of {table!r}")
        if error_code(exc) in ("TableNotFoundException", "ResourceNotFoundException"):
            raise TableNotFoundError(
                f"Table {table!r} does not exist in region {clients.region}.",
                fix="check the table list and the region.",
            ) from None
        raise
    pitr = desc["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
    if pitr.get("PointInTimeRecoveryStatus") != "ENABLED":
        raise PitrNotEnabledError(
            f"Point-in-time recovery is off for table {table!r}, so it cannot be exported.",
            fix=f"aws dynamodb update-continuous-backups --table-name {table} "
            "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true",
        )
    now = datetime.now(UTC)
    return pitr.get("EarliestRestorableDateTime", now), pitr.get("LatestRestorableDateTime", now)


def _check_bucket_exists(clients: Clients, request: ExportRequest) -> None:
    """Fail before paying for an export when the bucket does not exist.

    Only a definite 404 fails: a 403 may be a cross-account bucket whose policy lets DynamoDB
    write but not us look, so the export is still tried.
    """
    try:
        clients.s3.head_bucket(Bucket=request.bucket)
    except ClientError as exc:
        raise_if_credentials(exc, f"look up bucket {request.bucket!r}")
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            raise BucketError(
                f"Export bucket {request.bucket!r} for table {request.table!r} does not exist.",
                fix=f"create it in the table's region (aws s3 mb s3://{request.bucket}) or set "
                "DYNAMO_CDC_EXPORT_BUCKET.",
            ) from None


def request_export(clients: Clients, request: ExportRequest) -> str:
    """Start (or re-attach to) a PITR export and return its ExportArn.

    The ClientToken is derived from the request, so calling this again with the same request
    (a retry, a re-run) returns the export already started instead of paying for a second one.

    Raises:
        TableNotFoundError, PitrNotEnabledError, PitrWindowError, BucketError.
    """
    table = describe_table(clients, request.table)
    earliest, latest = pitr_window(clients, request.table)
    if request.export_time is not None and request.export_time < earliest:
        raise PitrWindowError(
            f"Export time {iso(request.export_time)} for table {request.table!r} is before "
            f"the earliest restorable time {iso(earliest)}.",
            fix=f"choose a time between {iso(earliest)} and now (PITR keeps up to 35 days).",
        )
    _check_bucket_exists(clients, request)
    params: dict[str, Any] = {
        "TableArn": table["TableArn"],
        "S3Bucket": request.bucket,
        "S3Prefix": request.prefix,
        "ExportFormat": request.export_format,
        "ClientToken": request.client_token(table["TableArn"]),
    }
    if request.export_time is not None and not request.is_incremental:
        params["ExportTime"] = request.export_time
    if request.bucket_owner:
        params["S3BucketOwner"] = request.bucket_owner
    if request.sse_algorithm:
        params["S3SseAlgorithm"] = request.sse_algorithm
    if request.kms_key_id:
        params["S3SseKmsKeyId"] = request.kms_key_id
    if request.is_incremental:
        params["ExportType"] = "INCREMENTAL_EXPORT"
        params["IncrementalExportSpecification"] = {
            "ExportFromTime": request.incremental_from,
            "ExportToTime": request.incremental_to,
            "ExportViewType": request.incremental_view,
        }
    try:
        desc = clients.dynamodb.export_table_to_point_in_time(**params)["ExportDescription"]
    except ClientError as exc:
        raise_if_credentials(exc, f"export table {request.table!r}")
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code == "PointInTimeRecoveryUnavailableException":
            raise PitrNotEnabledError(
                f"Point-in-time recovery is off for table {request.table!r}.",
                fix=f"aws dynamodb update-continuous-backups --table-name {request.table} "
                "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true",
            ) from None
        if code == "InvalidExportTimeException":
            raise PitrWindowError(
                f"DynamoDB refused the export time for table {request.table!r}: {message}",
                fix=f"choose a time between {iso(earliest)} and {iso(latest)}.",
            ) from None
        if code in ("TableNotFoundException", "ResourceNotFoundException"):
            raise TableNotFoundError(
                f"Table {request.table!r} does not exist.", fix="check the table list."
            ) from None
        if "bucket" in message.lower() or code in ("NoSuchBucket", "AccessDenied"):
            raise BucketError(
                f"Export of table {request.table!r} to bucket {request.bucket!r} was refused: "
                f"{code} {message}",
                fix="create the bucket (same region) or grant DynamoDB s3:PutObject on it.",
            ) from None
        raise
    log.info("Export of %s started: %s", request.table, desc["ExportArn"])
    return str(desc["ExportArn"])


def wait_for_export(
    clients: Clients,
    export_arn: str,
    *,
    table: str = "",
    poll_seconds: float = 10.0,
    max_poll_seconds: float = 60.0,
    timeout_seconds: float = 6 * 3600,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll DescribeExport until COMPLETED; return the ExportDescription.

    Backs off from ``poll_seconds`` to ``max_poll_seconds`` with jitter and logs progress.

    Raises:
        ExportFailedError: the export FAILED (its FailureCode and FailureMessage are in the
            message) or did not finish within ``timeout_seconds``.
    """
    started = time.monotonic()
    delay = poll_seconds
    while True:
        desc = clients.dynamodb.describe_export(ExportArn=export_arn)["ExportDescription"]
        status = desc["ExportStatus"]
        if on_progress:
            on_progress(desc)
        if status == "COMPLETED":
            log.info("Export %s completed: %s items", export_arn, desc.get("ItemCount"))
            return desc
        if status == "FAILED":
            code = str(desc.get("FailureCode", "unknown"))
            if code in ("S3NoSuchBucket", "S3AccessDenied"):
                raise ExportBucketError(
                    f"Export {export_arn} of table {table or desc.get('TableArn')!r} FAILED: "
                    f"{code}: {desc.get('FailureMessage', '')} (bucket {desc.get('S3Bucket')!r})",
                    fix="create the bucket in the table's region, or let DynamoDB write to it "
                    "(s3:PutObject, s3:AbortMultipartUpload; kms:GenerateDataKey for SSE-KMS).",
                )
            raise ExportFailedError(
                f"Export {export_arn} of table {table or desc.get('TableArn')!r} FAILED: "
                f"{desc.get('FailureCode', 'unknown')}: {desc.get('FailureMessage', '')}",
                fix="fix the cause named above (often the bucket's permissions or KMS key) and "
                "run the snapshot again; a new export will be requested.",
            )
        elapsed = time.monotonic() - started
        if elapsed > timeout_seconds:
            raise ExportFailedError(
                f"Export {export_arn} is still {status} after {elapsed:.0f} s.",
                fix="large tables take hours; raise the timeout or re-run later: the same "
                "export is picked up again.",
            )
        log.info("Export %s is %s (%.0f s so far)", export_arn, status, elapsed)
        sleep(delay * (0.8 + 0.4 * random.random()))
        delay = min(delay * 1.5, max_poll_seconds)


# -- reading ----------------------------------------------------------------------------------


class ExportSource:
    """Where an export's files are: S3 or a local folder. Keys are S3 keys as in the manifests."""

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file with the object's bytes (downloaded to a temp file for S3)."""
        raise NotImplementedError
        yield  # pragma: no cover

    def describe(self, key: str) -> str:
        raise NotImplementedError


@dataclass
class LocalExportSource(ExportSource):
    """A downloaded export. ``export_dir`` is the folder holding manifest-summary.json; keys are
    resolved by their part after ``AWSDynamoDB/<ExportId>/`` (the folder may have been renamed)."""

    export_dir: Path

    def path(self, key: str) -> Path:
        marker = "/AWSDynamoDB/"
        rel = key
        if marker in "/" + key:
            rel = ("/" + key).split(marker, 1)[1].split("/", 1)[1]
        return self.export_dir / rel

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise ExportVerificationError(
                f"Export file {self.path(key)} is missing.",
                fix="download the whole export folder again.",
            ) from None

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        p = self.path(key)
        if not p.exists():
            raise ExportVerificationError(
                f"Export data file {p} is missing.", fix="download the whole export folder again."
            )
        yield p

    def describe(self, key: str) -> str:
        return str(self.path(key))


@dataclass
class S3ExportSource(ExportSource):
    s3_client: Any
    bucket: str

    def read(self, key: str) -> bytes:
        try:
            return self.s3_client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise_if_credentials(exc, f"read s3://{self.bucket}/{key}")
            raise ExportVerificationError(
                f"Export file s3://{self.bucket}/{key} cannot be read ({error_code(exc)}).",
                fix="check that the export still exists and that s3:GetObject is allowed.",
            ) from None

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        fd, name = tempfile.mkstemp(prefix="dynamo-cdc-", suffix=".gz")
        os.close(fd)
        try:
            try:
                self.s3_client.download_file(self.bucket, key, name)
            except ClientError as exc:
                raise_if_credentials(exc, f"read s3://{self.bucket}/{key}")
                raise ExportVerificationError(
                    f"Export data file s3://{self.bucket}/{key} cannot be read "
                    f"({error_code(exc)}).",
                    fix="check that the export still exists and that s3:GetObject is allowed.",
                ) from None
            yield Path(name)
        finally:
            os.unlink(name)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@dataclass(frozen=True)
class DataFile:
    key: str
    item_count: int
    md5_b64: str
    etag: str = ""


@dataclass
class ExportManifest:
    """manifest-summary.json and manifest-files.json of one export, and where its files are."""

    source: ExportSource
    summary: dict[str, Any]
    files: list[DataFile] = field(default_factory=list)
    #: the table's CreationDateTime (ISO text) when the exporter knew it: change rows older
    #: than it are an earlier table's of the same name (see dynamo_cdc.mirror)
    table_created: str | None = None

    @property
    def export_arn(self) -> str:
        return str(self.summary.get("exportArn", ""))

    @property
    def table_arn(self) -> str:
        return str(self.summary.get("tableArn", ""))

    @property
    def table_name(self) -> str:
        return self.table_arn.split(":table/", 1)[-1].split("/", 1)[0]

    @property
    def export_time(self) -> str:
        return str(self.summary.get("exportTime", ""))

    @property
    def export_date(self) -> str | None:
        """The UTC date (``YYYY-MM-DD``) of ``exportTime``, None when the summary has none.

        Raises:
            ExportVerificationError: ``exportTime`` is not an ISO 8601 time (it would become a
                folder name).
        """
        text = self.summary.get("exportTime")
        if text is None:
            return None
        try:
            when = datetime.fromisoformat(str(text))
        except ValueError:
            raise ExportVerificationError(
                f"Export {self.export_arn}: manifest-summary's exportTime {str(text)[:80]!r} is "
                "not an ISO 8601 time.",
                fix="the manifest was changed after the export: request a new export, or pass "
                "the partition date (--export-date).",
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%d")

    @property
    def item_count(self) -> int:
        return int(self.summary.get("itemCount", sum(f.item_count for f in self.files)))

    @property
    def output_format(self) -> str:
        return str(self.summary.get("outputFormat", "DYNAMODB_JSON"))

    @property
    def export_type(self) -> str:
        return str(self.summary.get("exportType", "FULL_EXPORT"))

    def lineage(self) -> dict[str, Any]:
        """The facts about this export that travel with the Parquet made from it."""
        return {
            "export_arn": self.export_arn,
            "export_time": self.export_time,
            "table_arn": self.table_arn,
            "table": self.table_name,
            "item_count": self.item_count,
            "format": self.output_format,
            "export_type": self.export_type,
            "start_time": self.summary.get("startTime"),
            "end_time": self.summary.get("endTime"),
            "data_files": len(self.files),
        }


def load_manifest(source: ExportSource, summary_key: str) -> ExportManifest:
    """Read manifest-summary.json and manifest-files.json; check the manifests' own checksums
    when their ``.md5`` files exist.

    Raises:
        ExportVerificationError: a manifest is missing, malformed or fails its checksum.
    """
    summary_bytes = source.read(summary_key)
    _check_manifest_md5(source, summary_key, summary_bytes)
    try:
        summary = json.loads(summary_bytes)
    except ValueError:
        raise ExportVerificationError(
            f"{source.describe(summary_key)} is not JSON: this is not a manifest-summary.json.",
            fix="pass the manifest-summary.json of a DynamoDB export.",
        ) from None
    files_key = summary.get("manifestFilesS3Key")
    if not files_key:
        raise ExportVerificationError(
            f"{source.describe(summary_key)} has no manifestFilesS3Key.",
            fix="pass the manifest-summary.json of a COMPLETED DynamoDB export.",
        )
    _export_folder(source, str(files_key), summary_key)
    files_bytes = source.read(files_key)
    _check_manifest_md5(source, files_key, files_bytes)
    files = []
    for lineno, line in enumerate(files_bytes.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            files.append(
                DataFile(
                    key=entry["dataFileS3Key"],
                    item_count=int(entry["itemCount"]),
                    md5_b64=entry["md5Checksum"],
                    etag=entry.get("etag", ""),
                )
            )
        except (ValueError, KeyError):
            raise ExportVerificationError(
                f"{source.describe(files_key)} line {lineno} is not a manifest entry.",
                fix="download the export again; the manifest is damaged.",
            ) from None
    confine_data_files(source, summary, files)
    manifest = ExportManifest(source=source, summary=summary, files=files)
    total = sum(f.item_count for f in files)
    if "itemCount" in summary and int(summary["itemCount"]) != total:
        raise ExportVerificationError(
            f"Export {manifest.export_arn}: manifest-summary says {summary['itemCount']} items "
            f"but manifest-files lists {total}.",
            fix="download the export again or request a new one.",
        )
    return manifest


# One segment of an export's key: what AWS writes (ids, data file names), never "." or "..".
_KEY_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def _refuse_key(source: ExportSource, manifest_key: str, key: str, where: str) -> NoReturn:
    raise ExportVerificationError(
        f"{source.describe(manifest_key)} names {key!r}, which is not under {where}: "
        "refusing the export before reading any data file.",
        fix="the manifest was changed after the export: request a new export, or download "
        "the export's folder again.",
    )


def confine_data_files(
    source: ExportSource, summary: dict[str, Any], files: list[DataFile]
) -> None:
    """Refuse data files outside their export's data folder (see :func:`load_manifest`; also
    for a manifest rebuilt from a snapshot plan).

    Raises:
        ExportVerificationError: naming the first such key.
    """
    files_key = str(summary.get("manifestFilesS3Key", ""))
    folders = _data_folders(_export_folder(source, files_key), summary)
    for data_file in files:
        _confine_data_key(source, files_key, data_file.key, folders)


def _export_folder(source: ExportSource, files_key: str, summary_key: str | None = None) -> str:
    """The key of the export's own folder ``[<prefix>/]AWSDynamoDB/<ExportId>``, in which
    manifest-files.json must lie (refused before it is read).

    In S3 it is the summary's folder (checked when ``summary_key`` is given). A local folder may have been renamed, so there it is the
    folder the manifest-files key names (resolved by its part after ``AWSDynamoDB/<ExportId>/``,
    see :class:`LocalExportSource`).
    """
    base, _, name = files_key.rpartition("/")
    if summary_key is not None and isinstance(source, S3ExportSource):
        own = summary_key.rpartition("/")[0]
        if base != own:
            _refuse_key(source, summary_key, files_key, f"the export's folder {own + '/'!r}")
    parts = base.split("/")
    if (
        len(parts) < 2
        or parts[-2] != "AWSDynamoDB"
        or not all(_KEY_SEGMENT.fullmatch(p) for p in parts)
        or not _KEY_SEGMENT.fullmatch(name)
    ):
        where = "an export's 'AWSDynamoDB/<ExportId>/'"
        _refuse_key(source, summary_key or "manifest-summary.json", files_key, where)
    return base


def _data_folders(base: str, summary: dict[str, Any]) -> tuple[str, ...]:
    """Where the export's data files may lie: ``<base>/data/``, and for an incremental export
    also the shared ``[<prefix>/]AWSDynamoDB/data/`` where AWS writes them."""
    if summary.get("exportType") == "INCREMENTAL_EXPORT":
        return (base + "/data/", base.rpartition("/")[0] + "/data/")
    return (base + "/data/",)


def _confine_data_key(
    source: ExportSource, files_key: str, key: str, folders: tuple[str, ...]
) -> None:
    """Refuse a data-file key outside the export's data folder (an absolute key, ``..``,
    another export's folder): only a file name directly in one of ``folders``."""
    for folder in folders:
        if key.startswith(folder) and _KEY_SEGMENT.fullmatch(key[len(folder) :]):
            return
    _refuse_key(source, files_key, key, " or ".join(repr(f) for f in folders))


def _check_manifest_md5(source: ExportSource, key: str, content: bytes) -> None:
    # AWS writes manifest-summary.checksum / manifest-files.checksum (hex MD5); accept .md5 too.
    stem = key.rsplit(".", 1)[0]
    expected = ""
    for md5_key in (stem + ".checksum", stem + ".md5"):
        try:
            expected = source.read(md5_key).decode().strip()
            break
        except ExportVerificationError:
            continue
    if not expected:
        return  # hand-copied folders may lack the checksum files
    digest = hashlib.md5(content).digest()
    # AWS's .md5 files have held hex; some tools write base64: accept either.
    if (
        expected
        and expected.lower() != digest.hex()
        and expected != base64.b64encode(digest).decode()
    ):
        raise ExportVerificationError(
            f"{source.describe(key)} fails its checksum ({md5_key}).",
            fix="download the export again; the manifest is damaged.",
        )


def manifest_from_export_description(clients: Clients, desc: dict[str, Any]) -> ExportManifest:
    """The manifest of a COMPLETED export, from its ExportDescription."""
    source = S3ExportSource(clients.s3, desc["S3Bucket"])
    return load_manifest(source, desc["ExportManifest"])


def open_manifest(location: str, s3_client: Any = None) -> ExportManifest:
    """The manifest at ``location``: ``s3://bucket/key/manifest-summary.json`` or a local path
    (the manifest-summary.json or the folder holding it)."""
    if location.startswith("s3://"):
        bucket, _, key = location[5:].partition("/")
        return load_manifest(S3ExportSource(s3_client, bucket), key)
    path = Path(location)
    if path.is_dir():
        path = path / "manifest-summary.json"
    if not path.exists():
        raise ExportVerificationError(
            f"{path} does not exist.",
            fix="pass the manifest-summary.json of an export (a local path or an s3:// URI).",
        )
    source = LocalExportSource(path.parent)
    return load_manifest(source, str(path.name))


def md5_b64_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


@contextmanager
def verified_data_file(manifest: ExportManifest, data_file: DataFile) -> Iterator[Path]:
    """A local copy of ``data_file`` whose MD5 matches the manifest.

    Raises:
        ExportVerificationError: missing file or MD5 mismatch (names the file and the export).
    """
    with manifest.source.local_copy(data_file.key) as path:
        actual = md5_b64_of(path)
        if actual != data_file.md5_b64:
            raise ExportVerificationError(
                f"Data file {manifest.source.describe(data_file.key)} of export "
                f"{manifest.export_arn} fails its MD5 check (manifest {data_file.md5_b64}, "
                f"file {actual}).",
                fix="the file was changed or damaged after the export: request a new export; "
                "nothing was published.",
            )
        yield path


def line_too_long(describe: str, lineno: int) -> ExportVerificationError:
    """The error of a data file line longer than :data:`MAX_LINE_BYTES` (``lineno``: 1-based)."""
    return ExportVerificationError(
        f"{describe} line {lineno} is longer than {MAX_LINE_BYTES >> 20} MiB: no DynamoDB item "
        "(400 KB at most) makes a line that long.",
        fix="the data file is damaged or not a DynamoDB export: request a new export; nothing "
        "was published.",
    )


def iter_lines(fh: IO[bytes], describe: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its line end) of each line of ``fh``, each read
    at most :data:`MAX_LINE_BYTES` at a time.

    Raises:
        ExportVerificationError: a line longer than that (refused before it is held whole).
    """
    lineno = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        lineno += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise line_too_long(describe, lineno)
        yield lineno, raw.rstrip(b"\r\n")


def open_gzip(path: Path) -> IO[bytes]:
    """Open a gzip file with the fastest decompressor available (python-isal, else zlib)."""
    try:
        from isal import igzip

        return cast(IO[bytes], igzip.open(path, "rb"))
    except ImportError:  # pragma: no cover - isal is a dependency
        import gzip

        return cast(IO[bytes], gzip.open(path, "rb"))


# Decompressed bytes per block of export lines (:func:`iter_blocks`): the C reader reads one in
# one call; 8 MB keeps the per-call overhead small and a worker's memory flat.
BLOCK_BYTES = 8 << 20


class LineTooLong(Exception):
    """A line longer than :data:`dynamo_cdc.export.MAX_LINE_BYTES`: the first line after the
    blocks yielded so far."""


def iter_blocks(
    path: Path, block_bytes: int = BLOCK_BYTES, max_line: int = MAX_LINE_BYTES
) -> Iterator[bytes]:
    """Line-aligned blocks of a gzip file's text (each without its last newline).

    A line is held at most ``max_line`` bytes (plus one read): a longer one raises
    :class:`LineTooLong` before more of it is read. The pieces of a line that spans reads are
    joined once, when its end arrives (no growing copy per read).

    Raises:
        LineTooLong: a line longer than ``max_line``.
        EOFError, OSError, zlib.error: a truncated or damaged file (the caller words it).
    """
    pieces: list[bytes] = []  # the start of a line that spans reads
    held = 0
    with open_gzip(path) as fh:
        while data := fh.read(block_bytes):
            cut = data.rfind(b"\n")
            if cut < 0:
                pieces.append(data)
                held += len(data)
                if held > max_line:
                    raise LineTooLong()
                continue
            if pieces:
                first = data.find(b"\n")
                if held + first > max_line:
                    raise LineTooLong()
                pieces.append(data[:cut])
                block = b"".join(pieces)
                pieces, held = [], 0
            else:
                block = data[:cut]
            if cut + 1 < len(data):
                pieces, held = [data[cut + 1 :]], len(data) - cut - 1
            if block:
                yield block
            del block
    if pieces:
        yield b"".join(pieces)
