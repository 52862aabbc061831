"""Per-table assets: ``table`` (observed), ``snapshot`` (daily), ``changes`` (hourly), ``current``.

:func:`build_table_assets` makes the four assets and their checks for one
:class:`~dynamo_cdc.config.TableSpec`. Every asset calls the library (``dynamo_cdc``) for the
work and returns a ``MaterializeResult`` whose metadata the UI plots per table (rows, files,
bytes, lag); checks that need the materialized partition are reported by the asset itself
(``check_specs``), the others are ``@asset_check`` functions.
"""

import importlib.metadata
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import Field

from dynamo_cdc import catalog
from dynamo_cdc.capture import CAPTURE_LOCK_WAIT_SECONDS, capture_exclusive, capture_once
from dynamo_cdc.changefiles import data_files
from dynamo_cdc.checkpoint import CheckpointStore, StreamCheckpoint
from dynamo_cdc.compaction import DEFAULT_GRACE_SECONDS, compact_hour
from dynamo_cdc.config import DEFAULT_CURRENT_CRON, TableSpec
from dynamo_cdc.dagster.resources import DynamoDBResource, LakeResource
from dynamo_cdc.errors import DynamoCdcError, PitrWindowError, StreamGapError
from dynamo_cdc.export import ExportRequest, describe_table, pitr_window
from dynamo_cdc.heal import backfill_changes_hour, heal_gap
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import change_hour_path, hour_of_path, newest_snapshot
from dynamo_cdc.snapshot import (
    SnapshotPlan,
    commit_snapshot,
    convert_group,
    export_manifest,
    plan_snapshot,
)
from dynamo_cdc.stream import ReadBudget
from dynamo_cdc.times import STREAM_RETENTION_SECONDS

HOUR_KEY_FORMAT = "%Y-%m-%d-%H:00"
CURRENT_SAMPLE_SIZE = 20


#: Every asset's code version: a new release of the package may convert differently.
CODE_VERSION = f"dynamo-cdc {importlib.metadata.version('dynamo-cdc')}"


PITR_MAX_DAYS = 35


def default_partitions_start() -> date:
    """35 days ago, the earliest day a PITR export can reach: where partitions start when
    neither the setting nor the table's creation day is known."""
    return datetime.now(UTC).date() - timedelta(days=PITR_MAX_DAYS)


def daily_partitions(start: date) -> dg.DailyPartitionsDefinition:
    """Snapshot partitions: one a UTC day from ``start``."""
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=1)


def hourly_partitions(start: date) -> dg.HourlyPartitionsDefinition:
    """Change partitions: one a UTC hour from ``start``'s midnight."""
    return dg.HourlyPartitionsDefinition(start_date=f"{start.isoformat()}-00:00", end_offset=1)


def asset_key(spec: TableSpec, kind: str) -> dg.AssetKey:
    """``["dynamodb", <safe name>, kind]``; see :func:`dynamo_cdc.config.dagster_safe_name`."""
    return dg.AssetKey(["dynamodb", spec.safe_name, kind])


def pool_name(spec: TableSpec) -> str:
    """The Dagster pool of runs that write ``spec``'s changes (one at a time per table)."""
    return f"dynamo_cdc_{spec.safe_name}"


def hour_partition_key(hour_start: datetime) -> str:
    """The hourly partition key of the hour starting at ``hour_start`` (UTC)."""
    return hour_start.astimezone(UTC).strftime(HOUR_KEY_FORMAT)


def hour_of_partition_key(key: str) -> datetime:
    """Inverse of :func:`hour_partition_key`."""
    return datetime.strptime(key, HOUR_KEY_FORMAT).replace(tzinfo=UTC)


@dataclass
class ParquetStats:
    """Rows and bytes of a set of Parquet files."""

    rows: int
    bytes: int


def parquet_stats(lake: Lake, paths: Sequence[str]) -> ParquetStats:
    """Count rows (from each footer) and bytes of ``paths`` (relative to the lake root)."""
    fs, base = lake.arrow_filesystem()
    rows = size = 0
    for rel in paths:
        full = f"{base}/{rel}"
        size += fs.get_file_info(full).size or 0
        with fs.open_input_file(full) as fh:
            rows += pq.ParquetFile(fh).metadata.num_rows
    return ParquetStats(rows, size)


def _tags(spec: TableSpec) -> dict[str, str]:
    return {"dynamo_cdc/table": spec.safe_name}


