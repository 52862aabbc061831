"""A PITR export of a table on the local AWS becomes a verified Parquet snapshot."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from bench.generate import generate_items
from dynamo_cdc import codec, read_table
from dynamo_cdc.errors import (
    BucketError,
    ExportFailedError,
    ExportVerificationError,
    PitrNotEnabledError,
    PitrWindowError,
    TableNotFoundError,
)
from dynamo_cdc.export import ExportRequest, manifest_from_export_description, open_manifest
from dynamo_cdc.lake import Lake
from dynamo_cdc.snapshot import take_snapshot, write_snapshot

pytestmark = pytest.mark.integration


def put_items(clients, table: str, items: list[dict]) -> None:
    for i in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": codec.to_boto3_item(it)}} for it in items[i : i + 25]]
        while batch:
            out = clients.dynamodb.batch_write_item(RequestItems={table: batch})
            batch = out.get("UnprocessedItems", {}).get(table, [])


def scan_all(clients, table: str) -> dict[tuple, dict]:
    items = {}
    for page in clients.dynamodb.get_paginator("scan").paginate(TableName=table):
        for raw in page["Items"]:
            item = codec.normalize_stream_item(raw)
            items[(item["pk"]["S"], item["sk"]["S"])] = codec.deserialize_item(item)
    return items


def snapshot(clients, lake, table, bucket, **kw):
    request = ExportRequest(table=table, bucket=bucket, prefix="exports", **kw)
    return take_snapshot(clients, lake, request, poll_seconds=0.05, workers=2)


def test_snapshot_of_10000_items_of_every_type_reads_back_exactly(
    clients, orders_table, bucket, tmp_path
) -> None:
    items = list(generate_items(10_000, seed=7))
    put_items(clients, orders_table, items)
    source = scan_all(clients, orders_table)
    lake = Lake(str(tmp_path / "lake"))

    result = snapshot(clients, lake, orders_table, bucket)

    assert result.rows == 10_000 == result.lineage["item_count"]
    con = duckdb.connect()
    glob = f"{result.uri}/*.parquet"
    assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0] == 10_000
    rows = con.execute(f"SELECT pk, sk, _item FROM read_parquet('{glob}')").fetchall()
    for pk, sk, text in rows:
        assert codec.deserialize_item(codec.item_from_json_text(text)) == source[(pk, sk)]
    # typed columns hold the right values
    sample = con.sql(
        f"SELECT * FROM read_parquet('{glob}') ORDER BY pk, sk LIMIT 200"
    ).to_arrow_table()
    for row in sample.to_pylist():
        truth = source[(row["pk"], row["sk"])]
        for name, value in truth.items():
            if name not in row or isinstance(value, (dict, list, set, frozenset)):
                continue
            typed = row[name]
            if isinstance(value, Decimal) and not isinstance(typed, str):
                assert Decimal(typed) == value, name
            elif isinstance(value, (bool, bytes, str)) or value is None:
                assert typed == value or str(typed) == str(value), name
    lineage = json.loads(Path(result.uri, "_lineage.json").read_text())
    assert lineage["export_arn"] == result.lineage["export_arn"]
    # lineage also rides in the Parquet key-value metadata
    import pyarrow.parquet as pq

    meta = pq.read_schema(Path(result.uri, result.files[0].rsplit("/", 1)[1])).metadata
    assert json.loads(meta[b"dynamo_cdc.lineage"])["export_arn"] == lineage["export_arn"]
    assert read_table(str(tmp_path / "lake"), orders_table, view="snapshot").num_rows == 10_000


def test_export_time_is_honoured(clients, local_aws, orders_table, bucket, tmp_path) -> None:
    def put(pk: str, value: str) -> None:
        clients.dynamodb.put_item(
            TableName=orders_table, Item={"pk": {"S": pk}, "sk": {"S": "a"}, "v": {"S": value}}
        )

    put("deleted-later", "x")
    put("updated-later", "before")
    local_aws.control.advance_clock(120)
    export_time = local_aws.control.clock()["now"]
    local_aws.control.advance_clock(120)
    clients.dynamodb.delete_item(
        TableName=orders_table, Key={"pk": {"S": "deleted-later"}, "sk": {"S": "a"}}
    )
    put("created-later", "y")
    put("updated-later", "after")
    local_aws.control.advance_clock(60)

    from datetime import datetime

    at = datetime.fromisoformat(export_time.replace("Z", "+00:00"))
    result = snapshot(clients, Lake(str(tmp_path)), orders_table, bucket, export_time=at)

    rows = {
        r["pk"]: r["v"] for r in read_table(str(tmp_path), orders_table, "snapshot").to_pylist()
    }
    assert rows == {"deleted-later": "x", "updated-later": "before"}
    assert result.rows == 2


def _exported(clients, orders_table, bucket, n=300, fmt="DYNAMODB_JSON"):
    put_items(clients, orders_table, list(generate_items(n, seed=3)))
    request = ExportRequest(table=orders_table, bucket=bucket, prefix="exports", export_format=fmt)
    from dynamo_cdc.export import request_export, wait_for_export

    desc = wait_for_export(clients, request_export(clients, request), poll_seconds=0.05)
    return manifest_from_export_description(clients, desc)


def _rewrite_object(clients, bucket, key, transform) -> None:
    body = clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    clients.s3.put_object(Bucket=bucket, Key=key, Body=transform(body))


@pytest.mark.parametrize("target", ["another export's data file", "a key climbing out"])
def test_an_s3_manifest_naming_a_key_outside_its_exports_data_folder_is_refused_before_reading(
    clients, orders_table, bucket, target: str
) -> None:
    """A tampered manifest-files.json (its checksum file dropped) naming another export's data
    file, with that file's MD5, or a key with '..': refused before any data file is read."""
    import base64
    import hashlib

    first = _exported(clients, orders_table, bucket, n=50)
    other = _exported_again(clients, orders_table, bucket)
    files_key = first.summary["manifestFilesS3Key"]
    stolen = other.files[0].key
    if target == "a key climbing out":
        stolen = first.files[0].key.rsplit("/data/", 1)[0] + "/data/../../" + stolen
    body = clients.s3.get_object(Bucket=bucket, Key=other.files[0].key)["Body"].read()
    entries = [
        json.loads(line)
        for line in clients.s3.get_object(Bucket=bucket, Key=files_key)["Body"].read().splitlines()
    ]
    entries[0]["dataFileS3Key"] = stolen
    entries[0]["md5Checksum"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    clients.s3.put_object(
        Bucket=bucket, Key=files_key, Body="".join(json.dumps(e) + "\n" for e in entries)
    )
    for suffix in (".checksum", ".md5"):
        clients.s3.delete_object(Bucket=bucket, Key=files_key.rsplit(".", 1)[0] + suffix)
    summary_key = files_key.replace("manifest-files.json", "manifest-summary.json")
    with pytest.raises(ExportVerificationError, match="not under"):
        open_manifest(f"s3://{bucket}/{summary_key}", clients.s3)


def _exported_again(clients, table, bucket):
    """A second export of ``table`` (another ExportId: another prefix, the same bucket)."""
    from dynamo_cdc.export import request_export, wait_for_export

    request = ExportRequest(table=table, bucket=bucket, prefix="other-exports")
    desc = wait_for_export(clients, request_export(clients, request), poll_seconds=0.05)
    return manifest_from_export_description(clients, desc)


def test_flipped_byte_fails_naming_file_and_export_and_publishes_nothing(
    clients, orders_table, bucket, tmp_path
) -> None:
    manifest = _exported(clients, orders_table, bucket)
    victim = manifest.files[-1].key

    def flip(data: bytes) -> bytes:
        pos = len(data) // 2
        return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]

    _rewrite_object(clients, bucket, victim, flip)
    lake = Lake(str(tmp_path))
    with pytest.raises(ExportVerificationError) as info:
        write_snapshot(manifest, lake, orders_table, "2026-01-01", ["pk", "sk"], workers=2)
    assert victim in str(info.value) and manifest.export_arn in str(info.value)
    assert lake.list(orders_table) == []


