"""End-to-end fixtures: the local AWS as a child process and an environment for Dagster
processes (``dagster asset materialize``, ``dagster dev``) that reach it.

Everything binds 127.0.0.1 and is stopped by its pid.
"""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess, launch_local_aws
from tests.e2e.helpers import INSTANCES, dagster_process_env, instance_home


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


LAKE_KINDS = ("folder", "s3")


def make_lake_root(kind: str, clients: Clients, tmp_path: Path) -> str:
    """A fresh lake root: a local folder, or ``s3://<new bucket>/lake`` on the local AWS."""
    if kind == "folder":
        return str(tmp_path / "lake")
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    clients.s3.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/lake"


@pytest.fixture
def lake_root(clients: Clients, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The lake root of :func:`dagster_env`: a local folder, or the kind a test names with
    :func:`instance_and_lake`."""
    return make_lake_root(getattr(request, "param", "folder"), clients, tmp_path)


# Dagster's storage never touches the lake and the lake never touches Dagster's storage, so a
# test of both runs on the pairs that cover each kind once: the project's SQLite instance with a
# folder lake, and the production profile (PostgreSQL, deploy/dagster.yaml) with an S3 lake.
PAIRWISE = (("sqlite", "folder"), ("postgres", "s3"))


def instance_and_lake(*pairs: tuple[str, str]) -> pytest.MarkDecorator:
    """Run a test once per (instance kind, lake kind) pair: the parameters of
    :func:`dagster_env` and :func:`lake_root`."""
    return pytest.mark.parametrize(
        ("dagster_env", "lake_root"),
        pairs,
        indirect=True,
        ids=[f"{instance}-{lake}" for instance, lake in pairs],
    )


@pytest.fixture
def lake(lake_root: str, clients: Clients) -> Lake:
    """The lake of :func:`dagster_env`, to read back what Dagster runs wrote."""
    return Lake(lake_root, clients.s3)


@pytest.fixture(params=INSTANCES)
def dagster_env(
    local_aws: LocalAwsProcess, tmp_path: Path, lake_root: str, request: pytest.FixtureRequest
) -> dict[str, str]:
    """Environment of Dagster child processes: local AWS, a fresh lake (``lake_root``) and
    DAGSTER_HOME with the instance settings of the parameter (SQLite, or PostgreSQL with
    deploy/dagster.yaml)."""
    home = tmp_path / "dagster_home"
    env = dagster_process_env(
        local_aws.endpoint_url,
        lake_root,
        home,
        DYNAMO_CDC_PARTITIONS_START="2025-01-01",  # tests materialize fixed, older partitions
    )
    instance_home(request.param, home, request, env)
    return env


@pytest.fixture
def dagster_settings(dagster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`dagster_env`'s ``DYNAMO_CDC_*`` settings in this process, for in-process runs and
    sensor ticks with the code location's own resources."""
    for name, value in dagster_env.items():
        if name.startswith("DYNAMO_CDC_"):
            monkeypatch.setenv(name, value)
