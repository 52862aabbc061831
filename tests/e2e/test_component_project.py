"""As a Dagster user adds dynamo-cdc to a project of their own: a fresh project in a temporary
folder, ``dg scaffold defs`` of the component, ``dg check defs``, then a snapshot and a changes
partition materialized against the local AWS, with Dagster's table metadata recorded."""

import json
import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow.dataset as ds
import pytest
from dagster._core.instance.ref import InstanceRef

from dynamo_cdc.dagster.assets import hour_partition_key
from dynamo_cdc.local.demo import DEMO_BUCKET
from tests.e2e.helpers import VENV_BIN

pytestmark = pytest.mark.e2e

PYPROJECT = """\
[project]
name = "shop"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "shop"
"""

DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs():
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent.parent)
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _latest_materialization(home: Path, key: dg.AssetKey) -> dict:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        event = instance.get_latest_materialization_event(key)
        assert event is not None and event.asset_materialization is not None
        return dict(event.asset_materialization.metadata)


def test_a_users_project_scaffolds_checks_and_materializes_the_component(
    local_aws, clients, tmp_path
):
    project = tmp_path / "shop"
    (project / "shop" / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "shop" / "__init__.py").write_text("")
    (project / "shop" / "defs" / "__init__.py").write_text("")
    (project / "shop" / "definitions.py").write_text(DEFINITIONS)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNAMO_CDC_")}
    env.update(
        VIRTUAL_ENV=str(VENV_BIN.parent),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        DAGSTER_HOME=str(home),
        SHOP_AWS_ENDPOINT=local_aws.endpoint_url,
        SHOP_EXPORTS=DEMO_BUCKET,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    dg_cli = str(VENV_BIN / "dg")
    listed = _run([dg_cli, "list", "components", "--json"], project, env)
    assert "dynamo_cdc.dagster.DynamoCdcComponent" in listed

    _run([dg_cli, "scaffold", "defs", "dynamo_cdc.dagster.DynamoCdcComponent", "cdc"], project, env)
    defs_yaml = project / "shop" / "defs" / "cdc" / "defs.yaml"
    assert defs_yaml.read_text().startswith("type: dynamo_cdc.dagster.DynamoCdcComponent")
    _run([dg_cli, "check", "defs"], project, env)  # as scaffolded

    # The user points it at their table, lake, bucket and endpoint.
    lake = tmp_path / "lake"
    (project / "shop" / "defs" / "cdc" / "tables.csv").write_text("app-events.v1\n")
    defs_yaml.write_text(
        "type: dynamo_cdc.dagster.DynamoCdcComponent\n"
        "attributes:\n"
        "  tables: tables.csv\n"
        f"  lake_root: {lake}\n"
        '  export_bucket: "{{ env.SHOP_EXPORTS }}"\n'
        '  endpoint_url: "{{ env.SHOP_AWS_ENDPOINT }}"\n'
        "  region: us-east-1\n"
    )
    _run([dg_cli, "check", "defs"], project, env)

    keys = [f"user-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for k in keys:
        clients.dynamodb.put_item(
            TableName="app-events.v1", Item={"event_id": {"S": k}, "kind": {"S": "user"}}
        )
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    hour = hour_partition_key(datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
    for kind, partition, config in (
        ("snapshot", today, {"workers": 1, "poll_seconds": 0.2}),
        ("changes", hour, {"capture": {}}),
    ):
        run_config = {"ops": {f"dynamodb__app_devents_pv1__{kind}": {"config": config}}}
        _run(
            [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "shop.definitions"]
            + ["--select", f"dynamodb/app_devents_pv1/{kind}", "--partition", partition]
            + ["--config-json", json.dumps(run_config)],
            project,
            env,
        )

    snapshot = ds.dataset(
        lake / "app-events.v1" / "snapshot" / f"export_date={today}", format="parquet"
    ).to_table()
    assert snapshot.num_rows >= len(keys)
    changes = ds.dataset(
        lake / "app-events.v1" / "changes", format="parquet", partitioning="hive"
    ).to_table()
    landed = {json.loads(t)["event_id"]["S"] for t in changes.column("_keys").to_pylist()}
    assert set(keys) <= landed

    for kind, rows in (("snapshot", snapshot.num_rows), ("changes", None)):
        metadata = _latest_materialization(home, dg.AssetKey(["dynamodb", "app_devents_pv1", kind]))
        assert metadata["dagster/table_name"].value == f"{lake}/app-events.v1/{kind}"
        columns = [c.name for c in metadata["dagster/column_schema"].schema.columns]
        assert "event_id" in columns
        assert ("_item" if kind == "snapshot" else "_new_image") in columns
        if rows is not None:
            assert metadata["dagster/partition_row_count"].value == rows
        else:
            assert metadata["dagster/partition_row_count"].value >= len(keys)
