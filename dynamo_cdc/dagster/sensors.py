"""The per-table stream sensor: each tick lands one micro-batch and records it without a run.

A tick (see :func:`stream_tick`):

1. calls the library's capture step, :func:`dynamo_cdc.capture.capture_once`, within a budget
   (records, bytes, seconds, calls; the seconds stay well inside Dagster's 60 s sensor timeout
   even with thousands of shards, whose DescribeStream pages are not part of the budget but
   cost one call per 100 shards). The library writes the Parquet files of the batch into the
   hour partitions under the table's capture lock and commits the stream checkpoint only after
   they are durable. While another capture of the table holds its lock (a manual run), the tick
   skips;
2. reports one materialization of the ``changes`` partition of each hour the batch touched, as
   an asset event of its ``SensorResult`` (metadata: the batch's rows, files, bytes, shard
   ranges, lag; lineage: the asset graph and the stream position): the sensor daemon records
   it in Dagster's event log without launching a run. The files are already durable and the
   checkpoint committed when the event is reported, so a crash before the report loses only the
   event, never a row (the next compaction run describes the whole hour);
3. every :data:`REPORT_INTERVAL_SECONDS`, reports the ``capture_freshness`` check, also without
   a run (the ``table`` asset is observed by its own sensor);
4. requests, once per hour and keyed by it, a compaction run of every hour that closed (the
   capture caught up at least ``grace`` after the hour ended): real work, so a run;
5. until a snapshot of the table is in the lake, requests today's ``snapshot`` partition once a
   day (after this tick's capture started, so the snapshot overlaps the stream): a new table
   gets its first snapshot without a click, and ``current`` its first refresh as soon as that
   lands (its automation condition).

So a steadily written table launches one compaction run an hour from this sensor (plus the
``current`` refreshes of its automation condition), and an idle table none.

A :class:`~dynamo_cdc.errors.StreamGapError` (or any other failure) propagates, so the tick
fails in the UI with the message that names the table, the window and the fix; with
``on_gap=heal`` the tick requests one heal run instead.

The cursor is small JSON (:class:`StreamSensorCursor`): when the capture last caught up, the
hours waiting to close (bounded), when the table was last observed. The stream position is
*not* in the cursor: it is the library's checkpoint in the lake, which every process sees.
"""

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from dynamo_cdc.capture import CaptureResult, capture_once
from dynamo_cdc.checkpoint import CheckpointStore, load_group_count
from dynamo_cdc.compaction import DEFAULT_GRACE_SECONDS
from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import (
    CAPTURE_FRESHNESS_CHECK,
    ChangesConfig,
    CompactionConfig,
    HealConfig,
    asset_key,
    capture_freshness_result,
    dataset_metadata,
    hour_of_partition_key,
    hour_partition_key,
    parquet_stats,
    shard_ranges_metadata,
)
from dynamo_cdc.dagster.resources import DynamoDBResource, LakeResource
from dynamo_cdc.errors import CheckpointError, LakeBusyError, StreamGapError
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import change_hour_path, hour_of_path, newest_snapshot
from dynamo_cdc.stream import ReadBudget

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
MAX_PENDING_HOURS = 72
DEFAULT_INTERVAL_SECONDS = 30
DEFAULT_BUDGET_SECONDS = 20.0
# How often a tick reports the capture freshness check.
REPORT_INTERVAL_SECONDS = 300.0
DEFAULT_FRESHNESS_SECONDS = 900.0
# How long a tick waits for another capture of its table (a manual run) before it skips.
LOCK_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class StreamSensorCursor:
    """What a stream sensor remembers between ticks.

    Attributes:
        caught_up_at: epoch seconds at the start of the last poll that read every shard to its
            end (every change before then is landed), or None.
        last_poll_at: epoch seconds of the last poll.
        pending_hours: hour partition keys that received files and were not compacted yet.
        batches: micro-batches landed so far (for the UI).
        reported_at: epoch seconds when the freshness check was last reported, or None.
        has_snapshot: a snapshot of the table was seen in the lake (no more first-snapshot
            requests).
    """

    caught_up_at: float | None = None
    last_poll_at: float | None = None
    pending_hours: tuple[str, ...] = field(default_factory=tuple)
    batches: int = 0
    reported_at: float | None = None
    has_snapshot: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "caught_up_at": self.caught_up_at,
                "last_poll_at": self.last_poll_at,
                "pending_hours": list(self.pending_hours),
                "batches": self.batches,
                "reported_at": self.reported_at,
                "has_snapshot": self.has_snapshot,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> "StreamSensorCursor":
        """Parse :meth:`to_json`; an empty or unknown cursor starts afresh (the position is in
        the lake checkpoint, so nothing is re-read or skipped)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
            return cls()
        return cls(
            caught_up_at=data.get("caught_up_at"),
            last_poll_at=data.get("last_poll_at"),
            pending_hours=tuple(data.get("pending_hours") or ()),
            batches=int(data.get("batches") or 0),
            reported_at=data.get("reported_at"),
            has_snapshot=bool(data.get("has_snapshot")),
        )


def batch_id(table: str, hour_key: str, files: list[str]) -> str:
    """Names one micro-batch's files in one hour (the same when a crashed batch is re-read)."""
    digest = hashlib.sha256("\n".join([table, hour_key, *sorted(files)]).encode()).hexdigest()
    return f"batch:{hour_key}:{digest[:20]}"


