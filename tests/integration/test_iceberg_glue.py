"""pyiceberg's Glue catalog (``DYNAMO_CDC_ICEBERG=glue``) against the local AWS's Glue.

moto's Glue ignores UpdateTable's VersionId; the local AWS refuses a stale one with
ConcurrentModificationException as AWS Glue does (dynamo_cdc/local/glue.py), which is what
serialises two writers committing the same Iceberg table.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError

from dynamo_cdc import catalog
from dynamo_cdc.aws import Clients
from dynamo_cdc.lake import Lake
from dynamo_cdc.local import LocalAwsProcess
from dynamo_cdc.local.workload import Workload
from dynamo_cdc.mirror import refresh_current
from tests.integration.test_iceberg_on_local_aws import (
    items_by_key,
    s3_lake_with_snapshot_and_changes,
)
from tests.integration.test_mirror_on_local_aws import Env, capture_all, scan

pytestmark = [pytest.mark.integration, pytest.mark.iceberg]


@pytest.fixture
def env(
    local_aws: LocalAwsProcess, clients: Clients, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Env:
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG", "glue")
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.setenv("DYNAMO_CDC_REGION", "us-east-1")
    return Env(local_aws, clients, bucket)


def test_a_stale_update_table_version_is_refused_as_aws_glue_does(env: Env):
    glue = env.clients.session.client("glue", endpoint_url=env.local_aws.endpoint_url)
    glue.create_database(DatabaseInput={"Name": "stale_check"})
    glue.create_table(DatabaseName="stale_check", TableInput={"Name": "t", "Parameters": {}})
    version = glue.get_table(DatabaseName="stale_check", Name="t")["Table"]["VersionId"]
    table_input = {"Name": "t", "Parameters": {"a": "1"}}
    glue.update_table(DatabaseName="stale_check", TableInput=table_input, VersionId=version)

    with pytest.raises(ClientError, match="ConcurrentModificationException"):
        glue.update_table(DatabaseName="stale_check", TableInput=table_input, VersionId=version)

    current = glue.get_table(DatabaseName="stale_check", Name="t")["Table"]
    assert current["VersionId"] != version and current["Parameters"] == {"a": "1"}


def test_the_three_tables_live_in_glue_and_current_equals_a_scan(
    env: Env, make_table: Callable[..., str]
):
    table = make_table()
    lake = s3_lake_with_snapshot_and_changes(env, table, seed=9)
    lake_bucket = lake.bucket

    refresh_current(lake, table, bucket_count=2)

    glue = env.clients.session.client("glue", endpoint_url=env.local_aws.endpoint_url)
    names = {t["Name"] for t in glue.get_tables(DatabaseName="dynamo_cdc")["TableList"]}
    assert {catalog.table_name(table, v).lower() for v in catalog.VIEWS} <= names
    location = glue.get_table(DatabaseName="dynamo_cdc", Name=catalog.table_name(table, "current"))
    assert location["Table"]["Parameters"]["metadata_location"].startswith(
        f"s3://{lake_bucket}/lake/{table}/_iceberg/current/metadata/"
    )
    assert not any(
        o["Key"].endswith("catalog.db")
        for o in env.clients.s3.list_objects_v2(Bucket=lake_bucket)["Contents"]
    )
    current = catalog.load_table(lake, table, "current").scan().to_arrow()
    assert items_by_key(current) == scan(env, table)


def test_two_writers_of_one_glue_table_take_turns_and_both_land(
    env: Env, make_table: Callable[..., str], tmp_path, monkeypatch: pytest.MonkeyPatch
):
    table = make_table()
    lake = Lake(str(tmp_path / "lake"))
    work = Workload(env.clients.dynamodb, table, "pk", seed=4, keys=30)
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG", "off")  # change files not registered yet
    work.run(30)
    capture_all(env, lake, table)
    monkeypatch.setenv("DYNAMO_CDC_ICEBERG", "glue")
    import dynamo_cdc.catalog as module

    real = module._commit_files
    raced = []

    def racing_commit(tx, tbl, remove, add, partition_of):
        if not raced:  # another writer lands a change file and commits first
            raced.append(True)
            env.advance(3600)
            work.run(20)
            capture_all(env, lake, table)
        return real(tx, tbl, remove, add, partition_of)

    hours = sorted({r.rsplit("/", 1)[0] for r in lake.list(f"{table}/changes")})
    module._commit_files = racing_commit
    try:
        result = catalog.publish_changes(lake, table, hours[-1:])
    finally:
        module._commit_files = real

    assert result.attempts == 2
    registered = {
        df.file_path for df in catalog._live_files(catalog.load_table(lake, table, "changes"))
    }
    assert registered == {
        f"file://{lake.uri(r)}" for r in lake.list(f"{table}/changes") if r.endswith(".parquet")
    }
