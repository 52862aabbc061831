"""A recognisable secret, given as the credentials, reaches nothing Dagster stores: not the
event log, not the run's captured logs, not materialization metadata, not the lake."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SECRET = "SECRET-sentinel-dagster-4e2a9c"


def test_secret_appears_in_no_dagster_event_log_run_log_or_lake_file(dagster_env, tmp_path):
    env = dict(
        dagster_env,
        DYNAMO_CDC_AWS_ACCESS_KEY_ID="AKIASENTINEL00000001",
        DYNAMO_CDC_AWS_SECRET_ACCESS_KEY=SECRET,
    )
    run = subprocess.run(
        [sys.executable, "-m", "dagster_project.sync", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    scanned = []
    for root in (Path(env["DAGSTER_HOME"]), Path(env["DYNAMO_CDC_LAKE_ROOT"])):
        for path in root.rglob("*"):
            if path.is_file():
                scanned.append(path)
                assert SECRET.encode() not in path.read_bytes(), path
    assert any(p.name.endswith(".db") for p in scanned)  # the event log was really there
    assert any(p.suffix == ".parquet" for p in scanned)
    assert SECRET not in run.stdout + run.stderr
