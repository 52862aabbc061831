"""``dynamo-cdc sync --once``: the whole pipeline for every configured table, headless.

Each table runs through Dagster's :func:`dagster.materialize` with the same assets and
resources as the code location, in this order (DESIGN.md's stitching: capture starts before the
snapshot's ExportTime):

1. ``changes`` of the current hour with ``capture=true``, run again until a poll reports the
   stream caught up (every shard read up to the poll's start): the stream is polled and
   landed. A stream gap is healed by incremental exports first when the table's ``on_gap`` is
   ``heal`` (the default), as the sensor does; with ``fail`` the table fails with the
   :class:`~dynamo_cdc.errors.StreamGapError`;
2. ``snapshot`` of today, only when the table has no snapshot yet (each export costs money);
3. step 1 again: what arrived during the export;
4. ``changes`` of the other hours the captures touched (recorded, not re-read; an hour Dagster
   has no partition for yet, stamped by a clock ahead of this one, is landed but not recorded);
5. ``current``.

So every table is caught up to the moment its pass started.

Do not run it while the table's stream sensor is running: one capture per table at a time.
"""

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from dynamo_cdc.cli import duckdb_command, failure_message, report_failure
from dynamo_cdc.config import Settings, TableSpec
from dynamo_cdc.dagster.assets import asset_key, hour_of_partition_key, hour_partition_key
from dynamo_cdc.dagster.definitions import PipelineOptions, build_table_defs
from dynamo_cdc.dagster.resources import build_resources
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import newest_snapshot

# Polls in a row that read nothing without catching up (throttled) before a table fails.
MAX_IDLE_POLLS = 3


@dataclass
class TableSyncSummary:
    """What :func:`sync_once` did for one table."""

    table: str
    ok: bool = True
    error: str = ""
    snapshot_rows: int | None = None
    change_rows: int = 0
    lag_seconds: float | None = None
    paths: dict[str, str] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        head = f"{self.table}: {'ok' if self.ok else 'FAILED'}"
        out = [head]
        if self.snapshot_rows is not None:
            out.append(f"  snapshot rows: {self.snapshot_rows}")
        out.append(f"  change rows captured: {self.change_rows}")
        out.append("  lag: " + ("n/a" if self.lag_seconds is None else f"{self.lag_seconds:.1f} s"))
        for name, path in sorted(self.paths.items()):
            out.append(f"  {name}: {path}")
        if "changes" in self.paths:
            sql = (
                "SELECT event_name, count(*) FROM read_parquet("
                f"'{self.paths['changes']}/*/*/*.parquet') GROUP BY 1"
            )
            out.append(f"  query: {duckdb_command(sql)}")
        if self.error:
            out.append(f"  error: {self.error}")
        return out


