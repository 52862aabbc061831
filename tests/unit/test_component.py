"""DynamoCdcComponent: its YAML attributes, their errors, and Dagster's conventions in its defs."""

import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import get_args

import dagster as dg
import pytest
from dagster._utils.warnings import BetaWarning, PreviewWarning

from dynamo_cdc.config import TABLE_OPTIONS
from dynamo_cdc.dagster import DynamoCdcComponent
from dynamo_cdc.dagster.component import TableEntry

REPO = Path(__file__).resolve().parents[2]


def _defs(yaml: str) -> dg.Definitions:
    return dg.component_defs(component=DynamoCdcComponent.resolve_from_yaml(yaml))


def _graph(defs: dg.Definitions):
    return defs.get_repository_def().asset_graph


def test_tables_written_inline_become_assets_sensors_and_schedules():
    defs = _defs(
        "tables:\n  - orders\n  - name: app-events.v1\n    snapshot_schedule: daily\n"
        "snapshot_cron: '15 2 * * *'\nsensor_interval_seconds: 45\n"
    )
    keys = {k.to_user_string() for k in _graph(defs).get_all_asset_keys()}
    assert keys == {
        f"dynamodb/{t}/{kind}"
        for t in ("orders", "app_devents_pv1")
        for kind in ("table", "snapshot", "changes", "current")
    }
    schedule = next(s for s in defs.schedules if s.name.startswith("app_devents_pv1"))
    assert schedule.cron_schedule == "15 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = next(s for s in defs.sensors if s.name == "orders_stream_sensor")
    assert sensor.minimum_interval_seconds == 45


def test_a_table_list_csv_is_read_relative_to_the_defs_yaml(tmp_path):
    (tmp_path / "tables.csv").write_text("orders,on_gap=fail\n")
    component = DynamoCdcComponent.resolve_from_yaml("tables: tables.csv\n")
    assert [(s.name, s.on_gap) for s in component.table_specs(tmp_path)] == [("orders", "fail")]


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("tables: [orders]\nlake_rooot: /tmp/lake\n", "lake_rooot"),
        ("tables: ['bad name!']\n", "'bad name!' is not a valid DynamoDB table name"),
        ("tables: [{name: orders, snapshot_schedule: hourly}]\n", "'off' or 'daily'"),
        ("tables: [{name: orders, colour: red}]\n", "colour"),
        ("tables: [orders, orders]\n", "listed twice"),
        ("tables: []\n", "names no table"),
        ("tables: [orders]\nsensor_budget_seconds: 90\n", "sensor_budget_seconds"),
    ],
)
def test_bad_attributes_are_refused_with_a_message_naming_them(yaml, message):
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("(", r"\(")):
        DynamoCdcComponent.resolve_from_yaml(yaml)


def test_the_per_table_options_are_the_table_lists_options():
    for option, values in TABLE_OPTIONS.items():
        assert get_args(TableEntry.model_fields[option].annotation) == values


def test_a_secret_written_in_the_yaml_is_refused():
    with pytest.raises(Exception, match="must come from the environment"):
        DynamoCdcComponent.resolve_from_yaml("tables: [orders]\naws_secret_access_key: s3cr3t\n")


def test_a_secret_from_the_environment_stays_an_env_var_never_its_value(monkeypatch):
    monkeypatch.setenv("MY_SECRET", "s3cr3t")
    monkeypatch.setenv("MY_KEY", "AKIDEXAMPLE")
    defs = _defs(
        "tables: [orders]\naws_access_key_id: '{{ env.MY_KEY }}'\n"
        "aws_secret_access_key: \"{{ env('MY_SECRET') }}\"\n"
    )
    dynamodb = defs.resources["dynamodb"]
    assert dynamodb.aws_secret_access_key == dg.EnvVar("MY_SECRET")
    assert dynamodb.aws_access_key_id == dg.EnvVar("MY_KEY")
    assert "s3cr3t" not in repr(defs.resources)


def test_settings_reach_the_resources():
    defs = _defs(
        "tables: [orders]\nlake_root: s3://lake/cdc\nexport_bucket: exports\n"
        "export_sse_algorithm: KMS\nexport_kms_key_id: alias/cdc\nexport_bucket_owner: '123456789012'\n"
        "region: eu-west-1\nendpoint_url: http://127.0.0.1:4566\n"
    )
    dynamodb = defs.resources["dynamodb"]
    settings = dynamodb.settings()
    assert (settings.export_bucket, settings.export_kms_key_id) == ("exports", "alias/cdc")
    assert (settings.export_sse_algorithm, settings.export_bucket_owner) == ("KMS", "123456789012")
    assert (settings.region, settings.endpoint_url) == ("eu-west-1", "http://127.0.0.1:4566")
    assert defs.resources["lake"].root == "s3://lake/cdc"


def test_every_asset_has_kinds_a_code_version_and_the_table_name_as_written():
    graph = _graph(_defs("tables: [app-events.v1]\n"))
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.kinds, key
        assert node.metadata["dynamodb_table"] == "app-events.v1"
        assert "app-events.v1" in (node.description or "")
        if key.path[-1] != "table":
            assert node.code_version, key


def test_changes_and_current_carry_dagsters_freshness_policy():
    graph = _graph(
        _defs(
            "tables: [orders]\nchanges_fresh_within_seconds: 3600\ncurrent_fresh_within_seconds: null\n"
        )
    )
    changes = graph.get(dg.AssetKey(["dynamodb", "orders", "changes"]))
    current = graph.get(dg.AssetKey(["dynamodb", "orders", "current"]))
    assert changes.freshness_policy == dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=1)
    )
    assert current.freshness_policy is None


def test_definitions_use_no_beta_preview_or_deprecated_dagster_api():
    component = DynamoCdcComponent.resolve_from_yaml("tables: [orders]\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", BetaWarning)
        warnings.simplefilter("error", PreviewWarning)
        warnings.simplefilter("error", DeprecationWarning)
        defs = dg.component_defs(component=component)
        dg.Definitions.validate_loadable(defs)


def test_dg_lists_the_component():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "list", "components", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "dynamo_cdc.dagster.DynamoCdcComponent" in out


def test_the_example_project_is_an_instance_of_the_component_configured_from_the_environment(
    monkeypatch,
):
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("DYNAMO_CDC_SENSOR_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("DYNAMO_CDC_SENSOR_STATUS", "stopped")
    defs = dg.load_from_defs_folder(path_within_project=REPO / "dagster_project")
    yaml = (REPO / "dagster_project" / "defs" / "dynamo_cdc" / "defs.yaml").read_text()
    assert "type: dynamo_cdc.dagster.DynamoCdcComponent" in yaml
    keys = {k.path[1] for k in _graph(defs).get_all_asset_keys()}
    assert keys == {"orders", "app_devents_pv1"}  # its tables.csv
    stream = [s for s in defs.sensors if s.name.endswith("_stream_sensor")]
    assert {s.minimum_interval_seconds for s in stream} == {5}
    assert {s.default_status for s in defs.sensors} == {dg.DefaultSensorStatus.STOPPED}
    assert defs.resources["dynamodb"].endpoint_url == "http://127.0.0.1:1"
