"""The ``dynamo-cdc`` command.

    dynamo-cdc local-aws [--port N] [--demo]     run the embedded local AWS in the foreground
    dynamo-cdc check                             preflight: tables, streams, PITR, bucket
    dynamo-cdc snapshot TABLE [--export-time T]  PITR export -> verified Parquet snapshot
    dynamo-cdc export-to-parquet MANIFEST OUT    convert an existing export (s3:// or local)
    dynamo-cdc sync --once                       the whole pipeline for every table, headless
    dynamo-cdc demo [--once]                     local AWS + demo tables + workload + Dagster

Settings come from ``DYNAMO_CDC_*`` environment variables (see the README); options given here
win over them.

A failure ends with one line on stderr, ``error: <what is wrong> Fix: <what to do>``, and a
non-zero exit (2 for a failure the message explains, 1 for an unexpected one); ``--debug`` adds
the Python traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dynamo_cdc.config import Settings, TableSpec, validate_table_name
from dynamo_cdc.errors import DynamoCdcError
from dynamo_cdc.times import parse_time

log = logging.getLogger("dynamo_cdc")


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings.from_env()
    overrides: dict[str, Any] = {}
    for name in (
        "tables_path",
        "lake_root",
        "export_bucket",
        "export_prefix",
        "endpoint_url",
        "region",
    ):
        value = getattr(args, name, None)
        if value:
            overrides[name] = value
    return replace(s, **overrides)


def _add_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tables", dest="tables_path", help="table list CSV (DYNAMO_CDC_TABLES)")
    p.add_argument("--lake-root", help="local folder or s3://bucket/prefix (DYNAMO_CDC_LAKE_ROOT)")
    p.add_argument("--export-bucket", help="S3 bucket for exports (DYNAMO_CDC_EXPORT_BUCKET)")
    p.add_argument("--export-prefix", help="S3 prefix for exports (DYNAMO_CDC_EXPORT_PREFIX)")
    p.add_argument("--endpoint-url", help="the local AWS endpoint (DYNAMO_CDC_ENDPOINT_URL)")
    p.add_argument("--region", help="AWS region (DYNAMO_CDC_REGION)")


def _parse_time(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
        raise DynamoCdcError(
            f"{text!r} is not a time.", fix="write ISO 8601, e.g. 2026-11-27T12:00:00Z."
        ) from None


def cmd_check(args: argparse.Namespace) -> int:
    from dynamo_cdc.preflight import format_results, run_checks

    settings = _settings(args)
    tables = (
        [TableSpec(validate_table_name(t)) for t in args.table] if args.table else settings.tables()
    )
    results = run_checks(settings, tables)
    print(format_results(results))
    failed = sum(not r.ok for r in results)
    print(f"\n{len(results) - failed} checks passed, {failed} failed")
    return 1 if failed else 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.export import ExportRequest
    from dynamo_cdc.lake import Lake
    from dynamo_cdc.snapshot import take_snapshot

    settings = _settings(args)
    if not settings.export_bucket:
        raise DynamoCdcError(
            "No export bucket is configured.",
            fix="set DYNAMO_CDC_EXPORT_BUCKET or --export-bucket.",
        )
    clients = Clients(settings)
    lake = Lake(settings.lake_root, clients.s3)
    request = ExportRequest.for_settings(
        settings,
        validate_table_name(args.table),
        export_time=_parse_time(args.export_time) if args.export_time else None,
        export_format=args.format,
    )
    result = take_snapshot(clients, lake, request, workers=args.workers, progress=print)
    _print_snapshot(result)
    return 0


def _print_snapshot(result: Any) -> None:
    print(
        f"\n{result.table}: {result.rows} rows in {len(result.files)} files, "
        f"{result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s"
    )
    print(f"  Parquet: {result.uri}")
    sql = f"SELECT count(*) FROM read_parquet('{result.uri}/*.parquet')"
    print(f"  Query:   {duckdb_command(sql)}")


def duckdb_command(sql: str) -> str:
    """A shell line that runs ``sql`` with the duckdb module installed with dynamo-cdc (the
    ``duckdb`` CLI is not)."""
    code = "import duckdb, sys; duckdb.sql(sys.argv[1]).show()"
    return f"{sys.executable} -c '{code}' \"{sql}\""


def cmd_export_to_parquet(args: argparse.Namespace) -> int:
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.export import open_manifest
    from dynamo_cdc.lake import Lake
    from dynamo_cdc.snapshot import key_attributes_of, write_snapshot

    settings = _settings(args)
    clients = Clients(settings)
    manifest = open_manifest(
        args.manifest, clients.s3 if args.manifest.startswith("s3://") else None
    )
    table = args.table or manifest.table_name
    validate_table_name(table)
    if args.keys:
        keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    elif args.describe_table:
        from dynamo_cdc.export import describe_table

        keys = key_attributes_of(describe_table(clients, table))
    else:
        keys = []
    export_date = args.export_date or manifest.export_date or f"{datetime.now(UTC):%Y-%m-%d}"
    lake = Lake(args.out, clients.s3 if args.out.startswith("s3://") else None)
    result = write_snapshot(
        manifest, lake, table, export_date, keys, workers=args.workers, progress=print
    )
    _print_snapshot(result)
    return 0


def cmd_local_aws(args: argparse.Namespace) -> int:
    from dynamo_cdc.local.__main__ import main as local_main

    argv = ["--port", str(args.port)] + (["--demo"] if args.demo else [])
    return int(local_main(argv) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    from dynamo_cdc.demo import run_demo

    return run_demo(lake_root=args.lake_root or "./lake", once=args.once, ui_port=args.ui_port)


def cmd_sync(args: argparse.Namespace) -> int:
    import subprocess

    # The pipeline runs through Dagster, which this library never imports: a child process.
    cmd = [sys.executable, "-m", "dynamo_cdc.dagster.sync"] + (["--once"] if args.once else [])
    cmd += ["--debug"] if args.debug else []
    return subprocess.run(cmd, check=False).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamo-cdc", description="Change data capture from DynamoDB into Parquet."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="debug logging, AWS requests included (credentials are redacted), and the Python "
        "traceback of a failure",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="preflight: tables, streams, PITR and the export bucket")
    _add_settings(p)
    p.add_argument("table", nargs="*", help="tables to check (default: the table list)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("snapshot", help="PITR export of a table -> Parquet snapshot")
    _add_settings(p)
    p.add_argument("table")
    p.add_argument("--export-time", help="ISO 8601 time (default: now)")
    p.add_argument("--format", default="DYNAMODB_JSON", choices=["DYNAMODB_JSON", "ION"])
    p.add_argument("--workers", type=int, default=None, help="conversion processes")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("export-to-parquet", help="convert an existing export into a snapshot")
    _add_settings(p)
    p.add_argument("manifest", help="manifest-summary.json: s3:// URI or local path")
    p.add_argument("out", help="lake root: local folder or s3://bucket/prefix")
    p.add_argument("--table", help="table name (default: from the manifest's tableArn)")
    p.add_argument("--keys", help="key attributes, hash first, comma-separated")
    p.add_argument(
        "--describe-table", action="store_true", help="read the key attributes from DescribeTable"
    )
    p.add_argument("--export-date", help="partition date (default: the export's date)")
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=cmd_export_to_parquet)

    p = sub.add_parser("local-aws", help="run the embedded local AWS in the foreground")
    p.add_argument("--port", type=int, default=4566)
    p.add_argument("--demo", action="store_true", help="create demo tables and a bucket")
    p.set_defaults(func=cmd_local_aws)

    p = sub.add_parser("demo", help="end-to-end demo on the embedded local AWS")
    p.add_argument("--lake-root", default=None)
    p.add_argument("--once", action="store_true", help="run the pipeline once, headless, and exit")
    p.add_argument("--ui-port", type=int, default=3000)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sync", help="run the pipeline for every configured table through Dagster")
    p.add_argument("--once", action="store_true", help="one pass, then exit (the only mode yet)")
    p.set_defaults(func=cmd_sync)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dynamo-cdc`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose or args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("botocore").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return report_failure(exc, debug=args.debug)


def report_failure(exc: BaseException, *, debug: bool = False) -> int:
    """Print one actionable line for ``exc`` on stderr (the traceback first with ``debug``);
    returns the exit code: 2 for a failure the message explains, 1 for an unexpected one."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message, code = failure_message(exc)
    print(f"error: {message}", file=sys.stderr)
    return code


def failure_message(exc: BaseException) -> tuple[str, int]:
    """``(message, exit code)`` of a failure: what is wrong and the fix (exit 2), or for an
    unexpected exception its type and first line and how to see more (exit 1)."""
    from dynamo_cdc.aws import user_error

    try:
        settings = Settings.from_env()
    except DynamoCdcError:
        settings = Settings()
    known = user_error(exc, settings)
    if known is not None:
        return str(known), 2
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"unexpected {type(exc).__name__}{': ' + first if first else ''}. Fix: run the command "
        "again with --debug for the traceback, and report it if the cause is not yours.",
        1,
    )


if __name__ == "__main__":
    sys.exit(main())
