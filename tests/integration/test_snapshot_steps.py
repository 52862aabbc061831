"""A snapshot as steps (plan -> convert groups anywhere -> commit) publishes exactly what one
process publishes, and a convert step killed mid-way publishes nothing until its retry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from bench.generate import generate_items
from dynamo_cdc import read_table
from dynamo_cdc.errors import ExportVerificationError, LakeError
from dynamo_cdc.export import ExportRequest, manifest_from_export_description
from dynamo_cdc.lake import Lake
from dynamo_cdc.snapshot import (
    SnapshotPlan,
    commit_snapshot,
    convert_group,
    plan_snapshot,
    write_snapshot,
)
from tests.integration.test_attribute_names import make_keyed_table
from tests.integration.test_snapshot import put_items

pytestmark = pytest.mark.integration

STEP = """
import json, os, sys
from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings
from dynamo_cdc.lake import Lake
from dynamo_cdc.snapshot import SnapshotPlan, convert_group
clients = Clients(Settings.from_env())
plan = SnapshotPlan.from_dict(json.loads(sys.argv[1]))
root = sys.argv[3]
lake = Lake(root, clients.s3 if root.startswith("s3://") else None)
convert_group(plan, int(sys.argv[2]), lake, s3_client=clients.s3, workers=1)
"""


def _export(clients, table, bucket, items):
    put_items(clients, table, items)
    from dynamo_cdc.export import request_export, wait_for_export

    request = ExportRequest(table=table, bucket=bucket, prefix="exports")
    desc = wait_for_export(clients, request_export(clients, request), poll_seconds=0.05)
    return manifest_from_export_description(clients, desc)


def _step_env(local_aws) -> dict[str, str]:
    env = dict(os.environ)
    env["DYNAMO_CDC_ENDPOINT_URL"] = local_aws.endpoint_url
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def _lake(root: str, clients) -> Lake:
    return Lake(root, clients.s3 if root.startswith("s3://") else None)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("pk", "ascending"), ("sk", "ascending")])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_groups_converted_in_other_processes_publish_the_single_process_snapshot(
    clients, local_aws, orders_table, bucket, tmp_path, where
) -> None:
    items = list(generate_items(6_000, seed=11))
    # an attribute that is an integer in the first items and a fraction later: some parts are
    # written narrower than the final schema and must be cast at the commit
    for i, item in enumerate(items):
        item["late_fraction"] = {"N": str(i) if i < 5_000 else f"{i}.5"}
    manifest = _export(clients, orders_table, bucket, items)
    assert len(manifest.files) >= 3, "the local AWS spreads an export over several files"
    if where == "s3":
        clients.s3.create_bucket(Bucket=f"{bucket}-lake")
        one_root, steps_root = f"s3://{bucket}-lake/one", f"s3://{bucket}-lake/steps"
    else:
        one_root, steps_root = str(tmp_path / "one"), str(tmp_path / "steps")

    single = write_snapshot(
        manifest, _lake(one_root, clients), orders_table, "2026-01-01", ["pk", "sk"], workers=1
    )

    plan = plan_snapshot(manifest, orders_table, "2026-01-01", ["pk", "sk"], groups=3)
    assert len(plan.groups) == 3
    assert sorted(i for g in plan.groups for i in g) == list(range(len(manifest.files)))
    # the plan travels as JSON, and each group converts in a process of its own, in any order
    text = json.dumps(plan.to_dict())
    env = _step_env(local_aws)
    for index in (2, 0, 1):
        subprocess.run(
            [sys.executable, "-c", STEP, text, str(index), steps_root], env=env, check=True
        )
    steps = commit_snapshot(SnapshotPlan.from_dict(json.loads(text)), _lake(steps_root, clients))

    assert steps.rows == single.rows == 6_000
    assert steps.rewritten_parts >= 1
    a = read_table(one_root, orders_table, view="snapshot", s3_client=clients.s3)
    b = read_table(steps_root, orders_table, view="snapshot", s3_client=clients.s3)
    assert b.schema.equals(a.schema)
    assert _sorted(b).equals(_sorted(a))
    # nothing of the steps is left in the lake's state
    assert not [p for p in _lake(steps_root, clients).list(orders_table) if "/_state/" in p]


def test_a_convert_step_killed_mid_way_publishes_nothing_and_its_retry_completes(
    clients, local_aws, orders_table, bucket, tmp_path
) -> None:
    manifest = _export(clients, orders_table, bucket, list(generate_items(20_000, seed=5)))
    root = str(tmp_path / "lake")
    lake = Lake(root)
    plan = plan_snapshot(manifest, orders_table, "2026-01-01", ["pk", "sk"], groups=2)
    convert_group(plan, 1, lake, s3_client=clients.s3, workers=1)

    step = subprocess.Popen(
        [sys.executable, "-c", STEP, json.dumps(plan.to_dict()), "0", root],
        env=_step_env(local_aws),
        start_new_session=True,
    )
    staging = Path(root, orders_table, "_state", "staging")
    deadline = time.monotonic() + 120
    while not list(staging.glob("*/part-*.parquet")) and step.poll() is None:
        assert time.monotonic() < deadline, "the step never started writing"
        time.sleep(0.01)
    os.killpg(step.pid, signal.SIGKILL)
    step.wait()

    with pytest.raises(ExportVerificationError, match="Group 0 of 2.*not converted"):
        commit_snapshot(plan, lake)
    assert not Path(root, orders_table, "snapshot").exists()

    convert_group(plan, 0, lake, s3_client=clients.s3, workers=1)  # the retry
    result = commit_snapshot(plan, lake)
    assert result.rows == 20_000
    assert read_table(root, orders_table, view="snapshot").num_rows == 20_000


def test_steps_of_a_table_keyed_on_export_date_publish_under_its_own_partition_column(
    clients, local_aws, bucket, tmp_path
) -> None:
    """The commit names the partition by :mod:`dynamo_cdc.layout` (``cdc_export_date`` for a
    table keyed on ``export_date``), and refuses a lake written before that rule, publishing
    nothing."""
    table = make_keyed_table(clients, "export_date", "S", "Hour", "N")
    items = [
        {"export_date": {"S": f"2025-01-{d:02d}"}, "Hour": {"N": str(h)}, "v": {"N": str(h)}}
        for d in (1, 2, 3)
        for h in range(24)
    ]
    manifest = _export(clients, table, bucket, items)
    plan = plan_snapshot(manifest, table, "2026-01-01", ["export_date", "Hour"], groups=2)
    text = json.dumps(plan.to_dict())
    new, old = Lake(str(tmp_path / "new")), Lake(str(tmp_path / "old"))
    old.write_bytes(f"{table}/snapshot/export_date=2025-12-31/_lineage.json", b"{}")
    for lake in (new, old):
        for index in range(len(plan.groups)):
            subprocess.run(
                [sys.executable, "-c", STEP, text, str(index), lake.root],
                env=_step_env(local_aws),
                check=True,
            )

    commit_snapshot(SnapshotPlan.from_dict(json.loads(text)), new)
    with pytest.raises(LakeError, match="docs/lake-layout.md"):
        commit_snapshot(SnapshotPlan.from_dict(json.loads(text)), old)

    assert new.folders(f"{table}/snapshot") == ["cdc_export_date=2026-01-01"]
    rows = read_table(new.root, table, view="snapshot").to_pylist()
    assert sorted((r["export_date"], int(r["Hour"])) for r in rows) == sorted(
        (i["export_date"]["S"], int(i["Hour"]["N"])) for i in items
    )
    assert old.folders(f"{table}/snapshot") == ["export_date=2025-12-31"]