def column_schema(lake: Lake, files: Sequence[str]) -> dg.TableSchema | None:
    """The columns of a dataset's Parquet files (read from the first file's footer)."""
    if not files:
        return None
    fs, base = lake.arrow_filesystem()
    with fs.open_input_file(f"{base}/{files[0]}") as fh:
        schema = pq.read_schema(fh)
    return dg.TableSchema(columns=[dg.TableColumn(field.name, str(field.type)) for field in schema])


def table_metadata(
    lake: Lake, table: str, kind: str, files: Sequence[str], rows: int, *, partitioned: bool
) -> dict[str, Any]:
    """Dagster's table conventions: ``dagster/table_name`` (the dataset's location),
    ``dagster/column_schema`` and the row count (of the partition, for a partitioned asset)."""
    metadata: dict[str, Any] = {
        "dagster/table_name": lake.uri(lake.table_path(table, kind)),
        "dagster/partition_row_count" if partitioned else "dagster/row_count": rows,
        "rows": rows,
    }
    schema = column_schema(lake, files)
    if schema is not None:
        metadata["dagster/column_schema"] = schema
    return metadata


# -- table (observed) ---------------------------------------------------------------------------


def build_table_asset(spec: TableSpec) -> dg.AssetSpec:
    """The external ``table`` asset: the DynamoDB table itself, observed by
    :func:`build_table_observation_sensor` (no run is launched to observe it)."""
    return dg.AssetSpec(
        key=asset_key(spec, "table"),
        group_name=spec.safe_name,
        kinds={"dynamodb"},
        description=f"DynamoDB table `{spec.name}` (observed with DescribeTable).",
        metadata={"dynamodb_table": spec.name},
        tags=_tags(spec),
    )


TABLE_OBSERVATION_INTERVAL_SECONDS = 300


def observe_table(clients: Any, spec: TableSpec) -> dg.AssetObservation:
    """What DescribeTable says of ``spec``'s table: item count, size, stream and PITR status."""
    desc = describe_table(clients, spec.name)
    try:
        earliest, latest = pitr_window(clients, spec.name)
        pitr = f"ENABLED ({earliest.isoformat()} .. {latest.isoformat()})"
    except DynamoCdcError as exc:
        pitr = f"unavailable: {exc}"
    stream = desc.get("StreamSpecification") or {}
    items = int(desc.get("ItemCount", 0))
    size = int(desc.get("TableSizeBytes", 0))
    return dg.AssetObservation(
        asset_key=asset_key(spec, "table"),
        metadata={
            "dynamodb_table": spec.name,
            "dagster/row_count": items,
            "item_count": items,
            "size_bytes": size,
            "table_status": desc.get("TableStatus", ""),
            "stream": f"{stream.get('StreamViewType', 'off')} "
            f"{desc.get('LatestStreamArn', '')}".strip(),
            "pitr": pitr,
        },
        tags={"dagster/data_version": f"{items}:{size}:{desc.get('LatestStreamArn', '')}"},
    )


def build_table_observation_sensor(spec: TableSpec, running: bool = True) -> dg.SensorDefinition:
    """``<safe>_table_sensor``: records an observation of the ``table`` asset every 5 minutes
    (DescribeTable), as an asset event of the tick, so an idle table launches no run."""

    @dg.sensor(
        name=f"{spec.safe_name}_table_sensor",
        minimum_interval_seconds=TABLE_OBSERVATION_INTERVAL_SECONDS,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description=f"Observes DynamoDB table `{spec.name}` (item count, size, stream, PITR).",
    )
    def table_sensor(
        context: dg.SensorEvaluationContext, dynamodb: DynamoDBResource
    ) -> dg.SensorResult:
        return dg.SensorResult(asset_events=[observe_table(dynamodb.get_clients(), spec)])

    return table_sensor


# -- snapshot -------------------------------------------------------------------------------


class SnapshotConfig(dg.Config):
    """How a snapshot partition is made (the graph's config; it is handed to its steps)."""

    workers: int = Field(
        default=0, description="Conversion processes in each convert step; 0 = one per core."
    )
    poll_seconds: float = Field(default=5.0, description="First DescribeExport interval.")
    convert_steps: int = Field(
        default=1,
        ge=1,
        description="Convert steps the export's data files are split into (groups of about "
        "equal item counts). Each is a step of its own that the run's executor may run in "
        "another process, container or pod, and that retries alone; 1 converts every file in "
        "one step with `workers` processes.",
    )


