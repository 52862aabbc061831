"""Credentials never reach logs, errors, output or the lake, at any log level.

Every credential here is a recognisable sentinel (the key id shaped like a real one, a session
token with the characters a real one has and a URL encodes), given explicitly, through the
environment or through a shared credentials file, and every output is searched for each.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import pytest
import urllib3

from dynamo_cdc.aws import Clients
from dynamo_cdc.capture import capture_once
from dynamo_cdc.cli import main
from dynamo_cdc.config import Settings
from dynamo_cdc.export import ExportRequest
from dynamo_cdc.lake import Lake
from dynamo_cdc.snapshot import take_snapshot
from tests.integration.conftest import unique_name

pytestmark = pytest.mark.integration

SECRET = "SECRET-sentinel-7c1f0e9d2b"
KEY_ID = "AKIASENTINEL00000000"
TOKEN = "TOKEN-sentinel-IQoJb3JpZ2luX2Vj/EHYaCXVz+ZWFzdC0x=="
CREDENTIALS = (KEY_ID, SECRET, TOKEN)


def leaks(texts: dict[str, str]) -> list[tuple[str, str]]:
    """(where, which credential) for every credential found in any of ``texts``."""
    return [(where, c) for where, text in texts.items() for c in CREDENTIALS if c in text]


def use_credentials(source: str, monkeypatch, tmp_path) -> Settings:
    """Put the sentinel credentials where ``source`` says; the settings that rely on them."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    if source == "settings":
        return Settings(access_key_id=KEY_ID, secret_access_key=SECRET, session_token=TOKEN)
    if source == "environment":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    else:
        path = tmp_path / "credentials"
        path.write_text(
            f"[sentinel]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
            f"aws_session_token = {TOKEN}\n"
        )
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_PROFILE", "sentinel")
    return Settings()


@pytest.mark.parametrize("source", ["settings", "environment", "shared_credentials_file"])
def test_no_credential_reaches_a_library_users_debug_log_through_an_s3_lake(
    source, local_aws, clients, make_table, bucket, tmp_path, monkeypatch, capsys, caplog
) -> None:
    table = make_table()
    clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    lake_bucket = f"lake-{uuid.uuid4().hex[:12]}"
    clients.s3.create_bucket(Bucket=lake_bucket)
    settings = use_credentials(source, monkeypatch, tmp_path)
    # What a user's logging.basicConfig(level=logging.DEBUG) turns on, botocore's included.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="botocore")
    mine = Clients(replace(settings, endpoint_url=local_aws.endpoint_url))
    lake = Lake(f"s3://{lake_bucket}/lake", mine.s3)
    request = ExportRequest(table=table, bucket=bucket, prefix="exports")
    take_snapshot(mine, lake, request, poll_seconds=0.05, workers=1)
    capture_once(mine, lake, table)
    url = mine.s3.generate_presigned_url(
        "get_object", Params={"Bucket": lake_bucket, "Key": lake.list(table)[0]}
    )
    urllib3.PoolManager().request("GET", url)  # urllib3 logs the URL, and its query

    assert "X-Amz-Security-Token" in caplog.text  # botocore logged the headers, not the values
    assert any(r.name.startswith("urllib3") for r in caplog.records)
    out = capsys.readouterr()
    assert leaks({"log": caplog.text, "stdout": out.out, "stderr": out.err}) == []


def test_cli_debug_shows_aws_requests_but_no_credential(
    local_aws, make_table, bucket, tmp_path, monkeypatch, capsys, caplog
) -> None:
    table = make_table()
    lake_bucket = f"lake-{uuid.uuid4().hex[:12]}"
    Clients(Settings(endpoint_url=local_aws.endpoint_url)).s3.create_bucket(Bucket=lake_bucket)
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", bucket)
    monkeypatch.setenv("DYNAMO_CDC_LAKE_ROOT", f"s3://{lake_bucket}/lake")
    monkeypatch.setenv("DYNAMO_CDC_AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("DYNAMO_CDC_AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("DYNAMO_CDC_AWS_SESSION_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)

    assert main(["--debug", "snapshot", table]) == 0
    assert main(["--debug", "snapshot", unique_name("missing")]) == 2  # an error path too

    assert "botocore.endpoint" in {r.name for r in caplog.records}  # --debug shows requests
    out = capsys.readouterr()
    assert leaks({"log": caplog.text, "stdout": out.out, "stderr": out.err}) == []


def test_secret_appears_in_no_log_output_error_or_lake_file(
    clients, local_aws, make_table, bucket, tmp_path, monkeypatch, capsys, caplog
) -> None:
    table = make_table()
    clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    lake = tmp_path / "lake"
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", bucket)
    monkeypatch.setenv("DYNAMO_CDC_LAKE_ROOT", str(lake))
    monkeypatch.setenv("DYNAMO_CDC_AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("DYNAMO_CDC_AWS_SECRET_ACCESS_KEY", SECRET)
    caplog.set_level(logging.DEBUG)

    assert main(["-v", "snapshot", table]) == 0
    assert main(["-v", "snapshot", "no-such-table-xyz"]) == 2  # an error path too
    assert main(["-v", "check", table, "no-such-table-xyz"]) == 1

    out = capsys.readouterr()
    texts = {"stdout": out.out, "stderr": out.err, "log": caplog.text}
    files = [p for p in lake.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:
        texts[str(path)] = path.read_bytes().decode("latin-1")
    leaked = [where for where, text in texts.items() if SECRET in text]
    assert leaked == []
    assert "Export of" in caplog.text  # the library's logging really was captured


def test_settings_and_clients_repr_hide_the_secret(monkeypatch) -> None:
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.config import Settings

    monkeypatch.setenv("DYNAMO_CDC_AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("DYNAMO_CDC_AWS_SECRET_ACCESS_KEY", SECRET)
    settings = Settings.from_env()
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in repr(Clients(settings))
