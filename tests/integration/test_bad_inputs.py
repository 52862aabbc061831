"""Every bad input ends in a specific error naming the table (or file, or bucket) and the fix,
and leaves nothing half-written in the lake.

Bad inputs already pinned elsewhere are not repeated here (see the README's reliability section
for the whole list): the table-list rules (tests/unit/test_config.py), lake paths and a full disk
on a single write (tests/unit/test_lake.py), damaged downloaded exports (tests/unit/
test_export_verification.py), damaged exports in S3, PITR off, a missing table or bucket and a
FAILED export for the snapshot (tests/integration/test_snapshot.py) and `dynamo-cdc check`
(tests/integration/test_preflight.py). This module covers the command-line surface of those, the
capture path, AccessDenied buckets, unwritable lake roots, a full disk during capture and wrong
credentials.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from botocore.exceptions import ClientError

from dynamo_cdc.aws import Clients
from dynamo_cdc.capture import capture_once
from dynamo_cdc.cli import main
from dynamo_cdc.config import Settings, TableSpec
from dynamo_cdc.errors import (
    CredentialsError,
    ExportBucketError,
    ExportVerificationError,
    LakeError,
    StreamNotEnabledError,
    TableNotFoundError,
)
from dynamo_cdc.export import (
    ExportRequest,
    manifest_from_export_description,
    pitr_window,
    request_export,
    wait_for_export,
)
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess, launch_local_aws
from dynamo_cdc.preflight import run_checks
from dynamo_cdc.snapshot import take_snapshot, write_snapshot
from dynamo_cdc.stream import discover
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# -- helpers ---------------------------------------------------------------------------------


def lake_files(root: Path) -> list[str]:
    """Every file under a local lake root: after a failure there must be none outside
    ``_state`` and no Parquet anywhere (not even in staging)."""
    if not root.exists() or root.is_file():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_nothing_written(root: Path) -> None:
    files = lake_files(root)
    assert [f for f in files if "_state" not in Path(f).parts] == [], files
    assert [f for f in files if f.endswith(".parquet")] == [], files


def bucket_keys(clients: Clients, bucket: str) -> list[str]:
    out = clients.s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in out.get("Contents", []))


def create_table(clients: Clients, *, view: str | None, pitr: bool = True) -> str:
    """A table with a stream of ``view`` (None: no stream)."""
    name = unique_name("bad")
    kwargs: dict[str, Any] = {}
    if view:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
    clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **kwargs,
    )
    if pitr:
        clients.dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return name


def put_items(clients: Clients, table: str, n: int) -> None:
    for start in range(0, n, 25):
        batch = [
            {"PutRequest": {"Item": {"pk": {"S": f"k{i:05d}"}, "v": {"N": str(i)}}}}
            for i in range(start, min(n, start + 25))
        ]
        clients.dynamodb.batch_write_item(RequestItems={table: batch})


def deny_object_writes(clients: Clients, bucket: str) -> None:
    """A bucket policy that denies everyone s3:PutObject (moto enforces an explicit Deny on
    object requests; it answers a bare 403)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    clients.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


@pytest.fixture
def cli_env(local_aws: LocalAwsProcess, bucket: str, tmp_path: Path, monkeypatch) -> Path:
    """The CLI pointed at the local AWS, the test's bucket and a fresh lake; returns the lake."""
    lake = tmp_path / "lake"
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", bucket)
    monkeypatch.setenv("DYNAMO_CDC_LAKE_ROOT", str(lake))
    return lake


# -- the table list and table names, through the command line --------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "names no table"),
        ("table_name\norders\n", "line 1.*header row"),
        ("orders\nusers\norders\n", "line 3.*listed twice"),
        ("ab\n", "line 1.*not a valid DynamoDB table name"),
        ("x" * 256 + "\n", "line 1.*not a valid DynamoDB table name"),
        ("orders\nor ders\n", "line 2.*not a valid DynamoDB table name"),
        ("orders\nor$ders\n", "line 2.*not a valid DynamoDB table name"),
        ("../x\n", "line 1.*not a valid DynamoDB table name"),
        ("/etc/passwd\n", "line 1.*not a valid DynamoDB table name"),
    ],
    ids=["empty", "header", "duplicate", "short", "long", "space", "dollar", "dotdot", "absolute"],
)
def test_cli_check_refuses_a_malformed_table_list_naming_file_line_and_fix(
    cli_env: Path, tmp_path: Path, monkeypatch, capsys, content: str, expected: str
) -> None:
    tables = tmp_path / "tables.csv"
    tables.write_text(content)
    monkeypatch.setenv("DYNAMO_CDC_TABLES", str(tables))
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert str(tables) in err and "Fix:" in err and "Traceback" not in err
    assert_nothing_written(cli_env)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "ab", "x" * 256, "bad name", "a/b", "..."])
