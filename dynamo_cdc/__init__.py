"""dynamo-cdc: change data capture from Amazon DynamoDB into Parquet.

The library never imports Dagster; ``dynamo_cdc.dagster`` builds the orchestration on top of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__version__ = "0.1.0"
__all__ = ["read_table", "__version__"]

VIEWS = ("current", "snapshot", "changes")
#: The change partitions' columns and their Arrow types (DuckDB: DATE and INTEGER).
CHANGE_PARTITION_TYPES = [("date", "date32"), ("hour", "int32")]


def read_table(root: str, table: str, view: str = "current", *, s3_client: Any = None) -> pa.Table:
    """Read one table's dataset from the lake as a pyarrow Table.

    Args:
        root: the lake root (local folder or ``s3://bucket/prefix``).
        table: the DynamoDB table name.
        view: ``"current"`` (the mirror: one row per key), ``"snapshot"`` (the newest snapshot
            partition) or ``"changes"`` (every change row, with its partition columns ``date`` and
            ``hour``, named ``cdc_date``, ``cdc_hour`` for a table keyed on such names: see
            :mod:`dynamo_cdc.layout`).
        s3_client: a boto3 S3 client for an ``s3://`` root.
    """
    import pyarrow.dataset as ds

    from dynamo_cdc.lake import Lake

    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
    lake = Lake(root, s3_client)
    fs, base = lake.arrow_filesystem()
    if view == "current":
        from dynamo_cdc.mirror import read_current

        return read_current(lake, table)
    if view == "snapshot":
        from dynamo_cdc.layout import newest_snapshot

        newest = newest_snapshot(lake, table)
        if newest is None:
            prefix = lake.table_path(table, "snapshot")
            raise FileNotFoundError(f"No snapshot of {table!r} under {lake.uri(prefix)}")
        rel, lineage = newest
        paths = [f"{base}/{rel}/{name}" for name in lineage["files"]]
        return ds.dataset(paths, filesystem=fs, format="parquet").to_table()
    import pyarrow as pa

    rel = lake.table_path(table, "changes")
    # The partition columns' types are declared, never inferred: DuckDB infers `hour=02` as
    # text and `hour=10` as BIGINT, pyarrow both as int32. The README's DuckDB lines pass the
    # same types (hive_types).
    # Named as the lake has them (cdc_date, cdc_hour for a table keyed on date, hour).
    from dynamo_cdc.layout import lake_partition_columns

    names = lake_partition_columns(lake, table, "changes") or [n for n, _ in CHANGE_PARTITION_TYPES]
    types = [t for _, t in CHANGE_PARTITION_TYPES]
    partitioning = ds.partitioning(pa.schema(list(zip(names, types, strict=True))), flavor="hive")
    return ds.dataset(
        f"{base}/{rel}", filesystem=fs, format="parquet", partitioning=partitioning
    ).to_table()
