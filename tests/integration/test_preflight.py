"""`dynamo-cdc check` says, per table and check, what is wrong and how to fix it."""

from __future__ import annotations

import pytest

from dynamo_cdc.cli import main

pytestmark = pytest.mark.integration


def _table(clients, name: str, *, stream: str | None, pitr: bool) -> str:
    kwargs = {}
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream}
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


def test_check_prints_a_row_per_table_and_check_with_fixes(
    clients, local_aws, bucket, tmp_path, monkeypatch, capsys
) -> None:
    import uuid

    tag = uuid.uuid4().hex[:6]
    good = _table(clients, f"good-{tag}", stream="NEW_AND_OLD_IMAGES", pitr=True)
    keys_only = _table(clients, f"keys-{tag}", stream="KEYS_ONLY", pitr=True)
    new_image = _table(clients, f"newimg-{tag}", stream="NEW_IMAGE", pitr=True)
    no_stream = _table(clients, f"nostream-{tag}", stream=None, pitr=True)
    no_pitr = _table(clients, f"nopitr-{tag}", stream="NEW_AND_OLD_IMAGES", pitr=False)
    missing = f"missing-{tag}"
    tables = tmp_path / "tables.csv"
    tables.write_text("\n".join([good, keys_only, new_image, no_stream, no_pitr, missing]) + "\n")
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_TABLES", str(tables))
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", bucket)

    assert main(["check"]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("OK", "FAIL"))]

    def row(table: str, check: str) -> str:
        (match,) = [
            r
            for r in rows
            if f" {table} " in r and r.split(f" {table} ", 1)[1].lstrip().startswith(check)
        ]
        return match

    assert row(good, "stream").startswith("OK") and row(good, "PITR").startswith("OK")
    assert row(keys_only, "stream").startswith("FAIL") and "KEYS_ONLY" in row(keys_only, "stream")
    assert "NEW_IMAGE" in row(new_image, "stream") and row(new_image, "stream").startswith("FAIL")
    assert row(no_stream, "stream").startswith("FAIL")
    assert row(no_pitr, "PITR").startswith("FAIL")
    assert row(missing, "table exists").startswith("FAIL")
    assert row("(export bucket)", "export bucket").startswith("OK")
    assert "StreamViewType=NEW_AND_OLD_IMAGES" in out
    assert "PointInTimeRecoveryEnabled=true" in out
    assert out.rstrip().endswith("failed")


def test_check_reports_a_missing_bucket_with_the_fix(
    clients, local_aws, make_table, monkeypatch, capsys
) -> None:
    table = make_table()
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", "no-such-bucket-zz")
    assert main(["check", table]) == 1
    out = capsys.readouterr().out
    assert "bucket 'no-such-bucket-zz' does not exist" in out
    assert "aws s3 mb s3://no-such-bucket-zz" in out


def test_check_passes_for_a_well_configured_table(
    clients, local_aws, make_table, bucket, monkeypatch, capsys, tmp_path
) -> None:
    table = make_table()
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", bucket)
    monkeypatch.setenv("DYNAMO_CDC_LAKE_ROOT", str(tmp_path / "lake"))
    assert main(["check", table]) == 0
    out = capsys.readouterr().out
    assert "5 checks passed, 0 failed" in out  # table, stream, PITR, export bucket, lake root
    assert f"lake root      {tmp_path / 'lake'} is writable" in out
