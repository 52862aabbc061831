"""``dynamo-cdc check``: verify per table what capture needs, and say how to fix what is wrong.

Checks, per table: the table exists; its stream is on with NEW_AND_OLD_IMAGES; point-in-time
recovery is on. Once: the export bucket exists and accepts a write (a small probe object under
the export prefix, deleted afterwards), and the lake root accepts a write (a probe file or object,
deleted afterwards; a local root that does not exist yet is created only for the probe).

Credentials AWS rejects and bad settings (an unknown region) are not per-table findings:
:class:`~dynamo_cdc.errors.CredentialsError` and :class:`~dynamo_cdc.errors.ConfigError` end the
check at once (every other row would only repeat them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError, NoCredentialsError

from dynamo_cdc.aws import Clients, error_code, raise_if_credentials
from dynamo_cdc.config import Settings, TableSpec
from dynamo_cdc.errors import ConfigError, CredentialsError, DynamoCdcError
from dynamo_cdc.export import describe_table, pitr_window
from dynamo_cdc.lake import Lake


@dataclass(frozen=True)
class CheckResult:
    table: str
    check: str
    ok: bool
    detail: str
    fix: str = ""


def _stream_fix(table: str) -> str:
    return (
        f"aws dynamodb update-table --table-name {table} --stream-specification "
        "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
    )


def check_table(clients: Clients, table: str) -> list[CheckResult]:
    """The table, stream and PITR checks of one table.

    Raises:
        CredentialsError: AWS rejected the credentials (or there are none).
    """
    try:
        desc = describe_table(clients, table)
    except (CredentialsError, ConfigError):
        raise
    except DynamoCdcError as exc:
        return [
            CheckResult(table, "table exists", False, str(exc).split(" Fix:")[0], exc.fix or "")
        ]
    results = [CheckResult(table, "table exists", True, f"{desc.get('ItemCount', 0)} items")]
    spec = desc.get("StreamSpecification") or {}
    view = spec.get("StreamViewType")
    if not spec.get("StreamEnabled") or not desc.get("LatestStreamArn"):
        results.append(
            CheckResult(table, "stream", False, "no stream is enabled", _stream_fix(table))
        )
    elif view != "NEW_AND_OLD_IMAGES":
        results.append(
            CheckResult(
                table,
                "stream",
                False,
                f"stream view is {view}; capture needs NEW_AND_OLD_IMAGES",
                "disable the stream, then " + _stream_fix(table),
            )
        )
    else:
        results.append(CheckResult(table, "stream", True, "NEW_AND_OLD_IMAGES"))
    try:
        earliest, _ = pitr_window(clients, table)
        results.append(
            CheckResult(table, "PITR", True, f"restorable since {earliest:%Y-%m-%d %H:%M}Z")
        )
    except (CredentialsError, ConfigError):
        raise
    except DynamoCdcError as exc:
        results.append(CheckResult(table, "PITR", False, str(exc).split(" Fix:")[0], exc.fix or ""))
    return results


def check_bucket(clients: Clients, bucket: str | None, prefix: str) -> CheckResult:
    """The export bucket exists and accepts a write.

    Raises:
        CredentialsError: AWS rejected the credentials (or there are none).
    """
    name = "(export bucket)"
    if not bucket:
        return CheckResult(
            name,
            "export bucket",
            False,
            "no export bucket is configured",
            "set DYNAMO_CDC_EXPORT_BUCKET to an S3 bucket in the tables' region",
        )
    key = f"{prefix.strip('/')}/_dynamo_cdc_probe_{uuid.uuid4().hex}".lstrip("/")
    try:
        clients.s3.put_object(Bucket=bucket, Key=key, Body=b"probe")
        clients.s3.delete_object(Bucket=bucket, Key=key)
    except (ClientError, NoCredentialsError) as exc:
        raise_if_credentials(exc, f"write a probe object to bucket {bucket!r}")
        if not isinstance(exc, ClientError):
            raise
        code = error_code(exc)
        if code == "NoSuchBucket":
            return CheckResult(
                name,
                "export bucket",
                False,
                f"bucket {bucket!r} does not exist",
                f"aws s3 mb s3://{bucket} (in the tables' region)",
            )
        return CheckResult(
            name,
            "export bucket",
            False,
            f"bucket {bucket!r} refused a write ({code})",
            f"allow s3:PutObject and s3:DeleteObject on arn:aws:s3:::{bucket}/{prefix}/*",
        )
    return CheckResult(name, "export bucket", True, f"s3://{bucket}/{prefix} is writable")


def check_lake(clients: Clients, root: str) -> CheckResult:
    """The lake root accepts a write: a local folder (not under a file) or an S3 bucket.

    Raises:
        CredentialsError: AWS rejected the credentials (or there are none).
    """
    name = "(lake root)"
    try:
        lake = Lake(root, clients.s3 if root.startswith("s3://") else None)
        created = _missing_folders(lake)
        probe = f"_dynamo_cdc_probe_{uuid.uuid4().hex}"
        try:
            lake.write_bytes(probe, b"probe")
            lake.delete(probe)
        finally:
            for folder in created:  # leave no folder the probe made
                if folder.is_dir():
                    folder.rmdir()
    except (CredentialsError, ConfigError):
        raise
    except DynamoCdcError as exc:
        return CheckResult(name, "lake root", False, str(exc).split(" Fix:")[0], exc.fix or "")
    return CheckResult(name, "lake root", True, f"{lake.uri()} is writable")


def _missing_folders(lake: Lake) -> list[Path]:
    """The local root and its parents that do not exist yet, deepest first."""
    if lake.is_s3:
        return []
    missing = []
    folder = Path(lake.root)
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def run_checks(
    settings: Settings, tables: list[TableSpec], clients: Clients | None = None
) -> list[CheckResult]:
    """Every check for every table, then the export bucket and lake root checks."""
    clients = clients or Clients(settings, max_attempts=2)
    results: list[CheckResult] = []
    for spec in tables:
        results.extend(check_table(clients, spec.name))
    results.append(check_bucket(clients, settings.export_bucket, settings.export_prefix))
    results.append(check_lake(clients, settings.lake_root))
    return results


def format_results(results: list[CheckResult]) -> str:
    """One row per table and check; failures carry their fix on the next line."""
    width = max((len(r.table) for r in results), default=5)
    lines = []
    for r in results:
        lines.append(f"{'OK  ' if r.ok else 'FAIL'}  {r.table:<{width}}  {r.check:<14} {r.detail}")
        if not r.ok and r.fix:
            lines.append(f"{'':>{width + 6}}  fix: {r.fix}")
    return "\n".join(lines)