def test_cli_snapshot_refuses_an_unsafe_table_name_before_any_aws_call(
    cli_env: Path, local_aws: LocalAwsProcess, monkeypatch, capsys, name: str
) -> None:
    # an endpoint nobody listens on: the name must be refused before any request is made
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", "http://127.0.0.1:9")
    assert main(["snapshot", name]) == 2
    err = capsys.readouterr().err
    assert repr(name) in err and "Fix:" in err and "Traceback" not in err
    assert_nothing_written(cli_env)


# -- the snapshot command on bad tables and buckets -------------------------------------------


@pytest.mark.parametrize("case", ["unknown table", "pitr off", "missing bucket"])
def test_cli_snapshot_fails_with_the_table_and_the_fix_and_writes_nothing(
    cli_env: Path, clients: Clients, monkeypatch, capsys, case: str
) -> None:
    table = f"missing-{uuid.uuid4().hex[:8]}"
    expected = "does not exist"
    if case == "pitr off":
        table = create_table(clients, view="NEW_AND_OLD_IMAGES", pitr=False)
        expected = "update-continuous-backups"
    elif case == "missing bucket":
        table = create_table(clients, view="NEW_AND_OLD_IMAGES")
        monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", "no-such-bucket-bad-inputs")
        expected = "no-such-bucket-bad-inputs.*aws s3 mb"
    assert main(["snapshot", table]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert table in err and "Fix:" in err and "Traceback" not in err
    assert_nothing_written(cli_env)


# -- capture on tables without a usable stream -----------------------------------------------


def test_capture_of_an_unknown_table_names_it_and_writes_nothing(clients, tmp_path) -> None:
    table = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TableNotFoundError, match=f"{table}.*does not exist.*Fix:"):
        capture_once(clients, Lake(str(tmp_path)), table)
    assert lake_files(tmp_path) == []


@pytest.mark.parametrize("view", [None, "KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE"])
def test_capture_without_a_new_and_old_images_stream_names_the_table_and_the_fix(
    clients: Clients, tmp_path: Path, view: str | None
) -> None:
    table = create_table(clients, view=view)
    put_items(clients, table, 3)
    fix = f"update-table --table-name {table} --stream-specification.*NEW_AND_OLD_IMAGES"
    with pytest.raises(StreamNotEnabledError, match=f"{table}.*Fix: .*{fix}") as info:
        discover(clients, table)
    if view:
        assert view in str(info.value) and "disable the stream" in str(info.value)
    with pytest.raises(StreamNotEnabledError, match=table):
        capture_once(clients, Lake(str(tmp_path)), table)
    assert lake_files(tmp_path) == []


# -- buckets that refuse writes ----------------------------------------------------------------


def test_check_names_an_access_denied_bucket_and_the_permission_to_grant(
    cli_env: Path, clients: Clients, bucket: str, capsys
) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    deny_object_writes(clients, bucket)
    assert main(["check", table]) == 1
    out = capsys.readouterr().out
    (row,) = [r for r in out.splitlines() if "export bucket" in r]
    assert row.startswith("FAIL") and f"bucket {bucket!r} refused a write" in row
    assert f"allow s3:PutObject and s3:DeleteObject on arn:aws:s3:::{bucket}/" in out


def test_snapshot_into_an_s3_lake_that_denies_writes_names_the_bucket_and_permission(
    clients: Clients, bucket: str
) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    put_items(clients, table, 30)
    lake_bucket = f"lake-{uuid.uuid4().hex[:12]}"
    clients.s3.create_bucket(Bucket=lake_bucket)
    deny_object_writes(clients, lake_bucket)
    lake = Lake(f"s3://{lake_bucket}/lake", clients.s3)
    request = ExportRequest(table=table, bucket=bucket, prefix="exports")
    with pytest.raises(LakeError, match=f"s3://{lake_bucket}/lake/{table}/.*s3:PutObject"):
        take_snapshot(clients, lake, request, poll_seconds=0.05, workers=1)
    assert bucket_keys(clients, lake_bucket) == []


def test_export_failed_on_an_access_denied_bucket_names_bucket_and_permission(
    clients: Clients, local_aws: LocalAwsProcess, bucket: str, tmp_path: Path
) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    local_aws.control.fail_next_export(
        failure_code="S3AccessDenied", failure_message="Access Denied"
    )
    request = ExportRequest(table=table, bucket=bucket, prefix="exports")
    with pytest.raises(ExportBucketError) as info:
        take_snapshot(clients, Lake(str(tmp_path)), request, poll_seconds=0.05, workers=1)
    message = str(info.value)
    assert "FAILED: S3AccessDenied" in message and table in message and bucket in message
    assert "Fix:" in message and "s3:PutObject" in message
    assert lake_files(tmp_path) == []


