"""The lake's Iceberg tables on a local lake with the embedded SQLite catalog (no server).

Snapshot partitions and change files are laid out as the snapshot and changes modules write
them (the helpers of test_mirror); the Iceberg tables are read back with pyiceberg's own scan,
which knows nothing of our pointer or hidden columns.
"""

from __future__ import annotations

import multiprocessing
import random
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dynamo_cdc import catalog, codec
from dynamo_cdc.lake import Lake
from dynamo_cdc.mirror import bucket_of, key_text, refresh_current
from tests.unit.test_mirror import (
    KEY_NAMES,
    T_EXPORT,
    TABLE,
    Stream,
    expected,
    item,
    items_of,
    start,
    write_snapshot,
)

pytestmark = pytest.mark.iceberg


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def scan(lake: Lake, view: str, **kwargs):
    return catalog.load_table(lake, TABLE, view).scan(**kwargs).to_arrow()


def data_paths(lake: Lake, view: str) -> set[str]:
    tbl = catalog.load_table(lake, TABLE, view)
    return {df.file_path for df in catalog._live_files(tbl)}


def lake_parquet(lake: Lake, rel: str) -> set[str]:
    return {f"file://{lake.uri(r)}" for r in lake.list(rel) if r.endswith(".parquet")}


def land_updates_and_deletes(stream: Stream, updated, deleted, new: int = 0) -> None:
    """Keys ``updated`` get ``v = -1`` and an attribute that is only NULL, keys ``deleted`` are
    deleted a second later, ``new`` keys are inserted: one change file."""
    t = T_EXPORT + timedelta(minutes=1)
    stream.land(
        [stream.put(item("p", i, v={"N": "-1"}, z={"NULL": True}), t) for i in updated]
        + [stream.delete(item("p", i), t + timedelta(seconds=1)) for i in deleted]
        + [stream.put(item("new", i), t) for i in range(new)]
    )


def test_snapshot_is_registered_over_the_lake_files_with_export_date_from_the_partition(lake):
    stream = start(lake, n=40)
    before = {p: Path(p[7:]).read_bytes() for p in lake_parquet(lake, f"{TABLE}/snapshot")}

    result = catalog.publish_snapshot(lake, TABLE, "2024-03-01")

    assert data_paths(lake, "snapshot") == set(before)  # the same files: registered, not copied
    assert {p: Path(p[7:]).read_bytes() for p in before} == before
    rows = scan(lake, "snapshot")
    assert items_of(rows) == expected(stream.model)
    assert set(rows.column("export_date").to_pylist()) == {"2024-03-01"}
    assert result.bytes_written == 0
    assert catalog.table_name(TABLE, "snapshot") == "orders_snapshot"


def test_a_republished_snapshot_partition_replaces_its_files_and_keeps_other_dates(lake):
    start(lake, n=10)
    catalog.publish_snapshot(lake, TABLE, "2024-03-01")
    later = T_EXPORT + timedelta(days=1)
    write_snapshot(lake, [item("q", i) for i in range(3)], when=later, files=1)
    catalog.publish_snapshot(lake, TABLE, "2024-03-02")
    write_snapshot(lake, [item("r", i) for i in range(5)], when=later, files=1)  # a re-run

    catalog.publish_snapshot(lake, TABLE, "2024-03-02")

    rows = scan(lake, "snapshot")
    by_date = {}
    dates, pks = rows.column("export_date").to_pylist(), rows.column("pk").to_pylist()
    for d, pk in zip(dates, pks, strict=True):
        by_date.setdefault(d, set()).add(pk)
    assert by_date == {"2024-03-01": {"p"}, "2024-03-02": {"r"}}
    assert rows.num_rows == 15


