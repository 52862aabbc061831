"""The freshness probe's own parts (``python -m bench.freshness``), without starting the demo:
the write schedule, the figures and exit codes, and finding marker rows in a lake's changes.

The probe itself runs the demo for minutes; it is run by hand (see bench/freshness.py)."""

from pathlib import Path

from bench.freshness import (
    EXIT_LOST,
    EXIT_OK,
    EXIT_TARGET_MISSED,
    ChangesPoller,
    Marker,
    percentile,
    runs_per_table_per_day,
    verdict,
    write_offsets,
)
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.convert import records_to_table
from dynamo_cdc.lake import Lake

KEYS = [("customer_id", "S"), ("order_id", "S")]


def _record(seq: int, customer: str, order: str, when: float) -> dict:
    keys = {"customer_id": {"S": customer}, "order_id": {"S": order}}
    return {
        "eventID": f"e{seq}",
        "eventName": "INSERT",
        "dynamodb": {
            "ApproximateCreationDateTime": when,
            "Keys": keys,
            "NewImage": keys,
            "SequenceNumber": str(seq),
        },
    }


def test_writes_are_spread_one_per_slot_at_random_phases() -> None:
    offsets = write_offsets(40, 300, seed=7)
    assert len(offsets) == 40
    for i, offset in enumerate(offsets):
        assert i * 7.5 <= offset < (i + 1) * 7.5
    assert offsets == write_offsets(40, 300, seed=7)
    assert offsets != write_offsets(40, 300, seed=8)
    phases = {int(o % 30) for o in offsets}
    assert len(phases) > 10  # not locked to the sensor interval


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert percentile(list(range(1, 21)), 0.95) == 19.05
    assert percentile([4.0], 0.95) == 4.0


def _marker(i: int, latency: float | None) -> Marker:
    m = Marker(order_id=f"m{i:04d}", written_at=1000.0 + i)
    if latency is not None:
        m.seen_at = m.landed_at = m.written_at + latency
    return m


def test_verdict_met_missed_and_lost() -> None:
    summary, code = verdict([_marker(i, 10 + i) for i in range(10)], planned=10)
    assert code == EXIT_OK and summary["target"]["met"]
    assert summary["latency_seconds"]["median"] == 14.5

    _, code = verdict([_marker(i, 40.0) for i in range(10)], planned=10)
    assert code == EXIT_TARGET_MISSED

    summary, code = verdict([_marker(0, 5.0), _marker(1, None)], planned=2)
    assert code == EXIT_LOST
    assert summary["lost"] == ["m0001"] and summary["seen"] == 1

    _, code = verdict([_marker(0, 5.0)], planned=2)  # a write that never happened
    assert code == EXIT_LOST


def test_poller_finds_each_marker_once_in_new_files(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    poller = ChangesPoller(lake.root, "orders", "freshness-probe-x")
    assert poller.poll() == {}  # no changes folder yet
    rows = records_to_table(
        [
            _record(100, "k001", "r00001", 1_700_000_000),
            _record(101, "freshness-probe-x", "m0000", 1_700_000_001),
            _record(102, "freshness-probe-other", "m0001", 1_700_000_002),
        ],
        KEYS,
        shard_ids="shardId-1",
    )
    write_change_batch(lake, "orders", rows)
    found = poller.poll()
    assert set(found) == {"m0000"}
    seen, mtime, rel = found["m0000"]
    assert rel.startswith("orders/changes/date=") and mtime <= seen
    assert poller.poll() == {}  # files are read once
    more = records_to_table(
        [_record(103, "freshness-probe-x", "m0001", 1_700_000_003)], KEYS, shard_ids="shardId-1"
    )
    write_change_batch(lake, "orders", more)
    assert set(poller.poll()) == {"m0001"}


def test_runs_per_table_per_day_counts_each_tables_runs_in_the_window_scaled_to_a_day() -> None:
    def run(created: float, table: str | None = None, path: list[str] | None = None) -> dict:
        tags = [{"key": "dynamo_cdc/table", "value": table}] if table else []
        return {
            "creationTime": created,
            "tags": tags,
            "assetSelection": [{"path": path}] if path else [],
        }

    runs = [
        run(100, "orders"),
        run(200, path=["dynamodb", "orders", "current"]),
        run(300, path=["dynamodb", "app_devents_pv1", "changes"]),
        run(30, "orders"),  # before the window
        run(400, path=["elsewhere"]),
    ]
    figures = runs_per_table_per_day(runs, ["orders", "app-events.v1"], 60, 3660)
    assert figures["runs"] == {"orders": 2, "app-events.v1": 1}
    assert figures["per_table_per_day"] == {"orders": 48.0, "app-events.v1": 24.0}
    assert figures["other_runs"] == 1
    assert figures["by_kind"]["orders"] == {"?": 1, "current": 1}
