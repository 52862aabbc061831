"""The per-table stream sensor: each tick lands one micro-batch and requests runs to record it.

A tick (see :func:`stream_tick`):

1. calls the library's capture step, :func:`dynamo_cdc.changes.capture_once`, within a budget
   (records, bytes, seconds, calls; the seconds stay well inside Dagster's 60 s sensor timeout
   even with thousands of shards, whose DescribeStream pages are not part of the budget but
   cost one call per 100 shards). The library writes the Parquet files of the batch into the
   hour partitions and commits the stream checkpoint only after they are durable. While
   another capture of the table holds its lock (a manual run), the tick skips;
2. requests one run of the ``changes`` partition of each hour the batch touched, with a run key
   derived from the files of the batch (a batch is recorded once: Dagster never launches two
   runs with the same run key for a sensor);
3. requests, once per hour and keyed by it, a compaction run of every hour that closed (the
   capture caught up at least ``grace`` after the hour ended).

A :class:`~dynamo_cdc.errors.StreamGapError` (or any other failure) propagates, so the tick
fails in the UI with the message that names the table, the window and the fix.

The cursor is small JSON (:class:`StreamSensorCursor`): when the capture last caught up, and
the hours waiting to close (bounded). The stream position is *not* in the cursor: it is the
library's checkpoint in the lake, which every process sees.
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

from dynamo_cdc.changes import capture_once
from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import (
    asset_key,
    hour_of_partition_key,
    hour_of_path,
    hour_partition_key,
)
from dynamo_cdc.dagster.compaction import DEFAULT_GRACE_SECONDS
from dynamo_cdc.dagster.resources import DynamoDBResource, LakeResource
from dynamo_cdc.errors import LakeBusyError, StreamGapError
from dynamo_cdc.lake import Lake
from dynamo_cdc.stream import ReadBudget

log = logging.getLogger(__name__)

CURSOR_VERSION = 1
MAX_PENDING_HOURS = 72
DEFAULT_INTERVAL_SECONDS = 30
DEFAULT_BUDGET_SECONDS = 20.0
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
    """

    caught_up_at: float | None = None
    last_poll_at: float | None = None
    pending_hours: tuple[str, ...] = field(default_factory=tuple)
    batches: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "caught_up_at": self.caught_up_at,
                "last_poll_at": self.last_poll_at,
                "pending_hours": list(self.pending_hours),
                "batches": self.batches,
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
        )


def batch_run_key(table: str, hour_key: str, files: list[str]) -> str:
    """A run key that names one micro-batch's files in one hour (stable across ticks)."""
    digest = hashlib.sha256("\n".join([table, hour_key, *sorted(files)]).encode()).hexdigest()
    return f"batch:{hour_key}:{digest[:20]}"


def compaction_run_key(hour_key: str) -> str:
    """One compaction request per hour."""
    return f"compact:{hour_key}"


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
    config = {
        "heal": True,
        "gap_reason": gap.reason,
        "gap_window_start": gap.window_start or "",
        "gap_window_end": gap.window_end or "",
    }
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                partition_key=hour_partition_key(hour),
                run_config={"ops": {op_name: {"config": config}}},
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
    by_hour: dict[str, list[str]] = {}
    for path in result.files:
        hour = hour_of_path(path)
        if hour is not None:
            by_hour.setdefault(hour_partition_key(hour), []).append(path)
    ranges = {
        sid: [r.first_sequence_number, r.last_sequence_number, r.count]
        for sid, r in sorted(result.ranges.items())[:50]
    }
    requests: list[dg.RunRequest] = []
    this_hour = datetime.fromtimestamp(clock(), tz=UTC).replace(minute=0, second=0, microsecond=0)
    for hour_key, files in sorted(by_hour.items()):
        if hour_of_partition_key(hour_key) > this_hour:
            # A record stamped ahead of this clock (skew at an hour's edge): Dagster has no such
            # partition yet. Its files are landed; the hour's compaction run records them.
            log.warning("%s: batch in future hour %s recorded at compaction", spec.name, hour_key)
            continue
        run_key = batch_run_key(spec.name, hour_key, files)
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                partition_key=hour_key,
                run_config={
                    "ops": {
                        op_name: {
                            "config": {
                                "batch_id": run_key,
                                "batch_records": result.records,
                                "batch_files": len(files),
                                "lag_seconds": result.lag_seconds,
                                "shard_ranges": json.dumps(ranges),
                            }
                        }
                    }
                },
                tags={"dynamo_cdc/table": spec.safe_name, "dynamo_cdc/kind": "batch"},
            )
        )
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
                    run_config={
                        "ops": {
                            op_name: {
                                "config": {
                                    "compact": True,
                                    "caught_up_at": caught_up_at,
                                    "grace_seconds": grace_seconds,
                                }
                            }
                        }
                    },
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
    new_cursor = replace(
        cursor,
        caught_up_at=caught_up_at,
        last_poll_at=started,
        pending_hours=tuple(still_open),
        batches=cursor.batches + (1 if result.files else 0),
    )
    if not requests:
        return dg.SensorResult(
            skip_reason=f"nothing new on the stream of {spec.name} ({result.stopped_by})",
            cursor=new_cursor.to_json(),
        )
    return dg.SensorResult(run_requests=requests, cursor=new_cursor.to_json())


def build_stream_sensor(
    spec: TableSpec,
    changes_op_name: str,
    *,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    running: bool = True,
) -> dg.SensorDefinition:
    """``<safe name>_stream_sensor``: lands ``spec``'s stream in micro-batches (see above)."""

    @dg.sensor(
        name=f"{spec.safe_name}_stream_sensor",
        minimum_interval_seconds=interval_seconds,
        asset_selection=[asset_key(spec, "changes")],
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description=(
            f"Polls the DynamoDB stream of `{spec.name}` (budget {budget_seconds:.0f} s), lands "
            "a micro-batch of change rows and requests a run per hour touched; compacts "
            "closed hours."
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
        )

    return stream_sensor
