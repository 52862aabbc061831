"""The lake's layout, in this one place: every path of a table's datasets and state, and the
parsing of those paths.

    <table>/snapshot/export_date=YYYY-MM-DD/*.parquet + _lineage.json   snapshot_path, newest_snapshot
    <table>/changes/date=YYYY-MM-DD/hour=HH/*.parquet                   change_hour_path, hour_of_path
    <table>/current/...                                                 (dynamo_cdc.mirror)
    <table>/_state/stream/checkpoint.json                               checkpoint_path
    <table>/_state/stream/capture.lock, <table>/_state/mirror.lock      capture_lock, mirror_lock
    <table>/_state/staging/, <table>/_state/snapshot/export_date=.../   staging_path, snapshot_staging_path

Files and folders whose names start with ``_`` or ``.`` are not data.

The partition columns are named per table, so that no attribute is shadowed.

DynamoDB forbids no attribute name, and time-series tables often key on ``date`` and ``hour``.
A hive partition column named like a column of the files shadows it (DuckDB's
``hive_partitioning=true`` returns the folder's value) or breaks the read (pyarrow: "Unable to
merge: Field hour has incompatible types"). So the rule, in this one place:

* the partition columns are ``export_date`` (snapshot) and ``date``, ``hour`` (changes);
* a table whose key attributes include one of these names, case-insensitively (DuckDB, Athena
  and Spark fold case), gets ``cdc_`` in front of that partition column, again until it is free
  (a table keyed on ``date`` and ``hour`` has ``changes/cdc_date=.../cdc_hour=...``);
* a non-key attribute named like its table's snapshot partition column gets no typed column
  (:func:`dynamo_cdc.schema.decide_schema`); it stays in ``_item`` like every attribute.

The key attributes never change for a table, so its names never change either. ``cdc_`` and not
``_``: pyarrow, Spark and Hive skip folders whose name starts with ``_`` or ``.``.

Readers find the names in the lake (:func:`lake_partition_columns`), so they need not know the
table's keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from dynamo_cdc.errors import LakeError

#: The partition columns of each dataset, as named for a table with no attribute of that name.
PARTITION_COLUMNS: dict[str, tuple[str, ...]] = {
    "snapshot": ("export_date",),
    "changes": ("date", "hour"),
}
PREFIX = "cdc_"
#: A published snapshot partition's marker (its files and lineage), written last.
LINEAGE_FILE = "_lineage.json"


def partition_columns(dataset: str, key_attributes: Iterable[str]) -> tuple[str, ...]:
    """The partition columns of ``dataset`` (``snapshot`` or ``changes``) of a table keyed on
    ``key_attributes`` (see the module docstring)."""
    taken = {name.casefold() for name in key_attributes}
    out = []
    for name in PARTITION_COLUMNS[dataset]:
        while name.casefold() in taken:
            name = PREFIX + name
        taken.add(name.casefold())
        out.append(name)
    return tuple(out)


def lake_partition_columns(lake: Any, table: str, dataset: str) -> tuple[str, ...] | None:
    """The partition columns ``dataset`` of ``table`` has in ``lake`` (from its folder names), or
    None when it has no partition yet."""
    names = []
    rel = lake.table_path(table, dataset)
    for _ in PARTITION_COLUMNS[dataset]:
        folders = [f for f in lake.folders(rel) if "=" in f]
        if not folders:
            return None
        names.append(folders[0].split("=", 1)[0])
        rel = f"{rel}/{folders[0]}"
    return tuple(names)


def partition_value(folder: str) -> str:
    """The value of a partition folder ``<column>=<value>``."""
    return folder.split("=", 1)[1]


def hour_of_path(path: str) -> datetime | None:
    """The hour of a change file path ``.../changes/date=YYYY-MM-DD/hour=HH/...`` (whatever the
    table's partition columns are named), else None."""
    parts = path.split("/")
    if "changes" not in parts[:-3]:
        return None
    i = len(parts) - 1 - parts[::-1].index("changes")
    try:
        date, hour = (partition_value(p) for p in parts[i + 1 : i + 3])
        return datetime.strptime(f"{date} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except (IndexError, ValueError):
        return None


def table_partition_columns(
    lake: Any, table: str, dataset: str, key_attributes: Iterable[str]
) -> tuple[str, ...]:
    """:func:`partition_columns` for a writer, checked against a lake written before the rule.

    Raises:
        LakeError: the table's dataset already has partitions under other names (a lake written
            before 2026-12-06 for a table keyed on such a name: see docs/lake-layout.md).
    """
    names = partition_columns(dataset, key_attributes)
    if names == PARTITION_COLUMNS[dataset]:
        return names  # the names every lake has always had: nothing to check
    found = lake_partition_columns(lake, table, dataset)
    if found is not None and found != names:
        rel = lake.table_path(table, dataset)
        raise LakeError(
            f"Table {table!r} has a key attribute named like a partition column, so its "
            f"{dataset} partitions are named {'/'.join(names)}, but {lake.uri(rel)} holds "
            f"partitions named {'/'.join(found)} (written before this rule).",
            fix="rename those folders (see docs/lake-layout.md), or move them aside and let "
            "capture heal the window.",
        )
    return names


def partition_date(text: str, what: str) -> str:
    """``text`` if it is a date ``YYYY-MM-DD`` (a partition name), else :class:`LakeError`
    naming ``what`` it came from."""
    try:
        ok = datetime.strptime(text, "%Y-%m-%d").strftime("%Y-%m-%d") == text
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LakeError(
            f"Refusing partition date {text!r} ({what}): a partition is named by a date "
            "YYYY-MM-DD.",
            fix="pass a date such as 2026-12-06.",
        )
    return text


# -- snapshot ------------------------------------------------------------------------------------


def snapshot_path(
    lake: Any, table: str, export_date: str, key_attributes: Sequence[str] | None = None
) -> str:
    """``<table>/snapshot/export_date=YYYY-MM-DD`` (LakeError unless ``export_date`` is a date).

    The partition column is renamed for a table keyed on ``export_date``: a writer passes the
    table's ``key_attributes``; None (a reader) takes the name the lake has (``export_date``
    when it has no partition yet).
    """
    date = partition_date(export_date, f"snapshot partition of table {table!r}")
    if key_attributes is None:
        found = lake_partition_columns(lake, table, "snapshot")
        (column,) = found or PARTITION_COLUMNS["snapshot"]
    else:
        (column,) = table_partition_columns(lake, table, "snapshot", key_attributes)
    return str(lake.table_path(table, "snapshot", f"{column}={date}"))


def snapshot_staging_path(lake: Any, table: str, export_date: str, name: str) -> str:
    """``<table>/_state/snapshot/export_date=YYYY-MM-DD/<name>``: where a snapshot's groups are
    written before it is published."""
    return str(lake.table_path(table, "_state", "snapshot", f"export_date={export_date}", name))


def snapshot_dates(lake: Any, table: str) -> list[str]:
    """The dates of ``table``'s published snapshot partitions (those with their
    :data:`LINEAGE_FILE`), oldest first."""
    prefix = lake.table_path(table, "snapshot")
    return [
        partition_value(d)
        for d in lake.folders(prefix)
        if "=" in d and lake.read_bytes(f"{prefix}/{d}/{LINEAGE_FILE}") is not None
    ]


def newest_snapshot(lake: Any, table: str) -> tuple[str, dict[str, Any]] | None:
    """(relative folder, lineage) of the newest published snapshot partition, or None."""
    prefix = lake.table_path(table, "snapshot")
    for name in reversed(lake.folders(prefix)):
        raw = lake.read_bytes(f"{prefix}/{name}/{LINEAGE_FILE}")
        if raw is not None:
            return f"{prefix}/{name}", json.loads(raw)
    return None


# -- changes -------------------------------------------------------------------------------------


def change_hour_path(
    lake: Any, table: str, hour_start: datetime, columns: Sequence[str] | None = None
) -> str:
    """``<table>/changes/date=YYYY-MM-DD/hour=HH`` of the hour starting at ``hour_start``.

    ``columns`` are the table's partition columns (:func:`partition_columns`); None: as the
    lake has them (``date``, ``hour`` when it has no partition yet).
    """
    if columns is None:
        columns = lake_partition_columns(lake, table, "changes") or PARTITION_COLUMNS["changes"]
    date, hour = columns
    return str(
        lake.table_path(
            table, "changes", f"{date}={hour_start:%Y-%m-%d}", f"{hour}={hour_start:%H}"
        )
    )


# -- state ---------------------------------------------------------------------------------------


def checkpoint_path(lake: Any, table: str) -> str:
    """``<table>/_state/stream/checkpoint.json``: the committed stream position."""
    return str(lake.table_path(table, "_state", "stream", "checkpoint.json"))


def capture_lock(lake: Any, table: str) -> str:
    """``<table>/_state/stream/capture.lock``: held by captures, compactions and checkpoint
    resets of the table."""
    return str(lake.table_path(table, "_state", "stream", "capture.lock"))


def groups_path(lake: Any, table: str, *parts: str) -> str:
    """``<table>/_state/stream/groups/<parts...>``: where a table captured in shard groups
    keeps ``groups.json`` and each group's checkpoint and lease (:mod:`dynamo_cdc.shardgroups`)."""
    return str(lake.table_path(table, "_state", "stream", "groups", *parts))


def group_checkpoint_path(lake: Any, table: str, group: int) -> str:
    """``<table>/_state/stream/groups/<group>/checkpoint.json``: a shard group's position."""
    return groups_path(lake, table, str(group), "checkpoint.json")


def group_lease(lake: Any, table: str, group: int) -> str:
    """``<table>/_state/stream/groups/<group>/capture.lock``: held by the group's capture."""
    return groups_path(lake, table, str(group), "capture.lock")


def mirror_lock(lake: Any, table: str) -> str:
    """``<table>/_state/mirror.lock``: held by a refresh of the table's ``current`` view."""
    return str(lake.table_path(table, "_state", "mirror.lock"))


def staging_path(lake: Any, table: str) -> str:
    """``<table>/_state/staging``: local staging folders of a lake's table."""
    return str(lake.table_path(table, "_state", "staging"))
