"""The chaos run at a bounded size (see :mod:`tests.e2e.chaos`): a seeded random workload, real
Dagster runs and every kind of injected fault lose nothing and duplicate nothing, and ``current``
equals a Scan.

Two profiles: ``sqlite`` (the project's SQLite instance, runs in this process, the lake in a
folder) and ``production`` (deploy/dagster.yaml on PostgreSQL, every run launched over GraphQL
to ``dagster-webserver``, dequeued by ``dagster-daemon`` and started by ``dagster code-server``
as separate processes, the lake on S3 of the local AWS). The production profile's own replay:
``python -m tests.e2e.chaos --services --seed 7 --minutes 15``.

``CHAOS_MINUTES`` (default 1; every fault kind runs once whatever the time) and ``CHAOS_SEED``
(default: the date's ordinal, so a failure names a seed to replay) make it longer or replay it:
``CHAOS_MINUTES=15 CHAOS_SEED=7 pytest tests/e2e/test_chaos.py -s``.
"""

import os
from datetime import date

import pytest

from tests.e2e.chaos import FAULTS, run_chaos

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("profile", ["sqlite", "production"])
def test_chaos_run_loses_nothing_duplicates_nothing_and_current_equals_a_scan(
    tmp_path, capsys, profile, request
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or date.today().toordinal())
    minutes = float(os.environ.get("CHAOS_MINUTES") or 1.0)
    production = profile == "production"
    postgres_env = request.getfixturevalue("postgres").new_instance_env() if production else None

    figures = run_chaos(
        seed,
        minutes,
        tmp_path,
        echo=lambda _: None,
        postgres_env=postgres_env,
        services=production,
    )

    with capsys.disabled():
        print(f"\nchaos run, {profile} profile: seed {seed} (replay with CHAOS_SEED={seed})")
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
    assert figures.check_evaluations > 0, problems  # the runs' checks did run
    # micro-batches are recorded by the sensor's asset events, not by runs
    assert figures.asset_events["AssetMaterialization"] > 0, problems
    assert not [kind for kind in figures.dagster_runs if kind == "changes (batch)"], problems
    if production:
        # the duplicate backfill was two runs launched together through the services
        assert figures.dagster_runs["changes (duplicate backfill, GraphQL)"] >= 2, problems
        # every killed capture's S3 lease was taken over by a later capture
        killed = figures.faults["sigkill_mid_write"] + figures.faults["sigkill_before_commit"]
        assert figures.leases_aged == killed, problems