def test_change_files_are_registered_as_they_land_and_a_replaced_hour_swaps_in_one_commit(lake):
    stream = start(lake, n=5)
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("p", i, v={"N": "1"}), t) for i in range(3)], shard="s1")
    stream.land([stream.put(item("p", i, v={"N": "2"}), t) for i in range(2)], shard="s2")
    changes = f"{TABLE}/changes"
    assert data_paths(lake, "changes") == lake_parquet(lake, changes)
    assert scan(lake, "changes").num_rows == 5
    # a compaction replaces the hour's files by one file holding the same rows
    hour = sorted({r.rsplit("/", 1)[0] for r in lake.list(changes)})[0]
    merged = pq.read_table([lake.uri(r) for r in lake.list(hour)])
    for r in lake.list(hour):
        lake.delete(r)
    pq.write_table(merged, lake.uri(f"{hour}/compacted-x-000.parquet"))
    history = len(catalog.load_table(lake, TABLE, "changes").history())

    result = catalog.publish_changes(lake, TABLE, [hour])

    assert (result.files_added, result.files_removed) == (1, 2)
    assert len(catalog.load_table(lake, TABLE, "changes").history()) == history + 1
    assert data_paths(lake, "changes") == lake_parquet(lake, changes)
    rows = scan(lake, "changes")
    assert sorted(rows.column("event_id").to_pylist()) == sorted(
        merged.column("event_id").to_pylist()
    )
    assert catalog.publish_changes(lake, TABLE).files_added == 0  # in step: no commit


def test_current_plain_scan_is_one_row_per_live_key_with_deletes_applied(lake):
    stream = start(lake, n=60)
    refresh_current(lake, TABLE, bucket_count=8)
    land_updates_and_deletes(stream, range(0, 60, 4), range(1, 60, 5), new=3)

    refresh_current(lake, TABLE)  # deltas and tombstones in the mirror; the hook publishes

    rows = scan(lake, "current")
    assert items_of(rows) == expected(stream.model)
    assert rows.num_rows == len(stream.model)  # one row per key
    assert not {"_key", "_bucket", "_deleted"} & set(rows.column_names)
    assert "_change_time" in rows.column_names


def test_a_publish_rewrites_only_the_buckets_holding_changed_keys(lake):
    n = 2000
    stream = Stream(lake)
    items = [item("k", i, a={"S": f"v{i}"}) for i in range(n)]
    for it in items:
        stream.model[key_text(it, KEY_NAMES)] = it
    write_snapshot(lake, items, files=2)
    refresh_current(lake, TABLE, bucket_count=64)
    before = data_paths(lake, "current")
    changed = random.Random(3).sample(range(n), 5)
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("k", i, a={"S": "x"}), t) for i in changed])

    refresh_current(lake, TABLE, bucket_count=64)

    buckets = {bucket_of(key_text(item("k", i), KEY_NAMES), 64) for i in changed}
    published = catalog.publish_current(lake, TABLE, force=False)
    assert published.files_added == 0  # the refresh's hook published already
    after = data_paths(lake, "current")
    kept = before & after
    assert len(after) == 64
    assert {catalog._bucket_of_path(p) for p in after - kept} == buckets
    assert len(kept) == 64 - len(buckets)
    assert items_of(scan(lake, "current")) == expected(stream.model)


def test_time_travel_reads_current_as_it_was_at_each_earlier_publish(lake):
    stream = start(lake, n=30)
    refresh_current(lake, TABLE, bucket_count=4)
    states = []
    for step in range(3):
        tbl = catalog.load_table(lake, TABLE, "current")
        states.append((tbl.current_snapshot().snapshot_id, expected(stream.model)))
        t = T_EXPORT + timedelta(minutes=step + 1)
        stream.land(
            [stream.put(item("p", i, v={"N": str(step)}), t) for i in range(step, 30, 3)]
            + [stream.delete(item("p", step + 1), t + timedelta(seconds=1))]
        )
        refresh_current(lake, TABLE)

    for snapshot_id, then in states:
        assert items_of(scan(lake, "current", snapshot_id=snapshot_id)) == then
    assert items_of(scan(lake, "current")) == expected(stream.model)