def export_time_of(partition_end: datetime, now: datetime) -> datetime | None:
    """ExportTime of a daily partition: its end, or None (now) while the day is not over."""
    return None if partition_end > now else partition_end


def snapshot_request_id(run: dg.DagsterRun, partition_key: str) -> str:
    """The export request of a run's snapshot partition: a retry of the run (a re-execution,
    same root run) re-attaches to the export it started; any other run requests a new one."""
    return f"{run.root_run_id or run.run_id}:{partition_key}"


def _snapshot_step_names(spec: TableSpec) -> tuple[str, str, str]:
    """The op names of a snapshot's steps (op names are unique in a code location)."""
    return tuple(f"{spec.safe_name}__snapshot_{step}" for step in ("plan", "convert", "commit"))  # type: ignore[return-value]


def build_snapshot_asset(spec: TableSpec, start: date) -> dg.AssetsDefinition:
    """The daily ``snapshot`` asset: a PITR export at the partition's end -> Parquet, as three
    kinds of steps (``dynamo_cdc.snapshot``): ``plan`` requests the export, waits and reads its
    manifests; ``convert`` (one step per group of data files, fanned out, each retried alone)
    converts a group into the lake's staging; ``commit`` publishes the partition at once. The
    steps meet in the lake, so any executor (multiprocess, k8s_job_executor, ecs, celery,
    dask) can run the convert steps elsewhere."""
    key = asset_key(spec, "snapshot")
    tags = _tags(spec)
    plan_name, convert_name, commit_name = _snapshot_step_names(spec)

    def step_config(outer: dict[str, Any]) -> dict[str, Any]:
        values = SnapshotConfig(**outer)
        return {
            plan_name: {
                "config": {"poll_seconds": values.poll_seconds, "steps": values.convert_steps}
            },
            convert_name: {"config": {"workers": values.workers}},
        }

    @dg.op(
        name=plan_name,
        out={"plan": dg.Out(dict), "groups": dg.DynamicOut(int)},
        config_schema={"poll_seconds": float, "steps": int},
        tags=tags,
    )
    def plan(
        context: dg.OpExecutionContext, dynamodb: DynamoDBResource
    ) -> Iterator[dg.Output[Any] | dg.DynamicOutput[int]]:
        clients = dynamodb.get_clients()
        now = datetime.now(UTC)
        export_time = export_time_of(context.partition_time_window.end, now)
        if export_time is not None:
            earliest, latest = pitr_window(clients, spec.name)
            if export_time < earliest:
                raise PitrWindowError(
                    f"Partition {context.partition_key} of table {spec.name!r} needs an export "
                    f"at {export_time.isoformat()}, before the earliest restorable time "
                    f"{earliest.isoformat()}.",
                    fix=f"backfill partitions from {earliest.date().isoformat()} on (PITR keeps "
                    "up to 35 days).",
                )
            export_time = min(export_time, latest)
        request = ExportRequest.for_settings(
            dynamodb.settings(),
            spec.name,
            bucket=dynamodb.bucket(),
            export_time=export_time,
            export_format=spec.export_format,
            request_id=snapshot_request_id(context.run, context.partition_key),
        )
        manifest, _, keys = export_manifest(
            clients,
            request,
            poll_seconds=context.op_config["poll_seconds"],
            progress=context.log.info,
        )
        the_plan = plan_snapshot(
            manifest, spec.name, context.partition_key, keys, groups=context.op_config["steps"]
        )
        context.log.info(
            f"{spec.name}: {len(manifest.files)} data files, {manifest.item_count} items, "
            f"in {len(the_plan.groups)} convert steps"
        )
        yield dg.Output(the_plan.to_dict(), "plan")
        for index in range(len(the_plan.groups)):
            yield dg.DynamicOutput(index, output_name="groups", mapping_key=f"group_{index}")

    @dg.op(
        name=convert_name,
        config_schema={"workers": int},
        retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
        tags=tags,
    )
    def convert(
        context: dg.OpExecutionContext,
        plan: dict[str, Any],
        group: int,
        dynamodb: DynamoDBResource,
        lake: LakeResource,
    ) -> int:
        result = convert_group(
            SnapshotPlan.from_dict(plan),
            group,
            lake.get_lake(),
            s3_client=dynamodb.get_clients().s3,
            workers=context.op_config["workers"] or None,
            progress=context.log.info,
        )
        return result.items

    @dg.op(name=commit_name, tags=tags)
    def commit(
        context: dg.OpExecutionContext, plan: dict[str, Any], items: list[int], lake: LakeResource
    ) -> dg.Output[None]:
        the_lake = lake.get_lake()
        result = commit_snapshot(SnapshotPlan.from_dict(plan), the_lake, progress=context.log.info)
        stats = parquet_stats(the_lake, result.files)
        lineage = result.lineage
        return dg.Output(
            None,
            metadata={
                **table_metadata(
                    the_lake, spec.name, "snapshot", result.files, stats.rows, partitioned=True
                ),
                "files": len(result.files),
                "bytes": stats.bytes,
                "convert_steps": len(items),
                "path": dg.MetadataValue.path(result.uri),
                "export_arn": str(lineage.get("export_arn", "")),
                "export_time": str(lineage.get("export_time", "")),
                "manifest_item_count": int(lineage.get("item_count", -1)),
                "seconds": round(result.seconds, 3),
                "duckdb": dg.MetadataValue.md(
                    f"```sql\nSELECT * FROM read_parquet('{result.uri}/*.parquet');\n```"
                ),
            },
        )

    @dg.graph_asset(
        key=key,
        ins={},
        partitions_def=daily_partitions(start),
        code_version=CODE_VERSION,
        group_name=spec.safe_name,
        kinds={"dynamodb", "parquet"},
        tags=tags,
        metadata={"dynamodb_table": spec.name},
        config=dg.ConfigMapping(
            config_fn=step_config, config_schema=SnapshotConfig.to_config_schema()
        ),
        description=(
            f"Full PITR export of `{spec.name}` at the end of each UTC day (now for today), "
            "verified and converted to Parquet under snapshot/export_date=YYYY-MM-DD/: plan, "
            "convert steps (fanned out), commit."
        ),
    )
    def snapshot() -> Any:
        the_plan, groups = plan()
        items = groups.map(lambda group: convert(the_plan, group))
        return commit(the_plan, items.collect())

    return snapshot


