"""One capture step (dynamo_cdc.capture.capture_once): the Parquet written before the checkpoint
is committed, so a crash between them loses and duplicates nothing; what a step reports."""

from __future__ import annotations

import pytest
from stream_sim import START, TABLE, Workload, assert_exactly_once_in_order, drain, simulator
from stream_sim import capture as capture_step
from stream_sim import stream_client as client_of

from dynamo_cdc.lake import Lake
from dynamo_cdc.local.streams import ManualClock
from dynamo_cdc.stream import ReadBudget


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


# -- crash between the Parquet write and the checkpoint commit -------------------------------


class Crash(Exception):
    pass


def test_crash_between_write_and_commit_loses_and_duplicates_nothing(tmp_path, clock) -> None:
    sim = simulator(clock)
    client = client_of(sim)
    lake = Lake(str(tmp_path))
    work = Workload(sim)
    work.write(1000)
    capture_step(sim, client, lake, clock, ReadBudget(max_records=300))
    work.write(500)
    sim.rotate(TABLE, split=True)
    work.write(500)

    def crash(files: list[str]) -> None:
        assert files
        raise Crash

    with pytest.raises(Crash):
        capture_step(sim, client, lake, clock, ReadBudget(max_records=900), after_write=crash)
    # The re-run reads a different amount than the crashed run wrote.
    capture_step(sim, client, lake, clock, ReadBudget(max_records=250))
    drain(sim, client, lake, clock, ReadBudget(max_records=400))
    assert_exactly_once_in_order(lake, work)


def test_capture_reports_ranges_and_lag(tmp_path, clock) -> None:
    sim = simulator(clock)
    client = client_of(sim)
    Workload(sim).write(100)
    clock.advance(30)
    lake = Lake(str(tmp_path))
    result = capture_step(sim, client, lake, clock, ReadBudget(max_records=40))
    assert result.records == 40 and result.stopped_by == "records"
    [rng] = result.ranges.values()
    assert rng.count == 40 and int(rng.first_sequence_number) < int(rng.last_sequence_number)
    assert result.lag_seconds == pytest.approx(30, abs=1)
    assert result.newest_change_time == "2024-03-01T11:00:00.000000Z"
    assert result.files and all(
        f.startswith(f"{TABLE}/changes/date=2024-03-01/hour=11/") for f in result.files
    )
