"""The lake's layout: every path of a table's datasets and state comes from dynamo_cdc.layout,
and reading a path back gives what built it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dynamo_cdc.checkpoint import CheckpointStore
from dynamo_cdc.errors import LakeError
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import (
    capture_lock,
    change_hour_path,
    checkpoint_path,
    hour_of_path,
    mirror_lock,
    newest_snapshot,
    snapshot_dates,
    snapshot_path,
    snapshot_staging_path,
    staging_path,
)

HOUR = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


def test_each_path_of_a_table_is_where_the_data_contract_says(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    assert snapshot_path(lake, "orders", "2026-12-06") == "orders/snapshot/export_date=2026-12-06"
    assert change_hour_path(lake, "orders", HOUR) == "orders/changes/date=2026-12-06/hour=07"
    assert checkpoint_path(lake, "orders") == "orders/_state/stream/checkpoint.json"
    assert capture_lock(lake, "orders") == "orders/_state/stream/capture.lock"
    assert mirror_lock(lake, "orders") == "orders/_state/mirror.lock"
    assert staging_path(lake, "orders") == "orders/_state/staging"
    assert snapshot_staging_path(lake, "orders", "2026-12-06", "x-1") == (
        "orders/_state/snapshot/export_date=2026-12-06/x-1"
    )
    assert CheckpointStore(lake, "orders").path == checkpoint_path(lake, "orders")


def test_a_change_hour_path_reads_back_as_its_hour_whatever_its_columns_are_named(
    tmp_path,
) -> None:
    lake = Lake(str(tmp_path))
    for columns in (None, ("cdc_date", "cdc_hour")):
        rel = change_hour_path(lake, "orders", HOUR, columns)
        assert hour_of_path(f"{rel}/s_1_2.parquet") == HOUR
    assert hour_of_path("orders/snapshot/export_date=2026-12-06/part-0.parquet") is None


def test_a_snapshot_partition_is_not_a_date_unless_it_is_one(tmp_path) -> None:
    with pytest.raises(LakeError, match="YYYY-MM-DD"):
        snapshot_path(Lake(str(tmp_path)), "orders", "2026-12-6/../x")


def test_the_newest_snapshot_is_the_newest_partition_with_its_lineage_file(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    assert newest_snapshot(lake, "orders") is None
    lake.write_bytes("orders/snapshot/export_date=2026-12-04/_lineage.json", b'{"n": 4}')
    lake.write_bytes("orders/snapshot/export_date=2026-12-05/_lineage.json", b'{"n": 5}')
    lake.write_bytes("orders/snapshot/export_date=2026-12-06/part-0.parquet", b"unpublished")

    assert newest_snapshot(lake, "orders") == ("orders/snapshot/export_date=2026-12-05", {"n": 5})
    assert snapshot_dates(lake, "orders") == ["2026-12-04", "2026-12-05"]
