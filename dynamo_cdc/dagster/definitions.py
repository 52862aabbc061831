"""The code location: every configured table's assets, checks, sensor and schedule.

``dagster dev -w workspace.yaml``, ``dg dev`` and ``dagster asset materialize -m
dynamo_cdc.dagster.definitions`` all load :data:`defs`, built by :func:`build_defs` from the table
list (``DYNAMO_CDC_TABLES``, a headerless CSV) with one ``build_*`` factory call per table.

Without a table list the location loads empty and says why in the log (``dynamo-cdc demo``
writes its own table list of the demo tables).

Knobs (environment, read when the location loads; the resources' settings are resolved by
Dagster when a run starts, see :mod:`dynamo_cdc.dagster.resources`):

==================================  =========  ==============================================
variable                            default    meaning
==================================  =========  ==============================================
DYNAMO_CDC_SENSOR_INTERVAL_SECONDS  30         stream sensor tick interval
DYNAMO_CDC_SENSOR_BUDGET_SECONDS    20         time budget of one tick's stream poll
DYNAMO_CDC_SENSOR_STATUS            running    default status of the stream sensors
DYNAMO_CDC_CURRENT_CRON             30 min     cron of refreshing ``current`` (``*/30 * * * *``)
DYNAMO_CDC_FRESHNESS_SECONDS        900        the capture freshness check's bound
DYNAMO_CDC_COMPACTION_GRACE_SECONDS 300        how long after its end an hour may still fill
DYNAMO_CDC_PARTITIONS_START         see below  first day (YYYY-MM-DD) of every table's partitions
==================================  =========  ==============================================

Partitions start on ``DYNAMO_CDC_PARTITIONS_START`` when it is set; else on the day each table
was created (DescribeTable's CreationDateTime, read when the location loads); else, when AWS
cannot be reached while loading, 35 days ago (the longest PITR window: no export can reach
further back).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import (
    DEFAULT_CURRENT_CRON,
    Settings,
    TableSpec,
    load_table_list,
    no_table_list_error,
)
from dynamo_cdc.dagster.assets import (
    PITR_MAX_DAYS,
    build_table_assets,
    build_table_observation_sensor,
    default_partitions_start,
)
from dynamo_cdc.dagster.capture_groups import build_capture_groups_job
from dynamo_cdc.dagster.resources import build_resources
from dynamo_cdc.dagster.schedules import SNAPSHOT_CRON, build_snapshot_schedule
from dynamo_cdc.dagster.sensors import build_stream_sensor
from dynamo_cdc.errors import ConfigError
from dynamo_cdc.export import describe_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    """Definition-time options (see the module docstring for their variables)."""

    sensor_interval_seconds: int = 30
    sensor_budget_seconds: float = 20.0
    sensors_running: bool = True
    current_cron: str = DEFAULT_CURRENT_CRON
    freshness_seconds: float = 900.0
    compaction_grace_seconds: float = 300.0
    snapshot_cron: str = SNAPSHOT_CRON
    changes_fresh_within: timedelta | None = timedelta(days=1)
    current_fresh_within: timedelta | None = timedelta(days=1)
    partitions_start: date | None = None

    @classmethod
    def from_env(cls) -> PipelineOptions:
        """Read the ``DYNAMO_CDC_*`` knobs; a malformed value is a :class:`ConfigError`."""

        def number(name: str, default: float) -> float:
            text = os.environ.get(f"DYNAMO_CDC_{name}", "").strip()
            if not text:
                return default
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if value <= 0:
                raise ConfigError(
                    f"DYNAMO_CDC_{name}={text!r} is not a positive number.",
                    fix=f"set a number of seconds or unset it (default {default:g}).",
                )
            return value

        status = os.environ.get("DYNAMO_CDC_SENSOR_STATUS", "running").strip().lower()
        if status not in ("running", "stopped"):
            raise ConfigError(
                f"DYNAMO_CDC_SENSOR_STATUS={status!r} is neither 'running' nor 'stopped'.",
                fix="set running or stopped.",
            )
        budget = number("SENSOR_BUDGET_SECONDS", cls.sensor_budget_seconds)
        return cls(
            sensor_interval_seconds=max(1, int(number("SENSOR_INTERVAL_SECONDS", 30))),
            # Dagster times a sensor evaluation out after 60 s; leave room for the writes.
            sensor_budget_seconds=min(budget, 40.0),
            sensors_running=status == "running",
            current_cron=os.environ.get("DYNAMO_CDC_CURRENT_CRON", "").strip()
            or DEFAULT_CURRENT_CRON,
            freshness_seconds=number("FRESHNESS_SECONDS", cls.freshness_seconds),
            compaction_grace_seconds=number(
                "COMPACTION_GRACE_SECONDS", cls.compaction_grace_seconds
            ),
            partitions_start=partitions_start_setting(),
        )


def partitions_start_setting() -> date | None:
    """DYNAMO_CDC_PARTITIONS_START as a day, or None when unset."""
    return _day("PARTITIONS_START")


def _day(name: str) -> date | None:
    text = os.environ.get(f"DYNAMO_CDC_{name}", "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"DYNAMO_CDC_{name}={text!r} is not a day.",
            fix="write YYYY-MM-DD, or unset it to start at the table's creation.",
        ) from None


def table_partitions_start(spec: TableSpec, options: PipelineOptions) -> date:
    """The first partition day of ``spec``: the setting, else the table's creation day, else
    (AWS unreachable while loading) the first day the longest PITR window can export."""
    if options.partitions_start:
        return options.partitions_start
    try:
        clients = Clients(Settings.from_env(), max_attempts=1, connect_timeout=5.0)
        created = describe_table(clients, spec.name)["CreationDateTime"]
        # never after today: a clock ahead of this one (skew) must not leave no partition at all
        return min(created.astimezone(UTC).date(), datetime.now(UTC).date())
    except Exception as exc:  # the location must load without AWS; runs will say what is wrong
        log.warning(
            "dynamo-cdc: could not read when table %r was created (%s); its partitions start "
            "%d days ago. Set DYNAMO_CDC_PARTITIONS_START to choose.",
            spec.name,
            type(exc).__name__,
            PITR_MAX_DAYS,
        )
        return default_partitions_start()


def configured_tables(settings: Settings) -> list[TableSpec]:
    """The table list; without one the location loads empty and says why (as ``check`` does)."""
    if settings.tables_path:
        return load_table_list(settings.tables_path)
    log.warning("dynamo-cdc: %s The code location is empty.", no_table_list_error())
    return []


def build_table_defs(
    spec: TableSpec, options: PipelineOptions, start: date | None = None
) -> dg.Definitions:
    """Assets, checks, stream sensor and snapshot schedule of one table; partitions from
    ``start`` (default: the setting, else :func:`default_partitions_start`)."""
    assets, checks = build_table_assets(
        spec,
        current_cron=options.current_cron,
        freshness_seconds=options.freshness_seconds,
        changes_fresh_within=options.changes_fresh_within,
        current_fresh_within=options.current_fresh_within,
        partitions_start=start or options.partitions_start,
    )
    changes = assets[2]
    sensor = build_stream_sensor(
        spec,
        changes.op.name,
        interval_seconds=options.sensor_interval_seconds,
        budget_seconds=options.sensor_budget_seconds,
        grace_seconds=options.compaction_grace_seconds,
        freshness_seconds=options.freshness_seconds,
        running=options.sensors_running,
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[build_capture_groups_job(spec)],
        sensors=[sensor, build_table_observation_sensor(spec, options.sensors_running)],
        schedules=[build_snapshot_schedule(spec, options.snapshot_cron)],
    )


def build_defs(
    tables: Sequence[TableSpec],
    options: PipelineOptions | None = None,
    resources: dict[str, Any] | None = None,
    starts: Mapping[str, date] | None = None,
) -> dg.Definitions:
    """The whole code location for ``tables`` (``resources``: default :func:`build_resources`,
    configured from ``DYNAMO_CDC_*`` variables; ``starts``: a table's first partition day, see
    :func:`table_partitions_start`)."""
    options = options or PipelineOptions()
    starts = starts or {}
    per_table = [build_table_defs(spec, options, starts.get(spec.name)) for spec in tables]
    sensors = [build_automation_sensor(options)] if tables else []
    return dg.Definitions.merge(
        *per_table,
        dg.Definitions(
            resources=build_resources() if resources is None else resources, sensors=sensors
        ),
    )


AUTOMATION_SENSOR = "dynamo_cdc_automation_sensor"


def build_automation_sensor(options: PipelineOptions) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the assets' automation conditions (``current`` after new changes).

    Dagster's implicit default automation sensor starts stopped; this one starts with the
    stream sensors, so ``current`` follows the changes without a click in the UI.
    """
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        default_status=(
            dg.DefaultSensorStatus.RUNNING
            if options.sensors_running
            else dg.DefaultSensorStatus.STOPPED
        ),
        minimum_interval_seconds=30,
        description="Refreshes `current` on its cron cadence once new snapshot or changes land.",
    )


def build_defs_from_env() -> dg.Definitions:
    """:func:`build_defs` over the configured tables and knobs."""
    tables = configured_tables(Settings.from_env())
    options = PipelineOptions.from_env()
    starts = {spec.name: table_partitions_start(spec, options) for spec in tables}
    return build_defs(tables, options, starts=starts)


@dg.definitions
def defs() -> dg.Definitions:
    """Built when Dagster loads the location, not on import (the component imports this module)."""
    return build_defs_from_env()
