"""Dagster's pool race, measured: two runs of one pooled asset launched at the same moment.

    python -m tests.e2e.pool_race --pairs 10      # SQLite, then PostgreSQL

Each pair is two ``dagster asset materialize`` processes of an asset in a pool with one slot
(``concurrency.pools.default_limit: 1``), started together on a fresh instance. A pair *raced*
when Dagster let both steps run at once (each step's STEP_START .. STEP_SUCCESS window, from the
event log, overlaps the other's). SQLite: the project's ``dagster_project/dagster.yaml``;
PostgreSQL: ``deploy/dagster.yaml`` on a server started here (tests/postgres.py).

dynamo-cdc does not rely on the pool for correctness: a capture holds the table's lock in the
lake whatever Dagster did (tests/e2e/test_materialize_cli.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"

ASSET_FILE = """
import time
import dagster as dg

@dg.asset(pool="race_pool")
def race() -> None:
    time.sleep(2)

defs = dg.Definitions(assets=[race])
"""


def step_windows(home: Path, env: dict[str, str]) -> list[tuple[float, float]]:
    """(start, end) of every ``race`` step in the instance at ``home``."""
    import dagster as dg

    saved = dict(os.environ)
    os.environ.update(env, DAGSTER_HOME=str(home))
    try:
        with dg.DagsterInstance.get() as instance:
            windows = []
            for run in instance.get_runs():
                start = end = None
                for record in instance.all_logs(run.run_id):
                    event = record.dagster_event
                    if event is None or record.step_key != "race":
                        continue
                    if event.event_type_value == "STEP_START":
                        start = record.timestamp
                    elif event.event_type_value == "STEP_SUCCESS":
                        end = record.timestamp
                if start is not None and end is not None:
                    windows.append((start, end))
            return windows
    finally:
        os.environ.clear()
        os.environ.update(saved)


def race_once(kind: str, folder: Path, extra_env: dict[str, str]) -> bool | None:
    """One pair on a fresh instance; True if the two steps overlapped, None if a run failed."""
    home = folder / "home"
    home.mkdir()
    config = REPO / ("deploy" if kind == "postgres" else "dagster_project") / "dagster.yaml"
    shutil.copy(config, home / "dagster.yaml")
    (folder / "race_defs.py").write_text(ASSET_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(extra_env, DAGSTER_HOME=str(home))
    # the schema first: two processes creating a fresh SQLite schema is another race
    subprocess.run([str(DAGSTER), "instance", "migrate"], env=env, check=True, capture_output=True)
    cmd = [str(DAGSTER), "asset", "materialize", "-f", str(folder / "race_defs.py")]
    procs = [
        subprocess.Popen(
            [*cmd, "--select", "race"],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    if codes != [0, 0]:
        return None
    windows = sorted(step_windows(home, extra_env))
    if len(windows) != 2:
        return None
    (_, e1), (s2, _) = windows
    return s2 < e1


@contextmanager
def _folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dynamo-cdc-pool-race-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args()
    # stopped by a signal: unwind, so the PostgreSQL server started here is stopped by its pid
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests.postgres import missing_reason, postgres_server

    results: dict[str, list[bool | None]] = {"sqlite": [], "postgres": []}
    for _ in range(args.pairs):
        with _folder() as folder:
            results["sqlite"].append(race_once("sqlite", folder, {}))
    reason = missing_reason()
    if reason:
        print(f"postgres: skipped ({reason})")
    else:
        with postgres_server() as server:
            for _ in range(args.pairs):
                with _folder() as folder:
                    results["postgres"].append(
                        race_once("postgres", folder, server.new_instance_env())
                    )
    for kind, outcomes in results.items():
        if outcomes:
            raced = sum(1 for o in outcomes if o)
            failed = sum(1 for o in outcomes if o is None)
            print(
                f"{kind:9} {len(outcomes)} pairs: both held the one slot in {raced}, "
                f"took turns in {len(outcomes) - raced - failed}, failed {failed}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
