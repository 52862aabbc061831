"""Compare a sample of ``current`` with the live table, without false alarms under writes.

A sampled key whose mirror row differs from a consistent GetItem is a divergence only when no
newer change of that key is on its way to the mirror. Under steady writes most differences are
such changes: a change row landed in the change partitions that the mirror has not applied yet,
or a stream record past the capture checkpoint that no capture has landed yet. Both are looked
for (the checkpoint is loaded first, then the landed files are read, then the stream is read from
that checkpoint without committing anything, so a capture running meanwhile hides nothing), and a
key with a newer change is counted as *in flight*, not as a mismatch.

Newer means what the mirror itself means by it (:func:`dynamo_cdc.mirror.newest_per_key`): a
greater (change time, sequence number); a row that came from the snapshot is older than any
change after the snapshot's export time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from dynamo_cdc import codec
from dynamo_cdc.checkpoint import CheckpointStore
from dynamo_cdc.convert import image_text, pages_to_table
from dynamo_cdc.export import describe_table
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import newest_snapshot
from dynamo_cdc.mirror import (
    change_files_since,
    key_text,
    read_current,
)
from dynamo_cdc.stream import ReadBudget, StreamReader, discover
from dynamo_cdc.times import parse_time

DEFAULT_SAMPLE_SIZE = 20
STREAM_POLLS = 10


@dataclass
class SampleComparison:
    """What :func:`compare_sample` found.

    Attributes:
        sampled: keys compared.
        mismatched: canonical key texts whose mirror row differs with nothing newer on its way.
        in_flight: keys that differ because a newer change is landed or still in the stream.
    """

    sampled: int
    mismatched: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatched


def sample_keys(keys: list[str], size: int) -> list[str]:
    """A stable sample of ``size`` keys: the smallest by SHA-256 of their text."""
    return sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())[:size]


def compare_sample(
    clients: Any, lake: Lake, table: str, sample_size: int = DEFAULT_SAMPLE_SIZE
) -> SampleComparison:
    """Compare up to ``sample_size`` rows of ``current`` with consistent GetItems.

    Raises:
        FileNotFoundError: ``current`` was never refreshed.
        StreamGapError: the stream cannot be read from the checkpoint.
    """
    key_names = [k["AttributeName"] for k in describe_table(clients, table)["KeySchema"]]
    rows = read_current(lake, table)
    items = rows.column("_item").to_pylist()
    times = rows.column("_change_time").to_pylist()
    seqs = rows.column("_sequence_number").to_pylist()
    by_key: dict[str, tuple[str, datetime | None, str | None]] = {}
    for text, when, seq in zip(items, times, seqs, strict=True):
        by_key[key_text(codec.item_from_json_text(text), key_names)] = (text, when, seq)
    sample = sample_keys(list(by_key), sample_size)
    differing = [k for k in sample if not _same_as_live(clients, table, k, by_key[k][0])]
    result = SampleComparison(sampled=len(sample))
    if not differing:
        return result
    checkpoint = CheckpointStore(lake, table).load()  # first: see the module docstring
    snapshot = newest_snapshot(lake, table)
    export_time = parse_time(snapshot[1]["export_time"]) if snapshot else None
    positions = {k: _position(by_key[k][1], by_key[k][2], export_time) for k in differing}
    pending = _landed_newer(lake, table, positions) | _in_stream(clients, table, checkpoint)
    for k in differing:
        # re-read: the live item may have become what the mirror holds meanwhile
        if k in pending:
            result.in_flight.append(k)
        elif not _same_as_live(clients, table, k, by_key[k][0]):
            result.mismatched.append(k)
    return result


def _same_as_live(clients: Any, table: str, key: str, mirror_item: str) -> bool:
    live = clients.dynamodb.get_item(
        TableName=table,
        Key=codec.to_boto3_item(codec.item_from_json_text(key)),
        ConsistentRead=True,
    ).get("Item")
    return image_text(live) == codec.item_to_json_text(codec.item_from_json_text(mirror_item))


_Position = tuple[datetime, str]
_OLDEST = datetime.min.replace(tzinfo=UTC)


def _position(when: datetime | None, seq: str | None, export_time: datetime | None) -> _Position:
    """The mirror row's place in change order; a snapshot row sits at the export time."""
    if when is not None:
        return when, seq or ""
    return export_time or _OLDEST, "\uffff"  # after every change at the export time itself


def _landed_newer(lake: Lake, table: str, positions: dict[str, _Position]) -> set[str]:
    """Keys of ``positions`` with a landed change row newer than their mirror row."""
    start = min(when for when, _ in positions.values())
    prefix = lake.table_path(table, "changes")
    rels = [
        f"{prefix}/{part}/{name}"
        for part, names in change_files_since(lake, table, start).items()
        for name in names
    ]
    if not rels:
        return set()
    fs, base = lake.arrow_filesystem()
    rows = ds.dataset([f"{base}/{r}" for r in rels], filesystem=fs, format="parquet").to_table(
        columns=["_keys", "approximate_creation_time", "sequence_number"],
        filter=pc.field("_keys").isin(pa.array(list(positions), pa.string())),
    )
    newer = set()
    for k, when, seq in zip(
        rows.column("_keys").to_pylist(),
        rows.column("approximate_creation_time").to_pylist(),
        rows.column("sequence_number").to_pylist(),
        strict=True,
    ):
        if (when, seq) > positions[k]:
            newer.add(k)
    return newer


def _in_stream(clients: Any, table: str, checkpoint: Any) -> set[str]:
    """Keys with a record past ``checkpoint`` (read within a small budget, never committed)."""
    info = discover(clients, table)
    reader = StreamReader(
        clients.streams,
        table,
        checkpoint,
        ReadBudget(max_seconds=5),
        stream_arn=info.stream_arn,
    )
    keys: set[str] = set()
    for _ in range(STREAM_POLLS):
        batch = reader.poll()
        if batch.count:
            keys.update(pages_to_table(batch.pages, info.key_attributes)["_keys"].to_pylist())
        reader.acknowledge(batch)
        if batch.stopped_by == "caught_up":
            break
    return keys
