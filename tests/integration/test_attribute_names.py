"""Attributes named like our columns: tables keyed on ``date`` and ``hour`` (time series), on
``export_date`` and ``Hour``, with attributes named like our columns (``_item``, ``_keys``,
``export_date``, ``EXPORT_DATE``, ``event_id``): every view (snapshot, changes, current) read
through ``read_table`` and through DuckDB with ``hive_partitioning=true`` gives each key
attribute's own values under its own name, and every attribute in ``_item`` or the images."""

from __future__ import annotations

import json

import duckdb
import pytest

from dynamo_cdc import catalog, codec, read_table
from dynamo_cdc.capture import capture_once
from dynamo_cdc.errors import LakeError
from dynamo_cdc.export import ExportRequest
from dynamo_cdc.lake import Lake
from dynamo_cdc.layout import partition_columns
from dynamo_cdc.mirror import duckdb_query, refresh_current
from dynamo_cdc.snapshot import take_snapshot
from dynamo_cdc.stream import ReadBudget
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration

#: (hash key, its type, range key, its type) of each table shape.
SHAPES = {
    "date_hour": ("date", "S", "hour", "N"),
    "export_date_Hour": ("export_date", "S", "Hour", "N"),
}


def make_keyed_table(
    clients, hash_key: str, hash_type: str, range_key: str, range_type: str
) -> str:
    name = unique_name()
    clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": hash_key, "AttributeType": hash_type},
            {"AttributeName": range_key, "AttributeType": range_type},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    clients.dynamodb.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    return name


def _item(hash_key: str, range_key: str, day: int, hour: int) -> dict:
    """An item whose non-key attributes are named like our columns."""
    return {
        "export_date": {"S": f"attribute-{day}"},
        "EXPORT_DATE": {"S": "upper"},
        "_item": {"S": "not ours"},
        "_keys": {"N": str(day)},
        "event_id": {"S": f"mine-{day}-{hour}"},
        "cdc_date": {"BOOL": True},
        hash_key: {"S": f"2025-01-{day:02d}"},
        range_key: {"N": str(hour)},
    }


def _keys_of(rows: list[dict], hash_key: str, range_key: str) -> set[tuple]:
    return {(r[hash_key], int(r[range_key])) for r in rows}


