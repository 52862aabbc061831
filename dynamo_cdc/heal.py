"""Refill what the stream lost from point-in-time recovery: incremental exports as change rows.

When capture stops with a :class:`~dynamo_cdc.errors.StreamGapError`, :func:`heal_gap`:

1. turns the lost window into export windows (:func:`export_windows`): whole seconds, start
   rounded down and end rounded up, 15 minutes to 24 hours each, inside the PITR window. A
   window shorter than 15 minutes is widened to 15 minutes (forward, or backward when that would
   pass "now"): replaying changes is idempotent, so covering more is safe;
2. runs one INCREMENTAL_EXPORT (NEW_AND_OLD_IMAGES) per window and lands its lines as change
   rows with ``source = 'export'`` in the hour partitions of their ``WriteTimestampMicros``;
3. resets the stream checkpoint, so capture resumes at TRIM_HORIZON of the current shards (or
   of the new stream after a re-enable).

A window that starts before PITR's earliest restorable time cannot be exported: a fresh full
snapshot is taken instead (the mirror rebuilds from it).

Export rows (the contract's change columns):

* ``event_name``: no NewImage -> REMOVE, no OldImage -> INSERT, else MODIFY (an incremental
  export holds the *net* change of each key over the window);
* ``approximate_creation_time``: ``WriteTimestampMicros`` at full microsecond precision;
* ``sequence_number``: ``WriteTimestampMicros`` zero-padded to 40 digits;
* ``event_id``: ``export-`` + the first 32 hex digits of SHA-256 of ``<canonical key
  JSON>|<WriteTimestampMicros>`` (the same last write of a key has the same id in every export);
* ``shard_id`` null, ``ttl_delete`` false (an export cannot tell a TTL delete);
* the file of each hour partition is ``export-<from>-<to>.parquet`` (UTC, second precision), so
  a re-run of the same window overwrites it.

Why this orders correctly against stream rows of the same key (the mirror orders by
(approximate_creation_time, sequence_number)): the window ends on a whole second T, and the
export's row for a key is its last write E in [from, T). A stream record newer than E was
written at or after T, so its ApproximateCreationDateTime (rounded down to the second) is >= T >
E; a stream record older than E has a time rounded down below E. So time alone decides, and the
sequence number only breaks ties between copies of the same write.

An incremental export leaves out a key that did not exist at either end of the window (created
and deleted inside it). If the stream captured that key's creation inside the window (before the
gap), the mirror would keep it; so for every key with stream rows in [from, T) and no export row,
a REMOVE row at T minus 1 microsecond is added (its id is derived the same way).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dynamo_cdc import codec, nesting
from dynamo_cdc import export as export_api
from dynamo_cdc.capture import CAPTURE_LOCK_WAIT_SECONDS, capture_exclusive
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.checkpoint import CheckpointStore, StreamCheckpoint
from dynamo_cdc.config import Settings
from dynamo_cdc.convert import SEQUENCE_DIGITS, records_to_table
from dynamo_cdc.errors import ConfigError, ExportVerificationError, StreamGapError
from dynamo_cdc.export import (
    ExportRequest,
    iter_lines,
    manifest_from_export_description,
    open_gzip,
    request_export,
    verified_data_file,
    wait_for_export,
)
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import change_hour_path, lake_partition_columns
from dynamo_cdc.stream import discover
from dynamo_cdc.times import aware, iso, parse_time

log = logging.getLogger(__name__)

MIN_WINDOW = timedelta(minutes=15)
MAX_WINDOW = timedelta(hours=24)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class HealResult:
    """What :func:`heal_gap` (or a backfill) did.

    Attributes:
        table: the table.
        action: ``incremental_export`` or ``snapshot``.
        windows: the exported windows, ISO-8601 UTC (from, to).
        export_arns: the exports run.
        rows: change rows written (export rows plus added REMOVE rows).
        removes_added: REMOVE rows added for keys created and deleted inside a window.
        files: change files written (relative to the lake root).
        checkpoint_reset: the stream checkpoint was reset (capture resumes at TRIM_HORIZON).
        snapshot: the snapshot partition's URI when a full snapshot was taken.
        reason: the gap's reason.
    """

    table: str
    action: str
    windows: list[tuple[str, str]] = field(default_factory=list)
    export_arns: list[str] = field(default_factory=list)
    rows: int = 0
    removes_added: int = 0
    files: list[str] = field(default_factory=list)
    checkpoint_reset: bool = False
    snapshot: str | None = None
    reason: str = ""


def _floor_second(dt: datetime) -> datetime:
    return dt.replace(microsecond=0)


def _ceil_second(dt: datetime) -> datetime:
    return dt if dt.microsecond == 0 else dt.replace(microsecond=0) + timedelta(seconds=1)


def export_windows(
    start: datetime, end: datetime, *, now: datetime, earliest: datetime | None = None
) -> list[tuple[datetime, datetime]]:
    """Split [start, end) into incremental-export windows of 15 minutes to 24 hours.

    Ends are whole seconds (rounded up, never past ``now``); starts are rounded down to a whole
    second, but never before ``earliest`` (PITR's earliest restorable time). A short window is
    widened to 15 minutes: forward, or backward when forward would pass ``now``; the last piece
    of a long window is widened backward (overlapping the previous piece). Overlaps are safe:
    replay is idempotent.
    """
    start, end, now = aware(start), aware(end), aware(now)
    low = aware(earliest) if earliest is not None else None
    latest = _floor_second(now)
    start = _floor_second(start)
    if low is not None:
        start = max(start, low)
    end = min(_ceil_second(end), latest)
    if end - start < MIN_WINDOW:
        end = min(_ceil_second(start + MIN_WINDOW), latest)
        start = min(start, end - MIN_WINDOW)
        if low is not None:
            start = max(start, low)
    windows = []
    s = start
    while s < end:
        e = min(s + MAX_WINDOW, end)
        if e - s < MIN_WINDOW:
            s = e - MIN_WINDOW
            if low is not None:
                s = max(s, low)
        windows.append((s, e))
        s = e
    return windows


def _micros_to_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def _event_id(key_text: str, micros: int) -> str:
    return "export-" + hashlib.sha256(f"{key_text}|{micros}".encode()).hexdigest()[:32]


def export_record(line: dict[str, Any]) -> dict[str, Any]:
    """A stream-shaped record (as :func:`dynamo_cdc.convert.records_to_table` takes it) of one
    incremental export line (see the module docstring for the scheme)."""
    micros = int(line["Metadata"]["WriteTimestampMicros"]["N"])
    keys = line["Keys"]
    new, old = line.get("NewImage"), line.get("OldImage")
    name = "REMOVE" if new is None else "INSERT" if old is None else "MODIFY"
    d: dict[str, Any] = {
        "Keys": keys,
        "SequenceNumber": str(micros).zfill(SEQUENCE_DIGITS),
        "ApproximateCreationDateTime": _micros_to_datetime(micros),
    }
    if new is not None:
        d["NewImage"] = new
    if old is not None:
        d["OldImage"] = old
    return {
        "eventID": _event_id(codec.item_to_json_text(keys), micros),
        "eventName": name,
        "dynamodb": d,
    }


def _export_lines(clients: Any, desc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    manifest = manifest_from_export_description(clients, desc)
    ion = manifest.output_format == "ION"
    for data_file in manifest.files:
        describe = manifest.source.describe(data_file.key)
        with verified_data_file(manifest, data_file) as path, open_gzip(path) as fh:
            for lineno, line in iter_lines(fh, describe):
                if not line:
                    continue
                try:
                    limits = nesting.ION_LINES if ion else nesting.EXPORT_LINES
                    near = nesting.check_lines(line, limits, ion=ion)
                    rec = codec.ion_line_to_record(line) if ion else orjson.loads(line)
                    if len(near):
                        nesting.check_values(rec)
                    rec["Metadata"]["WriteTimestampMicros"]["N"]
                except nesting.TooDeep:
                    raise ExportVerificationError(
                        f"{describe} line {lineno} nests maps and lists deeper than DynamoDB's "
                        f"{nesting.MAX_LEVELS} levels: it is not an incremental export record.",
                        fix="request the incremental export again.",
                    ) from None
                except Exception:
                    raise ExportVerificationError(
                        f"{manifest.source.describe(data_file.key)} line {lineno} is not an "
                        "incremental export record.",
                        fix="request the incremental export again.",
                    ) from None
                yield rec


def _stream_keys_in_window(lake: Lake, table: str, start: datetime, end: datetime) -> set[str]:
    """Canonical key texts of stream change rows with start <= approximate_creation_time < end."""
    import pyarrow.dataset as ds

    fs, base = lake.arrow_filesystem()
    paths = []
    hour = start.replace(minute=0, second=0, microsecond=0)
    columns = lake_partition_columns(lake, table, "changes")
    if columns is None:
        return set()
    while hour < end:
        part = change_hour_path(lake, table, hour, columns)
        paths += [f"{base}/{rel}" for rel in lake.list(part) if rel.endswith(".parquet")]
        hour += timedelta(hours=1)
    if not paths:
        return set()
    rows = ds.dataset(paths, filesystem=fs, format="parquet").to_table(
        columns=["source", "approximate_creation_time", "_keys"]
    )
    t = rows.column("approximate_creation_time")
    mask = pc.and_(
        pc.and_(
            pc.equal(rows.column("source"), "stream"), pc.greater_equal(t, pa.scalar(start, t.type))
        ),
        pc.less(t, pa.scalar(end, t.type)),
    )
    return set(rows.filter(mask).column("_keys").to_pylist())


def export_window_to_changes(
    clients: Any,
    lake: Lake,
    table: str,
    start: datetime,
    end: datetime,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    key_attributes: Any = None,
    poll_seconds: float = 10.0,
) -> tuple[str, int, int, list[str]]:
    """Run one incremental export of [start, end) and write its change rows.

    Returns:
        (export ARN, rows written, REMOVE rows added, files written)
    """
    settings = getattr(clients, "settings", None)
    bucket = bucket or getattr(settings, "export_bucket", None)
    if not bucket:
        raise ConfigError(
            f"Cannot heal table {table!r}: no export bucket is configured.",
            fix="set DYNAMO_CDC_EXPORT_BUCKET to an S3 bucket in the table's region.",
        )
    prefix = prefix or getattr(settings, "export_prefix", None) or "dynamo-cdc/exports"
    keys = key_attributes or discover(clients, table).key_attributes
    request = ExportRequest.for_settings(
        settings or Settings(),
        table,
        bucket=bucket,
        prefix=f"{prefix.rstrip('/')}/incremental",
        incremental_from=start,
        incremental_to=end,
        incremental_view="NEW_AND_OLD_IMAGES",
    )
    arn = request_export(clients, request)
    desc = wait_for_export(clients, arn, table=table, poll_seconds=poll_seconds)
    records = [export_record(line) for line in _export_lines(clients, desc)]
    exported = {codec.item_to_json_text(r["dynamodb"]["Keys"]) for r in records}
    # Keys created and deleted inside the window are not in the export (see the docstring).
    last = int((end - EPOCH) / timedelta(microseconds=1)) - 1
    added = 0
    for text in sorted(_stream_keys_in_window(lake, table, start, end) - exported):
        keys_item = codec.item_from_json_text(text)
        records.append(
            {
                "eventID": _event_id(text, last),
                "eventName": "REMOVE",
                "dynamodb": {
                    "Keys": keys_item,
                    "SequenceNumber": str(last).zfill(SEQUENCE_DIGITS),
                    "ApproximateCreationDateTime": _micros_to_datetime(last),
                },
            }
        )
        added += 1
    rows = records_to_table(records, keys, source="export")
    batch_id = f"export-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"
    files = write_change_batch(lake, table, rows, batch_id=batch_id)
    log.info(
        "%s: export %s [%s, %s) -> %d change rows",
        table,
        arn,
        iso(start, "seconds"),
        iso(end, "seconds"),
        rows.num_rows,
    )
    return arn, rows.num_rows, added, files


def reset_checkpoint(lake: Lake, table: str) -> None:
    """Reset the stream checkpoint: capture resumes at TRIM_HORIZON of every current shard (of
    whichever stream the table has now). Holds the capture lock: never between a capture's read
    of the checkpoint and its commit (of any shard group's: the next grouped capture splits
    the reset checkpoint again)."""
    what = f"resetting the stream checkpoint of table {table!r}"
    with capture_exclusive(lake, table, wait_seconds=CAPTURE_LOCK_WAIT_SECONDS, what=what):
        CheckpointStore(lake, table).commit(StreamCheckpoint(table=table))


def heal_gap(
    clients: Any,
    lake: Lake,
    table: str,
    gap: StreamGapError,
    *,
    pitr_window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    bucket: str | None = None,
    prefix: str | None = None,
    slack_seconds: float = 300.0,
    poll_seconds: float = 10.0,
) -> HealResult:
    """Refill the window a stream gap lost, then let capture resume (see the module docstring).

    Args:
        clients: a :class:`dynamo_cdc.aws.Clients` (its settings name the export bucket).
        lake: the lake.
        table: the table.
        gap: the error capture raised (its ``window_start`` / ``window_end`` are the window).
        pitr_window: (earliest, latest) restorable times; default: DescribeContinuousBackups.
        now: the latest exportable time; default: the PITR window's latest restorable time.
        bucket: the export bucket (default: the settings' export bucket).
        prefix: the export key prefix (default: the settings').
        slack_seconds: the window's end is moved this much later (capped at ``now``) so that
            records trimmed between the error and the resume are covered too.
        poll_seconds: first DescribeExport interval.

    Returns:
        what was done; the checkpoint is reset only after every change file is written.
    """
    from dynamo_cdc.snapshot import take_snapshot

    earliest, latest = pitr_window or export_api.pitr_window(clients, table)
    earliest, latest = aware(earliest), aware(latest)
    now = aware(now or latest)
    result = HealResult(table=table, action="incremental_export", reason=gap.reason)
    start = parse_time(gap.window_start) if gap.window_start else None
    end = parse_time(gap.window_end) if gap.window_end else now
    end = min(end + timedelta(seconds=slack_seconds), now)
    windows = export_windows(start, end, now=now, earliest=earliest) if start else []
    # A window must not start before PITR's earliest time, not even within its first second:
    # stream times are whole seconds, so there a key the stream saw created and the export
    # leaves out may have been written before PITR began (unchanged, to keep) or after (created
    # and deleted inside the window, to remove); a fresh snapshot settles it.
    if start is None or start < earliest or any(e - s < MIN_WINDOW for s, e in windows):
        settings = getattr(clients, "settings", None)
        snap_bucket = bucket or getattr(settings, "export_bucket", None)
        if not snap_bucket:
            raise ConfigError(
                f"Cannot heal table {table!r}: no export bucket is configured.",
                fix="set DYNAMO_CDC_EXPORT_BUCKET to an S3 bucket in the table's region.",
            )
        log.warning("%s: gap window starts before PITR allows; taking a fresh snapshot", table)
        # Reset first: capture must start before the snapshot's ExportTime (stitching).
        reset_checkpoint(lake, table)
        snap = take_snapshot(
            clients,
            lake,
            ExportRequest.for_settings(
                settings or Settings(),
                table,
                bucket=snap_bucket,
                prefix=prefix or getattr(settings, "export_prefix", None) or "dynamo-cdc/exports",
                # a definite time: a request for "now" could re-attach to an earlier export
                export_time=now,
            ),
            poll_seconds=poll_seconds,
        )
        result.action = "snapshot"
        result.snapshot = snap.uri
        result.checkpoint_reset = True
        return result
    keys = discover(clients, table).key_attributes
    for s, e in windows:
        arn, rows, added, files = export_window_to_changes(
            clients,
            lake,
            table,
            s,
            e,
            bucket=bucket,
            prefix=prefix,
            key_attributes=keys,
            poll_seconds=poll_seconds,
        )
        result.windows.append((iso(s, "seconds"), iso(e, "seconds")))
        result.export_arns.append(arn)
        result.rows += rows
        result.removes_added += added
        result.files += files
    reset_checkpoint(lake, table)
    result.checkpoint_reset = True
    return result


def backfill_changes_hour(
    clients: Any,
    lake: Lake,
    table: str,
    hour_start: datetime,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    poll_seconds: float = 10.0,
) -> HealResult:
    """Fill one hour partition from an incremental export of that hour (60 minutes, so above
    the 15-minute minimum). Rows hold each key's net change over the hour.

    Raises:
        PitrWindowError: the hour is outside the PITR window.
    """
    start = aware(hour_start).replace(minute=0, second=0, microsecond=0)
    return _backfill(
        clients, lake, table, start, start + timedelta(hours=1), bucket, prefix, poll_seconds
    )


def backfill_changes_day(
    clients: Any,
    lake: Lake,
    table: str,
    day: datetime,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    poll_seconds: float = 10.0,
) -> HealResult:
    """Fill a day's hour partitions from ONE incremental export of the day (24 hours: one
    export instead of 24). Each key's net change over the day lands in the hour of its last
    write, so an hour holds fewer rows than per-hour backfills would give; the mirror's result
    is the same."""
    start = aware(day).replace(hour=0, minute=0, second=0, microsecond=0)
    return _backfill(
        clients, lake, table, start, start + timedelta(days=1), bucket, prefix, poll_seconds
    )


def _backfill(
    clients: Any,
    lake: Lake,
    table: str,
    start: datetime,
    end: datetime,
    bucket: str | None,
    prefix: str | None,
    poll_seconds: float,
) -> HealResult:
    arn, rows, added, files = export_window_to_changes(
        clients, lake, table, start, end, bucket=bucket, prefix=prefix, poll_seconds=poll_seconds
    )
    return HealResult(
        table=table,
        action="incremental_export",
        windows=[(iso(start, "seconds"), iso(end, "seconds"))],
        export_arns=[arn],
        rows=rows,
        removes_added=added,
        files=files,
        reason="backfill",
    )