def batch_materialization(
    spec: TableSpec,
    lake: Lake,
    hour_key: str,
    files: list[str],
    result: CaptureResult,
    kind: str = "batch",
) -> dg.AssetMaterialization:
    """The materialization of ``changes`` partition ``hour_key`` by one micro-batch's ``files``
    (their footers only: a tick never reads the hour's earlier files). ``kind``: ``batch`` (the
    stream sensor's) or ``group_batch`` (a shard group's capture step)."""
    stats = parquet_stats(lake, files)
    ident = batch_id(spec.name, hour_key, files)
    metadata: dict[str, Any] = {
        "batch_id": ident,
        "batch_rows": stats.rows,
        "batch_files": len(files),
        "batch_bytes": stats.bytes,
        "batch_records": result.records,
        "batch_stopped_by": result.stopped_by,
        "shard_ranges": shard_ranges_metadata(result.ranges),
        "newest_change_time": result.newest_change_time or "",
        **dataset_metadata(
            lake.uri(change_hour_path(lake, spec.name, hour_of_partition_key(hour_key)))
        ),
    }
    if result.lag_seconds is not None:
        metadata["lag_seconds"] = round(result.lag_seconds, 3)
    if result.checkpoint is not None and result.checkpoint.stream_arn:
        metadata["stream_arn"] = result.checkpoint.stream_arn
    return dg.AssetMaterialization(
        asset_key=asset_key(spec, "changes"),
        partition=hour_key,
        description=f"Micro-batch of {stats.rows} change rows landed by "
        + ("the stream sensor." if kind == "batch" else f"shard group {result.group}'s capture."),
        metadata=metadata,
        tags={"dynamo_cdc/table": spec.safe_name, "dynamo_cdc/kind": kind},
    )


def freshness_report(
    spec: TableSpec, lake: Lake, freshness_seconds: float, now: float
) -> dg.AssetCheckEvaluation:
    """The capture freshness check's result, reported by the tick without a run."""
    check = capture_freshness_result(
        CheckpointStore(lake, spec.name).load(), freshness_seconds, now
    )
    return dg.AssetCheckEvaluation(
        asset_key=asset_key(spec, "changes"),
        check_name=CAPTURE_FRESHNESS_CHECK,
        passed=check.passed,
        metadata=check.metadata,
    )


def compaction_run_key(hour_key: str) -> str:
    """One compaction request per hour."""
    return f"compact:{hour_key}"


