"""Capture of one table in shard groups as steps on Dagster's executor.

A table whose stream one process cannot keep up with is captured in ``N`` shard groups
(:mod:`dynamo_cdc.shardgroups`), each by a step of the job ``<t>_capture_groups``: ``plan``
splits the table's checkpoint into ``N`` groups the first time (``regroup``, holding every
lease) and fans out one ``capture`` step per group (``DynamicOut``, as the snapshot's convert
steps); each step holds its group's lease in the lake while it captures, for up to ``seconds``
or until its group is caught up, and reports each hour it wrote to as a materialization of the
``changes`` partition, as the stream sensor does for a micro-batch. The executor decides where
the steps run: the multiprocess executor (one process each), ``k8s_job_executor`` (a pod each),
``ecs_executor`` (a task each). A step that dies is retried; its group's lease passes to the
retry (at once on a local lake, after ``lease_seconds`` on S3), which re-reads what it did not
commit.

While a table is captured in groups, its stream sensor skips its ticks (a single capture of a
grouped table is refused): run this job on a schedule instead, or in a loop (a run launched when
the previous one ends).
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from dynamo_cdc.capture import LEASE_SECONDS, capture_once, regroup
from dynamo_cdc.config import TableSpec
from dynamo_cdc.dagster.assets import hour_of_path, hour_partition_key
from dynamo_cdc.dagster.resources import DynamoDBResource, LakeResource
from dynamo_cdc.dagster.sensors import batch_materialization
from dynamo_cdc.stream import ReadBudget, discover


def capture_groups_job_name(spec: TableSpec) -> str:
    """The name of ``spec``'s capture-in-groups job."""
    return f"{spec.safe_name}_capture_groups"


def build_capture_groups_job(spec: TableSpec) -> dg.JobDefinition:
    """The job that captures ``spec``'s stream in shard groups, one step per group (see the
    module docstring). Run config: ``ops.<t>__capture_plan.config.groups`` (default 2),
    ``ops.<t>__capture_group.config.seconds`` (default 60) and ``lease_seconds``."""
    tags = {"dynamo_cdc/table": spec.safe_name}

    @dg.op(
        name=f"{spec.safe_name}__capture_plan",
        out=dg.DynamicOut(dict),
        config_schema={"groups": dg.Field(int, default_value=2)},
        tags=tags,
    )
    def plan(
        context: dg.OpExecutionContext, lake: LakeResource
    ) -> Iterator[dg.DynamicOutput[dict[str, int]]]:
        groups = context.op_config["groups"]
        if groups < 2:
            raise dg.Failure(f"groups must be at least 2 (got {groups}): one group is the sensor")
        if regroup(lake.get_lake(), spec.name, groups, only_if_needed=True) is not None:
            context.log.info(f"{spec.name}: the capture checkpoint split into {groups} groups")
        for group in range(groups):
            yield dg.DynamicOutput({"group": group, "groups": groups}, mapping_key=f"group_{group}")

    @dg.op(
        name=f"{spec.safe_name}__capture_group",
        config_schema={
            "seconds": dg.Field(float, default_value=60.0),
            "lease_seconds": dg.Field(float, default_value=LEASE_SECONDS),
        },
        retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
        tags=tags,
    )
    def capture(
        context: dg.OpExecutionContext,
        work: dict[str, int],
        dynamodb: DynamoDBResource,
        lake: LakeResource,
    ) -> int:
        clients, the_lake = dynamodb.get_clients(), lake.get_lake()
        info = discover(clients, spec.name)
        deadline = time.monotonic() + context.op_config["seconds"]
        records = 0
        while True:
            left = max(1.0, deadline - time.monotonic())
            result = capture_once(
                clients,
                the_lake,
                spec.name,
                ReadBudget(max_seconds=min(20.0, left)),
                info=info,
                groups=work["groups"],
                group=work["group"],
                lease_seconds=context.op_config["lease_seconds"],
            )
            records += result.records
            by_hour: dict[str, list[str]] = {}
            for path in result.files:
                if (hour := hour_of_path(path)) is not None:
                    by_hour.setdefault(hour_partition_key(hour), []).append(path)
            for hour_key, files in sorted(by_hour.items()):
                context.log_event(
                    batch_materialization(
                        spec, the_lake, hour_key, files, result, kind="group_batch"
                    )
                )
            caught_up = result.stopped_by == "caught_up" and result.records == 0
            if caught_up or time.monotonic() >= deadline:
                context.log.info(
                    f"{spec.name}: shard group {work['group']} of {work['groups']}: "
                    f"{records} records ({'caught up' if caught_up else 'time is up'})"
                )
                return records

    @dg.op(name=f"{spec.safe_name}__capture_summary", tags=tags)
    def summary(context: dg.OpExecutionContext, records: list[int]) -> dg.Output[int]:
        total = sum(records)
        context.log.info(f"{spec.name}: {total} records captured by {len(records)} groups")
        return dg.Output(total, metadata={"records": total, "groups": len(records)})

    @dg.job(name=capture_groups_job_name(spec), tags=tags)
    def capture_groups() -> Any:
        summary(plan().map(capture).collect())

    return capture_groups