def build_snapshot_check(spec: TableSpec) -> dg.AssetChecksDefinition:
    """``rows_match_manifest``: the newest snapshot partition holds as many rows (counted in
    its Parquet footers) as its export's manifest says items."""
    key = asset_key(spec, "snapshot")

    @dg.asset_check(
        asset=key,
        name="rows_match_manifest",
        description="Rows in the newest snapshot's Parquet equal its export manifest's itemCount.",
    )
    def rows_match_manifest(lake: LakeResource) -> dg.AssetCheckResult:
        the_lake = lake.get_lake()
        newest = newest_snapshot(the_lake, spec.name)
        if newest is None:
            return dg.AssetCheckResult(passed=False, metadata={"reason": "no snapshot yet"})
        folder, lineage = newest
        stats = parquet_stats(the_lake, [f"{folder}/{name}" for name in lineage.get("files", [])])
        manifest_items = int(lineage.get("item_count", -1))
        return dg.AssetCheckResult(
            passed=stats.rows == manifest_items,
            metadata={
                "export_date": str(lineage.get("export_date", "")),
                "parquet_rows": stats.rows,
                "manifest_item_count": manifest_items,
            },
        )

    return rows_match_manifest


# -- changes --------------------------------------------------------------------------------


class CaptureConfig(dg.Config):
    """Poll the stream first (headless runs such as ``dynamo-cdc sync --once``). Never while the
    table's stream sensor is running: one capture per table at a time. A stream gap is healed
    first when the table's on_gap is heal, as the sensor does."""

    seconds: float = Field(default=20.0, description="Time budget of the poll.")


class HealConfig(dg.Config):
    """Heal a stream gap: incremental exports of the lost window, then capture resumes at the
    stream's TRIM_HORIZON (requested by the sensor when on_gap=heal)."""

    reason: str = Field(description="The StreamGapError's reason.")
    window_start: str = Field(default="", description="Start of the window that may be lost.")
    window_end: str = Field(default="", description="End of the window that may be lost.")


class CompactionConfig(dg.Config):
    """Compact the hour's micro-batch files if the hour is closed (requested by the sensor)."""

    caught_up_at: float | None = Field(
        default=None, description="Epoch seconds when the capture last caught up (from the sensor)."
    )
    grace_seconds: float = Field(
        default=DEFAULT_GRACE_SECONDS, description="How long after its end an hour may still fill."
    )


