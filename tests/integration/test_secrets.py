"""Credentials never reach logs, errors, output or the lake."""

from __future__ import annotations

import logging

import pytest

from dynamo_cdc.cli import main

pytestmark = pytest.mark.integration

SECRET = "SECRET-sentinel-7c1f0e9d2b"
KEY_ID = "AKIASENTINEL00000000"


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
