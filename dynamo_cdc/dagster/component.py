"""``DynamoCdcComponent``: dynamo-cdc as a Dagster Component in a user's own project.

``dg scaffold defs dynamo_cdc.dagster.DynamoCdcComponent cdc`` writes a ``defs.yaml``; its
attributes are the tables, the lake, the export bucket, the AWS endpoint and the cadences::

    type: dynamo_cdc.dagster.DynamoCdcComponent
    attributes:
      tables:                       # names, or a path to the headerless CSV (relative to here)
        - orders
        - name: app-events.v1
          snapshot_schedule: daily
      lake_root: s3://my-lake/dynamodb
      export_bucket: my-exports
      region: eu-west-1
      aws_secret_access_key: "{{ env.MY_SECRET }}"   # secrets: only from the environment

This module imports Dagster and the library's config only: it is the registry module that
``dg list components`` loads (entry point ``dagster_dg_cli.registry_modules``), so it must load
wherever Dagster is installed. The definitions themselves are built by
:func:`dynamo_cdc.dagster.definitions.build_defs`, imported when the component builds.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import Field, field_validator, model_validator

from dynamo_cdc.config import (
    DEFAULT_CURRENT_CRON,
    TableSpec,
    load_table_list,
    validate_table_name,
)
from dynamo_cdc.errors import UnsafeTableNameError

#: ``{{ env.NAME }}`` or ``{{ env('NAME') }}``, the only way a secret may be written.
ENV_TEMPLATE_RE = re.compile(
    r"^\s*\{\{\s*env(?:\.(?P<attr>[A-Za-z_][A-Za-z0-9_]*)|\(\s*['\"](?P<call>[A-Za-z_][A-Za-z0-9_]*)['\"]\s*\))\s*\}\}\s*$"
)


def _secret_from_env(context: dg.ResolutionContext, raw: str | None) -> Any:
    """A secret attribute becomes ``dg.EnvVar(NAME)``: Dagster reads it when a run starts and
    never shows it; a literal value in the YAML is refused."""
    if raw is None:
        return None
    match = ENV_TEMPLATE_RE.match(raw)
    if not match:
        field = context.path[-1] if context.path else "a secret attribute"
        raise ValueError(
            f"{field} must come from the environment, written as '{{{{ env.NAME }}}}'; "
            "a secret is never written in defs.yaml."
        )
    name = match.group("attr") or match.group("call")
    # Unset means "not configured" (boto3's credential chain), as for every other attribute.
    return dg.EnvVar(name) if os.environ.get(name) else None


Secret = Annotated[
    Any,
    dg.Resolver(
        _secret_from_env,
        model_field_type=str | None,
        inject_before_resolve=False,
        description="Only '{{ env.NAME }}': resolved by Dagster when a run starts, never shown.",
    ),
]


class TableEntry(dg.Model):
    """One table and its options (the CSV's second column, as attributes)."""

    name: str = Field(description="The DynamoDB table name, as written in DynamoDB.")
    snapshot_schedule: Literal["off", "daily"] = Field(
        default="off", description="'daily': a full PITR export each day (it costs money)."
    )
    on_gap: Literal["heal", "fail"] = Field(
        default="heal", description="On a stream gap: heal by incremental export, or fail."
    )
    export_format: Literal["DYNAMODB_JSON", "ION"] = Field(
        default="DYNAMODB_JSON", description="Format of the PITR exports."
    )


DEFS_YAML_TEMPLATE = """\
type: {type_name}

attributes:
  # The DynamoDB tables: names, or {{name, snapshot_schedule, on_gap, export_format}}, or the
  # path of a headerless CSV (one table a row, relative to this file).
  tables:
    - my-table
  # Where the Parquet goes: a local folder or s3://bucket/prefix.
  lake_root: ./lake
  # The S3 bucket PITR exports are written to (same region as the tables).
  export_bucket: "{{{{ env.DYNAMO_CDC_EXPORT_BUCKET }}}}"
  region: "{{{{ env.AWS_REGION }}}}"
  # Credentials: boto3's usual chain, or explicit ones, only ever from the environment:
  # aws_access_key_id: "{{{{ env.DYNAMO_CDC_AWS_ACCESS_KEY_ID }}}}"
  # aws_secret_access_key: "{{{{ env.DYNAMO_CDC_AWS_SECRET_ACCESS_KEY }}}}"
  # Cadences and bounds (defaults shown): sensor_interval_seconds: 30, sensor_budget_seconds: 20,
  # current_cron: "*/30 * * * *", snapshot_cron: "30 0 * * *", capture_max_age_seconds: 900,
  # changes_fresh_within_seconds: 86400, current_fresh_within_seconds: 86400
"""


class DynamoCdcScaffolder(dg.Scaffolder):
    """``dg scaffold defs dynamo_cdc.dagster.DynamoCdcComponent NAME``: a commented defs.yaml
    that ``dg check defs`` accepts as it is."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        if request.scaffold_format != "yaml" or request.append:
            dg.scaffold_component(request, {"tables": ["my-table"]})
            return
        (request.target_path / "defs.yaml").write_text(
            DEFS_YAML_TEMPLATE.format(type_name=request.type_name)
        )


@dg.scaffold_with(DynamoCdcScaffolder)
class DynamoCdcComponent(dg.Component, dg.Resolvable, dg.Model):
    """Change data capture of DynamoDB tables into Parquet: per table a daily snapshot (PITR
    export), hourly change partitions fed by a stream sensor, and a current-state mirror."""

    tables: list[str | TableEntry] | str = Field(
        description="The tables: a list of names or {name, snapshot_schedule, on_gap, "
        "export_format}, or the path of a headerless CSV (relative to this defs.yaml)."
    )
    lake_root: str = Field(
        default="./lake", description="Lake root: a local folder or s3://bucket/prefix."
    )
    export_bucket: str | None = Field(
        default=None, description="S3 bucket for PITR exports, in the tables' region."
    )
    export_prefix: str = Field(
        default="dynamo-cdc/exports", description="Key prefix of PITR exports in that bucket."
    )
    export_sse_algorithm: Literal["AES256", "KMS"] | None = Field(
        default=None, description="Encryption of the export files (default: the bucket's)."
    )
    export_kms_key_id: str | None = Field(default=None, description="KMS key for 'KMS'.")
    export_bucket_owner: str | None = Field(
        default=None, description="Account id owning a cross-account export bucket."
    )
    region: str | None = Field(default=None, description="AWS region (default: boto3's chain).")
    endpoint_url: str | None = Field(
        default=None, description="A local AWS endpoint; unset for real AWS."
    )
    aws_access_key_id: Secret = None
    aws_secret_access_key: Secret = None
    aws_session_token: Secret = None
    sensor_interval_seconds: int = Field(default=30, description="Stream sensor tick interval.")
    sensor_budget_seconds: float = Field(
        default=20.0,
        description="Time budget of one tick's stream poll (Dagster times a tick out at 60 s).",
    )
    sensors_running: bool = Field(
        default=True, description="Whether the stream sensors start running."
    )
    current_cron: str = Field(
        default=DEFAULT_CURRENT_CRON,
        description="Cadence of refreshing `current` after new changes (a run each).",
    )
    snapshot_cron: str = Field(
        default="30 0 * * *",
        description="When the daily snapshot schedule (tables with snapshot_schedule: daily) runs.",
    )
    compaction_grace_seconds: float = Field(
        default=300.0, description="How long after its end an hour may still fill."
    )
    capture_max_age_seconds: float = Field(
        default=900.0,
        description="The capture_freshness check fails when no poll was committed for this long.",
    )
    changes_fresh_within_seconds: float | None = Field(
        default=86400.0,
        description="Freshness policy of `changes`: a partition materialized within this "
        "window (an idle table fails it too); null for none.",
    )
    current_fresh_within_seconds: float | None = Field(
        default=86400.0,
        description="Freshness policy of `current`: refreshed within this window; null for none.",
    )

    @field_validator(
        "lake_root",
        "export_bucket",
        "export_prefix",
        "export_kms_key_id",
        "export_bucket_owner",
        "region",
        mode="before",
    )
    @classmethod
    def _text(cls, value: Any) -> Any:
        # Dagster's templating reads '123456789012' (an account id) as a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _valid(self) -> DynamoCdcComponent:
        # Bounds checked here, not as Field(ge=...): Dagster validates the YAML's template text
        # ("{{ env(...) }}") against the field's constraints before rendering it.
        bounds = {
            "sensor_interval_seconds": (1, None),
            "sensor_budget_seconds": (1, 40),  # Dagster times a tick out at 60 s
            "compaction_grace_seconds": (0, None),
            "capture_max_age_seconds": (1, None),
            "changes_fresh_within_seconds": (60, None),  # Dagster's smallest freshness window
            "current_fresh_within_seconds": (60, None),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if value is not None and (value < low or (high is not None and value > high)):
                span = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise ValueError(f"{name} must be {span}, not {value}.")
        if isinstance(self.tables, list):
            names = [t if isinstance(t, str) else t.name for t in self.tables]
            for name in names:
                try:
                    validate_table_name(name)
                except UnsafeTableNameError as exc:
                    raise ValueError(f"tables: {exc}") from None
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"tables: {twice} listed twice; keep one entry per table.")
            if not names:
                raise ValueError("tables: the list names no table.")
        return self

    def table_specs(self, base: Path) -> list[TableSpec]:
        """The tables as :class:`TableSpec` (a CSV path is read relative to ``base``)."""
        if isinstance(self.tables, str):
            path = Path(self.tables)
            return load_table_list(path if path.is_absolute() else base / path)
        return [
            TableSpec(name=t)
            if isinstance(t, str)
            else TableSpec(
                name=t.name,
                snapshot_schedule=t.snapshot_schedule,
                on_gap=t.on_gap,
                export_format=t.export_format,
            )
            for t in self.tables
        ]

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        import dataclasses

        from dynamo_cdc.dagster.definitions import (
            PipelineOptions,
            build_defs,
            partitions_start_setting,
            table_partitions_start,
        )
        from dynamo_cdc.dagster.resources import build_resources_for

        options = PipelineOptions(
            sensor_interval_seconds=self.sensor_interval_seconds,
            sensor_budget_seconds=self.sensor_budget_seconds,
            sensors_running=self.sensors_running,
            current_cron=self.current_cron,
            snapshot_cron=self.snapshot_cron,
            freshness_seconds=self.capture_max_age_seconds,
            compaction_grace_seconds=self.compaction_grace_seconds,
            changes_fresh_within=_window(self.changes_fresh_within_seconds),
            current_fresh_within=_window(self.current_fresh_within_seconds),
        )
        resources = build_resources_for(
            lake_root=self.lake_root,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            export_bucket=self.export_bucket,
            export_prefix=self.export_prefix,
            export_sse_algorithm=self.export_sse_algorithm,
            export_kms_key_id=self.export_kms_key_id,
            export_bucket_owner=self.export_bucket_owner,
        )
        specs = self.table_specs(context.path)
        # DYNAMO_CDC_PARTITIONS_START, else each table's creation day (as the env location)
        options = dataclasses.replace(options, partitions_start=partitions_start_setting())
        starts = {spec.name: table_partitions_start(spec, options) for spec in specs}
        return build_defs(specs, options, resources=resources, starts=starts)


def _window(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)