class ChangesConfig(dg.Config):
    """What a ``changes`` run does besides describing the hour's landed files: each job its own
    config, set or left out (``{"capture": {}}`` captures with the defaults). With none, a run of
    an hour older than the stream's retention that holds no file fills it from an incremental
    export (a backfill)."""

    capture: CaptureConfig | None = Field(default=None, description=CaptureConfig.__doc__)
    heal: HealConfig | None = Field(default=None, description=HealConfig.__doc__)
    compact: CompactionConfig | None = Field(default=None, description=CompactionConfig.__doc__)

    @property
    def is_backfill(self) -> bool:
        """No job set: the run describes the hour, filling it first if the stream lost it."""
        return self.capture is None and self.heal is None and self.compact is None


def heal_gap_view(
    gap: StreamGapError, dynamodb: DynamoDBResource, lake: Lake, table: str, log: Any
) -> dict[str, Any]:
    """Heal ``gap`` (see :func:`dynamo_cdc.heal.heal_gap`); metadata."""
    result = heal_gap(dynamodb.get_clients(), lake, table, gap, bucket=dynamodb.bucket())
    log.warning(
        f"healed the stream gap of {table} ({gap.reason}) by {result.action}: "
        f"windows {result.windows}, {result.rows} rows, checkpoint reset: "
        f"{result.checkpoint_reset}"
    )
    return {
        "healed_gap": gap.reason,
        "heal_action": result.action,
        "heal_windows": dg.MetadataValue.json([list(w) for w in result.windows]),
        "heal_export_arns": dg.MetadataValue.json(result.export_arns),
        "heal_rows": result.rows,
    }


def describe_hour(lake: Lake, files: Sequence[str]) -> dict[str, Any]:
    """Rows, bytes, duplicate event ids and the newest change time of an hour's files."""
    if not files:
        return {"rows": 0, "bytes": 0, "duplicates": 0, "newest": None}
    fs, base = lake.arrow_filesystem()
    stats = parquet_stats(lake, files)
    table = ds.dataset([f"{base}/{p}" for p in files], filesystem=fs, format="parquet").to_table(
        columns=["event_id", "approximate_creation_time"]
    )
    distinct = pc.count_distinct(table.column("event_id")).as_py()
    newest = pc.max(table.column("approximate_creation_time")).as_py()
    return {
        "rows": stats.rows,
        "bytes": stats.bytes,
        "duplicates": table.num_rows - distinct,
        "newest": newest,
    }


def _freshness(window: timedelta | None) -> dg.FreshnessPolicy | None:
    """Dagster's freshness policy: a materialization within ``window`` (None: no policy)."""
    return None if window is None else dg.FreshnessPolicy.time_window(fail_window=window)


def capture_step(
    config: CaptureConfig, spec: TableSpec, dynamodb: DynamoDBResource, lake: Lake, log: Any
) -> dict[str, Any]:
    """Poll the stream once within the config's budget (healing a gap first when the table's
    on_gap is heal); metadata of the batch."""
    budget = ReadBudget(max_seconds=config.seconds)
    try:
        captured = capture_once(dynamodb.get_clients(), lake, spec.name, budget)
        metadata: dict[str, Any] = {}
    except StreamGapError as met:
        if spec.on_gap != "heal":
            raise
        metadata = heal_gap_view(met, dynamodb, lake, spec.name, log)
        captured = capture_once(dynamodb.get_clients(), lake, spec.name, budget)
    touched = sorted({hour_partition_key(h) for f in captured.files if (h := hour_of_path(f))})
    log.info(
        f"captured {captured.records} records into {len(captured.files)} files "
        f"({captured.stopped_by}); hours touched: {touched}"
    )
    metadata.update(
        batch_records=captured.records,
        batch_stopped_by=captured.stopped_by,
        hours_touched=dg.MetadataValue.json(touched),
        shard_ranges=shard_ranges_metadata(captured.ranges),
    )
    if captured.lag_seconds is not None:
        metadata["lag_seconds"] = round(captured.lag_seconds, 3)
    if captured.locked_between is not None:
        metadata["capture_locked_between"] = dg.MetadataValue.json(list(captured.locked_between))
    return metadata


def heal_step(
    config: HealConfig, spec: TableSpec, dynamodb: DynamoDBResource, lake: Lake, log: Any
) -> dict[str, Any]:
    """Heal the gap the sensor met (see :func:`heal_gap_view`)."""
    gap = StreamGapError(
        f"Stream gap of table {spec.name!r} ({config.reason}).",
        table=spec.name,
        reason=config.reason,
        window_start=config.window_start or None,
        window_end=config.window_end or None,
    )
    return heal_gap_view(gap, dynamodb, lake, spec.name, log)


