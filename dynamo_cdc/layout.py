"""The names of the lake's hive partition columns, per table, so that no attribute is shadowed.

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

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from dynamo_cdc.errors import LakeError

#: The partition columns of each dataset, as named for a table with no attribute of that name.
PARTITION_COLUMNS: dict[str, tuple[str, ...]] = {
    "snapshot": ("export_date",),
    "changes": ("date", "hour"),
}
PREFIX = "cdc_"


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