def first_snapshot_request(spec: TableSpec, now: float) -> dg.RunRequest:
    """Today's ``snapshot`` partition of a table that has none yet: its first snapshot, without
    a click. Keyed by the day, so it runs once a day at most until a snapshot exists (a failed
    one, say PITR off, is retried the next day or launched by hand after the fix)."""
    today = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d")
    return dg.RunRequest(
        run_key=f"first-snapshot:{today}",
        partition_key=today,
        asset_selection=[asset_key(spec, "snapshot")],
        tags={"dynamo_cdc/table": spec.safe_name, "dynamo_cdc/kind": "first_snapshot"},
    )


def heal_request(
    spec: TableSpec,
    gap: StreamGapError,
    op_name: str,
    cursor_text: str | None,
    clock: Callable[[], float],
) -> dg.SensorResult:
    """One run that heals ``gap`` (``on_gap=heal``): its run key is the gap's, so every tick
    that meets the same gap until it is healed asks for the same run, which runs once."""
    log.warning("%s: %s; requesting a heal run", spec.name, gap)
    # window_end moves with time; the reason and where the gap starts identify it
    ident = f"{spec.name}|{gap.reason}|{gap.window_start}"
    run_key = "heal-" + hashlib.sha256(ident.encode()).hexdigest()[:20]
    hour = datetime.fromtimestamp(clock(), tz=UTC).replace(minute=0, second=0, microsecond=0)
    heal = HealConfig(
        reason=gap.reason, window_start=gap.window_start or "", window_end=gap.window_end or ""
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                partition_key=hour_partition_key(hour),
                asset_selection=[asset_key(spec, "changes")],
                run_config=dg.RunConfig(ops={op_name: ChangesConfig(heal=heal)}),
                tags={"dynamo_cdc/table": spec.safe_name, "dynamo_cdc/kind": "heal"},
            )
        ],
        cursor=cursor_text,
    )