def _every_view(clients, bucket, lake: Lake, shape: str) -> tuple[str, list[dict], set[tuple]]:
    """A table of ``shape`` with a snapshot, two captures and ``current``: (its name, the items
    written, their keys)."""
    hash_key, hash_type, range_key, range_type = SHAPES[shape]
    table = make_keyed_table(clients, hash_key, hash_type, range_key, range_type)
    written = [_item(hash_key, range_key, day, hour) for day in (1, 2) for hour in (0, 7, 23)]
    for item in written[:3]:
        clients.dynamodb.put_item(TableName=table, Item=item)
    capture_once(clients, lake, table, ReadBudget(max_records=100))
    take_snapshot(
        clients, lake, ExportRequest(table=table, bucket=bucket, prefix="e"), poll_seconds=0.05
    )
    for item in written[3:]:
        clients.dynamodb.put_item(TableName=table, Item=item)
    capture_once(clients, lake, table, ReadBudget(max_records=100))
    refresh_current(lake, table, key_attributes=[hash_key, range_key])
    return table, written, {(i[hash_key]["S"], int(i[range_key]["N"])) for i in written}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_view_keeps_key_attributes_named_like_partition_columns(
    clients, bucket, tmp_path, shape: str
) -> None:
    hash_key, _, range_key, _ = SHAPES[shape]
    lake = Lake(str(tmp_path / "lake"))
    table, written, keys = _every_view(clients, bucket, lake, shape)
    root = lake.root

    snapshot = read_table(root, table, "snapshot").to_pylist()
    changes = read_table(root, table, "changes").to_pylist()
    current = read_table(root, table, "current").to_pylist()

    assert _keys_of(snapshot, hash_key, range_key) == {k for k in keys if k[0].endswith("01")}
    assert _keys_of(changes, hash_key, range_key) == keys
    assert _keys_of(current, hash_key, range_key) == keys
    items = {codec.item_to_json_text(i) for i in written}
    assert {codec.item_to_json_text(codec.item_from_json_text(r["_item"])) for r in current} == (
        items
    )
    assert {codec.item_to_json_text(json.loads(r["_new_image"])) for r in changes} == items

    (snap_col,) = partition_columns("snapshot", [hash_key, range_key])
    date_col, hour_col = partition_columns("changes", [hash_key, range_key])
    (snap_folder,) = lake.folders(f"{table}/snapshot")
    assert snap_folder.startswith(f"{snap_col}=")
    hours = {
        (d.split("=", 1)[1], h.split("=", 1)[1])
        for d in lake.folders(f"{table}/changes")
        for h in lake.folders(f"{table}/changes/{d}")
    }
    con = duckdb.connect()
    hive = "hive_partitioning = true"
    rows = con.execute(
        f'SELECT "{hash_key}", "{range_key}", "{snap_col}" FROM '
        f"read_parquet('{root}/{table}/snapshot/*/*.parquet', {hive})"
    ).fetchall()
    assert {(h, int(r)) for h, r, _ in rows} == {k for k in keys if k[0].endswith("01")}
    assert {str(p) for *_, p in rows} == {snap_folder.split("=", 1)[1]}
    rows = con.execute(
        f'SELECT "{hash_key}", "{range_key}", "{date_col}", "{hour_col}" FROM '
        f"read_parquet('{root}/{table}/changes/*/*/*.parquet', {hive})"
    ).fetchall()
    assert {(h, int(r)) for h, r, *_ in rows} == keys
    assert {(str(d), f"{int(h):02d}") for *_, d, h in rows} <= hours
    rows = con.execute(duckdb_query(lake, table)).to_arrow_table().to_pylist()
    assert _keys_of(rows, hash_key, range_key) == keys


@pytest.mark.iceberg
@pytest.mark.parametrize("shape", SHAPES)
def test_the_iceberg_tables_hold_every_view_of_a_table_keyed_like_partition_columns(
    clients, bucket, tmp_path, shape: str
) -> None:
    hash_key, _, range_key, _ = SHAPES[shape]
    lake = Lake(str(tmp_path / "lake"))
    table, _, keys = _every_view(clients, bucket, lake, shape)

    catalog.publish_all(lake, table)  # raises where the writers' own publish failed

    for view in ("snapshot", "changes"):
        tbl = catalog.load_table(lake, table, view)
        registered = {df.file_path for df in catalog._live_files(tbl)}
        files = [r for r in lake.list(f"{table}/{view}") if r.endswith(".parquet")]
        assert registered == {f"file://{lake.uri(r)}" for r in files}, view
    for view in ("changes", "current"):
        rows = catalog.load_table(lake, table, view).scan().to_arrow().to_pylist()
        assert _keys_of(rows, hash_key, range_key) == keys, view


def test_partition_columns_give_way_to_key_attributes_case_insensitively() -> None:
    assert partition_columns("changes", ["pk", "sk"]) == ("date", "hour")
    assert partition_columns("changes", ["date", "hour"]) == ("cdc_date", "cdc_hour")
    assert partition_columns("changes", ["Date", "cdc_DATE"]) == ("cdc_cdc_date", "hour")
    assert partition_columns("snapshot", ["EXPORT_DATE"]) == ("cdc_export_date",)
    assert partition_columns("snapshot", ["date", "hour"]) == ("export_date",)


def test_a_lake_written_before_the_rule_is_refused_with_the_fix(clients, tmp_path) -> None:
    table = make_keyed_table(clients, "date", "S", "hour", "N")
    lake = Lake(str(tmp_path / "lake"))
    lake.write_bytes(f"{table}/changes/date=2025-01-01/hour=00/old.parquet", b"")
    clients.dynamodb.put_item(TableName=table, Item=_item("date", "hour", 1, 0))

    with pytest.raises(LakeError, match="docs/lake-layout.md"):
        capture_once(clients, lake, table, ReadBudget(max_records=100))
