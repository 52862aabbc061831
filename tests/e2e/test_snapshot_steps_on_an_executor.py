"""The snapshot's convert steps spread over an executor: each group of data files converts in a
step of its own, in a process of its own (Dagster's multiprocess executor, the example project's
default; k8s_job_executor and ecs_executor run the same steps in pods or tasks). The snapshot it
publishes equals, table for table, the one a single step publishes."""

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynamo_cdc import read_table
from tests.e2e.helpers import run_dagster

pytestmark = pytest.mark.e2e

LOCATION = ["-m", "dagster_project.location"]


def _fill(clients, n: int) -> None:
    for start in range(0, n, 25):
        batch = [
            {
                "PutRequest": {
                    "Item": {
                        "customer_id": {"S": f"c-{i % 97}"},
                        "order_id": {"S": f"dask-{uuid.uuid4().hex[:6]}-{i}"},
                        "total": {"N": f"{i}.25" if i % 7 else str(i)},
                        "lines": {"L": [{"M": {"sku": {"S": f"s{i}"}, "qty": {"N": "2"}}}]},
                    }
                }
            }
            for i in range(start, min(n, start + 25))
        ]
        clients.dynamodb.batch_write_item(RequestItems={"orders": batch})


def _materialize_args(location: list[str], steps: int, execution: dict | None = None) -> list:
    """``dagster asset materialize`` of today's orders snapshot in ``steps`` convert steps;
    ``execution``: the run's executor config, if any."""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    config: dict = {
        "ops": {
            "dynamodb__orders__snapshot": {
                "config": {"workers": 1, "poll_seconds": 0.2, "convert_steps": steps}
            }
        }
    }
    if execution is not None:
        config["execution"] = {"config": execution}
    return [
        "asset",
        "materialize",
        *location,
        "--select",
        "dynamodb/orders/snapshot",
        "--partition",
        today,
        "--config-json",
        json.dumps(config),
    ]


def _materialize(
    env, location: list[str], lake: Path, steps: int, execution: dict | None = None
) -> str:
    return run_dagster(
        _materialize_args(location, steps, execution),
        dict(env, DYNAMO_CDC_LAKE_ROOT=str(lake)),
        timeout=600,
    )


def _sorted(table):
    return table.sort_by([("customer_id", "ascending"), ("order_id", "ascending")])


def _step_pids(log: str) -> dict[str, str]:
    """Step key -> the pid that ran it, from the run's STEP_START events."""
    found = re.findall(r" - (\d+) - (\S+) - STEP_START - ", log)
    return {step: pid for pid, step in found}


def test_convert_steps_in_processes_of_their_own_publish_the_single_step_snapshot(
    clients, dagster_env, tmp_path
):
    _fill(clients, 600)  # the local AWS writes 100 items a data file: several files
    fanned_lake, one_lake = tmp_path / "fanned-lake", tmp_path / "one-lake"

    out = _materialize(dagster_env, LOCATION, fanned_lake, steps=2)
    pids = _step_pids(out)
    converts = {k: v for k, v in pids.items() if "snapshot_convert" in k}
    assert set(converts) == {
        "dynamodb__orders__snapshot.orders__snapshot_convert[group_0]",
        "dynamodb__orders__snapshot.orders__snapshot_convert[group_1]",
    }, pids
    assert len(set(converts.values())) == 2, "each convert step runs in a process of its own"
    _materialize(dagster_env, LOCATION, one_lake, steps=1)

    fanned = read_table(str(fanned_lake), "orders", view="snapshot")
    single = read_table(str(one_lake), "orders", view="snapshot")
    assert fanned.num_rows >= 600
    assert fanned.schema.equals(single.schema)
    assert _sorted(fanned).equals(_sorted(single))
    assert not list((fanned_lake / "orders" / "_state").glob("snapshot/**/*.parquet"))