def test_dropped_line_fails_the_item_count_even_with_a_matching_md5(
    clients, orders_table, bucket, tmp_path
) -> None:
    import base64
    import hashlib

    manifest = _exported(clients, orders_table, bucket)
    victim = manifest.files[0]
    new_body = {}

    def drop_line(data: bytes) -> bytes:
        lines = gzip.decompress(data).splitlines(keepends=True)
        new_body["data"] = gzip.compress(b"".join(lines[1:]))
        return new_body["data"]

    _rewrite_object(clients, bucket, victim.key, drop_line)
    # a manifest that agrees with the damaged file's MD5, so only the count can catch it
    md5 = base64.b64encode(hashlib.md5(new_body["data"]).digest()).decode()
    manifest.files[0] = type(victim)(victim.key, victim.item_count, md5, victim.etag)
    lake = Lake(str(tmp_path))
    with pytest.raises(ExportVerificationError, match=f"{victim.key}.*manifest says"):
        write_snapshot(manifest, lake, orders_table, "2026-01-01", ["pk", "sk"], workers=1)
    assert lake.list(orders_table) == []


def test_truncated_gzip_fails_clearly(clients, orders_table, bucket, tmp_path) -> None:
    import base64
    import hashlib

    manifest = _exported(clients, orders_table, bucket)
    victim = manifest.files[0]
    cut = {}

    def truncate(data: bytes) -> bytes:
        cut["data"] = data[: len(data) // 2]
        return cut["data"]

    _rewrite_object(clients, bucket, victim.key, truncate)
    md5 = base64.b64encode(hashlib.md5(cut["data"]).digest()).decode()
    manifest.files[0] = type(victim)(victim.key, victim.item_count, md5, victim.etag)
    with pytest.raises(ExportVerificationError, match="cannot be decompressed|truncated"):
        write_snapshot(manifest, Lake(str(tmp_path)), orders_table, "2026-01-01", workers=1)


def test_pitr_off_is_a_clear_error(clients, make_table, bucket, tmp_path) -> None:
    table = make_table(pitr=False)
    with pytest.raises(PitrNotEnabledError, match=f"{table}.*update-continuous-backups"):
        snapshot(clients, Lake(str(tmp_path)), table, bucket)


def test_missing_table_is_a_clear_error(clients, bucket, tmp_path) -> None:
    with pytest.raises(TableNotFoundError, match="no-such-table.*Fix:"):
        snapshot(clients, Lake(str(tmp_path)), "no-such-table", bucket)


def test_missing_bucket_is_a_clear_error(clients, orders_table, tmp_path) -> None:
    with pytest.raises(BucketError, match="no-such-bucket-x.*Fix:"):
        snapshot(clients, Lake(str(tmp_path)), orders_table, "no-such-bucket-x")


def test_export_time_before_pitr_window_names_earliest_time(
    clients, orders_table, bucket, tmp_path
) -> None:
    from datetime import UTC, datetime

    with pytest.raises(PitrWindowError, match="earliest restorable time"):
        snapshot(
            clients,
            Lake(str(tmp_path)),
            orders_table,
            bucket,
            export_time=datetime(2020, 1, 1, tzinfo=UTC),
        )


def test_failed_export_reports_failure_code(clients, local_aws, orders_table, bucket, tmp_path):
    local_aws.control.fail_next_export(failure_code="S3AccessDenied", failure_message="denied")
    with pytest.raises(ExportFailedError, match="FAILED: S3AccessDenied: denied"):
        snapshot(clients, Lake(str(tmp_path)), orders_table, bucket)


@pytest.mark.parametrize("fmt", ["DYNAMODB_JSON", "ION"])
def test_export_to_parquet_converts_from_s3_and_from_a_local_folder(
    clients, local_aws, orders_table, bucket, tmp_path, fmt: str, monkeypatch
) -> None:
    from dynamo_cdc.cli import main

    manifest = _exported(clients, orders_table, bucket, n=200, fmt=fmt)
    summary_key = manifest.summary["manifestFilesS3Key"].replace(
        "manifest-files.json", "manifest-summary.json"
    )
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    s3_uri = f"s3://{bucket}/{summary_key}"
    assert main(["export-to-parquet", s3_uri, str(tmp_path / "from-s3"), "--keys", "pk,sk"]) == 0

    local = tmp_path / "download"
    prefix = summary_key.rsplit("/", 1)[0]
    for page in clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page["Contents"]:
            dest = local / obj["Key"][len(prefix) + 1 :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            clients.s3.download_file(bucket, obj["Key"], str(dest))
    assert (
        main(["export-to-parquet", str(local), str(tmp_path / "from-dir"), "--keys", "pk,sk"]) == 0
    )

    expected = scan_all(clients, orders_table)
    for root in ("from-s3", "from-dir"):
        rows = read_table(str(tmp_path / root), orders_table, "snapshot").to_pylist()
        got = {
            (r["pk"], r["sk"]): codec.deserialize_item(codec.item_from_json_text(r["_item"]))
            for r in rows
        }
        assert got == expected
    assert open_manifest(str(local)).output_format == fmt


def test_sse_kms_and_a_cross_account_bucket_owner_reach_the_export(
    clients, local_aws, orders_table, bucket, tmp_path, monkeypatch
) -> None:
    from dynamo_cdc.cli import main

    put_items(clients, orders_table, list(generate_items(20, seed=5)))
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", bucket)
    monkeypatch.setenv("DYNAMO_CDC_LAKE_ROOT", str(tmp_path))
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_SSE_ALGORITHM", "kms")
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_KMS_KEY_ID", key_arn)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET_OWNER", "123456789012")

    assert main(["snapshot", orders_table]) == 0

    table_arn = clients.dynamodb.describe_table(TableName=orders_table)["Table"]["TableArn"]
    (summary,) = clients.dynamodb.list_exports(TableArn=table_arn)["ExportSummaries"]
    desc = clients.dynamodb.describe_export(ExportArn=summary["ExportArn"])["ExportDescription"]
    assert desc["S3SseAlgorithm"] == "KMS" and desc["S3SseKmsKeyId"] == key_arn
    assert desc["S3BucketOwner"] == "123456789012"
    assert read_table(str(tmp_path), orders_table, "snapshot").num_rows == 20


def test_a_second_now_snapshot_exports_the_table_again_instead_of_reusing_the_first(
    clients, local_aws, orders_table, bucket, tmp_path, monkeypatch
) -> None:
    """`dynamo-cdc snapshot t` twice, writes between: the second shows them (a new export)."""
    from dynamo_cdc.cli import main

    put_items(clients, orders_table, list(generate_items(10, seed=3)))
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", bucket)
    monkeypatch.setenv("DYNAMO_CDC_LAKE_ROOT", str(tmp_path))
    assert main(["snapshot", orders_table]) == 0
    first = read_table(str(tmp_path), orders_table, "snapshot").num_rows

    put_items(clients, orders_table, list(generate_items(25, seed=4)))
    assert main(["snapshot", orders_table]) == 0

    table_arn = clients.dynamodb.describe_table(TableName=orders_table)["Table"]["TableArn"]
    exports = clients.dynamodb.list_exports(TableArn=table_arn)["ExportSummaries"]
    assert first == 10
    assert len(exports) == 2
    assert read_table(str(tmp_path), orders_table, "snapshot").num_rows == len(
        scan_all(clients, orders_table)
    )


def test_a_retried_export_request_reattaches_to_the_export_it_started(
    clients, orders_table, bucket
) -> None:
    """The same request sent twice (a retry) starts one export, "now" or at a time."""
    from dynamo_cdc.export import request_export

    now_request = ExportRequest(table=orders_table, bucket=bucket, prefix="exports")
    timed = ExportRequest(
        table=orders_table,
        bucket=bucket,
        prefix="exports",
        export_time=clients.dynamodb.describe_continuous_backups(TableName=orders_table)[
            "ContinuousBackupsDescription"
        ]["PointInTimeRecoveryDescription"]["LatestRestorableDateTime"],
    )
    same_run = ExportRequest(
        table=orders_table, bucket=bucket, prefix="exports", request_id="run-1:2026-12-06"
    )

    assert request_export(clients, now_request) == request_export(clients, now_request)
    assert request_export(clients, timed) == request_export(clients, timed)
    assert request_export(clients, same_run) == request_export(
        clients, replace(same_run, export_format="DYNAMODB_JSON")
    )
    assert request_export(clients, same_run) != request_export(
        clients, replace(same_run, request_id="run-2:2026-12-06")
    )