def compaction_step(
    config: CompactionConfig, spec: TableSpec, lake: Lake, hour: datetime, log: Any
) -> dict[str, Any]:
    """Compact the hour if it is closed, under the table's capture lock and every shard group's
    lease: the checkpoint it trusts is the one captures commit."""
    with capture_exclusive(
        lake,
        spec.name,
        wait_seconds=CAPTURE_LOCK_WAIT_SECONDS,
        what=f"compacting an hour of table {spec.name!r}",
    ):
        checkpoint = CheckpointStore(lake, spec.name).load()
        outcome = compact_hour(
            lake,
            spec.name,
            hour,
            checkpoint,
            caught_up_at=config.caught_up_at,
            grace_seconds=config.grace_seconds,
        )
    log.info(
        f"compaction: {len(outcome.files_before)} -> {len(outcome.files_after)} files"
        + (f" (not compacted: {outcome.reason})" if not outcome.compacted else "")
    )
    return {"compacted": outcome.compacted, "files_before_compaction": len(outcome.files_before)}


def hour_left_the_stream(hour: datetime) -> bool:
    """Whether the hour starting at ``hour`` ended longer than the stream's retention ago."""
    retention = timedelta(seconds=STREAM_RETENTION_SECONDS)
    return hour + timedelta(hours=1) < datetime.now(UTC) - retention


def backfill_step(
    spec: TableSpec, dynamodb: DynamoDBResource, lake: Lake, hour: datetime, log: Any
) -> dict[str, Any]:
    """Fill an hour the stream no longer holds from an incremental PITR export."""
    filled = backfill_changes_hour(
        dynamodb.get_clients(), lake, spec.name, hour, bucket=dynamodb.bucket()
    )
    log.info(f"hour filled from incremental export {filled.export_arns}")
    return {"source": "export", "export_arns": dg.MetadataValue.json(filled.export_arns)}


def build_changes_asset(
    spec: TableSpec, start: date, fresh_within: timedelta | None = None
) -> dg.AssetsDefinition:
    """The hourly ``changes`` asset: the stream's change rows of one hour, landed by the sensor."""
    key = asset_key(spec, "changes")

    @dg.asset(
        key=key,
        deps=[asset_key(spec, "table")],
        partitions_def=hourly_partitions(start),
        code_version=CODE_VERSION,
        freshness_policy=_freshness(fresh_within),
        group_name=spec.safe_name,
        kinds={"dynamodb", "parquet"},
        tags=_tags(spec),
        pool=pool_name(spec),
        metadata={"dynamodb_table": spec.name},
        check_specs=[
            dg.AssetCheckSpec(
                "no_duplicate_event_id",
                asset=key,
                description="Every stream record appears once in the hour.",
            )
        ],
        description=(
            f"Change rows of `{spec.name}` by hour of ApproximateCreationDateTime under "
            "changes/date=YYYY-MM-DD/hour=HH/. Landed by the stream sensor in micro-batches; "
            "each run records a batch and, once the hour is closed, compacts its files."
        ),
    )
    def changes(
        context: dg.AssetExecutionContext,
        config: ChangesConfig,
        dynamodb: DynamoDBResource,
        lake: LakeResource,
    ) -> dg.MaterializeResult:
        the_lake = lake.get_lake()
        hour = hour_of_partition_key(context.partition_key)
        metadata: dict[str, Any] = {}
        if config.capture is not None:
            metadata |= capture_step(config.capture, spec, dynamodb, the_lake, context.log)
        if config.heal is not None:
            metadata |= heal_step(config.heal, spec, dynamodb, the_lake, context.log)
        if config.compact is not None:
            metadata |= compaction_step(config.compact, spec, the_lake, hour, context.log)
        rel = change_hour_path(the_lake, spec.name, hour)
        files = data_files(the_lake, rel)
        if not files and config.is_backfill and hour_left_the_stream(hour):
            metadata |= backfill_step(spec, dynamodb, the_lake, hour, context.log)
            files = data_files(the_lake, rel)
        facts = describe_hour(the_lake, files)
        if "lag_seconds" not in metadata and facts["newest"] is not None:
            metadata["lag_seconds"] = round(time.time() - facts["newest"].timestamp(), 3)
        metadata.update(
            {
                **table_metadata(
                    the_lake, spec.name, "changes", files, facts["rows"], partitioned=True
                ),
                "files": len(files),
                "bytes": facts["bytes"],
                "newest_change_time": str(facts["newest"]) if facts["newest"] else "",
                **dataset_metadata(the_lake.uri(rel)),
            }
        )
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_duplicate_event_id",
                    passed=facts["duplicates"] == 0,
                    metadata={"duplicates": facts["duplicates"], "rows": facts["rows"]},
                )
            ],
        )

    return changes


