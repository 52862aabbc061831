"""The local AWS's PITR exports behave like AWS's: point in time, layout, manifests, formats,
incremental windows, idempotency, paging, failures, and response shapes per botocore's model."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

from dynamo_cdc.codec import ion_line_to_record

pytestmark = pytest.mark.integration

MINUTE = 60.0


def server_now(local_aws: Any) -> datetime:
    return datetime.fromtimestamp(local_aws.control.clock()["now_micros"] / 1e6, tz=UTC)


def table_arn(clients: Any, table: str) -> str:
    return str(clients.dynamodb.describe_table(TableName=table)["Table"]["TableArn"])


def put(clients: Any, table: str, pk: str, **attrs: dict[str, Any]) -> None:
    clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, **attrs})


def read_export(clients: Any, bucket: str, desc: dict[str, Any]) -> dict[str, Any]:
    """Read an export the way a careful consumer would, checking every checksum on the way."""
    s3 = clients.s3

    def get(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    summary_key = desc["ExportManifest"]
    summary_raw = get(summary_key)
    summary = json.loads(summary_raw)
    base = summary_key.rsplit("/", 1)[0]
    assert get(f"{base}/manifest-summary.checksum").decode() == hashlib.md5(summary_raw).hexdigest()
    files_raw = get(summary["manifestFilesS3Key"])
    assert get(f"{base}/manifest-files.checksum").decode() == hashlib.md5(files_raw).hexdigest()
    entries = [json.loads(line) for line in files_raw.decode().splitlines()]
    lines: list[bytes] = []
    for entry in entries:
        body = get(entry["dataFileS3Key"])
        assert base64.b64encode(hashlib.md5(body).digest()).decode() == entry["md5Checksum"]
        assert entry["etag"] == hashlib.md5(body).hexdigest()
        file_lines = gzip.decompress(body).splitlines()
        assert len(file_lines) == entry["itemCount"]
        lines.extend(file_lines)
    return {"summary": summary, "files": entries, "lines": lines, "base": base}


def full_export(clients: Any, table: str, bucket: str, **kwargs: Any) -> dict[str, Any]:
    return dict(
        clients.dynamodb.export_table_to_point_in_time(
            TableArn=table_arn(clients, table), S3Bucket=bucket, **kwargs
        )["ExportDescription"]
    )


def pks_of_full_export(lines: list[bytes]) -> set[str]:
    return {json.loads(line)["Item"]["pk"]["S"] for line in lines}


def test_full_export_is_the_table_as_it_was_at_export_time(
    clients, local_aws, make_table, bucket, wait_export
):
    table = make_table()
    put(clients, table, "kept", v={"N": "1"})
    put(clients, table, "deleted-later", v={"N": "2"})
    put(clients, table, "changed-later", v={"N": "3"})
    local_aws.control.advance_clock(MINUTE)
    export_time = server_now(local_aws)
    local_aws.control.advance_clock(MINUTE)
    clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "deleted-later"}})
    put(clients, table, "created-later", v={"N": "4"})
    put(clients, table, "changed-later", v={"N": "30"})

    desc = wait_export(full_export(clients, table, bucket, ExportTime=export_time)["ExportArn"])

    assert desc["ExportStatus"] == "COMPLETED"
    out = read_export(clients, bucket, desc)
    items = {json.loads(x)["Item"]["pk"]["S"]: json.loads(x)["Item"] for x in out["lines"]}
    assert set(items) == {"kept", "deleted-later", "changed-later"}
    assert items["changed-later"]["v"] == {"N": "3"}
    assert desc["ItemCount"] == 3
    assert abs(desc["ExportTime"].timestamp() - export_time.timestamp()) < 0.002


def test_export_layout_manifests_and_checksums_match_aws(
    clients, local_aws, make_table, bucket, wait_export
):
    table = make_table(range_key=True)
    with_batches = [
        {"PutRequest": {"Item": {"pk": {"S": f"p{i % 7}"}, "sk": {"N": str(i)}}}}
        for i in range(250)
    ]
    for start in range(0, len(with_batches), 25):
        clients.dynamodb.batch_write_item(RequestItems={table: with_batches[start : start + 25]})

    started = full_export(clients, table, bucket, S3Prefix="exports/daily")
    assert started["ExportStatus"] == "IN_PROGRESS"
    assert re.fullmatch(
        rf"arn:aws:dynamodb:us-east-1:\d{{12}}:table/{re.escape(table)}/export/\d{{14}}-[0-9a-f]{{8}}",
        started["ExportArn"],
    )
    desc = wait_export(started["ExportArn"])
    export_id = started["ExportArn"].rsplit("/", 1)[1]
    base = f"exports/daily/AWSDynamoDB/{export_id}"
    keys = {o["Key"] for o in clients.s3.list_objects_v2(Bucket=bucket, Prefix=base)["Contents"]}
    assert {
        f"{base}/_started",
        f"{base}/manifest-summary.json",
        f"{base}/manifest-summary.checksum",
        f"{base}/manifest-files.json",
        f"{base}/manifest-files.checksum",
    } <= keys
    assert desc["ExportManifest"] == f"{base}/manifest-summary.json"

    out = read_export(clients, bucket, desc)
    summary = out["summary"]
    assert len(out["files"]) >= 3  # items are spread over several data files
    assert all(
        re.fullmatch(rf"{base}/data/[a-z2-7]{{26}}\.json\.gz", f["dataFileS3Key"])
        for f in out["files"]
    )
    assert sum(f["itemCount"] for f in out["files"]) == summary["itemCount"] == 250
    assert desc["ItemCount"] == 250
    assert all(set(json.loads(x)) == {"Item"} for x in out["lines"])
    assert summary["version"] == "2020-06-30"
    assert summary["exportArn"] == desc["ExportArn"]
    assert summary["tableArn"] == desc["TableArn"] and summary["tableId"] == desc["TableId"]
    assert summary["s3Bucket"] == bucket and summary["s3Prefix"] == "exports/daily"
    assert summary["s3SseAlgorithm"] == "AES256" and summary["s3SseKmsKeyId"] is None
    assert summary["manifestFilesS3Key"] == f"{base}/manifest-files.json"
    assert summary["outputFormat"] == "DYNAMODB_JSON"
    assert summary["billedSizeBytes"] == desc["BilledSizeBytes"] > 0
    for name in ("startTime", "endTime", "exportTime"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", summary[name])
    assert "exportType" not in summary and "outputView" not in summary


def test_ion_export_decodes_to_the_items_of_the_table(clients, make_table, bucket, wait_export):
    table = make_table()
    item = {
        "pk": {"S": "all-types"},
        "n": {"N": "-12.50"},
        "big": {"N": "12345678901234567890123456789012345678"},
        "b": {"B": b"\x00\xffbin"},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": [b"x"]},
        "flag": {"BOOL": False},
        "nothing": {"NULL": True},
        "l": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"k": {"S": "v"}}}]},
        "m": {"M": {"weird key-1.x": {"S": "v"}, "inner": {"L": []}}},
    }
    clients.dynamodb.put_item(TableName=table, Item=item)

    desc = wait_export(full_export(clients, table, bucket, ExportFormat="ION")["ExportArn"])

    out = read_export(clients, bucket, desc)
    assert out["summary"]["outputFormat"] == "ION"
    assert all(f["dataFileS3Key"].endswith(".ion.gz") for f in out["files"])
    (line,) = out["lines"]
    assert line.startswith(b"$ion_1_0 {Item:")
    got = ion_line_to_record(line)["Item"]
    live = clients.dynamodb.get_item(TableName=table, Key={"pk": {"S": "all-types"}})["Item"]
    assert got["n"] == {"N": "-12.50"} or got["n"]["N"] in ("-12.5", "-12.50")
    assert got["big"] == {"N": "12345678901234567890123456789012345678"}
    assert base64.b64decode(got["b"]["B"]) == live["b"]["B"] == b"\x00\xffbin"
    assert set(got["ss"]["SS"]) == {"a", "b"}
    assert sorted(got["ns"]["NS"]) == ["1", "2.5"]
    assert [base64.b64decode(v) for v in got["bs"]["BS"]] == [b"x"]
    assert got["flag"] == {"BOOL": False} and got["nothing"] == {"NULL": True}
    assert got["l"]["L"][2] == {"M": {"k": {"S": "v"}}}
    assert got["m"]["M"]["weird key-1.x"] == {"S": "v"}


def incremental(
    clients: Any, table: str, bucket: str, start: datetime, end: datetime, **spec: Any
) -> dict[str, Any]:
    return dict(
        clients.dynamodb.export_table_to_point_in_time(
            TableArn=table_arn(clients, table),
            S3Bucket=bucket,
            S3Prefix="inc",
            ExportType="INCREMENTAL_EXPORT",
            IncrementalExportSpecification={"ExportFromTime": start, "ExportToTime": end, **spec},
        )["ExportDescription"]
    )


def test_incremental_export_has_one_net_change_per_item_with_old_image_before_the_window(
    clients, local_aws, make_table, bucket, wait_export
):
    table = make_table()
    put(clients, table, "modified", v={"N": "1"})
    put(clients, table, "deleted", v={"N": "2"})
    put(clients, table, "untouched", v={"N": "3"})
    local_aws.control.advance_clock(MINUTE)
    start = server_now(local_aws)
    local_aws.control.advance_clock(1)
    put(clients, table, "modified", v={"N": "10"})
    put(clients, table, "modified", v={"N": "11"})
    clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "deleted"}})
    put(clients, table, "inserted", v={"N": "4"})
    put(clients, table, "born-and-gone", v={"N": "5"})
    clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "born-and-gone"}})
    local_aws.control.advance_clock(20 * MINUTE)
    end = server_now(local_aws)
    local_aws.control.advance_clock(1)
    put(clients, table, "after-window", v={"N": "6"})

    desc = wait_export(incremental(clients, table, bucket, start, end)["ExportArn"])

    assert desc["ExportStatus"] == "COMPLETED", desc
    assert desc["ExportType"] == "INCREMENTAL_EXPORT"
    assert desc["IncrementalExportSpecification"]["ExportViewType"] == "NEW_AND_OLD_IMAGES"
    out = read_export(clients, bucket, desc)
    assert all(f["dataFileS3Key"].startswith("inc/AWSDynamoDB/data/") for f in out["files"])
    records = {json.loads(x)["Keys"]["pk"]["S"]: json.loads(x) for x in out["lines"]}
    assert set(records) == {"modified", "deleted", "inserted"}
    assert records["modified"]["OldImage"]["v"] == {"N": "1"}
    assert records["modified"]["NewImage"]["v"] == {"N": "11"}
    assert (
        records["deleted"]["OldImage"]["v"] == {"N": "2"} and "NewImage" not in records["deleted"]
    )
    assert (
        records["inserted"]["NewImage"]["v"] == {"N": "4"} and "OldImage" not in records["inserted"]
    )
    for rec in records.values():
        micros = int(rec["Metadata"]["WriteTimestampMicros"]["N"])
        assert start.timestamp() * 1e6 <= micros < end.timestamp() * 1e6
        assert list(rec)[:2] == ["Metadata", "Keys"]
    summary = out["summary"]
    assert summary["exportType"] == "INCREMENTAL_EXPORT"
    assert summary["outputView"] == "NEW_AND_OLD_IMAGES"
    assert summary["itemCount"] == 3 == desc["ItemCount"]
    assert "exportFromTime" in summary and "exportToTime" in summary

    new_only = wait_export(
        incremental(clients, table, bucket, start, end, ExportViewType="NEW_IMAGE")["ExportArn"]
    )
    lines = [json.loads(x) for x in read_export(clients, bucket, new_only)["lines"]]
    assert len(lines) == 3 and not any("OldImage" in rec for rec in lines)


def error_code_of(call: Any) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def test_incremental_window_must_be_15_minutes_to_24_hours_inside_the_pitr_window(
    clients, local_aws, make_table, bucket
):
    table = make_table()
    pitr_on = server_now(local_aws)
    local_aws.control.advance_clock(2 * 24 * 3600)
    now = server_now(local_aws)
    h = 3600.0

    def window(start_offset: float, end_offset: float) -> str:
        start = datetime.fromtimestamp(now.timestamp() + start_offset, tz=UTC)
        end = datetime.fromtimestamp(now.timestamp() + end_offset, tz=UTC)
        return error_code_of(lambda: incremental(clients, table, bucket, start, end))

    assert window(-h, -h + 14 * MINUTE) == "ValidationException"  # too short
    assert window(-30 * h, -5 * h) == "ValidationException"  # longer than 24 h
    assert window(-h, -2 * h) == "ValidationException"  # ends before it starts
    assert window(-h, +h) == "InvalidExportTimeException"  # ends in the future
    before_pitr = pitr_on.timestamp() - now.timestamp() - h
    assert window(before_pitr, before_pitr + 2 * h) == "InvalidExportTimeException"
    assert (
        error_code_of(  # no ExportFromTime
            lambda: clients.dynamodb.export_table_to_point_in_time(
                TableArn=table_arn(clients, table),
                S3Bucket=bucket,
                ExportType="INCREMENTAL_EXPORT",
                IncrementalExportSpecification={"ExportToTime": now},
            )
        )
        == "ValidationException"
    )


def test_export_time_outside_the_pitr_window_is_refused(clients, local_aws, make_table, bucket):
    before = server_now(local_aws)
    local_aws.control.advance_clock(1)
    table = make_table()
    local_aws.control.advance_clock(MINUTE)
    future = datetime.fromtimestamp(server_now(local_aws).timestamp() + 3600, tz=UTC)

    assert error_code_of(lambda: full_export(clients, table, bucket, ExportTime=before)) == (
        "InvalidExportTimeException"
    )
    assert error_code_of(lambda: full_export(clients, table, bucket, ExportTime=future)) == (
        "InvalidExportTimeException"
    )


def test_export_without_pitr_is_refused(clients, make_table, bucket):
    table = make_table(pitr=False)

    code = error_code_of(lambda: full_export(clients, table, bucket))

    assert code == "PointInTimeRecoveryUnavailableException"


def test_export_of_a_missing_table_is_refused(clients, bucket):
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/no-such-table"

    code = error_code_of(
        lambda: clients.dynamodb.export_table_to_point_in_time(TableArn=arn, S3Bucket=bucket)
    )

    assert code == "TableNotFoundException"


def test_export_to_a_missing_bucket_fails_with_s3_no_such_bucket(clients, make_table, wait_export):
    table = make_table()

    desc = wait_export(full_export(clients, table, "no-such-bucket-anywhere")["ExportArn"])

    assert desc["ExportStatus"] == "FAILED"
    assert desc["FailureCode"] == "S3NoSuchBucket"
    assert "ItemCount" not in desc and "ExportManifest" not in desc


def test_forced_failure_makes_the_next_export_fail(
    clients, local_aws, make_table, bucket, wait_export
):
    table = make_table()
    local_aws.control.fail_next_export("S3AccessDenied", "Access denied to the bucket")

    failed = wait_export(full_export(clients, table, bucket)["ExportArn"])
    after = wait_export(full_export(clients, table, bucket)["ExportArn"])

    assert (failed["ExportStatus"], failed["FailureCode"]) == ("FAILED", "S3AccessDenied")
    assert failed["FailureMessage"] == "Access denied to the bucket"
    assert after["ExportStatus"] == "COMPLETED"


def test_client_token_returns_the_same_export_and_refuses_other_parameters(
    clients, local_aws, make_table, bucket
):
    table = make_table()
    local_aws.control.advance_clock(MINUTE)
    at = server_now(local_aws)

    first = full_export(clients, table, bucket, ExportTime=at, ClientToken="token-1")
    again = full_export(clients, table, bucket, ExportTime=at, ClientToken="token-1")
    other = full_export(clients, table, bucket, ExportTime=at, ClientToken="token-2")
    conflict = error_code_of(
        lambda: full_export(
            clients, table, bucket, ExportTime=at, ClientToken="token-1", S3Prefix="x"
        )
    )

    assert again["ExportArn"] == first["ExportArn"]
    assert again["ClientToken"] == "token-1"
    assert other["ExportArn"] != first["ExportArn"]
    assert conflict == "ExportConflictException"


def test_list_exports_pages_with_max_results_and_next_token(clients, make_table, bucket):
    table = make_table()
    arns = [full_export(clients, table, bucket)["ExportArn"] for _ in range(3)]
    tarn = table_arn(clients, table)

    page1 = clients.dynamodb.list_exports(TableArn=tarn, MaxResults=2)
    page2 = clients.dynamodb.list_exports(TableArn=tarn, MaxResults=2, NextToken=page1["NextToken"])
    everything = clients.dynamodb.list_exports()

    assert [s["ExportArn"] for s in page1["ExportSummaries"]] == arns[:2]
    assert [s["ExportArn"] for s in page2["ExportSummaries"]] == arns[2:]
    assert "NextToken" not in page2
    assert all(s["ExportType"] == "FULL_EXPORT" for s in page1["ExportSummaries"])
    listed = set()
    kwargs: dict[str, Any] = {}
    while True:
        page = clients.dynamodb.list_exports(**kwargs)
        listed |= {s["ExportArn"] for s in page["ExportSummaries"]}
        if "NextToken" not in page:
            break
        kwargs = {"NextToken": page["NextToken"]}
    assert set(arns) <= listed
    assert len(everything["ExportSummaries"]) <= 25


def test_describe_export_of_an_unknown_arn_is_export_not_found(clients):
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/x/export/01234567890123-abcdef12"

    assert error_code_of(lambda: clients.dynamodb.describe_export(ExportArn=arn)) == (
        "ExportNotFoundException"
    )


# -- response shapes per botocore's service model ------------------------------------------------


def shape_errors(value: Any, shape: Any, path: str = "") -> list[str]:
    """Differences between a raw JSON value and a botocore shape (unknown members, wrong
    types, missing required members, values outside an enum)."""
    t = shape.type_name
    errors: list[str] = []
    if t == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        for name in shape.required_members:
            if name not in value:
                errors.append(f"{path}.{name}: required member missing")
        for name, member in value.items():
            if name not in shape.members:
                errors.append(f"{path}.{name}: not in the model")
            else:
                errors += shape_errors(member, shape.members[name], f"{path}.{name}")
    elif t == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        for i, member in enumerate(value):
            errors += shape_errors(member, shape.member, f"{path}[{i}]")
    elif t == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        for k, v in value.items():
            errors += shape_errors(v, shape.value, f"{path}[{k}]")
    elif t == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string")
        elif shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} not in {shape.enum}")
    elif t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer")
    elif t == "timestamp":
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(f"{path}: expected epoch seconds")
    elif t == "boolean" and not isinstance(value, bool):
        errors.append(f"{path}: expected a boolean")
    return errors


def test_export_responses_match_botocore_service_model(
    clients, local_aws, make_table, bucket, wait_export
):
    model = botocore.session.get_session().get_service_model("dynamodb")
    raw: dict[str, list[Any]] = {}

    def keep(http_response: Any, model: Any, **kwargs: Any) -> None:
        raw.setdefault(model.name, []).append(json.loads(http_response.content))

    clients.dynamodb.meta.events.register("after-call.dynamodb", keep)
    table = make_table()
    put(clients, table, "a", v={"N": "1"})
    local_aws.control.advance_clock(30 * MINUTE)
    full = full_export(clients, table, bucket, S3Prefix="p", S3BucketOwner="123456789012")
    wait_export(full["ExportArn"])
    now = server_now(local_aws)
    inc = incremental(
        clients, table, bucket, datetime.fromtimestamp(now.timestamp() - 20 * MINUTE, tz=UTC), now
    )
    wait_export(inc["ExportArn"])
    failing = full_export(clients, table, "no-such-bucket-for-shapes")
    wait_export(failing["ExportArn"])
    clients.dynamodb.list_exports(TableArn=table_arn(clients, table), MaxResults=1)

    checked = 0
    for op in ("ExportTableToPointInTime", "DescribeExport", "ListExports"):
        output = model.operation_model(op).output_shape
        assert raw.get(op), f"no {op} response captured"
        for body in raw[op]:
            assert shape_errors(body, output) == [], (op, body)
            checked += 1
    statuses = {b["ExportDescription"]["ExportStatus"] for b in raw["DescribeExport"]}
    assert {"COMPLETED", "FAILED"} <= statuses
    assert checked >= 8