def test_current_schema_evolves_by_name_and_rewrites_only_what_iceberg_cannot_promote(lake):
    stream = start(lake, n=40)  # v: int64, name: string
    refresh_current(lake, TABLE, bucket_count=8)
    before = data_paths(lake, "current")
    t = T_EXPORT + timedelta(minutes=1)

    # a new attribute: a column added in the metadata; the other buckets' files stay
    stream.land([stream.put(item("p", 0, v={"N": "0"}, colour={"S": "red"}), t)])
    refresh_current(lake, TABLE)
    tbl = catalog.load_table(lake, TABLE, "current")
    assert str(tbl.schema().find_field("colour").field_type) == "string"
    assert len(before - data_paths(lake, "current")) == 1  # only p/0's bucket
    assert items_of(scan(lake, "current")) == expected(stream.model)

    # an attribute that becomes mixed-type (number and string): text in the typed view; Iceberg
    # cannot promote long to string, so the column is replaced and every bucket published again
    stream.land([stream.put(item("p", 1, v={"S": "one"}), t + timedelta(seconds=5))])
    refresh_current(lake, TABLE)
    tbl = catalog.load_table(lake, TABLE, "current")
    assert str(tbl.schema().find_field("v").field_type) == "string"
    rows = scan(lake, "current")
    assert items_of(rows) == expected(stream.model)
    values = dict(zip(rows.column("sk").to_pylist(), rows.column("v").to_pylist(), strict=True))
    assert values[1] == "one" and values[2] == "2"


def test_snapshot_schema_evolves_by_name_and_old_partitions_are_never_rewritten(lake):
    tags = {"SS": ["a", "b"]}  # a list column
    write_snapshot(lake, [item("q", 1, price={"N": "1.25"}, tags=tags)], files=1)
    catalog.publish_snapshot(lake, TABLE, "2024-03-01")
    first = data_paths(lake, "snapshot")
    first_bytes = {p: Path(p[7:]).read_bytes() for p in first}
    day = timedelta(days=1)

    # a new attribute and a widening type (decimal precision grows, same scale): in place
    write_snapshot(lake, [item("q", 2, price={"N": "123456.25"}, tag={"S": "t"})], T_EXPORT + day)
    result = catalog.publish_snapshot(lake, TABLE, "2024-03-02")

    snap = catalog.load_table(lake, TABLE, "snapshot")
    assert str(snap.schema().find_field("price").field_type) == "decimal(8, 2)"
    assert str(snap.schema().find_field("tag").field_type) == "string"
    assert result.replaced_columns == []
    assert first <= data_paths(lake, "snapshot")
    assert {p: Path(p[7:]).read_bytes() for p in first} == first_bytes
    rows = scan(lake, "snapshot")
    columns = [rows.column(c).to_pylist() for c in ("sk", "price", "tag")]
    assert {sk: (str(p), t) for sk, p, t in zip(*columns, strict=True)} == {
        1: ("1.25", None),
        2: ("123456.25", "t"),
    }
    widened = snap.current_snapshot().snapshot_id

    # a type Iceberg cannot promote (the attribute becomes mixed: string): the column is
    # replaced and the partitions written with the old type leave the table; their files stay
    # in the lake and earlier Iceberg snapshots still read them
    write_snapshot(lake, [item("q", 3, price={"S": "n/a"})], T_EXPORT + 2 * day, files=1)
    result = catalog.publish_snapshot(lake, TABLE, "2024-03-03")

    assert result.replaced_columns == ["price"]
    rows = scan(lake, "snapshot")
    assert rows.column("price").to_pylist() == ["n/a"]
    assert {p: Path(p[7:]).read_bytes() for p in first} == first_bytes
    assert scan(lake, "snapshot", snapshot_id=widened).num_rows == 2


