"""The stream sensor's tick on the local AWS, in production's shapes: stream pages that
GetRecords cuts at 1 MB, a tick its budget stops early, and an outage longer than the stream's
24 hours healed through the run the tick requests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest

from dynamo_cdc import read_table
from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import build_changes_asset
from dynamo_cdc.dagster.sensors import DEFAULT_BUDGET_SECONDS, stream_tick
from dynamo_cdc.lake import Lake
from dynamo_cdc.mirror import refresh_current
from dynamo_cdc.stream import ReadBudget
from tests.e2e.chaos import all_stream_event_ids
from tests.integration.test_capture import put_padded
from tests.integration.test_mirror_on_local_aws import Env, mirror, scan, snapshot

pytestmark = pytest.mark.integration

OP = "changes_op"


@pytest.fixture
def env(local_aws, clients, bucket) -> Env:
    return Env(local_aws, clients, bucket)


def tick(
    env: Env, spec: TableSpec, lake: Lake, budget: ReadBudget | None = None
) -> dg.SensorResult:
    """One tick as the daemon runs it (the sensor's default budget), on the local AWS's clock:
    other tests move it, and a batch in an hour ahead of the tick's clock requests no run."""
    return stream_tick(
        spec,
        None,
        env.clients,
        lake,
        op_name=OP,
        budget=budget or ReadBudget(max_seconds=DEFAULT_BUDGET_SECONDS),
        clock=env.now,
    )


def batch_config(result: dg.SensorResult) -> dict:
    """The metadata of the micro-batch the tick recorded (an asset event, no run)."""
    (event,) = [e for e in result.asset_events or [] if isinstance(e, dg.AssetMaterialization)]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_one_tick_lands_every_1_mb_page_of_every_shard(
    env: Env, make_table: Callable[..., str], tmp_path: Path
) -> None:
    table = make_table()
    env.local_aws.control.rotate_shards(table, split=True)  # two open shards
    put_padded(env.clients, table, 1200, 2_500)  # ~600 a shard: two 1 MB pages or more each
    lake = Lake(str(tmp_path))

    config = batch_config(tick(env, TableSpec(table), lake))

    changes = read_table(lake.root, table, "changes")
    per_shard = Counter(changes.column("shard_id").to_pylist())
    assert config["batch_records"] == 1200 and changes.num_rows == 1200
    assert len(per_shard) == 2 and min(per_shard.values()) > 450  # > one 1 MB page each
    assert config["lag_seconds"] == 0.0


def test_a_tick_its_budget_stops_records_its_true_lag(
    env: Env, make_table: Callable[..., str], tmp_path: Path
) -> None:
    table = make_table()
    put_padded(env.clients, table, 100, 100_000)
    env.advance(30)
    lake = Lake(str(tmp_path))

    config = batch_config(tick(env, TableSpec(table), lake, ReadBudget(max_bytes=2 * 1024**2)))

    assert 10 < config["batch_records"] < 100
    assert config["lag_seconds"] == pytest.approx(30, abs=3)


def test_an_outage_longer_than_the_streams_24_hours_heals_through_the_run_the_tick_requests(
    env: Env, make_table: Callable[..., str], tmp_path: Path
) -> None:
    table = make_table()
    spec = TableSpec(table)  # on_gap=heal, the default
    lake = Lake(str(tmp_path / "lake"))
    changes = build_changes_asset(spec, date(2025, 1, 1))
    env.advance(60)  # PITR was on a minute before the writes, as in real life
    put_padded(env.clients, table, 50, 1_000)
    snapshot(env, lake, table)
    tick(env, spec, lake)
    put_padded(env.clients, table, 20, 1_000, prefix="lost")  # trimmed before the next tick
    env.clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "p00003"}})
    env.advance(25 * 3600)
    put_padded(env.clients, table, 600, 2_500, prefix="after")  # in the stream: several pages

    (request,) = tick(env, spec, lake).run_requests
    assert request.tags["dynamo_cdc/kind"] == "heal"
    run = dg.materialize(
        [changes],
        # the request's hour follows the local AWS's clock, which this test moved ahead of
        # Dagster's; healing does not depend on the hour, so use one Dagster has
        partition_key=datetime.now(UTC).strftime("%Y-%m-%d-%H:00"),
        run_config={"ops": {changes.op.name: request.run_config["ops"][OP]}},
        resources=env.dagster_resources(lake.root),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert run.success
    (materialization,) = run.asset_materializations_for_node(changes.op.name)
    assert materialization.metadata["heal_action"].value == "incremental_export"
    assert materialization.metadata["healed_gap"].value == "checkpoint_behind_trim_horizon"
    after = tick(env, spec, lake)  # capture resumes at the trim horizon
    refresh_current(lake, table)

    assert batch_config(after)["batch_records"] == 600
    assert mirror(lake, table) == scan(env, table)
    rows = read_table(lake.root, table, "changes")
    stream_ids = set(all_stream_event_ids(env.clients, table))
    landed = rows.filter(pc.equal(rows.column("source"), "stream")).column("event_id")
    assert stream_ids <= set(landed.to_pylist())
