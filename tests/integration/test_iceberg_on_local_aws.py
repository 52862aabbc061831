"""The lake's Iceberg tables on the local AWS: a real export and stream, read back with pyiceberg.

The embedded SQLite catalog on an ``s3://`` lake root (the database is an object beside the
data, uploaded with a conditional write), and time travel: ``current`` as of an earlier Iceberg
snapshot equals the table as it was then, as the local AWS's write history rebuilds it for a
point-in-time export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dynamo_cdc import catalog, codec, read_table
from dynamo_cdc.aws import Clients
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess
from dynamo_cdc.local.workload import Workload
from dynamo_cdc.mirror import key_text, refresh_current
from tests.integration.test_mirror_on_local_aws import Env, capture_all, scan, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.iceberg]


@pytest.fixture
def env(local_aws: LocalAwsProcess, clients: Clients, bucket: str) -> Env:
    return Env(local_aws, clients, bucket)


def items_by_key(rows) -> dict[str, dict]:
    out = {}
    for text in rows.column("_item").to_pylist():
        item = codec.item_from_json_text(text)
        out[key_text(item, ["pk"])] = codec.deserialize_item(item)
    return out


def s3_lake_with_snapshot_and_changes(env: Env, table: str, seed: int = 3) -> Lake:
    """An ``s3://`` lake on the local AWS with a snapshot of ``table`` taken mid-workload and
    the changes after it captured."""
    lake_bucket = f"lake-{env.bucket}"
    env.clients.s3.create_bucket(Bucket=lake_bucket)
    lake = Lake(f"s3://{lake_bucket}/lake", env.clients.s3)
    work = Workload(env.clients.dynamodb, table, "pk", seed=seed, keys=80)
    work.run(150)
    snapshot(env, lake, table)
    work.run(150)
    capture_all(env, lake, table)
    return lake


def test_an_s3_lake_gets_its_three_iceberg_tables_in_the_catalog_beside_the_data(
    env: Env, make_table: Callable[..., str]
):
    table = make_table()
    lake = s3_lake_with_snapshot_and_changes(env, table)
    lake_bucket = lake.bucket

    refresh_current(lake, table, bucket_count=4)

    keys = {o["Key"] for o in env.clients.s3.list_objects_v2(Bucket=lake_bucket)["Contents"]}
    assert "lake/_iceberg/catalog.db" in keys
    assert any(k.startswith(f"lake/{table}/_iceberg/current/metadata/") for k in keys)
    current = catalog.load_table(lake, table, "current").scan().to_arrow()
    assert items_by_key(current) == scan(env, table)
    snap = catalog.load_table(lake, table, "snapshot").scan().to_arrow()
    assert items_by_key(snap) == items_by_key(
        read_table(lake.root, table, "snapshot", s3_client=env.clients.s3)
    )
    changes = catalog.load_table(lake, table, "changes").scan().to_arrow()
    assert sorted(changes.column("event_id").to_pylist()) == sorted(
        read_table(lake.root, table, "changes", s3_client=env.clients.s3)
        .column("event_id")
        .to_pylist()
    )


def test_current_as_of_an_earlier_iceberg_snapshot_equals_the_table_as_it_was_then(
    env: Env, make_table: Callable[..., str], tmp_path: Path
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    work = Workload(env.clients.dynamodb, table, "pk", seed=5, keys=120)
    work.run(200)
    snapshot(env, lake, table)
    moments = []
    for _ in range(2):
        work.run(200)
        capture_all(env, lake, table)
        refresh_current(lake, table, bucket_count=4)
        tbl = catalog.load_table(lake, table, "current")
        moments.append((tbl.current_snapshot().snapshot_id, env.now()))
        env.advance(2)
    work.run(200)  # after the last moment: must not show in the earlier snapshots
    capture_all(env, lake, table)
    refresh_current(lake, table, bucket_count=4)

    tbl = catalog.load_table(lake, table, "current")
    for n, (snapshot_id, when) in enumerate(moments):
        then = Lake(str(tmp_path / f"as-of-{n}"))
        snapshot(env, then, table, at=when)  # the local AWS rebuilds the table at `when`
        expected = items_by_key(read_table(then.root, table, "snapshot"))
        assert items_by_key(tbl.scan(snapshot_id=snapshot_id).to_arrow()) == expected
    assert items_by_key(tbl.scan().to_arrow()) == scan(env, table)