def test_a_commit_that_loses_to_another_writer_is_planned_again_and_both_land(lake):
    stream = start(lake, n=5)
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("p", 0), t)], shard="s1")
    first_hour = sorted({r.rsplit("/", 1)[0] for r in lake.list(f"{TABLE}/changes")})
    t2 = T_EXPORT + timedelta(hours=1, minutes=1)
    import dynamo_cdc.catalog as module

    real = module._commit_files
    calls = []

    def racing_commit(tx, tbl, remove, add, partition_of):
        calls.append(add)
        if len(calls) == 1:  # another writer lands and commits while this one plans
            stream.land([stream.put(item("p", 1), t2)], shard="s2")
        return real(tx, tbl, remove, add, partition_of)

    module._commit_files = racing_commit
    try:
        lake.delete(f"{TABLE}/_iceberg")  # start the table from nothing for this writer
        lake.delete("_iceberg")
        result = catalog.publish_changes(lake, TABLE, first_hour)
    finally:
        module._commit_files = real

    assert result.attempts == 2  # the first commit failed: the other writer was first
    assert data_paths(lake, "changes") == lake_parquet(lake, f"{TABLE}/changes")
    assert scan(lake, "changes").num_rows == 2


def _land_hours(root: str, shard: str, first_hour: int) -> None:
    import os

    os.environ["DYNAMO_CDC_ICEBERG"] = "sql"
    lake = Lake(root)
    stream = Stream(lake)
    stream.seq += 10**6 * first_hour
    for h in range(first_hour, first_hour + 6):
        t = T_EXPORT + timedelta(hours=h, minutes=1)
        stream.land([stream.put(item(shard, h), t)], shard=shard)


def test_two_writer_processes_committing_at_once_lose_nothing(lake):
    start(lake, n=3)
    catalog.publish_changes(lake, TABLE)  # nothing yet: creates no table
    ctx = multiprocessing.get_context("spawn")  # hours 3 to 5 are written by both
    procs = [
        ctx.Process(target=_land_hours, args=(lake.root, name, first))
        for name, first in (("a", 0), ("b", 3))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0

    assert data_paths(lake, "changes") == lake_parquet(lake, f"{TABLE}/changes")
    rows = scan(lake, "changes")
    assert rows.num_rows == 12
    assert (
        sorted(codec.item_from_json_text(k)["pk"]["S"] for k in rows.column("_keys").to_pylist())
        == ["a"] * 6 + ["b"] * 6
    )


def test_replaced_bucket_files_go_once_their_snapshots_are_older_than_the_keep_time(
    lake, monkeypatch
):
    stream = start(lake, n=40)
    refresh_current(lake, TABLE, bucket_count=4)
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("p", i, v={"N": "9"}), t) for i in range(40)])
    refresh_current(lake, TABLE)  # every bucket replaced; kept for an hour by default
    data = f"{TABLE}/_iceberg/current/data"
    assert len(lake.list(data)) == 8
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG_KEEP_SECONDS", "0")
    stream.land([stream.put(item("p", 0, v={"N": "10"}), t + timedelta(seconds=1))])

    refresh_current(lake, TABLE)

    tbl = catalog.load_table(lake, TABLE, "current")
    assert len(tbl.snapshots()) == 1
    assert {f"file://{lake.uri(r)}" for r in lake.list(data)} == data_paths(lake, "current")
    assert items_of(scan(lake, "current")) == expected(stream.model)


def test_iceberg_off_writes_no_catalog(lake, monkeypatch):
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG", "off")
    stream = start(lake, n=5)
    stream.land([stream.put(item("p", 0), T_EXPORT)])
    refresh_current(lake, TABLE, bucket_count=2)

    assert not Path(lake.uri("_iceberg")).exists()
    assert not Path(lake.uri(f"{TABLE}/_iceberg")).exists()


