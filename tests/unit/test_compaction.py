"""Compaction of a closed hour: which hours are closed, which files are committed, and the
names that tell change files from compacted ones. (The sensor's request of a compaction, and a
compaction of a captured hour end to end: test_sensor.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow.dataset as ds
from stream_records import KEYS
from stream_records import record as _record

from dynamo_cdc.changefiles import data_files, file_range, write_change_batch
from dynamo_cdc.checkpoint import ShardCheckpoint, StreamCheckpoint
from dynamo_cdc.compaction import COMPACTED_PREFIX, compact_hour, hour_is_closed
from dynamo_cdc.convert import records_to_table
from dynamo_cdc.lake import Lake

HOUR = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def _write(lake: Lake, shard: str, seqs: range) -> list[str]:
    recs = [_record(i, seq=10**21 + i, when=HOUR.timestamp() + i) for i in seqs]
    return write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids=shard))


def _committed(**last: int) -> StreamCheckpoint:
    shards = {s: ShardCheckpoint(last_sequence_number=str(10**21 + n)) for s, n in last.items()}
    return StreamCheckpoint("orders", "arn", shards, updated_at=HOUR.timestamp() + 3600)


def test_a_change_file_name_gives_its_shard_range_and_other_names_none() -> None:
    first, last = "1".zfill(40), "9".zfill(40)
    assert file_range(f"t/changes/date=x/hour=y/shardId-0001_{first}_{last}.parquet") == (
        "shardId-0001",
        first,
        last,
    )
    assert file_range(f"{COMPACTED_PREFIX}0123456789abcdef-000.parquet") is None
    assert file_range("export-123.parquet") is None
    assert file_range(f"s_{first}_{last}.json") is None


def test_uncommitted_files_are_never_folded_into_a_compacted_file(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "s1", range(0, 5))
    _write(lake, "s1", range(5, 10))  # its checkpoint "was never committed"
    files = data_files(lake, "orders/changes")
    assert len(files) == 2

    result = compact_hour(lake, "orders", HOUR, _committed(s1=4), force=True)

    assert not result.compacted and "beyond the committed checkpoint" in result.reason
    assert data_files(lake, "orders/changes") == files


def test_a_committed_closed_hour_becomes_one_file_with_exactly_its_rows(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "s1", range(0, 5))
    _write(lake, "s1", range(5, 10))
    _write(lake, "s2", range(0, 3))
    rel = "orders/changes"
    before = ds.dataset(lake.uri(rel), format="parquet").to_table().sort_by("event_id")

    caught_up = HOUR.timestamp() + 3600 + 300
    result = compact_hour(
        lake, "orders", HOUR, _committed(s1=9, s2=2), caught_up_at=caught_up, target_rows=100
    )

    assert result.compacted and result.rows == 13 and len(result.files_after) == 1
    assert result.files_after[0].rsplit("/", 1)[1].startswith(COMPACTED_PREFIX)
    after = ds.dataset(lake.uri(rel), format="parquet").to_table().sort_by("event_id")
    assert after.equals(before)


def test_an_hour_is_closed_once_capture_caught_up_past_its_grace_or_retention_passed() -> None:
    fresh = StreamCheckpoint("orders", "arn", {}, updated_at=HOUR.timestamp() + 3600)
    end = HOUR.timestamp() + 3600
    assert not hour_is_closed(HOUR, fresh, caught_up_at=end + 10, grace_seconds=300)[0]
    assert hour_is_closed(HOUR, fresh, caught_up_at=end + 300, grace_seconds=300)[0]
    old = StreamCheckpoint("orders", "arn", {}, updated_at=end + 24 * 3600)
    assert hour_is_closed(HOUR, old)[0]
