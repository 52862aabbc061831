"""Helpers shared by the end-to-end tests."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).parent / "artifacts"


def run_dagster(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run the ``dagster`` CLI; fail the test with its output when it fails."""
    proc = subprocess.run(
        [str(VENV_BIN / "dagster"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"dagster {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def wait_until(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