def test_snapshot_and_changes_snapshots_expire_after_the_keep_time_and_their_files_stay(
    lake, monkeypatch
):
    stream = start(lake, n=5)
    t = T_EXPORT + timedelta(minutes=1)
    catalog.publish_snapshot(lake, TABLE, "2024-03-01")
    stream.land([stream.put(item("p", 0), t)], shard="s1")
    stream.land([stream.put(item("p", 1), t)], shard="s2")
    catalog.publish_snapshot(lake, TABLE, "2024-03-01")  # a re-run: a second snapshot
    assert len(catalog.load_table(lake, TABLE, "changes").snapshots()) == 2  # kept an hour
    snapshot_files = data_paths(lake, "snapshot")
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG_KEEP_SECONDS", "0")

    stream.land([stream.put(item("p", 2), t)], shard="s3")
    catalog.publish_snapshot(lake, TABLE, "2024-03-01")

    for view in ("snapshot", "changes"):
        assert len(catalog.load_table(lake, TABLE, view).snapshots()) == 1
    # their data files are the lake's: expiring a snapshot never deletes one
    assert data_paths(lake, "snapshot") == snapshot_files
    assert all(Path(p[7:]).exists() for p in snapshot_files)
    assert data_paths(lake, "changes") == lake_parquet(lake, f"{TABLE}/changes")
    assert scan(lake, "changes").num_rows == 3


def _sorted(rows):
    return rows.sort_by([("pk", "ascending"), ("sk", "ascending")])


def test_read_table_current_reads_the_iceberg_table_when_it_is_as_new_as_the_mirror(
    lake, monkeypatch
):
    from dynamo_cdc import mirror, read_table

    stream = start(lake, n=40)
    refresh_current(lake, TABLE, bucket_count=4)
    land_updates_and_deletes(stream, range(0, 40, 3), range(1, 40, 7))
    refresh_current(lake, TABLE)  # the mirror holds deltas; the hook published this version
    mirror_files_read = []
    real = mirror.read_files
    monkeypatch.setattr(
        mirror, "read_files", lambda *a, **k: mirror_files_read.append(a[1]) or real(*a, **k)
    )

    fresh = read_table(lake.root, TABLE, "current")

    assert mirror_files_read == []  # a plain scan of the Iceberg table, no merge of ours
    assert items_of(fresh) == expected(stream.model)
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG", "off")
    from_mirror = read_table(lake.root, TABLE, "current")
    assert mirror_files_read  # with the catalog off, the mirror is read
    assert _sorted(fresh).equals(_sorted(from_mirror), check_metadata=True)  # same columns


def test_read_table_current_reads_the_mirror_while_the_iceberg_table_lags(lake, monkeypatch):
    from dynamo_cdc import read_table

    stream = start(lake, n=20)
    refresh_current(lake, TABLE, bucket_count=2)
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG_PUBLISH_SECONDS", "3600")  # publish at most hourly
    stream.land([stream.put(item("p", 0, v={"N": "7"}), T_EXPORT + timedelta(minutes=1))])
    refresh_current(lake, TABLE)  # the mirror moves on; the Iceberg table is not published

    assert items_of(scan(lake, "current")) != expected(stream.model)
    assert items_of(read_table(lake.root, TABLE, "current")) == expected(stream.model)


def _mirror_version_published(lake: Lake) -> int:
    snap = catalog.load_table(lake, TABLE, "current").current_snapshot()
    return int(snap.summary.additional_properties[catalog.MIRROR_VERSION_PROPERTY])


@pytest.mark.parametrize("newer_commits_first", [True, False])
def test_two_publishes_of_current_at_once_are_serialised_by_the_catalog_and_the_newest_wins(
    lake, monkeypatch, newer_commits_first
):
    stream = start(lake, n=30)
    refresh_current(lake, TABLE, bucket_count=4)
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG_PUBLISH_SECONDS", "3600")  # refreshes do not publish
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("p", i, v={"N": "1"}), t) for i in range(0, 30, 2)])
    refresh_current(lake, TABLE)  # version 2
    real = catalog._bucket_rows
    raced = []

    def other_writer_commits_meanwhile(*args, **kwargs):
        if not raced:  # while this writer builds its files, another one commits
            raced.append(True)
            if newer_commits_first:
                stream.land([stream.put(item("p", 1, v={"N": "2"}), t + timedelta(seconds=1))])
                refresh_current(lake, TABLE)  # version 3
            catalog.publish_current(lake, TABLE)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "_bucket_rows", other_writer_commits_meanwhile)
    result = catalog.publish_current(lake, TABLE)  # planned from version 2

    assert result.attempts == 2  # its first commit lost to the other writer's, then replanned
    newest = 3 if newer_commits_first else 2
    assert _mirror_version_published(lake) == newest  # an older version never wins
    assert items_of(scan(lake, "current")) == expected(stream.model)


