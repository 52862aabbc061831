"""The chaos run at a bounded size (see :mod:`tests.e2e.chaos`): a seeded random workload, real
Dagster runs and every kind of injected fault lose nothing and duplicate nothing, and ``current``
equals a Scan.

``CHAOS_MINUTES`` (default 1; every fault kind runs once whatever the time) and ``CHAOS_SEED``
(default: the date's ordinal, so a failure names a seed to replay) make it longer or replay it:
``CHAOS_MINUTES=15 CHAOS_SEED=7 pytest tests/e2e/test_chaos.py -s``.
"""

import os
from datetime import date

import pytest

from tests.e2e.chaos import FAULTS, run_chaos
from tests.e2e.helpers import INSTANCES

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("instance", INSTANCES)
def test_chaos_run_loses_nothing_duplicates_nothing_and_current_equals_a_scan(
    tmp_path, capsys, instance, request
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or date.today().toordinal())
    minutes = float(os.environ.get("CHAOS_MINUTES") or 1.0)
    postgres_env = (
        request.getfixturevalue("postgres").new_instance_env() if instance == "postgres" else None
    )

    figures = run_chaos(seed, minutes, tmp_path, echo=lambda _: None, postgres_env=postgres_env)

    with capsys.disabled():
        print(f"\nchaos run on {instance}: seed {seed} (replay with CHAOS_SEED={seed})")
        print(figures.table())
    problems = figures.problems()
    assert all(figures.faults[kind] >= 1 for kind in FAULTS), problems
    # the faults were real: the server answered throttles and expired iterators
    assert figures.server_errors.get("LimitExceededException", 0) > 0, problems
    assert figures.server_errors.get("ExpiredIteratorException", 0) > 0, problems
    assert figures.stream_records > 1000, problems
    assert figures.rows_lost == 0, problems
    assert figures.duplicates == 0, problems
    assert figures.unexpected_rows == 0, problems
    assert figures.stream_rows == figures.stream_records, problems
    assert figures.current_mismatches == 0, problems
    assert figures.mid_run_mismatches == 0, problems
    assert figures.current_rows == figures.scan_items > 0, problems
    assert figures.failed_checks == 0, problems
    # micro-batches are recorded by the sensor's asset events, not by runs
    assert figures.asset_events["AssetMaterialization"] > 0, problems
    assert not [kind for kind in figures.dagster_runs if kind == "changes (batch)"], problems
