"""Dagster's pool race, measured: two runs of one pooled asset launched at the same moment.

    python -m tests.e2e.pool_race --pairs 10      # SQLite, then PostgreSQL
    python -m tests.e2e.pool_race --pairs 0 --claims 300

Each pair is two ``dagster asset materialize`` processes of an asset in a pool with one slot
(``concurrency.pools.default_limit: 1``), started together on a fresh instance. A pair *raced*
when Dagster let both steps run at once (each step's STEP_START .. STEP_SUCCESS window, from the
event log, overlaps the other's). SQLite: the project's ``dagster_project/dagster.yaml``;
PostgreSQL: ``deploy/dagster.yaml`` on a server started here (tests/postgres.py).

``--claims N`` measures the claim itself, N times per storage: two processes, each with its own
instance, released together from a barrier, call what a step calls to take a pool slot
(``claim_concurrency_slot`` of the instance's event log storage, after initializing the pool to
its default limit as a step does on a pool's first use). A trial *raced* when both were told
CLAIMED. Half the trials use a new pool (its first use: both initialize it), half a pool that
exists already (a deployment's steady state). After each trial both free their slot.

dynamo-cdc does not rely on the pool for correctness: a capture holds the table's lock in the
lake whatever Dagster did (tests/e2e/test_materialize_cli.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[1] for p in procs]
    for proc, err in zip(procs, outputs, strict=True):
        if proc.returncode:
            lines = [line for line in err.splitlines() if line.strip()]
            print(f"{kind}: a run exited {proc.returncode}: " + " | ".join(lines[-3:]))
    if any(p.returncode for p in procs):
        return None
    windows = sorted(step_windows(home, extra_env))
    if len(windows) != 2:
        return None
    (_, e1), (s2, _) = windows
    return s2 < e1


NEW_POOL, POOL_IN_USE = "new pool (its first use)", "pool in use"


def _claimer(env: dict[str, str], index: int, trials: int, barrier: Any, out: Any) -> None:
    """One of the two claiming processes of :func:`claim_race` (``trials`` rounds)."""
    os.environ.update(env)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        for trial in range(trials):
            pool = f"race_pool_{trial}" if trial % 2 == 0 else "race_pool"
            run_id = f"trial-{trial}-claimer-{index}"
            barrier.wait()
            claimed, error = False, ""
            try:
                if pool not in {limit.name for limit in storage.get_pool_limits()}:
                    # a step's first claim in a pool with no limit sets the instance's default
                    # limit first (dagster's InstanceConcurrencyContext.claim)
                    storage.initialize_concurrency_limit_to_default(pool)
                claimed = storage.claim_concurrency_slot(pool, run_id, "race").is_claimed
            except Exception as exc:  # what the step would fail with
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            barrier.wait()
            slots = storage.get_concurrency_info(pool).slot_count
            out.put((trial, claimed, slots, error))
            barrier.wait()
            storage.free_concurrency_slots_for_run(run_id)


def claim_race(kind: str, folder: Path, extra_env: dict[str, str], trials: int) -> dict[str, Any]:
    """``2 * trials`` claims by two processes at once (see the module docstring): for a new
    pool and for a pool in use, how many trials, in how many both held a slot, and in how many
    the pool ended with more slots than its limit of 1."""
    import multiprocessing

    home = folder / "home"
    home.mkdir()
    config = REPO / ("deploy" if kind == "postgres" else "dagster_project") / "dagster.yaml"
    shutil.copy(config, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(extra_env, DAGSTER_HOME=str(home))
    subprocess.run([str(DAGSTER), "instance", "migrate"], env=env, check=True, capture_output=True)
    # the pool in use: its limit set once, before the trials
    subprocess.run(
        [str(DAGSTER), "instance", "concurrency", "set", "race_pool", "1"],
        env=env,
        check=True,
        capture_output=True,
    )
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_claimer, args=(env, i, 2 * trials, barrier, out)) for i in range(2)
    ]
    for proc in procs:
        proc.start()
    claims: dict[int, list[tuple[bool, int, str]]] = {}
    try:
        for _ in range(4 * trials):
            trial, claimed, slots, error = out.get(timeout=300)
            claims.setdefault(trial, []).append((claimed, slots, error))
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    result = {}
    for label, parity in ((NEW_POOL, 0), (POOL_IN_USE, 1)):
        done = [c for t, c in claims.items() if t % 2 == parity]
        errors = [e for c in done for _, _, e in c if e]
        result[label] = {
            "trials": len(done),
            "both held a slot": sum(all(claimed for claimed, _, _ in c) for c in done),
            "more than 1 slot": sum(max(slots for _, slots, _ in c) > 1 for c in done),
            "a claim failed": sum(any(e for _, _, e in c) for c in done),
            "errors": sorted(set(errors)),
        }
    return result


@contextmanager
def _folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dynamo-cdc-pool-race-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10, help="pairs of runs per storage")
    parser.add_argument("--claims", type=int, default=0, help="claim trials per storage and pool")
    args = parser.parse_args()
    # stopped by a signal: unwind, so the PostgreSQL server started here is stopped by its pid
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests.postgres import missing_reason, postgres_server

    reason = missing_reason()
    if reason:
        print(f"postgres: skipped ({reason})")
    with contextlib.ExitStack() as stack:
        server = None if reason else stack.enter_context(postgres_server())
        kinds = {"sqlite": lambda: {}, **({"postgres": server.new_instance_env} if server else {})}
        for kind, new_env in kinds.items():
            if args.claims:
                with _folder() as folder:
                    for label, n in claim_race(kind, folder, new_env(), args.claims).items():
                        print(
                            f"{kind:9} claims, {label}: both held a slot in "
                            f"{n['both held a slot']} of {n['trials']} trials; the pool had "
                            f"more than its 1 slot in {n['more than 1 slot']}; a claim raised in "
                            f"{n['a claim failed']}",
                            flush=True,
                        )
                        for error in n["errors"]:
                            print(f"    {error}")
            outcomes = []
            for _ in range(args.pairs):
                with _folder() as folder:
                    outcomes.append(race_once(kind, folder, new_env()))
            if outcomes:
                raced = sum(1 for o in outcomes if o)
                failed = sum(1 for o in outcomes if o is None)
                print(
                    f"{kind:9} {len(outcomes)} pairs of runs: both held the one slot in {raced}, "
                    f"took turns in {len(outcomes) - raced - failed}, failed {failed}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
