"""The snapshot's convert steps on a distributed engine, run on one machine as on a cluster:
Dagster's ``celery_executor`` (dagster-celery) hands every step of the run to two Celery worker
processes started here (``dagster-celery worker start``), through a broker and a result backend
in local folders (kombu's ``filesystem://`` transport, Celery's ``file://`` backend: no
service). The workers share the run's Dagster instance (PostgreSQL), its IO manager's folder
and the lake, and load the code location themselves (tests/e2e/celery_location.py). The snapshot they publish equals, table for table, the one
a single step publishes; a worker process killed mid-convert-step publishes nothing, and the
run's re-execution from failure completes it."""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from dynamo_cdc import read_table
from tests.e2e.helpers import REPO, VENV_BIN, stop_session, wait_until
from tests.e2e.test_snapshot_steps_on_an_executor import (
    LOCATION,
    _fill,
    _materialize,
    _materialize_args,
    _sorted,
    _step_pids,
)

pytestmark = pytest.mark.e2e

CELERY_LOCATION = ["-m", "tests.e2e.celery_location"]
WORKERS = ("worker-a", "worker-b")


@pytest.fixture
def celery_config(tmp_path: Path) -> dict:
    """The celery_executor's config: the broker's queue, and the task results, in folders."""
    root = tmp_path / "celery"
    folders = {name: root / name for name in ("queue", "processed", "control", "results")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    return {
        "broker": "filesystem://",
        "backend": f"file://{folders['results']}",
        "config_source": {
            "broker_transport_options": {
                "data_folder_in": str(folders["queue"]),
                "data_folder_out": str(folders["queue"]),
                "control_folder": str(folders["control"]),
                "store_processed": True,
                "processed_folder": str(folders["processed"]),
                "polling_interval": 0.1,  # a worker sees a new step within 0.1 s
            },
            "broker_connection_retry_on_startup": True,
            # a worker acknowledges a step when it ends, so with one process it holds one step
            # at a time and the other worker takes the next
            "task_acks_late": True,
        },
    }


@pytest.fixture
def celery_workers(dagster_env, celery_config, tmp_path: Path):
    """Two Celery workers of one process each (``--concurrency=1``), with the run's
    environment (DAGSTER_HOME, the lake, the local AWS), each the leader of its own session and
    stopped by its pid."""
    config_yaml = tmp_path / "celery.yaml"
    config_yaml.write_text(json.dumps({"execution": {"config": celery_config}}))
    workers = {}
    try:
        for name in WORKERS:
            with open(tmp_path / f"{name}.log", "wb") as log:
                workers[name] = subprocess.Popen(
                    [
                        str(VENV_BIN / "dagster-celery"),
                        "worker",
                        "start",
                        "-A",
                        "dagster_celery.app",
                        "-y",
                        str(config_yaml),
                        "-n",
                        name,
                        "--",
                        "--concurrency=1",
                    ],
                    cwd=REPO,
                    env=dagster_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        for name in WORKERS:
            wait_until(
                lambda n=name: b" ready." in (tmp_path / f"{n}.log").read_bytes(),
                timeout=120,
                interval=0.5,
                what=f"Celery worker {name} to be ready",
            )
        yield workers
    finally:
        for proc in workers.values():
            stop_session(proc)


def _steps_by_worker(tmp_path: Path) -> dict[str, dict[str, str]]:
    """Worker -> {step key: pid} of the steps it started, from its log (its Dagster events)."""
    return {name: _step_pids((tmp_path / f"{name}.log").read_text()) for name in WORKERS}


def _converts(steps: dict[str, str]) -> dict[str, str]:
    return {k.split("[")[1].rstrip("]"): pid for k, pid in steps.items() if "snapshot_convert" in k}


def _assert_single_step_snapshot(dagster_env, lake_root: str, one_lake: Path, rows: int):
    """The snapshot in ``lake_root`` holds ``rows`` rows or more and equals, table for table,
    the one a single convert step publishes in ``one_lake`` (the multiprocess executor)."""
    _materialize(dagster_env, LOCATION, one_lake, steps=1)
    fanned = read_table(lake_root, "orders", view="snapshot")
    single = read_table(str(one_lake), "orders", view="snapshot")
    assert fanned.num_rows >= rows
    assert fanned.schema.equals(single.schema)
    assert _sorted(fanned).equals(_sorted(single))


# the instance a cluster's workers share (a SQLite file in DAGSTER_HOME works on one machine, as
# tests/e2e/test_snapshot_steps_on_an_executor.py shows with the multiprocess executor)
@pytest.mark.parametrize("dagster_env", ["postgres"], indirect=True)
def test_convert_steps_on_two_celery_workers_publish_the_single_step_snapshot(
    clients, dagster_env, celery_config, celery_workers, lake_root, tmp_path
):
    _fill(clients, 600)  # several data files

    _materialize(dagster_env, CELERY_LOCATION, Path(lake_root), 2, celery_config)
    by_worker = {name: _converts(steps) for name, steps in _steps_by_worker(tmp_path).items()}
    # each convert step ran in a worker process, one on each worker
    assert sorted(g for steps in by_worker.values() for g in steps) == ["group_0", "group_1"]
    assert all(len(steps) == 1 for steps in by_worker.values()), by_worker
    _assert_single_step_snapshot(dagster_env, lake_root, tmp_path / "one-lake", rows=600)
    assert not list((Path(lake_root) / "orders" / "_state").glob("snapshot/**/*.parquet"))


# Dagster's re-execution of a failed run from its failure (what the UI's "Re-execute from
# failure" and the daemon's run retries do): the steps that failed or did not run, with the
# parent run's config and tags, their inputs read from the parent's outputs.
REEXECUTE_FROM_FAILURE = """
import sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

with dg.DagsterInstance.get() as instance:
    parent = instance.get_runs(limit=1)[0]
    job = ReconstructableRepository.for_module(
        "tests.e2e.celery_location", "defs", working_directory="."
    ).get_reconstructable_job(parent.job_name)
    result = dg.execute_job(
        job,
        instance,
        run_config=parent.run_config,
        reexecution_options=dg.ReexecutionOptions.from_failure(parent.run_id, instance),
        raise_on_error=False,
    )
    sys.exit(0 if result.success else 1)
"""


def _writing_in(pid: int, folder: Path) -> Path | None:
    """The file under ``folder`` that process ``pid`` has open, if any."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        targets = [os.readlink(fd) for fd in fds.iterdir()]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return next((Path(t) for t in targets if t.startswith(f"{folder}/")), None)


@pytest.mark.parametrize("dagster_env", ["postgres"], indirect=True)
def test_a_celery_worker_killed_mid_convert_step_publishes_nothing_and_the_retry_completes(
    clients, dagster_env, celery_config, celery_workers, lake_root, tmp_path
):
    _fill(clients, 6_000)  # 16 data files or more: a convert step writes several parts
    lake = Path(lake_root)
    env = dict(dagster_env, DYNAMO_CDC_LAKE_ROOT=lake_root)
    run_log = tmp_path / "run.log"
    with open(run_log, "wb") as log:
        run = subprocess.Popen(
            [str(VENV_BIN / "dagster"), *_materialize_args(CELERY_LOCATION, 2, celery_config)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # the process running group_0's convert step, as its worker's log says, while it is
        # writing a part of its group
        pid = wait_until(
            lambda: next(
                (
                    int(p)
                    for steps in _steps_by_worker(tmp_path).values()
                    for g, p in _converts(steps).items()
                    if g == "group_0"
                ),
                None,
            ),
            timeout=300,
            interval=0.05,
            what="group_0's convert step to start in a worker",
        )
        staging = lake / "orders" / "_state" / "staging"
        # a part is open for milliseconds a data file: look often
        part = wait_until(
            lambda: _writing_in(pid, staging),
            timeout=300,
            interval=0.002,
            what="group_0's convert step to write a part",
        )
        os.kill(pid, signal.SIGKILL)
        run.wait(timeout=600)
    finally:
        stop_session(run)
    out = run_log.read_text()

    assert run.returncode != 0, out[-4000:]
    assert "WorkerLostError" in out, out[-4000:]
    # the killed step left its group half-converted in its staging folder, and nothing is
    # published: the commit did not run
    assert list(part.parent.glob("part-*.parquet"))
    assert not (lake / "orders" / "snapshot").exists()

    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-c", REEXECUTE_FROM_FAILURE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in WORKERS)
    # the retry converted the killed group again, and only it, from the first run's plan (the
    # same export: no new one was requested)
    assert sorted(re.findall(r"snapshot_convert\[(group_\d)\] - STEP_START", logs)) == [
        "group_0",
        "group_0",
        "group_1",
    ]
    assert logs.count("snapshot_plan - STEP_START") == 1

    _assert_single_step_snapshot(dagster_env, lake_root, tmp_path / "one-lake", rows=6_000)
