"""`make demo`'s headless form, `dynamo-cdc demo --once`, works from an empty folder: the
local AWS, the demo tables, a workload and one pass of the pipeline through Dagster."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynamo_cdc import read_table

pytestmark = pytest.mark.e2e


def test_demo_once_runs_the_pipeline_for_both_demo_tables(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMO_CDC_", "DAGSTER_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "dynamo_cdc.cli", "demo", "--once", "--lake-root", str(lake)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    for table in ("orders", "app-events.v1"):
        assert table in proc.stdout
        for view in ("snapshot", "changes", "current"):
            assert read_table(str(lake), table, view).num_rows > 0, (table, view, output[-3000:])
    assert "read_parquet" in proc.stdout  # a DuckDB query to copy
    assert not any((tmp_path / ".demo").glob("**/*.tmp"))
