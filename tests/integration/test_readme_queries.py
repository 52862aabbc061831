"""The README's query lines work as written, with only what the package installs, and say what
they claim: "the newest snapshot" reads the newest export_date only. The data contract holds:
the same partition types in every reader, no Parquet NULL-typed column, the same list types in
snapshot and current."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynamo_cdc import read_table
from dynamo_cdc.aws import Clients
from dynamo_cdc.capture import capture_once
from dynamo_cdc.export import ExportRequest
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess
from dynamo_cdc.mirror import refresh_current
from dynamo_cdc.snapshot import take_snapshot
from dynamo_cdc.stream import ReadBudget

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def readme_query_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Querying", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for line in block.splitlines() if line.strip()]


def _put(clients: Clients, table: str, first: int, n: int) -> None:
    for i in range(first, first + n):
        clients.dynamodb.put_item(
            TableName=table,
            Item={
                "pk": {"S": f"k{i}"},
                "tags": {"SS": ["a", f"t{i}"]},
                "nothing": {"NULL": True},  # only ever NULL
            },
        )


@pytest.fixture
def orders_lake(
    local_aws: LocalAwsProcess, clients: Clients, make_table: Callable[..., str], bucket: str,
    tmp_path: Path,
) -> Path:  # fmt: skip
    """A lake whose table folder is `orders`: two snapshot days, changes, current."""
    table = make_table()
    lake = Lake(str(tmp_path / "build"))
    snap = ExportRequest(table=table, bucket=bucket)
    _put(clients, table, 0, 3)
    take_snapshot(clients, lake, snap, export_date="2026-12-01", workers=1, poll_seconds=0.05)
    _put(clients, table, 3, 4)
    now = datetime.fromtimestamp(local_aws.control.clock()["now_micros"] / 1e6, tz=UTC)
    later = ExportRequest(table=table, bucket=bucket, export_time=now)  # not the first export
    take_snapshot(clients, lake, later, export_date="2026-12-02", workers=1, poll_seconds=0.05)
    _put(clients, table, 7, 2)
    while capture_once(clients, lake, table, ReadBudget(max_seconds=5)).stopped_by != "caught_up":
        pass
    refresh_current(lake, table)
    work = tmp_path / "work"
    (work / "lake").mkdir(parents=True)
    shutil.copytree(tmp_path / "build" / table, work / "lake" / "orders")
    return work


def test_the_readme_query_lines_run_as_written_and_the_newest_snapshot_is_one_day(
    orders_lake: Path,
) -> None:
    script = "\n".join(["set -e", *readme_query_lines()])
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-c", script], cwd=orders_lake, env=env, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tables = done.stdout.split("\n\n")
    newest_count = int(re.findall(r"│\s+(\d+)\s+│", tables[0])[0])
    assert newest_count == 7, done.stdout  # 2026-12-02's 7 items, not 3 + 7 from both days
    assert "INSERT" in tables[1]
    assert "k8" in tables[2]  # current holds the changes after the snapshot


def test_partition_types_are_the_same_in_read_table_and_the_readmes_duckdb_line(
    orders_lake: Path,
) -> None:
    changes = read_table(str(orders_lake / "lake"), "orders", "changes")
    assert changes.schema.field("date").type == pa.date32()
    assert changes.schema.field("hour").type == pa.int32()
    line = next(q for q in readme_query_lines() if "changes/*/*/*.parquet" in q)
    hive_types = re.search(r"hive_types = \{[^}]*\}", line)
    assert hive_types is not None
    glob = orders_lake / "lake/orders/changes/*/*/*.parquet"
    described = dict(
        (name, kind)
        for name, kind, *_ in duckdb.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', {hive_types.group(0)})"
        ).fetchall()
    )
    assert (described["date"], described["hour"]) == ("DATE", "INTEGER")


def test_no_parquet_null_type_and_the_same_set_types_in_snapshot_and_current(
    orders_lake: Path,
) -> None:
    root = str(orders_lake / "lake")
    snapshot = read_table(root, "orders", "snapshot")
    current = read_table(root, "orders", "current")
    assert snapshot.schema.field("tags").type == current.schema.field("tags").type
    assert snapshot.schema.field("nothing").type == pa.string()
    for path in (orders_lake / "lake").rglob("*.parquet"):
        for field in pq.read_schema(path):
            assert not pa.types.is_null(field.type), (path, field)
