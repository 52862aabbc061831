"""Settings and the table list.

The table list is a headerless CSV, one table a row, as Streamkap's bulk upload takes it. An
optional second column holds per-table options as ``key=value`` pairs separated by ``;``
(for example ``orders,snapshot_schedule=daily;on_gap=fail``). Blank lines and lines starting
with ``#`` are ignored.

Settings come from environment variables prefixed ``DYNAMO_CDC_``; they are read when
:func:`Settings.from_env` is called, never at import time.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamo_cdc.errors import ConfigError, TableListError, UnsafeTableNameError

log = logging.getLogger(__name__)

# The most tables one code location is supported with (its definitions load in tens of seconds
# at this size, measured in docs/reliability.md): past it, parse_table_list warns.
SUPPORTED_TABLES = 1_000
# How often the Dagster integration refreshes ``current`` after new changes (a run each, so a
# process, container or pod in production): every 30 minutes, 48 runs a day at most.
DEFAULT_CURRENT_CRON = "*/30 * * * *"

TABLE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{3,255}$")

TABLE_OPTIONS = {
    "snapshot_schedule": ("off", "daily"),
    "on_gap": ("heal", "fail"),
    "export_format": ("DYNAMODB_JSON", "ION"),
}


def validate_table_name(name: str) -> str:
    """Return ``name`` if DynamoDB accepts it and it is safe as a path segment, else raise.

    DynamoDB table names are 3-255 characters of ``A-Z a-z 0-9 _ - .``. Names made only of dots
    (``...``) pass DynamoDB's rule but would walk up the lake's folders, so they are refused too.
    """
    if not TABLE_NAME_RE.fullmatch(name):
        raise UnsafeTableNameError(
            f"Table name {name!r} is not a valid DynamoDB table name.",
            fix="use 3-255 characters of A-Z, a-z, 0-9, '_', '-' and '.'.",
        )
    if set(name) == {"."}:
        raise UnsafeTableNameError(
            f"Table name {name!r} is made only of dots and cannot be a lake folder.",
            fix="rename the table or leave it out of the table list.",
        )
    return name


def dagster_safe_name(table: str) -> str:
    """Map a DynamoDB table name to a Dagster-safe name, injectively.

    Dagster names allow ``A-Z a-z 0-9 _``. ``_`` is escaped as ``__``, ``-`` as ``_d`` and ``.``
    as ``_p``; because every ``_`` in the output starts a two-character escape, the mapping can be
    reversed and two different tables never collide. Names without ``-``, ``.`` or ``_`` are
    unchanged.
    """
    out = []
    for ch in validate_table_name(table):
        if ch == "_":
            out.append("__")
        elif ch == "-":
            out.append("_d")
        elif ch == ".":
            out.append("_p")
        else:
            out.append(ch)
    return "".join(out)


def table_from_dagster_name(safe: str) -> str:
    """Inverse of :func:`dagster_safe_name`."""
    out = []
    i = 0
    while i < len(safe):
        ch = safe[i]
        if ch == "_":
            code = safe[i + 1 : i + 2]
            out.append({"_": "_", "d": "-", "p": "."}.get(code, "?"))
            if code not in ("_", "d", "p"):
                raise ValueError(f"{safe!r} is not a name made by dagster_safe_name")
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class TableSpec:
    """One configured table and its options."""

    name: str
    snapshot_schedule: str = "off"
    on_gap: str = "heal"
    export_format: str = "DYNAMODB_JSON"

    @property
    def safe_name(self) -> str:
        """The Dagster-safe form of the name (see :func:`dagster_safe_name`)."""
        return dagster_safe_name(self.name)


def _parse_options(text: str, where: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in TABLE_OPTIONS:
            raise TableListError(
                f"{where}: unknown option {part!r}.",
                fix=f"options are key=value pairs separated by ';' with keys {sorted(TABLE_OPTIONS)}.",
            )
        allowed = TABLE_OPTIONS[key]
        if key == "export_format":
            value = value.upper()
        if value not in allowed:
            raise TableListError(
                f"{where}: option {key} must be one of {list(allowed)}, not {value!r}.",
                fix=f"write {key}={allowed[0]} or leave the option out.",
            )
        options[key] = value
    return options


def parse_table_list(text: str, source: str = "<table list>") -> list[TableSpec]:
    """Parse the headerless table-list CSV.

    Args:
        text: the file's content.
        source: the file's name, used in error messages.

    Raises:
        TableListError: an empty list, a header row, a duplicate, a bad name or option; the
            message names ``source``, the line and the rule.
    """
    specs: list[TableSpec] = []
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text))
    for lineno, row in enumerate(_csv_rows(reader, source), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        where = f"{source}, line {lineno}"
        name = row[0].strip()
        if len(row) > 2:
            raise TableListError(
                f"{where}: expected 'table' or 'table,options' but found {len(row)} columns.",
                fix="put one table per row; separate options with ';' inside the second column.",
            )
        if not specs and name.lower() in {"table", "table_name", "tablename", "name"}:
            raise TableListError(
                f"{where}: {name!r} looks like a header row; the table list has no header.",
                fix="delete the first line.",
            )
        try:
            validate_table_name(name)
        except UnsafeTableNameError as exc:
            raise TableListError(f"{where}: {exc}") from None
        if name in seen:
            raise TableListError(
                f"{where}: table {name!r} is listed twice (first on line {seen[name]}).",
                fix="keep one row per table.",
            )
        seen[name] = lineno
        options = _parse_options(row[1], where) if len(row) == 2 else {}
        specs.append(TableSpec(name=name, **options))
    if not specs:
        raise TableListError(
            f"{source}: the table list names no table.",
            fix="write one DynamoDB table name per line.",
        )
    if len(specs) > SUPPORTED_TABLES:
        log.warning(
            "%s lists %d tables; one code location is supported up to %d (loading its "
            "definitions grows with the tables, see docs/reliability.md): split the list "
            "across code locations.",
            source,
            len(specs),
            SUPPORTED_TABLES,
        )
    return specs


def _csv_rows(reader: Any, source: str) -> Iterator[list[str]]:
    """The reader's rows, with the csv module's own errors (a field over its size limit, a NUL,
    an unclosed quote) turned into a :class:`TableListError` naming the file and line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TableListError(
                f"{source}, line {reader.line_num}: not a table-list row ({exc}).",
                fix="write one table name (at most 255 characters) per line, optionally "
                "followed by ',options'; close every quote.",
            ) from None
        yield row


