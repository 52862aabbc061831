"""Shared test settings: no real AWS credentials can leak in, and none are needed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, missing_reason, postgres_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a fixed region, so no test can reach a real account by accident."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    # nothing may reach an address off this machine, not even the EC2 metadata service that
    # boto3's credential chain asks
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("DYNAMO_CDC_"):
            monkeypatch.delenv(name, raising=False)
    # loading definitions asks DynamoDB when each table was created unless this is set: a test
    # that loads them without the local AWS's endpoint must not ask AWS (the tests of that
    # lookup remove it)
    monkeypatch.setenv("DYNAMO_CDC_PARTITIONS_START", "2025-01-01")


@pytest.fixture(autouse=True)
def _iceberg_only_where_tested(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The Iceberg tables (on by default for users) cost a catalog commit per write of the
    lake; tests that are not about them turn them off, tests marked ``iceberg`` keep them."""
    if request.node.get_closest_marker("iceberg") is None:
        monkeypatch.setenv("DYNAMO_CDC_ICEBERG", "off")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 server on 127.0.0.1 for the session (see tests/postgres.py)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_dagster_home(postgres: PostgresServer, tmp_path: Path) -> Iterator[Path]:
    """A DAGSTER_HOME holding the production deploy/dagster.yaml over a fresh database of the
    session's server; its DAGSTER_PG_* variables are set while the test runs."""
    home = tmp_path / "dagster_home_pg"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in postgres.new_instance_env().items():
            mp.setenv(key, value)
        yield home
