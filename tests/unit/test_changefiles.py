"""Change files: hour partitions, file names from shard and sequence range, and re-runs or
re-reads that neither duplicate nor lose a record."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_records import KEYS, T0
from stream_records import record as _record

from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.convert import records_to_table
from dynamo_cdc.lake import Lake

# -- files -------------------------------------------------------------------------------------


def _hours_batch(shard: str, first_seq: int, n: int, start: datetime = T0) -> list[dict]:
    # One record per 10 minutes: n=12 spans three hour partitions from 10:59:59.
    return [
        _record(i, seq=first_seq + i, when=start.timestamp() + 600 * i, pk=f"k{i % 3}")
        for i in range(n)
    ]


def test_records_land_in_the_hour_partition_of_their_creation_time(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    files = write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    parts = sorted({f.rsplit("/", 1)[0] for f in files})
    assert parts == [
        "orders/changes/date=2024-03-01/hour=10",
        "orders/changes/date=2024-03-01/hour=11",
        "orders/changes/date=2024-03-01/hour=12",
    ]
    for f in files:
        table = pq.read_table(tmp_path / f)
        hour = int(f.split("hour=")[1][:2])
        assert {t.hour for t in table.column("approximate_creation_time").to_pylist()} == {hour}


def test_file_names_derive_from_shard_and_sequence_range(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 500, 3, start=datetime(2024, 3, 1, 10, 0, tzinfo=UTC))
    [f] = write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    assert f.endswith(f"/s1_{'500'.zfill(40)}_{'502'.zfill(40)}.parquet")


def test_rewriting_the_same_range_overwrites(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    rows = records_to_table(_hours_batch("s1", 10**21, 12), KEYS, shard_ids="s1")
    first = write_change_batch(lake, "orders", rows)
    second = write_change_batch(lake, "orders", rows)
    assert first == second
    assert lake.list("orders/changes") == first


def test_a_shorter_rerun_replaces_the_uncommitted_longer_file(tmp_path) -> None:
    """A crashed run wrote seq 0..11 but never committed; the re-run reads only 0..4, then the
    next run 5..11. The lake must end with every record exactly once."""
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(recs[:5], KEYS, shard_ids=["s1"] * 5))
    write_change_batch(lake, "orders", records_to_table(recs[5:], KEYS, shard_ids="s1"))
    ids = (
        duckdb.sql(
            f"select event_id from read_parquet('{tmp_path}/orders/changes/*/*/*.parquet', "
            "hive_partitioning=true)"
        )
        .fetchnumpy()["event_id"]
        .tolist()
    )
    assert sorted(ids) == sorted(r["eventID"] for r in recs)


def test_other_shards_files_are_left_alone(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 3)
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s2"))
    files = lake.list("orders/changes")
    assert len(files) == 4  # two hour partitions x two shards
    assert sorted({f.rsplit("/", 1)[1].split("_")[0] for f in files}) == ["s1", "s2"]


def test_duckdb_reads_the_partitions_with_hive_columns(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    rows = duckdb.sql(
        f"select date, hour, count(*) n, min(sequence_number) s from read_parquet("
        f"'{tmp_path}/orders/changes/*/*/*.parquet', hive_partitioning=true) "
        "group by all order by all"
    ).fetchall()
    assert [(str(d), h, n) for d, h, n, _ in rows] == [
        ("2024-03-01", 10, 1),
        ("2024-03-01", 11, 6),
        ("2024-03-01", 12, 5),
    ]


def test_export_rows_without_shard_need_a_batch_id(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    rows = records_to_table([_record(1)], KEYS, source="export")
    with pytest.raises(ValueError, match="batch_id"):
        write_change_batch(lake, "orders", rows)
    [f] = write_change_batch(lake, "orders", rows, batch_id="export-123")
    assert f.endswith("/export-123.parquet")
    assert pq.read_table(tmp_path / f).column("source").to_pylist() == ["export"]


def _landed_ids(root) -> list[str]:
    return sorted(
        duckdb.sql(
            f"select event_id from read_parquet('{root}/orders/changes/*/*/*.parquet', "
            "hive_partitioning=true)"
        )
        .fetchnumpy()["event_id"]
        .tolist()
    )


def test_a_reread_that_partly_overlaps_a_committed_file_loses_and_duplicates_nothing(
    tmp_path,
) -> None:
    """After a checkpoint reset, capture re-reads from TRIM_HORIZON: the stream was trimmed
    to seq 4, so the re-read starts inside the committed file 0..9 (records 0..3 are no longer
    in the stream). The committed file must stay, and the re-read add only 10..14."""
    lake = Lake(str(tmp_path))
    start = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    recs = [_record(i, seq=10**21 + i, when=start.timestamp() + i) for i in range(15)]
    [committed] = write_change_batch(
        lake, "orders", records_to_table(recs[:10], KEYS, shard_ids="s1")
    )

    paths = write_change_batch(lake, "orders", records_to_table(recs[4:], KEYS, shard_ids="s1"))

    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in recs)
    assert committed in paths and lake.exists(committed)
    [new] = [p for p in paths if p != committed]
    assert new.endswith(f"/s1_{str(10**21 + 10).zfill(40)}_{str(10**21 + 14).zfill(40)}.parquet")


def test_a_reread_inside_a_committed_file_writes_nothing(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    start = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    recs = [_record(i, seq=10**21 + i, when=start.timestamp() + i) for i in range(10)]
    [committed] = write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))

    paths = write_change_batch(lake, "orders", records_to_table(recs[3:6], KEYS, shard_ids="s1"))

    assert paths == [committed]
    assert lake.list("orders/changes") == [committed]
    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in recs)


def test_a_reread_over_a_compacted_hour_duplicates_nothing(tmp_path) -> None:
    """Compacted files carry no shard range in their names: the re-read must still find the
    records in them (by statistics and event_id), for its own shard only."""
    from dynamo_cdc.checkpoint import ShardCheckpoint, StreamCheckpoint
    from dynamo_cdc.compaction import COMPACTED_PREFIX, compact_hour

    lake = Lake(str(tmp_path))
    start = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    s1 = [_record(i, seq=10**21 + i, when=start.timestamp() + i) for i in range(10)]
    s2 = [_record(100 + i, seq=10**21 + i, when=start.timestamp() + i) for i in range(10)]
    write_change_batch(lake, "orders", records_to_table(s1[:6], KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(s1[6:], KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(s2[:5], KEYS, shard_ids="s2"))
    done = ShardCheckpoint(last_sequence_number=str(10**21 + 9))
    checkpoint = StreamCheckpoint("orders", "arn", {"s1": done, "s2": done})
    assert compact_hour(lake, "orders", start, checkpoint, force=True).compacted
    [compacted] = lake.list("orders/changes")
    assert compacted.rsplit("/", 1)[1].startswith(COMPACTED_PREFIX)

    # s1 re-read from seq 2 (trimmed before): nothing new; s2 re-read from 3: 5..9 are new
    write_change_batch(lake, "orders", records_to_table(s1[2:], KEYS, shard_ids="s1"))
    paths = write_change_batch(lake, "orders", records_to_table(s2[3:], KEYS, shard_ids="s2"))

    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in s1 + s2)
    assert compacted in paths and len(paths) == 2


def test_a_crashed_runs_files_are_kept_and_the_rerun_adds_only_the_rest(tmp_path) -> None:
    """A run wrote 0..7 in two hours and crashed before its commit; the re-run (another
    budget) reads 0..11: the lake ends with every record once, and no file was deleted."""
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    crashed = write_change_batch(lake, "orders", records_to_table(recs[:8], KEYS, shard_ids="s1"))

    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))

    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in recs)
    assert set(crashed) <= set(lake.list("orders/changes"))


@given(st.lists(st.integers(0, 19), min_size=1, max_size=20), st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_file_s_rows_are_the_rows_picked_whether_taken_or_sliced(
    picks: list[int], run: bool
) -> None:
    import numpy as np

    from dynamo_cdc.changefiles import _rows_at

    rows = pa.Table.from_batches(  # two chunks, as a poll of two pages gives
        [pa.record_batch({"i": list(range(lo, lo + 10))}) for lo in (0, 10)]
    )
    idx = np.arange(picks[0], min(20, picks[0] + len(picks))) if run else np.array(picks)
    assert _rows_at(rows, idx).column("i").to_pylist() == idx.tolist()
