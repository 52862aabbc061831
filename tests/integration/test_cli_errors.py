"""Every ``dynamo-cdc`` command ends a failure with one line that names the table or file, what
is wrong and the fix, and a non-zero exit; a Python traceback only with ``--debug``.

The commands run as users run them: the console script in a child process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings
from dynamo_cdc.local import LocalAwsProcess, launch_local_aws
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration

DYNAMO_CDC = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "dynamo-cdc"
GOOD_KEY = "AKIDLOCALGOOD0000003"
NOBODY = "http://127.0.0.1:9"  # discard port: nothing listens


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``dynamo-cdc ARGS`` with only the given settings and no AWS credentials of the machine."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMO_CDC_", "AWS_"))}
    base.update(
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        DYNAMO_CDC_LAKE_ROOT=str(tmp_path / "lake"),
    )
    base.update(env)
    return subprocess.run(
        [str(DYNAMO_CDC), *args], capture_output=True, text=True, env=base, cwd=tmp_path,
        timeout=600, check=False,
    )  # fmt: skip


def assert_one_actionable_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line.strip() for line in lines if line.strip().startswith("error: ")]
    assert len(errors) == 1, result.stdout + result.stderr
    (line,) = errors
    assert "Fix: " in line, line
    for text in expected:
        assert text in line, line
    return line


@pytest.fixture(scope="module")
def strict_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAwsProcess]:
    """A local AWS that accepts only requests signed with GOOD_KEY."""
    log = tmp_path_factory.mktemp("strict-aws") / "server.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    server = launch_local_aws(0, access_key_id=GOOD_KEY, env=env, stderr_path=str(log))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "args",
    [["check", "orders"], ["snapshot", "orders", "--export-bucket", "b"]],
    ids=["check", "snapshot"],
)
def test_no_credentials_is_one_line_with_the_fix(tmp_path: Path, args: list[str]) -> None:
    result = run(args, tmp_path, DYNAMO_CDC_REGION="us-east-1")
    assert_one_actionable_line(result, "No AWS credentials", "DYNAMO_CDC_AWS_ACCESS_KEY_ID")


def test_wrong_credentials_are_one_line_with_the_fix(
    tmp_path: Path, strict_aws: LocalAwsProcess
) -> None:
    result = run(
        ["check", "orders"],
        tmp_path,
        DYNAMO_CDC_ENDPOINT_URL=strict_aws.endpoint_url,
        DYNAMO_CDC_AWS_ACCESS_KEY_ID="AKIDLOCALWRONG000004",
        DYNAMO_CDC_AWS_SECRET_ACCESS_KEY="wrong-secret",
    )
    line = assert_one_actionable_line(result, "rejected the credentials", "orders")
    assert "wrong-secret" not in result.stdout + result.stderr
    assert line


@pytest.mark.parametrize(
    "args",
    [["check", "orders"], ["snapshot", "orders"], ["sync", "--once"]],
    ids=["check", "snapshot", "sync"],
)
def test_an_unreachable_endpoint_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    tables = tmp_path / "tables.csv"
    tables.write_text("orders\n")
    result = run(
        args,
        tmp_path,
        DYNAMO_CDC_ENDPOINT_URL=NOBODY,
        DYNAMO_CDC_EXPORT_BUCKET="b",
        DYNAMO_CDC_TABLES=str(tables),
    )
    assert_one_actionable_line(result, NOBODY, "dynamo-cdc local-aws")


def test_an_unknown_region_is_refused_before_any_request(tmp_path: Path) -> None:
    result = run(
        ["check", "orders"],
        tmp_path,
        DYNAMO_CDC_REGION="mars-north-1",
        DYNAMO_CDC_AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        DYNAMO_CDC_AWS_SECRET_ACCESS_KEY="example",
    )
    assert_one_actionable_line(result, "'mars-north-1'", "DYNAMO_CDC_REGION")


def test_a_missing_table_in_sync_is_one_line_from_the_failed_dagster_step(
    tmp_path: Path, local_aws: LocalAwsProcess
) -> None:
    missing = unique_name("missing")
    tables = tmp_path / "tables.csv"
    tables.write_text(f"{missing}\n")
    result = run(
        ["sync", "--once"],
        tmp_path,
        DYNAMO_CDC_ENDPOINT_URL=local_aws.endpoint_url,
        DYNAMO_CDC_TABLES=str(tables),
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stdout.splitlines() + result.stderr.splitlines()) < 20, result
    (line,) = [ln for ln in result.stdout.splitlines() if "error:" in ln]
    assert missing in line and "does not exist" in line and "Fix: " in line


def test_a_missing_export_file_names_the_file(tmp_path: Path) -> None:
    result = run(
        ["export-to-parquet", str(tmp_path / "nope.json"), str(tmp_path / "out")], tmp_path
    )
    assert_one_actionable_line(result, "nope.json")


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    result = run(["--debug", "check", "orders"], tmp_path, DYNAMO_CDC_ENDPOINT_URL=NOBODY)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_sync_without_a_table_list_fails_as_check_does(
    tmp_path: Path, local_aws: LocalAwsProcess
) -> None:
    check = run(["check"], tmp_path, DYNAMO_CDC_ENDPOINT_URL=local_aws.endpoint_url)
    sync = run(["sync", "--once"], tmp_path, DYNAMO_CDC_ENDPOINT_URL=local_aws.endpoint_url)
    line = assert_one_actionable_line(check, "No table list", "DYNAMO_CDC_TABLES")
    assert assert_one_actionable_line(sync) == line


def lake_row(tmp_path: Path, aws: LocalAwsProcess, table: str, root: str) -> tuple[str, int]:
    """`dynamo-cdc check TABLE` with lake root ``root``: its lake root row and exit code."""
    result = run(
        ["check", table], tmp_path, DYNAMO_CDC_ENDPOINT_URL=aws.endpoint_url,
        DYNAMO_CDC_LAKE_ROOT=root,
    )  # fmt: skip
    (row,) = [ln for ln in result.stdout.splitlines() if "lake root" in ln[:40]]
    return row, result.returncode


def test_check_fails_on_a_lake_root_in_a_missing_bucket(
    tmp_path: Path, local_aws: LocalAwsProcess
) -> None:
    clients = Clients(Settings(endpoint_url=local_aws.endpoint_url))
    table = unique_name()
    clients.dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    row, code = lake_row(tmp_path, local_aws, table, "s3://no-such-lake-bucket/x")
    assert row.startswith("FAIL") and "no-such-lake-bucket" in row
    assert code == 1


def test_check_fails_on_a_lake_root_under_a_file_and_leaves_no_folder(
    tmp_path: Path, local_aws: LocalAwsProcess
) -> None:
    (tmp_path / "afile").write_text("x")
    row, _ = lake_row(tmp_path, local_aws, "orders", str(tmp_path / "afile" / "lake"))
    assert row.startswith("FAIL") and "afile" in row
    row, _ = lake_row(tmp_path, local_aws, "orders", str(tmp_path / "new" / "lake"))
    assert row.startswith("OK")
    assert not (tmp_path / "new").exists()
