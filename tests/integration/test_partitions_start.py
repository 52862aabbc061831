"""Partitions start on the day the table was created (read when the code location loads)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from dynamo_cdc.aws import Clients
from dynamo_cdc.dagster.definitions import build_defs_from_env
from dynamo_cdc.local import LocalAwsProcess

pytestmark = pytest.mark.integration


def test_partitions_start_on_the_tables_creation_day(
    local_aws: LocalAwsProcess, clients: Clients, make_table: Callable[..., str], tmp_path,
    monkeypatch,
) -> None:  # fmt: skip
    table = make_table()
    (tmp_path / "tables.csv").write_text(f"{table}\n")
    monkeypatch.setenv("DYNAMO_CDC_TABLES", str(tmp_path / "tables.csv"))
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", local_aws.endpoint_url)
    monkeypatch.delenv("DYNAMO_CDC_PARTITIONS_START")
    created = clients.dynamodb.describe_table(TableName=table)["Table"]["CreationDateTime"]
    # the session's local AWS may run ahead of this clock (other tests advance it): partitions
    # never start after today
    day = min(created.astimezone(UTC).date(), datetime.now(UTC).date()).strftime("%Y-%m-%d")

    graph = build_defs_from_env().get_repository_def().asset_graph
    firsts = {
        key.path[-1]: graph.get(key).partitions_def.get_first_partition_key()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }

    assert firsts == {"snapshot": day, "changes": f"{day}-00:00"}