def test_read_table_current_gives_every_dynamodb_type_the_same_from_iceberg_as_from_the_mirror(
    lake, monkeypatch
):
    from dynamo_cdc import read_table
    from tests.cases.all_types import ALL_TYPES_ITEMS

    write_snapshot(lake, ALL_TYPES_ITEMS, files=1)
    refresh_current(lake, TABLE, bucket_count=2)
    assert _mirror_version_published(lake) == 1  # the Iceberg table is as new as the mirror

    fresh = read_table(lake.root, TABLE, "current")
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG", "off")
    from_mirror = read_table(lake.root, TABLE, "current")

    assert fresh.num_rows == len(ALL_TYPES_ITEMS)
    assert _sorted(fresh).equals(_sorted(from_mirror), check_metadata=True)


def test_a_mirror_rebuilt_from_the_same_snapshot_is_published_again_and_never_read_stale(lake):
    from dynamo_cdc import read_table

    stream = start(lake, n=20)
    refresh_current(lake, TABLE, bucket_count=2)
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("p", 0, v={"N": "1"}), t)])
    refresh_current(lake, TABLE)  # version 2, published
    lake.delete(f"{TABLE}/current")  # the mirror is rebuilt: its versions start at 1 again
    refresh_current(lake, TABLE, bucket_count=2)  # from the same snapshot, as many buckets
    stream.land([stream.put(item("p", 1, v={"N": "2"}), t + timedelta(seconds=1))])

    refresh_current(lake, TABLE)  # version 2 again, of another mirror

    assert items_of(read_table(lake.root, TABLE, "current")) == expected(stream.model)
    assert items_of(scan(lake, "current")) == expected(stream.model)


def _refresh_rounds(root: str, shard: str, seq_offset: int) -> None:
    import os

    os.environ["DYNAMO_CDC_ICEBERG"] = "sql"
    lake = Lake(root)
    stream = Stream(lake)
    stream.seq += seq_offset
    for r in range(3):
        stream.land([stream.put(item(shard, r), T_EXPORT + timedelta(minutes=r + 1))], shard=shard)
        refresh_current(lake, TABLE)  # each refresh publishes current (the hook)


def test_two_writer_processes_refreshing_current_at_once_leave_it_complete_and_published(lake):
    from dynamo_cdc import read_table
    from dynamo_cdc.mirror import load_pointer

    stream = start(lake, n=10)
    refresh_current(lake, TABLE, bucket_count=2)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_refresh_rounds, args=(lake.root, shard, offset))
        for shard, offset in (("a", 10**6), ("b", 2 * 10**6))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    for shard in ("a", "b"):
        for r in range(3):
            stream.model[key_text(item(shard, r), KEY_NAMES)] = item(shard, r)

    assert _mirror_version_published(lake) == load_pointer(lake, TABLE)["version"]
    assert items_of(scan(lake, "current")) == expected(stream.model)
    assert items_of(read_table(lake.root, TABLE, "current")) == expected(stream.model)


def test_a_scan_of_current_planned_before_a_publish_still_reads_after_it(lake):
    stream = start(lake, n=40)
    refresh_current(lake, TABLE, bucket_count=4)
    before = expected(stream.model)
    planned = catalog.load_table(lake, TABLE, "current")  # an engine loaded the table
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("p", i, v={"N": "9"}), t) for i in range(40)])

    refresh_current(lake, TABLE, compact_ratio=0.0)  # the mirror compacts; every bucket replaced

    assert not data_paths(lake, "current") & {df.file_path for df in catalog._live_files(planned)}
    assert items_of(planned.scan().to_arrow()) == before  # its files are still there
    assert items_of(scan(lake, "current")) == expected(stream.model)
