"""End-to-end fixtures: the local AWS as a child process and an environment for Dagster
processes (``dagster asset materialize``, ``dagster dev``) that reach it.

Everything binds 127.0.0.1 and is stopped by its pid.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings
from dynamo_cdc.local import LocalAwsProcess, launch_local_aws
from dynamo_cdc.local.demo import DEMO_TABLES
from tests.e2e.helpers import REPO, VENV_BIN


@pytest.fixture(scope="module")
def local_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAwsProcess]:
    """The local AWS with the demo tables (``orders``, ``app-events.v1``) and bucket."""
    log_path = tmp_path_factory.mktemp("local-aws") / "server.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    server = launch_local_aws(
        0, demo=True, export_delay_seconds=0.2, env=env, stderr_path=str(log_path)
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clients(local_aws: LocalAwsProcess) -> Clients:
    return Clients(Settings(endpoint_url=local_aws.endpoint_url), max_attempts=1)


@pytest.fixture
def dagster_env(local_aws: LocalAwsProcess, tmp_path: Path) -> dict[str, str]:
    """Environment of Dagster child processes: local AWS, a fresh lake and DAGSTER_HOME with
    the project's instance settings (one step per pool)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_project" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNAMO_CDC_")}
    tables = tmp_path / "tables.csv"
    tables.write_text("".join(f"{name}\n" for name in DEMO_TABLES))
    env.update(
        DAGSTER_HOME=str(home),
        DYNAMO_CDC_TABLES=str(tables),
        DYNAMO_CDC_PARTITIONS_START="2025-01-01",  # tests materialize fixed, older partitions
        DYNAMO_CDC_ENDPOINT_URL=local_aws.endpoint_url,
        DYNAMO_CDC_LAKE_ROOT=str(tmp_path / "lake"),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONPATH=str(REPO),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env
