"""The ``sample_matches_live_table`` check of ``current`` tells the truth: green while the table
takes steady writes that the mirror has not caught up with yet, red on a corrupted row."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster_aws.s3 import S3Resource

from dynamo_cdc.aws import Clients
from dynamo_cdc.capture import capture_once
from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import build_current_sample_check
from dynamo_cdc.dagster.resources import DynamoDBResource, LakeResource
from dynamo_cdc.export import ExportRequest
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess
from dynamo_cdc.local.workload import Workload
from dynamo_cdc.mirror import current_path, load_pointer, refresh_current
from dynamo_cdc.snapshot import take_snapshot
from dynamo_cdc.stream import ReadBudget

pytestmark = pytest.mark.integration

KEYS = 30


def _capture(clients: Clients, lake: Lake, table: str) -> None:
    while capture_once(clients, lake, table, ReadBudget(max_seconds=5)).stopped_by != "caught_up":
        pass


def _check(local_aws: LocalAwsProcess, lake: Lake, table: str, bucket: str):
    """The Dagster asset check, invoked directly with the code location's resources."""
    check = build_current_sample_check(TableSpec(table), sample_size=KEYS)
    return check(
        dynamodb=DynamoDBResource(endpoint_url=local_aws.endpoint_url, export_bucket=bucket),
        lake=LakeResource(root=lake.root, s3=S3Resource(endpoint_url=local_aws.endpoint_url)),
    )


@pytest.fixture
def mirrored(
    local_aws: LocalAwsProcess, clients: Clients, make_table: Callable[..., str], bucket: str,
    tmp_path: Path,
) -> tuple[str, Lake, Workload]:  # fmt: skip
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    work = Workload(clients.dynamodb, table, "pk", seed=3, keys=KEYS)
    work.run(200)
    take_snapshot(
        clients, lake, ExportRequest(table=table, bucket=bucket), workers=1, poll_seconds=0.05
    )
    _capture(clients, lake, table)
    refresh_current(lake, table)
    return table, lake, work


def test_the_sample_check_stays_green_under_steady_writes(
    local_aws: LocalAwsProcess, clients: Clients, mirrored, bucket: str
) -> None:
    table, lake, work = mirrored
    work.run_in_background(20.0)
    outcomes = []
    try:
        for round_ in range(6):
            _capture(clients, lake, table)
            if round_ % 2 == 0:  # the other rounds: changes landed but not applied yet
                refresh_current(lake, table)
            time.sleep(0.5)  # and writes only in the stream so far
            outcomes.append(_check(local_aws, lake, table, bucket))
    finally:
        work.stop()
    assert [r.passed for r in outcomes] == [True] * 6, [r.metadata for r in outcomes]
    assert sum(r.metadata["in_flight"].value for r in outcomes) > 0  # the writes did show


def test_the_sample_check_fails_on_a_corrupted_row_of_current_and_names_its_key(
    local_aws: LocalAwsProcess, clients: Clients, mirrored, bucket: str
) -> None:
    table, lake, _ = mirrored
    assert _check(local_aws, lake, table, bucket).passed
    pointer = load_pointer(lake, table)
    assert pointer is not None
    path = Path(lake.uri(current_path(lake, table, pointer["files"][0])))
    rows = pq.read_table(path)
    items = rows.column("_item").to_pylist()
    victim = next(i for i, text in enumerate(items) if text)
    items[victim] = items[victim][:-1] + ',"corrupted":{"S":"yes"}}'
    field = rows.schema.get_field_index("_item")
    corrupted = rows.set_column(field, rows.schema.field(field), [items])
    path.unlink()  # a hard link shared with older versions: replace it, never edit in place
    pq.write_table(corrupted, path)

    result = _check(local_aws, lake, table, bucket)

    assert not result.passed
    assert result.metadata["mismatches"].value == 1
    (key,) = result.metadata["mismatched_keys"].value
    assert key[1:-1] in items[victim]  # the key attribute, as the item holds it
