"""The code location loads, and its names are the documented ones."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from dynamo_cdc.config import Settings, TableSpec, dagster_safe_name, no_table_list_error
from dynamo_cdc.dagster.assets import export_time_of
from dynamo_cdc.dagster.definitions import (
    AUTOMATION_SENSOR,
    PipelineOptions,
    build_defs,
    build_defs_from_env,
    configured_tables,
)
from dynamo_cdc.errors import ConfigError, TableListError

KINDS = ("table", "snapshot", "changes", "current")
SINCE_2026 = PipelineOptions(partitions_start=date(2026, 1, 1))


def _keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    graph = defs.get_repository_def().asset_graph
    return sorted(graph.get_all_asset_keys())


def test_an_endpoint_without_a_table_list_loads_empty_with_the_message_check_gives(
    monkeypatch, caplog
):
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", "http://127.0.0.1:1")
    defs = build_defs_from_env()
    dg.Definitions.validate_loadable(defs)
    assert _keys(defs) == []  # only `dynamo-cdc demo` uses the demo tables (it lists them)
    assert str(no_table_list_error()) in caplog.text


def test_without_tables_or_endpoint_the_location_loads_empty_and_says_why(monkeypatch, caplog):
    defs = build_defs_from_env()
    dg.Definitions.validate_loadable(defs)
    assert _keys(defs) == []
    assert "DYNAMO_CDC_TABLES" in caplog.text


def test_table_list_drives_the_asset_keys_sensors_and_schedules(monkeypatch, tmp_path):
    path = tmp_path / "tables.csv"
    path.write_text("orders\napp-events.v1,snapshot_schedule=daily\nmy_table\n")
    monkeypatch.setenv("DYNAMO_CDC_TABLES", str(path))
    monkeypatch.setenv("DYNAMO_CDC_PARTITIONS_START", "2026-11-01")  # no AWS call to ask
    defs = build_defs_from_env()
    dg.Definitions.validate_loadable(defs)
    safe = ["orders", "app_devents_pv1", "my__table"]
    expected = sorted(dg.AssetKey(["dynamodb", s, kind]) for s in safe for kind in KINDS)
    keys = _keys(defs)
    assert keys == expected
    assert len(set(keys)) == len(keys)
    assert sorted(s.name for s in defs.sensors) == sorted(
        [f"{s}_stream_sensor" for s in safe]
        + [f"{s}_table_sensor" for s in safe]
        + [AUTOMATION_SENSOR]
    )
    automation = next(s for s in defs.sensors if s.name == AUTOMATION_SENSOR)
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING  # current follows changes
    schedules = {s.name: s.default_status for s in defs.schedules}
    assert schedules == {
        "orders_daily_snapshot_schedule": dg.DefaultScheduleStatus.STOPPED,
        "app_devents_pv1_daily_snapshot_schedule": dg.DefaultScheduleStatus.RUNNING,
        "my__table_daily_snapshot_schedule": dg.DefaultScheduleStatus.STOPPED,
    }


def test_names_that_differ_only_by_dash_dot_or_underscore_get_distinct_keys():
    names = ["a-b.c", "a_b.c", "a.b-c", "a_db_pc", "a__b"]
    defs = build_defs([TableSpec(n) for n in names])
    dg.Definitions.validate_loadable(defs)
    assert len(_keys(defs)) == 4 * len(names)
    assert len({dagster_safe_name(n) for n in names}) == len(names)


def test_each_asset_keeps_the_real_table_name_in_its_metadata():
    defs = build_defs([TableSpec("app-events.v1")])
    graph = defs.get_repository_def().asset_graph
    for key in graph.get_all_asset_keys():
        assert graph.get(key).metadata["dynamodb_table"] == "app-events.v1"


def test_every_table_has_its_checks():
    defs = build_defs([TableSpec("orders")])
    checks = {
        (c.asset_key.path[-1], c.name)
        for c in defs.get_repository_def().asset_graph.asset_check_keys
    }
    assert checks == {
        ("snapshot", "rows_match_manifest"),
        ("changes", "no_duplicate_event_id"),
        ("changes", "capture_freshness"),
        ("current", "sample_matches_live_table"),
    }


def test_changes_runs_of_one_table_share_one_pool_and_tables_do_not():
    defs = build_defs([TableSpec("orders"), TableSpec("app-events.v1")])
    pools = {
        a.key.path[1]: a.op.pool
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] == "changes"
    }
    assert pools == {"orders": "dynamo_cdc_orders", "app_devents_pv1": "dynamo_cdc_app_devents_pv1"}


def test_sensor_interval_and_status_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", "http://127.0.0.1:1")
    (tmp_path / "tables.csv").write_text("orders\n")
    monkeypatch.setenv("DYNAMO_CDC_TABLES", str(tmp_path / "tables.csv"))
    monkeypatch.setenv("DYNAMO_CDC_SENSOR_INTERVAL_SECONDS", "7")
    monkeypatch.setenv("DYNAMO_CDC_SENSOR_STATUS", "stopped")
    defs = build_defs_from_env()
    assert len(list(defs.sensors)) == 3  # stream, table observation, automation
    for sensor in defs.sensors:
        if sensor.name.endswith("_stream_sensor"):
            assert sensor.minimum_interval_seconds == 7
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_a_malformed_knob_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DYNAMO_CDC_SENSOR_INTERVAL_SECONDS", "soon")
    with pytest.raises(ConfigError, match="DYNAMO_CDC_SENSOR_INTERVAL_SECONDS"):
        PipelineOptions.from_env()


def test_a_malformed_table_list_fails_loudly(tmp_path):
    path = tmp_path / "tables.csv"
    path.write_text("table\norders\n")
    with pytest.raises(TableListError, match="header"):
        configured_tables(Settings(tables_path=str(path)))


def test_snapshot_export_time_is_the_partition_end_or_now_for_today():
    now = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    assert export_time_of(datetime(2026, 1, 2, tzinfo=UTC), now) == datetime(2026, 1, 2, tzinfo=UTC)
    assert export_time_of(datetime(2026, 1, 3, tzinfo=UTC), now) is None


def test_secrets_are_env_vars_not_values(monkeypatch):
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("DYNAMO_CDC_AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("DYNAMO_CDC_AWS_SECRET_ACCESS_KEY", "very-secret")
    defs = build_defs_from_env()
    resource = defs.resources["dynamodb"]
    assert resource.aws_secret_access_key == dg.EnvVar("DYNAMO_CDC_AWS_SECRET_ACCESS_KEY")
    assert "very-secret" not in repr(resource)


def test_daily_snapshot_schedule_requests_yesterdays_partition():
    defs = build_defs([TableSpec("orders", snapshot_schedule="daily")], SINCE_2026)
    schedule = defs.get_schedule_def("orders_daily_snapshot_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 2, 0, 30, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-03-01"
    assert request.run_key == "snapshot:2026-03-01"


def test_current_is_requested_after_new_changes_on_the_next_cron_tick():
    defs = build_defs([TableSpec("orders")], SINCE_2026)
    current = dg.AssetKey(["dynamodb", "orders", "current"])
    changes = dg.AssetKey(["dynamodb", "orders", "changes"])
    with dg.instance_for_test() as instance:
        _snapshot_and_first_refresh(instance, "orders")
        t0 = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=t0)
        assert result.get_num_requested(current) == 0
        # what the stream sensor reports for a micro-batch, without a run
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=changes, partition="2026-03-02-10:00")
        )
        # Between cron ticks nothing happens ...
        t1 = t0 + timedelta(minutes=10)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=t1, cursor=result.cursor
        )
        assert result.get_num_requested(current) == 0
        # ... the next tick (every 30 minutes by default) refreshes current once ...
        t2 = t0 + timedelta(minutes=30)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=t2, cursor=result.cursor
        )
        assert result.get_num_requested(current) == 1
        # ... and without new changes the tick after does not.
        t3 = t2 + timedelta(minutes=30)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=t3, cursor=result.cursor
        )
        assert result.get_num_requested(current) == 0


def test_the_table_is_observed_every_five_minutes_by_a_sensor_not_a_run():
    defs = build_defs([TableSpec("orders")])
    sensor = next(s for s in defs.sensors if s.name == "orders_table_sensor")
    assert sensor.minimum_interval_seconds == 300
    table = defs.get_repository_def().asset_graph.get(dg.AssetKey(["dynamodb", "orders", "table"]))
    assert table.is_external and not table.is_executable
    assert table.automation_condition is None


def _first_partitions(defs: dg.Definitions) -> dict[str, str]:
    graph = defs.get_repository_def().asset_graph
    return {
        key.path[-1]: graph.get(key).partitions_def.get_first_partition_key()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }


def test_partitions_start_on_the_configured_day(monkeypatch, tmp_path):
    (tmp_path / "tables.csv").write_text("orders\n")
    monkeypatch.setenv("DYNAMO_CDC_TABLES", str(tmp_path / "tables.csv"))
    monkeypatch.setenv("DYNAMO_CDC_PARTITIONS_START", "2026-11-20")
    defs = build_defs_from_env()
    assert _first_partitions(defs) == {"snapshot": "2026-11-20", "changes": "2026-11-20-00:00"}


def test_without_the_setting_or_aws_partitions_start_35_days_back_not_in_2025(
    monkeypatch, tmp_path, caplog
):
    (tmp_path / "tables.csv").write_text("orders\n")
    monkeypatch.setenv("DYNAMO_CDC_TABLES", str(tmp_path / "tables.csv"))
    monkeypatch.setenv("DYNAMO_CDC_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing answers
    monkeypatch.delenv("DYNAMO_CDC_PARTITIONS_START")
    defs = build_defs_from_env()
    first = (datetime.now(UTC) - timedelta(days=35)).strftime("%Y-%m-%d")
    assert _first_partitions(defs)["snapshot"] == first
    assert "DYNAMO_CDC_PARTITIONS_START" in caplog.text


def test_a_malformed_partitions_start_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DYNAMO_CDC_PARTITIONS_START", "last year")
    with pytest.raises(ConfigError, match="DYNAMO_CDC_PARTITIONS_START"):
        PipelineOptions.from_env()


def _snapshot_and_first_refresh(instance: dg.DagsterInstance, table: str) -> None:
    for kind, partition in (("snapshot", "2026-03-01"), ("current", None)):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=["dynamodb", table, kind], partition=partition)
        )


def test_current_waits_for_the_first_snapshot_then_refreshes_without_waiting_for_cron():
    defs = build_defs([TableSpec("orders")], SINCE_2026)
    current = dg.AssetKey(["dynamodb", "orders", "current"])
    with dg.instance_for_test() as instance:
        t0 = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)
        result = None
        # changes land every few minutes, but there is no snapshot: no refresh (it would fail)
        for minutes in range(0, 65, 5):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=["dynamodb", "orders", "changes"], partition="2026-03-02-10:00"
                )
            )
            result = dg.evaluate_automation_conditions(
                defs=defs,
                instance=instance,
                evaluation_time=t0 + timedelta(minutes=minutes),
                cursor=result.cursor if result else None,
            )
            assert result.get_num_requested(current) == 0
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=["dynamodb", "orders", "snapshot"], partition="2026-03-02"
            )
        )
        at = t0 + timedelta(minutes=66)  # not a cron tick
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=at, cursor=result.cursor
        )
        assert result.get_num_requested(current) == 1


def _requests_over(defs, instance, start, hours, every, on_tick=None):
    """Automation requests per asset key over ``hours`` of evaluations every ``every``."""
    counts: dict[dg.AssetKey, int] = {}
    cursor = None
    steps = int(timedelta(hours=hours) / every)
    for i in range(steps + 1):
        now = start + i * every
        if on_tick is not None:
            on_tick(now)
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=now, cursor=cursor
        )
        cursor = result.cursor
        for r in result.results:
            if r.true_subset.size:
                counts[r.key] = counts.get(r.key, 0) + r.true_subset.size
    return counts


def test_an_idle_table_gets_no_automated_run():
    defs = build_defs([TableSpec("orders")], SINCE_2026)
    with dg.instance_for_test() as instance:
        start = datetime(2026, 11, 27, 7, 1, tzinfo=UTC)
        assert _requests_over(defs, instance, start, 3, timedelta(minutes=5)) == {}


def test_a_steadily_written_table_refreshes_current_every_30_minutes_and_nothing_else():
    defs = build_defs([TableSpec("orders")], SINCE_2026)
    changes = dg.AssetKey(["dynamodb", "orders", "changes"])
    current = dg.AssetKey(["dynamodb", "orders", "current"])
    with dg.instance_for_test() as instance:
        _snapshot_and_first_refresh(instance, "orders")

        def batch_lands(now: datetime) -> None:  # as the stream sensor reports it
            hour = now.replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%d-%H:00")
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=changes, partition=hour)
            )

        start = datetime(2026, 11, 27, 7, 1, tzinfo=UTC)
        counts = _requests_over(defs, instance, start, 3, timedelta(minutes=5), batch_lands)
        # 07:30, 08:00, ..., 10:00: six refreshes in three hours, 48 a day
        assert counts == {current: 6}
