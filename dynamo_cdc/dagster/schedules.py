"""What runs by itself per table besides the stream sensor: the daily snapshot schedule.

(``current`` refreshes through its automation condition, see
:func:`dynamo_cdc.dagster.assets.current_automation_condition`; closed hours are compacted by
runs the stream sensor requests.)
"""

from datetime import timedelta

import dagster as dg

from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import asset_key

SNAPSHOT_CRON = "30 0 * * *"


def build_snapshot_schedule(spec: TableSpec, cron: str = SNAPSHOT_CRON) -> dg.ScheduleDefinition:
    """``<safe>_daily_snapshot_schedule``: yesterday's snapshot partition on ``cron`` (UTC;
    default 00:30).

    Off unless the table list says ``snapshot_schedule=daily``: each full export is billed by
    the size of the table. It can always be turned on in the UI.
    """
    job = dg.define_asset_job(
        f"{spec.safe_name}_snapshot_job",
        selection=dg.AssetSelection.assets(asset_key(spec, "snapshot")),
        tags={"dynamo_cdc/table": spec.safe_name},
    )

    @dg.schedule(
        name=f"{spec.safe_name}_daily_snapshot_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if spec.snapshot_schedule == "daily"
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description=f"Full PITR export of `{spec.name}` at the end of each UTC day.",
    )
    def snapshot_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time - timedelta(days=1)
        key = day.strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"snapshot:{key}", partition_key=key)

    return snapshot_schedule
