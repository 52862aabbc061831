"""Where a table's stream capture stands: per shard, the last sequence number written to Parquet.

A :class:`StreamCheckpoint` is small versioned JSON stored in the lake at
``<table>/_state/stream/checkpoint.json`` (so every process of a deployment sees the same one,
never a local temporary file). It is committed only after the Parquet files that hold the
records it covers are durably written: a crash between the two makes the next run re-read the
same records and overwrite the same files, so nothing is lost and nothing is duplicated.

Kept small: a finished shard (read to its end) is pruned once its children are known in the
checkpoint; the children's entries then carry the lineage forward. Shard iterators are never
stored: they expire after 15 minutes, and a checkpoint must survive longer than that.

JSON layout (version 1)::

    {"version": 1, "table": "orders", "stream_arn": "arn:aws:dynamodb:...",
     "updated_at": 1700000000.0, "rotation_cursor": "shardId-...",
     "shards": {"shardId-...": {"last_sequence_number": "300...", "finished": false,
                                "parent_shard_id": null,
                                "last_change_time": "2024-01-01T00:00:00Z"}}}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from dynamo_cdc.errors import CheckpointError
from dynamo_cdc.layout import checkpoint_path, group_checkpoint_path, groups_path

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class ShardCheckpoint:
    """Progress in one shard.

    Attributes:
        last_sequence_number: the last record of this shard that is in Parquet, or None when
            nothing of the shard has been read yet (it then starts at TRIM_HORIZON).
        finished: the shard is closed and was read to its EndingSequenceNumber.
        parent_shard_id: the shard's parent as DescribeStream named it (lineage).
        last_change_time: ApproximateCreationDateTime of ``last_sequence_number``'s record, as
            ISO-8601 UTC text; the start of the window a gap would lose.
    """

    last_sequence_number: str | None = None
    finished: bool = False
    parent_shard_id: str | None = None
    last_change_time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_sequence_number": self.last_sequence_number,
            "finished": self.finished,
            "parent_shard_id": self.parent_shard_id,
            "last_change_time": self.last_change_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardCheckpoint:
        return cls(
            last_sequence_number=data.get("last_sequence_number"),
            finished=bool(data.get("finished", False)),
            parent_shard_id=data.get("parent_shard_id"),
            last_change_time=data.get("last_change_time"),
        )


@dataclass
class StreamCheckpoint:
    """A table's capture position in one stream (see the module docstring).

    Attributes:
        table: the DynamoDB table name.
        stream_arn: the stream this position belongs to; a different LatestStreamArn means the
            stream was disabled and enabled again (a gap).
        shards: shard id -> :class:`ShardCheckpoint`.
        updated_at: epoch seconds of the poll that produced this checkpoint (None when new).
        rotation_cursor: the last shard served by that poll; the next poll starts after it so
            that, with more shards than one poll's budget covers, every shard gets its turn.
        version: the JSON layout version.
    """

    table: str
    stream_arn: str | None = None
    shards: dict[str, ShardCheckpoint] = field(default_factory=dict)
    updated_at: float | None = None
    rotation_cursor: str | None = None
    version: int = CHECKPOINT_VERSION

    @property
    def is_new(self) -> bool:
        """True when no poll has produced this checkpoint (capture starts from scratch)."""
        return self.stream_arn is None

    def last_change_time(self) -> str | None:
        """The newest ApproximateCreationDateTime any shard reached (ISO text), or None."""
        times = [s.last_change_time for s in self.shards.values() if s.last_change_time]
        return max(times) if times else None

    def oldest_unfinished_change_time(self) -> str | None:
        """The oldest position among unfinished shards (ISO text): where a gap would start."""
        times = [
            s.last_change_time
            for s in self.shards.values()
            if s.last_change_time and not s.finished
        ]
        return min(times) if times else self.last_change_time()

    def pruned(self) -> StreamCheckpoint:
        """A copy without finished shards whose children are all known here.

        A finished shard's children are known when at least one shard in the checkpoint names it
        as parent (DynamoDB creates a closed shard's children when it closes, and the reader adds
        every listed shard to the checkpoint, so all siblings arrive together). Once pruned, the
        children's ``parent_shard_id`` still says where they came from.
        """
        has_child = {s.parent_shard_id for s in self.shards.values() if s.parent_shard_id}
        keep = {sid: s for sid, s in self.shards.items() if not (s.finished and sid in has_child)}
        return replace(self, shards=dict(sorted(keep.items())))

    def to_json(self) -> bytes:
        """Versioned JSON (pruned first, keys sorted so equal checkpoints are equal bytes)."""
        small = self.pruned()
        data = {
            "version": self.version,
            "table": self.table,
            "stream_arn": self.stream_arn,
            "updated_at": self.updated_at,
            "rotation_cursor": self.rotation_cursor,
            "shards": {sid: s.to_dict() for sid, s in small.shards.items()},
        }
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes | str, *, table: str | None = None) -> StreamCheckpoint:
        """Parse :meth:`to_json` output.

        Args:
            raw: the JSON bytes or text.
            table: when given, the checkpoint must belong to this table.

        Raises:
            CheckpointError: corrupt JSON, an unknown version, or another table's checkpoint.
        """
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(
                f"The stream checkpoint of table {table!r} is not valid JSON ({exc}).",
                fix="restore it from a backup, or delete it and take a fresh snapshot.",
            ) from None
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise CheckpointError(
                f"The stream checkpoint of table {table!r} has version {version!r}; this "
                f"dynamo-cdc reads version {CHECKPOINT_VERSION}.",
                fix="upgrade dynamo-cdc, or delete the checkpoint and take a fresh snapshot.",
            )
        if table is not None and data.get("table") != table:
            raise CheckpointError(
                f"The stream checkpoint stored for table {table!r} belongs to table "
                f"{data.get('table')!r}.",
                fix="check the lake root; each table keeps its checkpoint under <table>/_state/.",
            )
        return cls(
            table=data["table"],
            stream_arn=data.get("stream_arn"),
            shards={
                sid: ShardCheckpoint.from_dict(s) for sid, s in (data.get("shards") or {}).items()
            },
            updated_at=data.get("updated_at"),
            rotation_cursor=data.get("rotation_cursor"),
            version=data["version"],
        )


def load_group_count(lake: Any, table: str) -> int | None:
    """How many shard groups capture ``table`` (its ``groups.json``), or None when one process
    captures it (no groups: the single ``checkpoint.json``)."""
    raw = lake.read_bytes(groups_path(lake, table, "groups.json"))
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        groups = int(data["groups"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"The shard groups file of table {table!r} is not valid "
            f"({groups_path(lake, table, 'groups.json')}).",
            fix="regroup the table's capture (dynamo_cdc.capture.regroup).",
        ) from None
    return groups


def store_group_count(lake: Any, table: str, groups: int | None) -> None:
    """Record (or, with None, remove) how many shard groups capture ``table``."""
    path = groups_path(lake, table, "groups.json")
    if groups is None:
        lake.delete(path)
    else:
        lake.write_bytes(path, orjson.dumps({"version": 1, "table": table, "groups": groups}))


class CheckpointStore:
    """Loads and commits a table's :class:`StreamCheckpoint` in the lake.

    Args:
        lake: a :class:`dynamo_cdc.lake.Lake`.
        table: the DynamoDB table name.
        group: a shard group's checkpoint (``<table>/_state/stream/groups/<group>/``) instead of
            the table's single one (see :mod:`dynamo_cdc.shardgroups`).

    Attributes:
        groups: after :meth:`load` of the table's checkpoint: the number of shard groups whose
            checkpoints it merged, or None (the single checkpoint).
    """

    def __init__(self, lake: Any, table: str, group: int | None = None) -> None:
        self.lake = lake
        self.table = table
        self.group = group
        self.groups: int | None = None
        if group is None:
            self.path = checkpoint_path(lake, table)
        else:
            self.path = group_checkpoint_path(lake, table, group)

    def load(self) -> StreamCheckpoint:
        """The committed checkpoint, or a new empty one when none was committed yet.

        The table's checkpoint of a table captured in shard groups (no single checkpoint, a
        ``groups.json``) is every group's merged (read-only: see
        :func:`dynamo_cdc.shardgroups.merge_checkpoints`), and :attr:`groups` says so.
        """
        raw = self.lake.read_bytes(self.path)
        if raw is not None:
            return StreamCheckpoint.from_json(raw, table=self.table)
        if self.group is None:
            self.groups = load_group_count(self.lake, self.table)
            if self.groups is not None:
                from dynamo_cdc.shardgroups import merge_checkpoints

                parts = [
                    CheckpointStore(self.lake, self.table, g).load() for g in range(self.groups)
                ]
                return merge_checkpoints(self.table, parts)
        return StreamCheckpoint(table=self.table)

    def commit(self, checkpoint: StreamCheckpoint) -> None:
        """Store ``checkpoint`` atomically (temp + rename, or one PUT).

        Call it only after the Parquet holding every record the checkpoint covers is written.
        """
        if checkpoint.table != self.table:
            raise CheckpointError(
                f"Refusing to store table {checkpoint.table!r}'s checkpoint as {self.table!r}'s."
            )
        self.lake.write_bytes(self.path, checkpoint.to_json())
        log.debug(
            "committed stream checkpoint of %s%s (%d shards)",
            self.table,
            "" if self.group is None else f" group {self.group}",
            len(checkpoint.shards),
        )