def shard_ranges_metadata(ranges: Mapping[str, Any]) -> dg.JsonMetadataValue:
    """Per shard, ``[first sequence number, last sequence number, records]`` of a capture (the
    stream position a batch came from: its lineage)."""
    return dg.MetadataValue.json(
        {
            sid: [r.first_sequence_number, r.last_sequence_number, r.count]
            for sid, r in sorted(ranges.items())[:50]
        }
    )


def dataset_metadata(uri: str) -> dict[str, Any]:
    """Where a partition's Parquet files are and how to query them."""
    return {
        "path": dg.MetadataValue.path(uri),
        "duckdb": dg.MetadataValue.md(
            f"```sql\nSELECT * FROM read_parquet('{uri}/*.parquet');\n```"
        ),
    }


CAPTURE_FRESHNESS_CHECK = "capture_freshness"


def capture_freshness_result(
    checkpoint: StreamCheckpoint, max_age_seconds: float, now: float
) -> dg.AssetCheckResult:
    """Passes when the capture committed a poll (``checkpoint``) within ``max_age_seconds``."""
    if checkpoint.updated_at is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no poll was ever committed"})
    age = now - checkpoint.updated_at
    return dg.AssetCheckResult(
        passed=age <= max_age_seconds,
        metadata={
            "age_seconds": round(age, 1),
            "max_age_seconds": max_age_seconds,
            "newest_change_time": checkpoint.last_change_time() or "",
        },
    )


def build_freshness_check(spec: TableSpec, max_age_seconds: float) -> dg.AssetChecksDefinition:
    """Fails when the stream capture has not committed a poll for ``max_age_seconds``.

    The stream sensor reports it every few minutes without a run (see
    :mod:`dynamo_cdc.dagster.sensors`); this definition runs it on demand.
    """

    @dg.asset_check(
        asset=asset_key(spec, "changes"),
        name=CAPTURE_FRESHNESS_CHECK,
        description=f"The stream capture committed a poll within {max_age_seconds:.0f} s.",
    )
    def capture_freshness(lake: LakeResource) -> dg.AssetCheckResult:
        checkpoint = CheckpointStore(lake.get_lake(), spec.name).load()
        return capture_freshness_result(checkpoint, max_age_seconds, time.time())

    return capture_freshness


# -- current --------------------------------------------------------------------------------


def refresh_current_view(lake: Lake, table: str, clients: Any, log: Any) -> dict[str, Any]:
    """Refresh ``current`` from the latest snapshot and the later changes (the mirror module).

    Returns:
        the metadata to record: rows, files, bytes written and total, version, what was applied.
    """
    from dynamo_cdc.mirror import current_path, load_pointer, refresh_current

    result = refresh_current(lake, table)
    pointer = load_pointer(lake, table) or {}
    files = [current_path(lake, table, f) for f in pointer.get("files", [])]
    metadata: dict[str, Any] = {
        **table_metadata(lake, table, "current", files, result.rows, partitioned=False),
        "version": result.version,
        "files": result.files,
        "files_written": result.files_written,
        "bytes_written": result.bytes_written,
        "bytes_total": result.bytes_total,
        "changes_applied": result.changes_applied,
        "change_files_applied": result.change_files_applied,
        "buckets": result.buckets,
        "rebuilt": result.rebuilt,
        "compacted": result.compacted,
        "schema_changed": result.schema_changed,
        "snapshot_export_time": str(result.snapshot_export_time),
        "path": dg.MetadataValue.path(result.uri),
    }
    log.info(
        f"current of {table}: version {result.version}, {result.rows} rows, "
        f"{result.changes_applied} changes applied, {result.bytes_written} bytes written"
    )
    metadata.update(catalog.publish_all_metadata(lake, table))
    return metadata