def _materialize(
    assets_def: Any,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    partition_key: str | None = None,
    config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    # The summary is the output of `sync --once`; the run's own events stay in the event log,
    # and a failure is raised as the step raised it (sync_table reports it in one line).
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    if config:
        run_config["ops"] = {assets_def.node_def.name: {"config": config}}  # op or graph
    result = dg.materialize(
        [assets_def],
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=True,
        tags={"dynamo_cdc/sync": "once"},
    )
    return result


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    events = result.get_asset_materialization_events()
    if not events:
        return {}
    return {k: getattr(v, "value", v) for k, v in events[-1].materialization.metadata.items()}


def sync_table(
    spec: TableSpec,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    lake: Lake,
    *,
    now: datetime | None = None,
    snapshot_workers: int = 0,
    debug: bool = False,
) -> TableSyncSummary:
    """Run the pipeline of one table (see the module docstring); never raises."""
    summary = TableSyncSummary(table=spec.name)
    # partitions from DYNAMO_CDC_PARTITIONS_START, else 35 days back: the runs here are of
    # today's partitions and the hours just captured
    table_defs = build_table_defs(spec, PipelineOptions.from_env())
    defs_by_key = {key: a for a in table_defs.assets or [] if hasattr(a, "keys") for key in a.keys}
    changes = defs_by_key[asset_key(spec, "changes")]
    snapshot = defs_by_key[asset_key(spec, "snapshot")]
    current = defs_by_key[asset_key(spec, "current")]
    now = now or datetime.now(UTC)
    hour = hour_partition_key(now.replace(minute=0, second=0, microsecond=0))
    touched: set[str] = set()
    try:

        def capture() -> None:
            idle = 0
            while True:
                meta = _materialize(changes, resources, instance, hour, {"capture": {}})
                md = _metadata(meta)
                records = int(md.get("batch_records", 0) or 0)
                summary.change_rows += records
                summary.lag_seconds = md.get("lag_seconds")
                touched.update(md.get("hours_touched") or [])
                summary.steps.append(f"changes {hour} (capture)")
                if md.get("batch_stopped_by") == "caught_up":
                    return
                idle = 0 if records else idle + 1
                if idle >= MAX_IDLE_POLLS:
                    raise RuntimeError(
                        f"the capture of {spec.name!r} is not caught up: {idle} polls in a row "
                        f"read nothing ({md.get('batch_stopped_by')}); run sync again later"
                    )

        capture()
        has_snapshot = newest_snapshot(lake, spec.name) is not None
        if not has_snapshot:
            result = _materialize(
                snapshot,
                resources,
                instance,
                now.strftime("%Y-%m-%d"),
                {"workers": snapshot_workers, "poll_seconds": 1.0},
            )
            summary.snapshot_rows = int(_metadata(result).get("rows", 0))
            summary.steps.append("snapshot")
            capture()
        last_hour = hour_partition_key(
            hour_of_partition_key(hour) + timedelta(hours=1)  # HOURLY's end_offset
        )
        for other in sorted(touched - {hour}):
            if other > last_hour:  # the keys sort as times
                continue
            _materialize(changes, resources, instance, other)
            summary.steps.append(f"changes {other}")
        _materialize(current, resources, instance)
        summary.steps.append("current")
    except Exception as exc:  # one table's failure must not hide the others' results
        summary.ok = False
        summary.error = failure_message(exc)[0]
        if debug:
            traceback.print_exception(exc)
    for kind in ("snapshot", "changes", "current"):
        summary.paths[kind] = lake.uri(lake.table_path(spec.name, kind))
    return summary


def sync_once(
    tables: Sequence[TableSpec] | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
    out: Callable[[str], None] = print,
    snapshot_workers: int = 0,
    debug: bool = False,
) -> int:
    """Run the pipeline once for every configured table and print a summary per table.

    Args:
        tables: the tables (default: the table list, DYNAMO_CDC_TABLES).
        instance: the Dagster instance (default: ``$DAGSTER_HOME``'s, else an ephemeral one).
        out: where the summary lines go.
        snapshot_workers: conversion processes per snapshot (0 = one per core).
        debug: print the traceback of a table's failure besides its summary line.

    Returns:
        the exit code: 0 when every table succeeded, 1 otherwise.

    Raises:
        ConfigError: no table list is configured, or it is malformed.
    """
    settings = Settings.from_env()
    specs = list(tables) if tables is not None else settings.tables()
    if instance is None:
        instance = (
            dg.DagsterInstance.get()
            if os.environ.get("DAGSTER_HOME")
            else dg.DagsterInstance.ephemeral()
        )
    resources = build_resources()
    # The resources hold EnvVars, which Dagster resolves only when it initialises them (a run,
    # a sensor tick, or build_resources): the summary's own lake is made the same way.
    with dg.build_resources(resources) as resolved:
        lake = resolved.lake.get_lake()
    failed = 0
    for spec in specs:
        summary = sync_table(
            spec, resources, instance, lake, snapshot_workers=snapshot_workers, debug=debug
        )
        for line in summary.lines():
            out(line)
        failed += not summary.ok
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dynamo_cdc.dagster.sync --once`` (what ``dynamo-cdc sync --once`` runs)."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="dynamo-cdc sync")
    parser.add_argument("--once", action="store_true", help="one pass over every table, then exit")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    args = parser.parse_args(argv)
    if not args.once:
        parser.error("only --once is supported: for continuous capture run `dagster dev`")
    logging.basicConfig(level=logging.WARNING)
    try:
        return sync_once(debug=args.debug)
    except Exception as exc:
        return report_failure(exc, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