def test_snapshot_into_a_missing_lake_bucket_names_it(clients: Clients, bucket: str) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    put_items(clients, table, 10)
    lake = Lake("s3://no-such-lake-bucket-zz/lake", clients.s3)
    request = ExportRequest(table=table, bucket=bucket, prefix="exports")
    with pytest.raises(LakeError, match="s3://no-such-lake-bucket-zz/.*NoSuchBucket.*Fix:"):
        take_snapshot(clients, lake, request, poll_seconds=0.05, workers=1)


# -- exports damaged in S3 -----------------------------------------------------------------------


def test_a_data_file_missing_from_the_bucket_is_named_and_nothing_is_published(
    clients: Clients, bucket: str, tmp_path: Path
) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    put_items(clients, table, 40)
    request = ExportRequest(table=table, bucket=bucket, prefix="exports")
    desc = wait_for_export(clients, request_export(clients, request), poll_seconds=0.05)
    manifest = manifest_from_export_description(clients, desc)
    victim = manifest.files[0].key
    clients.s3.delete_object(Bucket=bucket, Key=victim)
    with pytest.raises(ExportVerificationError, match=f"s3://{bucket}/{victim}.*Fix:"):
        write_snapshot(manifest, Lake(str(tmp_path)), table, "2026-01-01", ["pk"], workers=1)
    assert lake_files(tmp_path) == []


# -- lake roots that cannot be written ---------------------------------------------------------


def test_snapshot_into_a_lake_root_under_a_file_is_a_lake_error(
    clients: Clients, bucket: str, tmp_path: Path
) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    put_items(clients, table, 10)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lake should be")
    request = ExportRequest(table=table, bucket=bucket, prefix="exports")
    with pytest.raises(LakeError, match=f"lake root '{blocker}/lake'.*Fix:"):
        take_snapshot(clients, Lake(str(blocker / "lake")), request, poll_seconds=0.05, workers=1)
    assert blocker.read_text() == "a file where the lake should be"


def test_capture_into_a_lake_root_under_a_file_is_a_lake_error(
    clients: Clients, tmp_path: Path
) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    put_items(clients, table, 5)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(LakeError, match=f"lake root '{blocker}/lake'.*Fix:"):
        capture_once(clients, Lake(str(blocker / "lake")), table)


def test_full_disk_during_capture_commits_nothing_and_the_retry_lands_every_record_once(
    clients: Clients, tmp_path: Path, monkeypatch
) -> None:
    table = create_table(clients, view="NEW_AND_OLD_IMAGES")
    put_items(clients, table, 60)
    lake = Lake(str(tmp_path))

    def disk_full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("dynamo_cdc.lake.os.fsync", disk_full)
        with pytest.raises(LakeError, match=f"{table}.*the disk is full.*Fix:"):
            capture_once(clients, lake, table)
    assert_nothing_written(tmp_path)
    assert not lake.exists(f"{table}/_state/stream/checkpoint.json")

    result = capture_once(clients, lake, table)
    assert result.records == 60
    rows = ds.dataset(lake.uri(f"{table}/changes"), partitioning="hive").to_table()
    assert rows.num_rows == 60 and len(set(rows["event_id"].to_pylist())) == 60


# -- wrong credentials -----------------------------------------------------------------------

GOOD_KEY = "AKIDLOCALGOOD0000001"
WRONG_KEY = "AKIDLOCALWRONG000002"
SECRET = "sEcReT-bad-inputs-" + "9" * 22