def stream_tick(
    spec: TableSpec,
    cursor_text: str | None,
    clients: Any,
    lake: Lake,
    *,
    op_name: str,
    budget: ReadBudget,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    freshness_seconds: float = DEFAULT_FRESHNESS_SECONDS,
    clock: Callable[[], float] = time.time,
) -> dg.SensorResult:
    """One sensor tick for ``spec`` (see the module docstring).

    Args:
        spec: the table.
        cursor_text: the sensor's cursor.
        clients: a :class:`dynamo_cdc.aws.Clients`.
        lake: the lake.
        op_name: the ``changes`` asset's op name (for the run config).
        budget: the poll's budget.
        grace_seconds: how long after its end an hour is still open.
        freshness_seconds: the capture freshness check's bound.
        clock: epoch seconds now.

    Raises:
        StreamGapError: changes may have been lost; the tick fails with the message.
    """
    cursor = StreamSensorCursor.from_json(cursor_text)
    started = clock()
    try:
        result = capture_once(
            clients, lake, spec.name, budget, clock=clock, lock_wait_seconds=LOCK_WAIT_SECONDS
        )
    except StreamGapError as gap:
        if spec.on_gap != "heal":
            raise
        return heal_request(spec, gap, op_name, cursor_text, clock)
    except LakeBusyError as busy:  # a manual capture run of this table: the next tick goes on
        return dg.SensorResult(skip_reason=str(busy), cursor=cursor_text)
    except CheckpointError as grouped:
        if load_group_count(lake, spec.name) is None:
            raise
        # captured in shard groups by the capture_groups job (dynamo_cdc.dagster.capture_groups)
        return dg.SensorResult(skip_reason=str(grouped), cursor=cursor_text)
    by_hour: dict[str, list[str]] = {}
    for path in result.files:
        hour = hour_of_path(path)
        if hour is not None:
            by_hour.setdefault(hour_partition_key(hour), []).append(path)
    events: list[Any] = []
    requests: list[dg.RunRequest] = []
    this_hour = datetime.fromtimestamp(clock(), tz=UTC).replace(minute=0, second=0, microsecond=0)
    for hour_key, files in sorted(by_hour.items()):
        if hour_of_partition_key(hour_key) > this_hour:
            # A record stamped ahead of this clock (skew at an hour's edge): Dagster has no such
            # partition yet. Its files are landed; the hour's compaction run records them.
            log.warning("%s: batch in future hour %s recorded at compaction", spec.name, hour_key)
            continue
        events.append(batch_materialization(spec, lake, hour_key, files, result))
    caught_up_at = started if result.stopped_by == "caught_up" else cursor.caught_up_at
    pending = sorted(set(cursor.pending_hours) | set(by_hour))
    still_open = []
    for hour_key in pending:
        hour_end = hour_of_partition_key(hour_key) + timedelta(hours=1)
        if caught_up_at is not None and caught_up_at >= hour_end.timestamp() + grace_seconds:
            requests.append(
                dg.RunRequest(
                    run_key=compaction_run_key(hour_key),
                    partition_key=hour_key,
                    asset_selection=[asset_key(spec, "changes")],
                    run_config=dg.RunConfig(
                        ops={
                            op_name: ChangesConfig(
                                compact=CompactionConfig(
                                    caught_up_at=caught_up_at, grace_seconds=grace_seconds
                                )
                            )
                        }
                    ),
                    tags={"dynamo_cdc/table": spec.safe_name, "dynamo_cdc/kind": "compaction"},
                )
            )
        else:
            still_open.append(hour_key)
    if len(still_open) > MAX_PENDING_HOURS:
        log.warning(
            "%s: %d hours wait for compaction; forgetting the oldest (backfill them with "
            "compact=true)",
            spec.name,
            len(still_open) - MAX_PENDING_HOURS,
        )
        still_open = still_open[-MAX_PENDING_HOURS:]
    # The capture has started (this poll), so a snapshot taken now overlaps the stream.
    has_snapshot = cursor.has_snapshot or newest_snapshot(lake, spec.name) is not None
    if not has_snapshot:
        requests.append(first_snapshot_request(spec, clock()))
    reported_at = cursor.reported_at
    if reported_at is None or started - reported_at >= REPORT_INTERVAL_SECONDS:
        events.append(freshness_report(spec, lake, freshness_seconds, clock()))
        reported_at = started
    new_cursor = replace(
        cursor,
        caught_up_at=caught_up_at,
        last_poll_at=started,
        pending_hours=tuple(still_open),
        batches=cursor.batches + (1 if result.files else 0),
        reported_at=reported_at,
        has_snapshot=has_snapshot,
    )
    if not requests and not events:
        return dg.SensorResult(
            skip_reason=f"nothing new on the stream of {spec.name} ({result.stopped_by})",
            cursor=new_cursor.to_json(),
        )
    return dg.SensorResult(run_requests=requests, asset_events=events, cursor=new_cursor.to_json())


def build_stream_sensor(
    spec: TableSpec,
    changes_op_name: str,
    *,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    freshness_seconds: float = DEFAULT_FRESHNESS_SECONDS,
    running: bool = True,
) -> dg.SensorDefinition:
    """``<safe name>_stream_sensor``: lands ``spec``'s stream in micro-batches (see above)."""

    @dg.sensor(
        name=f"{spec.safe_name}_stream_sensor",
        minimum_interval_seconds=interval_seconds,
        asset_selection=[asset_key(spec, "changes"), asset_key(spec, "snapshot")],
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description=(
            f"Polls the DynamoDB stream of `{spec.name}` (budget {budget_seconds:.0f} s), lands "
            "a micro-batch of change rows and records it as a materialization of each hour "
            "touched (no run); requests a compaction run per closed hour."
        ),
    )
    def stream_sensor(
        context: dg.SensorEvaluationContext, dynamodb: DynamoDBResource, lake: LakeResource
    ) -> dg.SensorResult:
        return stream_tick(
            spec,
            context.cursor,
            dynamodb.get_clients(),
            lake.get_lake(),
            op_name=changes_op_name,
            budget=ReadBudget(max_seconds=budget_seconds),
            grace_seconds=grace_seconds,
            freshness_seconds=freshness_seconds,
        )

    return stream_sensor