def load_table_list(path: str | os.PathLike[str]) -> list[TableSpec]:
    """Read and parse the table list at ``path`` (see :func:`parse_table_list`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TableListError(
            f"Table list {str(p)!r} does not exist.",
            fix="create it (one table name per line) or point DYNAMO_CDC_TABLES at it.",
        ) from None
    return parse_table_list(text, source=str(p))


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"DYNAMO_CDC_{name}")
    return value if value not in (None, "") else default


def _sse_algorithm(value: str | None) -> str | None:
    if value is None:
        return None
    if value.upper() not in ("AES256", "KMS"):
        raise ConfigError(
            f"DYNAMO_CDC_EXPORT_SSE_ALGORITHM={value!r} is neither AES256 nor KMS.",
            fix="set AES256 or KMS (with DYNAMO_CDC_EXPORT_KMS_KEY_ID), or unset it.",
        )
    return value.upper()


@dataclass(frozen=True)
class Settings:
    """Where the tables are, where exports go and where the lake is.

    Attributes:
        tables_path: the table list (DYNAMO_CDC_TABLES).
        lake_root: a local folder or ``s3://bucket/prefix`` (DYNAMO_CDC_LAKE_ROOT).
        export_bucket: the S3 bucket for PITR exports (DYNAMO_CDC_EXPORT_BUCKET).
        export_prefix: the key prefix for exports (DYNAMO_CDC_EXPORT_PREFIX).
        export_sse_algorithm: ``AES256`` or ``KMS`` for the export files
            (DYNAMO_CDC_EXPORT_SSE_ALGORITHM; default: the bucket's encryption).
        export_kms_key_id: the KMS key for ``KMS`` (DYNAMO_CDC_EXPORT_KMS_KEY_ID).
        export_bucket_owner: the account that owns a cross-account export bucket
            (DYNAMO_CDC_EXPORT_BUCKET_OWNER).
        endpoint_url: the local AWS, or None for real AWS (DYNAMO_CDC_ENDPOINT_URL).
        region: AWS region (DYNAMO_CDC_REGION, else boto3's chain, else us-east-1).
        access_key_id / secret_access_key / session_token: explicit credentials
            (DYNAMO_CDC_AWS_ACCESS_KEY_ID, ...); None means boto3's usual chain.
    """

    tables_path: str | None = None
    lake_root: str = "./lake"
    export_bucket: str | None = None
    export_prefix: str = "dynamo-cdc/exports"
    export_sse_algorithm: str | None = None
    export_kms_key_id: str | None = None
    export_bucket_owner: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Settings:
        """Read settings from ``DYNAMO_CDC_*`` environment variables."""
        key = _env("AWS_ACCESS_KEY_ID")
        secret = _env("AWS_SECRET_ACCESS_KEY")
        if bool(key) != bool(secret):
            raise ConfigError(
                "Only one of DYNAMO_CDC_AWS_ACCESS_KEY_ID and DYNAMO_CDC_AWS_SECRET_ACCESS_KEY is set.",
                fix="set both, or neither to use boto3's usual credential chain.",
            )
        return cls(
            tables_path=_env("TABLES"),
            lake_root=_env("LAKE_ROOT", "./lake") or "./lake",
            export_bucket=_env("EXPORT_BUCKET"),
            export_prefix=(_env("EXPORT_PREFIX", "dynamo-cdc/exports") or "").strip("/"),
            export_sse_algorithm=_sse_algorithm(_env("EXPORT_SSE_ALGORITHM")),
            export_kms_key_id=_env("EXPORT_KMS_KEY_ID"),
            export_bucket_owner=_env("EXPORT_BUCKET_OWNER"),
            endpoint_url=_env("ENDPOINT_URL"),
            region=_env("REGION"),
            access_key_id=key,
            secret_access_key=secret,
            session_token=_env("AWS_SESSION_TOKEN"),
        )

    def tables(self) -> list[TableSpec]:
        """The configured tables (reads the table list)."""
        if not self.tables_path:
            raise no_table_list_error()
        return load_table_list(self.tables_path)


def no_table_list_error() -> ConfigError:
    """What every entry point says when DYNAMO_CDC_TABLES is unset (only the demo writes its
    own table list)."""
    return ConfigError(
        "No table list is configured.",
        fix="set DYNAMO_CDC_TABLES to a CSV file with one table name per line.",
    )
