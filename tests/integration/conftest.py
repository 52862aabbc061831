"""Integration fixtures: one local AWS per test session, as a child process.

The server is ``python -m dynamo_cdc.local --port 0`` (the same entry point users run), bound to
127.0.0.1 and stopped by its pid when the session ends. Tests share it, so each makes its own
tables (unique names) and reads times from the server's clock instead of assuming them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings
from dynamo_cdc.local import LocalAwsProcess, launch_local_aws


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region, as dagster-aws's tests set them: nothing can reach AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def local_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAwsProcess]:
    """The local AWS as a child process: ``.endpoint_url``, ``.pid``, ``.control``."""
    log_path = tmp_path_factory.mktemp("local-aws") / "server.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.pop("MOTO_ACCOUNT_ID", None)
    server = launch_local_aws(0, export_delay_seconds=0.2, env=env, stderr_path=str(log_path))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clients(local_aws: LocalAwsProcess) -> Clients:
    """boto3 clients pointed at the local AWS (one attempt: failures surface at once)."""
    return Clients(Settings(endpoint_url=local_aws.endpoint_url), max_attempts=1)


def unique_name(prefix: str = "t") -> str:
    """A table or bucket name no other test uses (with '-' and '.' on purpose)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}.v1"


@pytest.fixture
def make_table(clients: Clients) -> Callable[..., str]:
    """Create a table (PITR and a NEW_AND_OLD_IMAGES stream on by default); returns its name.

    Keyword args: ``range_key`` (add a sort key ``sk``), ``pitr``, ``stream``, ``name``.
    """

    def make(
        *, range_key: bool = False, pitr: bool = True, stream: bool = True, name: str | None = None
    ) -> str:
        name = name or unique_name()
        keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
        attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
        if range_key:
            keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
            attrs.append({"AttributeName": "sk", "AttributeType": "N"})
        kwargs: dict[str, Any] = {}
        if stream:
            kwargs["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            }
        clients.dynamodb.create_table(
            TableName=name,
            KeySchema=keys,
            AttributeDefinitions=attrs,
            BillingMode="PAY_PER_REQUEST",
            **kwargs,
        )
        if pitr:
            clients.dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        return name

    return make


@pytest.fixture
def bucket(clients: Clients) -> str:
    """A fresh S3 bucket on the local AWS."""
    name = f"exports-{uuid.uuid4().hex[:12]}"
    clients.s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def wait_export(clients: Clients) -> Callable[[str], dict[str, Any]]:
    """``wait_export(arn)``: poll DescribeExport until the export leaves IN_PROGRESS."""

    def wait(export_arn: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            desc = clients.dynamodb.describe_export(ExportArn=export_arn)["ExportDescription"]
            if desc["ExportStatus"] != "IN_PROGRESS" or time.monotonic() > deadline:
                return dict(desc)
            time.sleep(0.05)

    return wait


@pytest.fixture
def orders_table(make_table: Callable[..., str], clients: Clients) -> str:
    """A table keyed on string ``pk`` and ``sk`` (bench items' keys), PITR on."""
    name = make_table()
    clients.dynamodb.delete_table(TableName=name)
    # the generator's items have a string sort key
    clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    clients.dynamodb.update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    return name