def current_automation_condition(spec: TableSpec, cron: str) -> dg.AutomationCondition:
    """Refresh ``current`` once a snapshot of the table exists: first as soon as it lands, then
    on each ``cron`` tick when snapshot or changes were updated since the last request; never
    while a refresh is running (without a snapshot a refresh could only fail)."""
    has_snapshot = dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing()).allow(
        dg.AssetSelection.assets(asset_key(spec, "snapshot"))
    )
    first = (dg.AutomationCondition.missing() & has_snapshot).newly_true()
    cadence = dg.AutomationCondition.cron_tick_passed(
        cron
    ) & dg.AutomationCondition.any_deps_updated().since(dg.AutomationCondition.newly_requested())
    return ((first | cadence) & has_snapshot & ~dg.AutomationCondition.in_progress()).with_label(
        f"first refresh after the first snapshot, then on '{cron}' after new snapshot or changes"
    )


def build_current_asset(
    spec: TableSpec, cron: str = DEFAULT_CURRENT_CRON, fresh_within: timedelta | None = None
) -> dg.AssetsDefinition:
    """The ``current`` asset: one row per key, the latest snapshot plus the later changes."""

    @dg.asset(
        key=asset_key(spec, "current"),
        deps=[asset_key(spec, "snapshot"), asset_key(spec, "changes")],
        pool=pool_name(spec),  # never beside another refresh or a compaction of this table
        code_version=CODE_VERSION,
        freshness_policy=_freshness(fresh_within),
        group_name=spec.safe_name,
        kinds={"parquet"},
        tags=_tags(spec),
        metadata={"dynamodb_table": spec.name},
        automation_condition=current_automation_condition(spec, cron),
        description=(
            f"The mirror of `{spec.name}`: the latest snapshot with later changes replayed, "
            "one row per key. Read it with dynamo_cdc.read_table(root, table)."
        ),
    )
    def current(
        context: dg.AssetExecutionContext, dynamodb: DynamoDBResource, lake: LakeResource
    ) -> dg.MaterializeResult:
        metadata = refresh_current_view(
            lake.get_lake(), spec.name, dynamodb.get_clients(), context.log
        )
        return dg.MaterializeResult(metadata=metadata)

    return current


def build_current_sample_check(
    spec: TableSpec, sample_size: int = CURRENT_SAMPLE_SIZE
) -> dg.AssetChecksDefinition:
    """A sample of keys in ``current`` equals GetItem on the live table (the "auto QA"); keys
    with a newer change on its way are in flight, not mismatches (see :mod:`dynamo_cdc.verify`).
    """

    @dg.asset_check(
        asset=asset_key(spec, "current"),
        name="sample_matches_live_table",
        description=(
            f"Up to {sample_size} items of `current` equal a consistent GetItem on the live "
            "table, unless a newer change of the key is landed or in the stream (in flight)."
        ),
    )
    def sample_matches_live_table(
        dynamodb: DynamoDBResource, lake: LakeResource
    ) -> dg.AssetCheckResult:
        from dynamo_cdc.verify import compare_sample

        found = compare_sample(dynamodb.get_clients(), lake.get_lake(), spec.name, sample_size)
        return dg.AssetCheckResult(
            passed=found.passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "sampled": found.sampled,
                "mismatches": len(found.mismatched),
                "mismatched_keys": dg.MetadataValue.json(found.mismatched[:10]),
                "in_flight": len(found.in_flight),
            },
        )

    return sample_matches_live_table


def build_table_assets(
    spec: TableSpec,
    *,
    current_cron: str = DEFAULT_CURRENT_CRON,
    freshness_seconds: float = 900.0,
    changes_fresh_within: timedelta | None = None,
    current_fresh_within: timedelta | None = None,
    partitions_start: date | None = None,
) -> tuple[list[Any], list[dg.AssetChecksDefinition]]:
    """The assets and checks of one table.

    Returns:
        ([table, snapshot, changes, current], [freshness check, current sample check])
    """
    start = partitions_start or default_partitions_start()
    assets = [
        build_table_asset(spec),
        build_snapshot_asset(spec, start),
        build_changes_asset(spec, start, changes_fresh_within),
        build_current_asset(spec, current_cron, current_fresh_within),
    ]
    checks = [
        build_snapshot_check(spec),
        build_freshness_check(spec, freshness_seconds),
        build_current_sample_check(spec),
    ]
    return assets, checks


def snapshot_partition_for(day: datetime) -> str:
    """The daily partition key of ``day`` (UTC)."""
    return day.astimezone(UTC).strftime("%Y-%m-%d")


def previous_day(when: datetime) -> datetime:
    """The day before ``when``."""
    return when - timedelta(days=1)