@pytest.fixture(scope="module")
def strict_aws(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A local AWS that accepts only requests signed with GOOD_KEY (``--access-key-id``)."""
    log = tmp_path_factory.mktemp("strict-aws") / "server.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.pop("MOTO_ACCOUNT_ID", None)
    server = launch_local_aws(
        0, export_delay_seconds=0.1, access_key_id=GOOD_KEY, env=env, stderr_path=str(log)
    )
    try:
        yield server
    finally:
        server.stop()


def strict_clients(aws: LocalAwsProcess, key: str) -> Clients:
    settings = Settings(endpoint_url=aws.endpoint_url, access_key_id=key, secret_access_key=SECRET)
    return Clients(settings, max_attempts=1)


@pytest.fixture(scope="module")
def strict_table(strict_aws: LocalAwsProcess) -> tuple[str, str]:
    """A good table and an export bucket on the strict local AWS, made with the right key."""
    good = strict_clients(strict_aws, GOOD_KEY)
    table = create_table(good, view="NEW_AND_OLD_IMAGES")
    put_items(good, table, 5)
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    good.s3.create_bucket(Bucket=bucket)
    return table, bucket


def test_local_aws_answers_an_unknown_access_key_id_as_aws_does(
    strict_aws: LocalAwsProcess, strict_table: tuple[str, str]
) -> None:
    table, bucket = strict_table
    wrong = strict_clients(strict_aws, WRONG_KEY)
    calls = [
        (
            lambda: wrong.dynamodb.describe_table(TableName=table),
            400,
            "UnrecognizedClientException",
        ),
        (lambda: wrong.streams.list_streams(), 400, "UnrecognizedClientException"),
        (lambda: wrong.s3.list_objects_v2(Bucket=bucket), 403, "InvalidAccessKeyId"),
        (lambda: wrong.client("sts").get_caller_identity(), 403, "InvalidClientTokenId"),
    ]
    for call, status, code in calls:
        with pytest.raises(ClientError) as info:
            call()
        error = info.value.response["Error"]
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        assert error["Code"] == code
        if code == "UnrecognizedClientException":
            assert error["Message"] == "The security token included in the request is invalid."
    good = strict_clients(strict_aws, GOOD_KEY)
    assert good.dynamodb.describe_table(TableName=table)["Table"]["TableName"] == table
    assert strict_aws.control.required_access_key_id() == GOOD_KEY
    strict_aws.control.require_access_key_id(None)
    try:
        assert wrong.dynamodb.describe_table(TableName=table)["Table"]["TableName"] == table
    finally:
        strict_aws.control.require_access_key_id(GOOD_KEY)
    with pytest.raises(ClientError):
        wrong.dynamodb.describe_table(TableName=table)


def test_library_raises_credentials_error_naming_the_table_without_the_secret(
    strict_aws: LocalAwsProcess, strict_table: tuple[str, str], tmp_path: Path
) -> None:
    table, bucket = strict_table
    wrong = strict_clients(strict_aws, WRONG_KEY)
    lake = Lake(str(tmp_path))
    calls = {
        "describe": lambda: discover(wrong, table),
        "pitr": lambda: pitr_window(wrong, table),
        "capture": lambda: capture_once(wrong, lake, table),
        "check": lambda: run_checks(Settings(export_bucket=bucket), [TableSpec(table)], wrong),
        "snapshot": lambda: take_snapshot(
            wrong, lake, ExportRequest(table=table, bucket=bucket), poll_seconds=0.05
        ),
    }
    for what, call in calls.items():
        with pytest.raises(CredentialsError) as info:
            call()
        message = str(info.value)
        assert "AWS rejected the credentials" in message and table in message, what
        assert "Fix: check the access key id" in message, what
        assert SECRET not in message and WRONG_KEY not in message, what
    assert lake_files(tmp_path) == []


@pytest.mark.parametrize("how", ["boto3 chain", "DYNAMO_CDC_ variables"])
@pytest.mark.parametrize("command", ["check", "snapshot"])
def test_cli_with_wrong_credentials_exits_nonzero_with_the_credentials_error(
    strict_aws: LocalAwsProcess,
    strict_table: tuple[str, str],
    tmp_path: Path,
    command: str,
    how: str,
) -> None:
    table, bucket = strict_table
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DYNAMO_CDC_"))}
    env.update(
        PYTHONPATH=str(REPO),
        AWS_DEFAULT_REGION="us-east-1",
        DYNAMO_CDC_ENDPOINT_URL=strict_aws.endpoint_url,
        DYNAMO_CDC_EXPORT_BUCKET=bucket,
        DYNAMO_CDC_LAKE_ROOT=str(tmp_path / "lake"),
    )
    if how == "boto3 chain":
        env.update(AWS_ACCESS_KEY_ID=WRONG_KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    else:
        env.update(DYNAMO_CDC_AWS_ACCESS_KEY_ID=WRONG_KEY, DYNAMO_CDC_AWS_SECRET_ACCESS_KEY=SECRET)
    proc = subprocess.run(
        [sys.executable, "-m", "dynamo_cdc.cli", command, table],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert proc.stderr.startswith("error: AWS rejected the credentials while trying to"), output
    assert f"describe table {table!r} (UnrecognizedClientException)" in proc.stderr
    assert "Fix: check the access key id" in proc.stderr
    assert "Traceback" not in output and SECRET not in output
    assert_nothing_written(tmp_path / "lake")
