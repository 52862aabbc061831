"""Hostile input stays confined and bounded: a tampered export, a lying stream, a partition name
from input never reach outside their place, and no input makes us crash or eat the machine.

docs/reliability.md ("Hostile input: confined and bounded") lists what these tests cover.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from bench.generate import generate_export
from dynamo_cdc.changes import records_to_table, write_change_batch
from dynamo_cdc.errors import ExportVerificationError, LakeError, StreamRecordError
from dynamo_cdc.export import open_manifest
from dynamo_cdc.lake import Lake
from dynamo_cdc.snapshot import write_snapshot

KEYS = (("pk", "S"),)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    return Path(generate_export(tmp_path / "bucket", items=60, files=2, seed=3).export_dir)


def _point_first_data_file_at(export_dir: Path, key: str, target: Path | None) -> None:
    """Rewrite manifest-files.json so that its first entry names ``key`` (with the MD5 of
    ``target`` when given, so only the key check can refuse it)."""
    lines = [json.loads(x) for x in (export_dir / "manifest-files.json").read_text().splitlines()]
    lines[0]["dataFileS3Key"] = key
    if target is not None:
        digest = hashlib.md5(target.read_bytes()).digest()
        lines[0]["md5Checksum"] = base64.b64encode(digest).decode()
    (export_dir / "manifest-files.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for name in ("manifest-files.md5", "manifest-files.checksum"):
        (export_dir / name).unlink(missing_ok=True)


def _outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.json.gz"
    secret.write_bytes(b"a file outside the export")
    return secret


@pytest.mark.parametrize(
    "key",
    [
        "{secret}",  # absolute
        "AWSDynamoDB/{export_id}/data/../../../../secret.json.gz",  # climbing out
        "AWSDynamoDB/{export_id}/../secret.json.gz",
        "AWSDynamoDB/{export_id}/data/sub/x.json.gz",  # not a file directly in data/
        "AWSDynamoDB/01700000000000-deadbeef/data/x.json.gz",  # another export's data
        "AWSDynamoDB/{export_id}/manifest-summary.json",  # the export's own, outside data/
        "AWSDynamoDB/{export_id}/data/\x00.json.gz",
    ],
)
def test_a_manifest_key_outside_its_exports_data_folder_is_refused_before_any_file_is_read(
    export_dir: Path, tmp_path: Path, key: str
) -> None:
    secret = _outside(tmp_path)
    key = key.format(secret=secret, export_id=export_dir.name)
    _point_first_data_file_at(export_dir, key, secret)
    md5_of_secret = base64.b64encode(hashlib.md5(secret.read_bytes()).digest()).decode()
    with pytest.raises(ExportVerificationError, match="not under") as info:
        open_manifest(str(export_dir))
    assert md5_of_secret not in str(info.value) or key == str(secret)


def test_a_refused_manifest_publishes_nothing_and_never_prints_an_outside_files_md5(
    export_dir: Path, tmp_path: Path
) -> None:
    secret = _outside(tmp_path)
    _point_first_data_file_at(export_dir, "AWSDynamoDB/x/data/../../../../secret.json.gz", None)
    with pytest.raises(ExportVerificationError) as info:
        manifest = open_manifest(str(export_dir))
        write_snapshot(manifest, Lake(str(tmp_path / "lake")), "orders", "2026-01-01", workers=1)
    digest = base64.b64encode(hashlib.md5(secret.read_bytes()).digest()).decode()
    assert digest not in str(info.value)
    assert not (tmp_path / "lake").exists() or Lake(str(tmp_path / "lake")).list("orders") == []


def test_a_manifest_files_key_outside_the_export_is_refused_before_it_is_read(
    export_dir: Path, tmp_path: Path
) -> None:
    summary = json.loads((export_dir / "manifest-summary.json").read_text())
    summary["manifestFilesS3Key"] = "AWSDynamoDB/x/../../../etc/passwd"
    (export_dir / "manifest-summary.json").write_text(json.dumps(summary))
    for name in ("manifest-summary.md5", "manifest-summary.checksum"):
        (export_dir / name).unlink(missing_ok=True)
    with pytest.raises(ExportVerificationError, match="not under"):
        open_manifest(str(export_dir))


def test_an_untampered_export_still_opens(export_dir: Path) -> None:
    manifest = open_manifest(str(export_dir))
    assert len(manifest.files) == 2


# -- stream identifiers and lake paths -------------------------------------------------------


def _records(seq: str = "1" * 21) -> list[dict]:
    keys = {"pk": {"S": "a"}}
    return [
        {
            "eventID": "e1",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "Keys": keys,
                "NewImage": keys,
                "SequenceNumber": seq,
                "SizeBytes": 10,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
                "ApproximateCreationDateTime": 1_700_000_000,
            },
        }
    ]


@pytest.mark.parametrize(
    "shard", ["shardId-1/../../x", "shardId-1/nested", "shard\x00id", "shard\nid", "s" * 66, ""]
)
def test_a_shard_id_aws_never_gives_is_refused_before_it_becomes_a_file_name(
    tmp_path: Path, shard: str
) -> None:
    rows = records_to_table(_records(), KEYS, shard_ids=shard)
    with pytest.raises(StreamRecordError, match="shard id"):
        write_change_batch(Lake(str(tmp_path)), "orders", rows)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seq", ["12/34", "1e5", "-1", "1" * 41, "12\x0034"])
def test_a_sequence_number_that_is_not_digits_is_refused_before_it_becomes_a_file_name(
    tmp_path: Path, seq: str
) -> None:
    rows = records_to_table(_records(seq), KEYS, shard_ids="shardId-00000001700000000000-0a1b2c3d")
    with pytest.raises(StreamRecordError, match="sequence number"):
        write_change_batch(Lake(str(tmp_path)), "orders", rows)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rel", ["t/a\x00b", "t/a\nb", "t/\x1b[31m", "t/x\x7f"])
def test_the_lake_refuses_control_characters_in_any_path(tmp_path: Path, rel: str) -> None:
    lake = Lake(str(tmp_path))
    for call in (
        lambda: lake.write_bytes(rel, b"x"),
        lambda: lake.read_bytes(rel),
        lambda: lake.list(rel),
        lambda: lake.uri(rel),
    ):
        with pytest.raises(LakeError, match="control character"):
            call()


# -- partition names from input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "export_time", ["../../../x", "2026-01-01/../../x", "2026-13-45T00:00:00Z", "yesterday"]
)
def test_a_manifest_export_time_that_is_not_a_time_never_becomes_a_folder(
    export_dir: Path, tmp_path: Path, export_time: str
) -> None:
    summary = json.loads((export_dir / "manifest-summary.json").read_text())
    summary["exportTime"] = export_time
    (export_dir / "manifest-summary.json").write_text(json.dumps(summary))
    for name in ("manifest-summary.md5", "manifest-summary.checksum"):
        (export_dir / name).unlink(missing_ok=True)
    with pytest.raises(ExportVerificationError, match="exportTime .* is not an ISO 8601 time"):
        _ = open_manifest(str(export_dir)).export_date


def test_a_manifest_export_time_gives_its_utc_date() -> None:
    from dynamo_cdc.export import ExportManifest, LocalExportSource

    manifest = ExportManifest(
        LocalExportSource(Path(".")), {"exportTime": "2026-01-01T23:30:00-05:00"}
    )
    assert manifest.export_date == "2026-01-02"


@pytest.mark.parametrize(
    "date", ["../x", "2026-01-01/../../x", "2026-02-30", "20260101", " 2026-01-01"]
)
def test_a_snapshot_partition_that_is_not_a_date_is_refused(
    export_dir: Path, tmp_path: Path, date: str
) -> None:
    manifest = open_manifest(str(export_dir))
    with pytest.raises(LakeError, match="partition date"):
        write_snapshot(manifest, Lake(str(tmp_path / "lake")), "orders", date, workers=1)
    assert not (tmp_path / "x").exists()


def test_cli_export_to_parquet_refuses_a_tampered_export_time(
    export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dynamo_cdc.cli import main

    summary = json.loads((export_dir / "manifest-summary.json").read_text())
    summary["exportTime"] = "../../escape"
    (export_dir / "manifest-summary.json").write_text(json.dumps(summary))
    for name in ("manifest-summary.md5", "manifest-summary.checksum"):
        (export_dir / name).unlink(missing_ok=True)
    assert (
        main(["export-to-parquet", str(export_dir), str(tmp_path / "lake"), "--table", "orders"])
        == 2
    )
    assert "exportTime '../../escape' is not an ISO 8601 time" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists()


# -- a lying endpoint ----------------------------------------------------------------------------


def test_a_stream_that_understates_size_bytes_cannot_make_a_poll_read_past_its_byte_budget() -> (
    None
):
    """Every record says SizeBytes 1 but carries 100 KB: the poll stops on the bytes it read."""
    import re

    import boto3
    from botocore.config import Config

    from dynamo_cdc.checkpoint import StreamCheckpoint
    from dynamo_cdc.local.botocore_hook import attach
    from dynamo_cdc.local.streams import ManualClock, StreamSimulator
    from dynamo_cdc.stream import GET_RECORDS_EVENT, ReadBudget, StreamReader

    clock = ManualClock(start=1_709_290_800.0)
    sim = StreamSimulator(clock=clock, seed=7)
    sim.enable_stream(
        "orders", "NEW_AND_OLD_IMAGES", key_schema=[{"AttributeName": "pk", "KeyType": "HASH"}]
    )
    for i in range(20):
        keys = {"pk": {"S": f"k{i}"}}
        sim.record("orders", "INSERT", keys, None, {**keys, "blob": {"S": "x" * 100_000}})
    client = boto3.client(
        "dynamodbstreams", region_name="us-east-1", config=Config(retries={"max_attempts": 1})
    )
    attach(client, sim)

    def lie(response_dict: dict, **_: object) -> None:
        body = response_dict.get("body")
        if isinstance(body, bytes):
            response_dict["body"] = re.sub(rb'"SizeBytes":\s*\d+', b'"SizeBytes":1', body)

    client.meta.events.register_first(GET_RECORDS_EVENT, lie)
    reader = StreamReader(
        client,
        "orders",
        StreamCheckpoint("orders"),
        ReadBudget(max_bytes=500_000, records_per_call=2),
        stream_arn=sim.stream_arn("orders"),
        clock=clock,
        sleep=clock.advance,
    )
    batch = reader.poll()
    assert batch.stopped_by == "bytes"
    assert 500_000 <= batch.bytes < 500_000 + 2 * 101_000  # at most one response past it
    assert batch.count < 20


# -- big table lists -----------------------------------------------------------------------------


def test_a_table_list_field_over_the_csv_limit_is_the_table_lists_own_error(tmp_path: Path) -> None:
    from dynamo_cdc.config import load_table_list
    from dynamo_cdc.errors import TableListError

    path = tmp_path / "tables.csv"
    path.write_text("orders\n" + '"' + "x" * 200_000 + '"\n')
    with pytest.raises(TableListError, match=r"tables\.csv, line 2: not a table-list row"):
        load_table_list(path)


def test_a_table_list_with_a_nul_byte_is_the_table_lists_own_error(tmp_path: Path) -> None:
    from dynamo_cdc.config import load_table_list
    from dynamo_cdc.errors import TableListError

    path = tmp_path / "tables.csv"
    path.write_text("orders\nbad\x00name\n")
    with pytest.raises(TableListError, match=r"tables\.csv, line 2"):
        load_table_list(path)


def test_a_table_list_past_the_supported_size_warns_and_still_loads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dynamo_cdc.config import SUPPORTED_TABLES, parse_table_list

    at_limit = "".join(f"table-{i:05d}\n" for i in range(SUPPORTED_TABLES))
    with caplog.at_level("WARNING", logger="dynamo_cdc.config"):
        assert len(parse_table_list(at_limit, "big.csv")) == SUPPORTED_TABLES
    assert not caplog.records
    with caplog.at_level("WARNING", logger="dynamo_cdc.config"):
        specs = parse_table_list(at_limit + "one-more\n", "big.csv")
    assert len(specs) == SUPPORTED_TABLES + 1
    assert "big.csv lists 1001 tables; one code location is supported up to 1000" in caplog.text
