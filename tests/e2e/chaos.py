"""The chaos run: a seeded random workload, real Dagster runs and injected faults, then proof
that nothing was lost or duplicated.

Run it::

    python -m tests.e2e.chaos --seed 7 --minutes 10      # prints the seed and a figures table
    python -m tests.e2e.chaos --services --seed 7 --minutes 15   # the production profile

The production profile (``--services``): the Dagster instance on PostgreSQL (deploy/dagster.yaml,
a server started here), ``dagster code-server``, ``dagster-webserver`` and ``dagster-daemon`` as
separate processes (tests/e2e/services.py), every run launched over the webserver's GraphQL,
and the lake on S3 of the local AWS. The run still ticks the stream sensor itself (the daemon's
sensors are stopped), so that every fault falls between two ticks.

``tests/e2e/test_chaos.py`` runs it at a bounded size in ``make test`` (``CHAOS_MINUTES`` and
``CHAOS_SEED`` make it longer or replay a seed).

What it does, all on a local AWS of its own (a child process, 127.0.0.1) and a lake and
``DAGSTER_HOME`` in a work folder:

* a table with a hash and a range key, a NEW_AND_OLD_IMAGES stream, PITR and TTL;
* rounds of: a random slice of :class:`~dynamo_cdc.local.workload.Workload` (puts, updates,
  deletes, BatchWriteItem, TransactWriteItems, items with a due TTL), maybe one fault, then one
  stream sensor tick (:func:`dynamo_cdc.dagster.sensors.stream_tick`, the sensor's body) whose
  asset events are recorded in the instance as the sensor daemon records them and whose run
  requests are executed as real Dagster runs of the ``changes`` asset on the on-disk instance
  (a run key already in the instance is not run again, as the daemon does); every few rounds
  the ``current`` asset is materialized;
* the snapshot asset of today, requested by the first tick (capture starts before its
  ExportTime);
* faults (each kind at least once, then at random until the time is up):

  ``sigkill_mid_write``
      a child process captures and SIGKILLs itself before its n-th Parquet write (n random);
  ``sigkill_before_commit``
      a child process captures and SIGKILLs itself after the write, before the commit;
  ``throttle_30pct``
      30% of GetRecords answer LimitExceededException for a few rounds;
  ``expired_iterators``
      the server clock jumps 16 minutes between two GetRecords of one tick (iterators
      live 15 minutes);
  ``shard_rotation``
      the open shards close and get one or two children each;
  ``sensor_restart``
      the sensor's cursor is lost and the next tick runs with new clients and lake objects;
  ``duplicate_backfill``
      two ``dagster asset materialize`` processes of the same ``changes`` hour with
      ``capture=true`` at once (the Dagster pool must serialise them);
  ``concurrent_refresh``
      after catching up, two processes refresh ``current`` at once; it must then equal a Scan;
  ``ttl_sweep``
      the TTL service deletes the due items;
  ``checkpoint_reset``
      what a heal ends with: capture re-reads every shard from TRIM_HORIZON over committed and
      compacted files;
  ``compaction``
      an hour's files are compacted (forced: the hour need not be closed).

At the end: throttling off, ticks until caught up, ``current`` materialized, then ``current``
is compared with a consistent Scan through ``_item``, and every stream record (read
independently with plain boto3 from TRIM_HORIZON of every shard) must be in the change files
exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[2]
TABLE = "chaos-orders.v1"
LAKE_BUCKET = "chaos-lake"
TTL_ATTRIBUTE = "expires_at"
FAULTS = (
    "sigkill_mid_write",
    "sigkill_before_commit",
    "throttle_30pct",
    "expired_iterators",
    "shard_rotation",
    "sensor_restart",
    "duplicate_backfill",
    "concurrent_refresh",
    "ttl_sweep",
    "checkpoint_reset",
    "compaction",
)
# Costly faults are drawn less often once each kind ran once.
_WEIGHTS = {"duplicate_backfill": 0.3, "concurrent_refresh": 0.5, "checkpoint_reset": 0.5}
MAX_CLOCK_JUMP_SECONDS = 20 * 3600  # stay well inside the stream's 24 h retention


# a run of the code location's asset job, as the UI's "Materialize" launches it
LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidSubsetError { message }
  }
}
"""


class ChaosFailure(AssertionError):
    """A step of the chaos run failed (the message names the seed, the round and the step)."""


@dataclass
class ChaosFigures:
    """What one chaos run did and found."""

    seed: int
    minutes: float
    rounds: int = 0
    elapsed_seconds: float = 0.0
    operations: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[str] = field(default_factory=list)
    dagster_runs: Counter[str] = field(default_factory=Counter)
    asset_events: Counter[str] = field(default_factory=Counter)
    server_errors: dict[str, int] = field(default_factory=dict)
    stream_records: int = 0
    stream_rows: int = 0
    export_rows: int = 0
    rows_lost: int = 0
    duplicates: int = 0
    unexpected_rows: int = 0
    current_rows: int = 0
    scan_items: int = 0
    current_mismatches: int = 0
    mid_run_mismatches: int = 0
    failed_checks: int = 0
    check_evaluations: int = 0
    leases_aged: int = 0
    future_hour_requests: int = 0
    refresh_failures: list[str] = field(default_factory=list)
    lost_sample: list[str] = field(default_factory=list)
    duplicate_sample: list[str] = field(default_factory=list)
    mismatch_sample: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.rows_lost
            or self.duplicates
            or self.unexpected_rows
            or self.current_mismatches
            or self.mid_run_mismatches
            or self.failed_checks
        )

    def table(self) -> str:
        """The figures table (Markdown)."""
        rows: list[tuple[str, Any]] = [
            ("seed", self.seed),
            ("time budget (minutes)", self.minutes),
            ("elapsed (s)", round(self.elapsed_seconds, 1)),
            ("rounds", self.rounds),
            ("operations", sum(self.operations.values())),
        ]
        rows += [(f"  {op}", n) for op, n in sorted(self.operations.items())]
        rows.append(("faults injected", sum(self.faults.values())))
        rows += [(f"  {kind}", self.faults.get(kind, 0)) for kind in FAULTS]
        rows.append(("dagster runs", sum(self.dagster_runs.values())))
        rows += [(f"  {kind}", n) for kind, n in sorted(self.dagster_runs.items())]
        rows.append(("asset events the sensor reported (no run)", sum(self.asset_events.values())))
        rows += [(f"  {kind}", n) for kind, n in sorted(self.asset_events.items())]
        rows.append(("errors answered by the local AWS", sum(self.server_errors.values())))
        rows += [(f"  {code}", n) for code, n in sorted(self.server_errors.items())]
        rows += [
            ("stream records (plain boto3, TRIM_HORIZON)", self.stream_records),
            ("change rows from the stream", self.stream_rows),
            ("change rows from exports", self.export_rows),
            ("rows lost (must be 0)", self.rows_lost),
            ("duplicates (must be 0)", self.duplicates),
            ("rows not in the stream (must be 0)", self.unexpected_rows),
            ("current rows / Scan items", f"{self.current_rows} / {self.scan_items}"),
            ("current != Scan at the end (must be 0)", self.current_mismatches),
            ("current != Scan after concurrent refreshes (must be 0)", self.mid_run_mismatches),
            ("asset check evaluations in the runs", self.check_evaluations),
            ("killed captures' S3 leases aged instead of waiting 15 min", self.leases_aged),
            ("failed asset checks (must be 0)", self.failed_checks),
            ("concurrent refreshes of current that failed", len(self.refresh_failures)),
            ("run requests for an hour not yet a partition (skipped)", self.future_hour_requests),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'figure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
        return "\n".join(lines)

    def problems(self) -> str:
        """What went wrong, with samples, for an assertion message."""
        out = [f"chaos run seed={self.seed} (replay: CHAOS_SEED={self.seed})"]
        if self.rows_lost:
            out.append(f"{self.rows_lost} stream records lost, e.g. {self.lost_sample}")
        if self.duplicates:
            out.append(f"{self.duplicates} duplicate rows, e.g. {self.duplicate_sample}")
        if self.unexpected_rows:
            out.append(f"{self.unexpected_rows} change rows whose event_id is not in the stream")
        if self.current_mismatches or self.mid_run_mismatches:
            out.append(
                f"current differs from a Scan: {self.current_mismatches} keys at the end, "
                f"{self.mid_run_mismatches} after concurrent refreshes, e.g. "
                f"{self.mismatch_sample}"
            )
        if self.failed_checks:
            out.append(f"{self.failed_checks} failed asset checks")
        out.append("faults in order: " + ", ".join(self.fault_log))
        out.append(self.table())
        return "\n".join(out)


def all_stream_event_ids(clients: Any, table: str) -> list[str]:
    """Every record of the table's stream, read with plain boto3 from TRIM_HORIZON of every
    shard (the ground truth; independent of the reader under test)."""
    arn = clients.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shards: list[dict[str, Any]] = []
    start = None
    while True:
        kwargs = {"StreamArn": arn, **({"ExclusiveStartShardId": start} if start else {})}
        desc = clients.streams.describe_stream(**kwargs)["StreamDescription"]
        shards += desc["Shards"]
        start = desc.get("LastEvaluatedShardId")
        if not start:
            break
    ids: list[str] = []
    for shard in shards:
        it = clients.streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            out = clients.streams.get_records(ShardIterator=it, Limit=1000)
            ids += [r["eventID"] for r in out["Records"]]
            if not out["Records"] and "EndingSequenceNumber" not in shard["SequenceNumberRange"]:
                break
            it = out.get("NextShardIterator")
    return ids


def create_table(dynamodb: Any, table: str) -> None:
    """A table keyed on string ``pk`` and ``sk``, with a NEW_AND_OLD_IMAGES stream and PITR."""
    dynamodb.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dynamodb.update_continuous_backups(
        TableName=table,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )


def scan_items(clients: Any, table: str) -> list[dict[str, Any]]:
    """A consistent Scan of the whole table (client format)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = clients.dynamodb.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def compare_current_with_scan(
    lake: Any, table: str, clients: Any, keys: tuple[str, ...]
) -> tuple[int, int, list[str]]:
    """(current rows, scan items, keys that differ) comparing canonical ``_item`` texts."""
    from dynamo_cdc import codec
    from dynamo_cdc.mirror import read_current

    def by_key(items: list[dict[str, Any]]) -> dict[str, str]:
        return {
            codec.item_to_json_text({k: i[k] for k in keys}): codec.item_to_json_text(i)
            for i in items
        }

    live = by_key([codec.normalize_stream_item(i) for i in scan_items(clients, table)])
    texts = read_current(lake, table).column("_item").to_pylist()
    mirror = by_key([codec.item_from_json_text(t) for t in texts])
    differ = sorted(k for k in live.keys() | mirror.keys() if live.get(k) != mirror.get(k))
    described = []
    for k in differ[:5]:
        described.append(f"{k}: scan={live.get(k)} current={mirror.get(k)}")
    return len(texts), len(live), described if differ else []


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from dynamo_cdc import capture
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.config import Settings
    from dynamo_cdc.lake import Lake
    from dynamo_cdc.stream import ReadBudget

    endpoint, root, table, where, n, records = sys.argv[1:7]
    clients = Clients(Settings(endpoint_url=endpoint))
    lake = Lake(root, clients.s3)
    writes = []

    def die(note):
        print(note, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "mid-write":
        write = lake.write_bytes

        def write_bytes(rel, data):
            if "/changes/" in rel and len(writes) >= int(n):
                die(f"killed before write {len(writes) + 1} ({len(writes)} files written)")
            write(rel, data)
            writes.append(rel)

        lake.write_bytes = write_bytes
    capture.capture_once(
        clients, lake, table,
        ReadBudget(max_records=int(records), max_seconds=15),
        after_write=lambda files: die(f"killed after {len(files)} files, before the commit"),
    )
    """
)

_REFRESH_CHILD = textwrap.dedent(
    """
    import sys
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.config import Settings
    from dynamo_cdc.lake import Lake
    from dynamo_cdc.mirror import refresh_current
    endpoint, root, table = sys.argv[1:4]
    r = refresh_current(Lake(root, Clients(Settings(endpoint_url=endpoint)).s3), table)
    print(f"version {r.version}, {r.changes_applied} changes applied", flush=True)
    """
)


class ChaosRun:
    """One chaos run (see the module docstring); :meth:`run` returns the figures."""

    def __init__(
        self,
        seed: int,
        minutes: float,
        workdir: Path,
        echo: Callable[[str], None] = print,
        postgres_env: dict[str, str] | None = None,
        services: bool = False,
    ) -> None:
        if services and not postgres_env:
            raise ValueError("the separate services run on PostgreSQL: give postgres_env")
        self.postgres_env = postgres_env
        self.services: Any = None  # tests.e2e.services.Services once started (services=True)
        self.with_services = services
        self.seed = seed
        self.minutes = minutes
        self.workdir = workdir
        self.echo = echo
        self.rng = random.Random(seed)
        self.figures = ChaosFigures(seed=seed, minutes=minutes)
        self.cursor: str | None = None
        self.clock_jumped = 0.0
        self.throttle_rounds = 0
        self.jump_in_next_tick = False
        self.round = 0

    # -- set-up --------------------------------------------------------------------------

    def _setup(self, endpoint: str, control_token: str) -> None:
        import dagster as dg

        from dynamo_cdc.aws import Clients
        from dynamo_cdc.config import Settings, TableSpec
        from dynamo_cdc.dagster.assets import asset_key
        from dynamo_cdc.dagster.definitions import PipelineOptions, build_table_defs
        from dynamo_cdc.dagster.resources import build_resources
        from dynamo_cdc.lake import Lake
        from dynamo_cdc.local import LocalAwsControl
        from dynamo_cdc.local.workload import Workload

        # the production profile's lake is on S3 (the local AWS), the other a local folder
        self.root = f"s3://{LAKE_BUCKET}/lake" if self.with_services else str(self.workdir / "lake")
        home = self.workdir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        # SQLite (the project's settings), or PostgreSQL with the production deploy/dagster.yaml
        config = "deploy" if self.postgres_env else "dagster_project"
        shutil.copy(REPO / config / "dagster.yaml", home / "dagster.yaml")
        tables_csv = self.workdir / "tables.csv"
        tables_csv.write_text(f"{TABLE}\n")
        self.env_overrides = {
            "DAGSTER_HOME": str(home),
            "DYNAMO_CDC_ENDPOINT_URL": endpoint,
            "DYNAMO_CDC_LAKE_ROOT": self.root,
            "DYNAMO_CDC_TABLES": str(tables_csv),
            "DYNAMO_CDC_EXPORT_BUCKET": "chaos-exports",
            "DYNAMO_CDC_SENSOR_STATUS": "stopped",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            **(self.postgres_env or {}),
        }
        os.environ.update(self.env_overrides)
        self.control = LocalAwsControl(endpoint, control_token)
        self.endpoint = endpoint
        self.clients = Clients(Settings(endpoint_url=endpoint))
        self.lake = Lake(self.root, self.clients.s3)
        db = self.clients.dynamodb
        create_table(db, TABLE)
        db.update_time_to_live(
            TableName=TABLE,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
        self.clients.s3.create_bucket(Bucket="chaos-exports")
        if self.with_services:
            self.clients.s3.create_bucket(Bucket=LAKE_BUCKET)
        # production's shapes: items of 2-4 KB (a 1 MB GetRecords page holds a few hundred),
        # one in 200 near DynamoDB's 400 KB limit (a page holds two)
        self.workload = Workload(
            db,
            TABLE,
            "pk",
            "sk",
            seed=self.seed,
            keys=600,
            ttl_attribute=TTL_ATTRIBUTE,
            body_bytes=(2_000, 4_000),
            large_share=0.005,
        )
        self.spec = TableSpec(name=TABLE)
        defs = build_table_defs(self.spec, PipelineOptions(sensors_running=False))
        by_key = {k: a for a in defs.assets or [] if hasattr(a, "keys") for k in a.keys}
        self.changes_asset = by_key[asset_key(self.spec, "changes")]
        self.snapshot_asset = by_key[asset_key(self.spec, "snapshot")]
        self.current_asset = by_key[asset_key(self.spec, "current")]
        # each asset's checks run with it, as the UI's Materialize (and a launched run) does
        self.checks: dict[Any, list[Any]] = {}
        for check in defs.asset_checks or []:
            for check_key in check.check_keys:
                self.checks.setdefault(check_key.asset_key, []).append(check)
        self.resources = build_resources()
        self.instance = dg.DagsterInstance.get()

    # -- Dagster runs --------------------------------------------------------------------

    def _execute(
        self,
        asset: Any,
        partition: str | None,
        config: dict[str, Any] | None,
        tags: dict[str, str],
    ) -> tuple[bool, list[str], list[bool]]:
        """One run of ``asset``: (succeeded, step errors, each asset check's passed).

        In this process (``dg.materialize`` on the instance), or, with the separate services,
        launched over the webserver's GraphQL: queued, dequeued by the daemon, started by the
        code server as a run process, as in production."""
        import dagster as dg

        run_config = {"ops": {asset.node_def.name: {"config": config}}} if config else {}
        if self.services is None:
            result = dg.materialize(
                [asset, *self.checks.get(asset.key, [])],
                partition_key=partition,
                resources=self.resources,
                instance=self.instance,
                run_config=run_config,
                raise_on_error=False,
                tags=tags,
            )
            errors = [
                e.event_specific_data.error.to_string()
                for e in result.all_events
                if e.is_step_failure and e.event_specific_data and e.event_specific_data.error
            ]
            checks = [e.passed for e in result.get_asset_check_evaluations()]
            return result.success, errors, checks
        (run_id,) = self._launch([(asset, partition, run_config, tags)])
        return self._outcome(run_id)

    def _launch(self, runs: list[tuple[Any, str | None, dict[str, Any], dict[str, str]]]) -> list:
        """Launch runs over GraphQL at once, each (asset, partition, run config, tags); wait
        until every one ended; return their run ids."""
        from tests.e2e.services import LOCATION_NAME

        run_ids = []
        for asset, partition, run_config, tags in runs:
            tags = {**tags, **({"dagster/partition": partition} if partition else {})}
            params = {
                "selector": {
                    "repositoryLocationName": LOCATION_NAME,
                    "repositoryName": "__repository__",
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [{"path": list(asset.key.path)}],
                },
                "runConfigData": run_config,
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
            launched = self.services.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
            if launched["__typename"] != "LaunchRunSuccess":
                raise ChaosFailure(f"seed {self.seed}, round {self.round}: launch: {launched}")
            run_ids.append(launched["run"]["runId"])
        deadline = time.monotonic() + 600
        while True:
            runs = [self.instance.get_run_by_id(r) for r in run_ids]
            if all(run.is_finished for run in runs):
                return run_ids
            statuses = [run.status.value for run in runs]
            if time.monotonic() > deadline:
                raise ChaosFailure(
                    f"seed {self.seed}, round {self.round}: runs {run_ids} still {statuses} "
                    f"after 600 s:\n{self.services.logs()}"
                )
            time.sleep(0.5)

    def _outcome(self, run_id: str) -> tuple[bool, list[str], list[bool]]:
        """(succeeded, step and run failures, each asset check's passed) of a launched run,
        from the instance's event log."""
        import dagster as dg

        run = self.instance.get_run_by_id(run_id)
        errors: list[str] = []
        checks: list[bool] = []
        for record in self.instance.all_logs(run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                checks.append(event.event_specific_data.passed)
            elif event.event_type in (
                dg.DagsterEventType.STEP_FAILURE,
                dg.DagsterEventType.RUN_FAILURE,
            ):
                data = event.event_specific_data
                error = getattr(data, "error", None)
                errors.append(error.to_string() if error else str(record.message))
        return run.status == dg.DagsterRunStatus.SUCCESS, errors, checks

    def _materialize(
        self, kind: str, asset: Any, partition: str | None, config: dict[str, Any] | None
    ) -> None:
        success, errors, checks = self._execute(
            asset, partition, config, {"dynamo_cdc/chaos": kind}
        )
        self.figures.dagster_runs[kind] += 1
        self._check_run(f"the {kind} run of {partition}", success, errors, checks)

    def _check_run(self, what: str, success: bool, errors: list[str], checks: list[bool]) -> None:
        if not success:
            raise ChaosFailure(
                f"seed {self.seed}, round {self.round}: {what} failed:\n"
                + ("\n".join(errors) or "no step failure recorded")[-4000:]
            )
        self.figures.check_evaluations += len(checks)
        for passed in checks:
            if not passed:
                self.figures.failed_checks += 1
                self.echo(f"  a check of {what} FAILED")

    def _run_requests(self, result: Any) -> None:
        """Record the asset events of a sensor result and run each of its requests once (a run
        key the instance knows is skipped), as the sensor daemon does."""
        import dagster as dg

        from dynamo_cdc.dagster.assets import hour_of_partition_key

        for event in result.asset_events or []:
            self.instance.report_runless_asset_event(event)
            self.figures.asset_events[type(event).__name__] += 1
        newest_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        for request in result.run_requests or []:
            if request.tags.get("dynamo_cdc/kind") == "first_snapshot":
                pass
            elif hour_of_partition_key(request.partition_key) > newest_hour:
                # The server's clock jumped ahead (expired_iterators), so records fall into an
                # hour that Dagster's partitions do not hold yet. The files are in the lake all
                # the same (the run only records them); count it instead of failing.
                self.figures.future_hour_requests += 1
                continue
            tag = {"dynamo_cdc/run_key": request.run_key}
            if self.instance.get_runs(filters=dg.RunsFilter(tags=tag), limit=1):
                continue
            kind = request.tags.get("dynamo_cdc/kind", "batch")
            if kind == "first_snapshot":  # the sensor asks for the table's first snapshot
                config = {"workers": 1, "poll_seconds": 0.2}
                self._materialize(
                    "snapshot (first, sensor)", self.snapshot_asset, request.partition_key, config
                )
                continue
            config = request.run_config["ops"][self.changes_asset.op.name]["config"]
            outcome = self._execute(
                self.changes_asset,
                request.partition_key,
                config,
                {**tag, "dynamo_cdc/kind": kind},
            )
            self.figures.dagster_runs[f"changes ({kind})"] += 1
            self._check_run(f"the {kind} run of {request.partition_key}", *outcome)

    # -- ticks ---------------------------------------------------------------------------

    def _tick(self, max_records: int) -> bool:
        """One stream sensor tick and its runs; True when the poll caught up and read nothing."""
        from dynamo_cdc.dagster.sensors import StreamSensorCursor, stream_tick
        from dynamo_cdc.stream import ReadBudget

        clients = self.clients
        budget = ReadBudget(max_records=max_records, max_seconds=15)
        if self.jump_in_next_tick:
            # A poll reads a shard once when one call holds its backlog, and each tick makes a
            # new reader (iterators never outlive a poll): small calls make the reader go on
            # with a NextShardIterator, which the clock jump expires.
            clients = self._jumping_clients()
            budget = ReadBudget(max_records=max_records, max_seconds=15, records_per_call=25)
            self.jump_in_next_tick = False
        result = stream_tick(
            self.spec,
            self.cursor,
            clients,
            self.lake,
            op_name=self.changes_asset.op.name,
            budget=budget,
        )
        self.cursor = result.cursor
        self._run_requests(result)
        cursor = StreamSensorCursor.from_json(self.cursor)
        caught_up = cursor.caught_up_at is not None and cursor.caught_up_at == cursor.last_poll_at
        return caught_up and not result.run_requests and not result.asset_events

    def _jumping_clients(self) -> Any:
        """Clients whose first GetRecords that continues with a NextShardIterator comes 16
        minutes (by the server's clock) after the call that returned it: that iterator has
        expired (they live 15 minutes), and the reader must get a fresh one."""
        from dynamo_cdc.aws import Clients
        from dynamo_cdc.config import Settings

        clients = Clients(Settings(endpoint_url=self.endpoint))
        returned: set[str] = set()
        jumped = [False]

        def after_get_records(parsed: dict[str, Any], **_: Any) -> None:
            if parsed.get("NextShardIterator"):
                returned.add(parsed["NextShardIterator"])

        def before_get_records(params: dict[str, Any], **_: Any) -> None:
            if not jumped[0] and params.get("ShardIterator") in returned:
                jumped[0] = True
                self.control.advance_clock(16 * 60)
                self.clock_jumped += 16 * 60

        events = clients.streams.meta.events
        events.register("after-call.*.GetRecords", after_get_records)
        events.register("before-parameter-build.*.GetRecords", before_get_records)
        return clients

    def _catch_up(self) -> None:
        for _ in range(200):
            if self._tick(5000):
                return
        raise ChaosFailure(f"seed {self.seed}: the capture never caught up")

    # -- faults --------------------------------------------------------------------------

    def _child(self, where: str, n: int) -> None:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                self.endpoint,
                self.root,
                TABLE,
                where,
                str(n),
                str(self.rng.choice([200, 600, 3000])),
            ],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != -signal.SIGKILL:
            raise ChaosFailure(
                f"seed {self.seed}, round {self.round}: the {where} child exited "
                f"{proc.returncode}, not by SIGKILL:\n{proc.stderr[-3000:]}"
            )
        self.figures.fault_log[-1] += f" ({proc.stdout.strip()})"
        if self.lake.is_s3:
            self._age_abandoned_lease()

    def _age_abandoned_lease(self) -> None:
        """On S3 the killed capture's lock is a lease object that another capture takes over
        once stale: 15 minutes after its last renewal (a flock dies with its process). Rather
        than wait, the lease's expiry is moved to the past (written with ``If-Match`` its
        ETag), as if those minutes had passed; the next capture takes it over."""
        from dynamo_cdc.layout import capture_lock

        key = self.lake.key(capture_lock(self.lake, TABLE))
        s3 = self.clients.s3
        try:
            lease = s3.get_object(Bucket=self.lake.bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            return  # killed before taking the lock
        body = json.loads(lease["Body"].read())
        body["expires"] = time.time() - 1
        s3.put_object(
            Bucket=self.lake.bucket, Key=key, Body=json.dumps(body), IfMatch=lease["ETag"]
        )
        self.figures.leases_aged += 1

    def _fault(self, kind: str) -> None:
        self.figures.faults[kind] += 1
        self.figures.fault_log.append(f"r{self.round}:{kind}")
        if kind == "sigkill_mid_write":
            self.workload.run(60)
            self._child("mid-write", self.rng.randrange(0, 3))
        elif kind == "sigkill_before_commit":
            self.workload.run(60)
            self._child("after-write", 0)
        elif kind == "throttle_30pct":
            self.control.configure_streams(throttle_rate=0.3)
            self.throttle_rounds = self.rng.randint(2, 4)
        elif kind == "expired_iterators":
            self.workload.run(100)
            if self.clock_jumped + 16 * 60 <= MAX_CLOCK_JUMP_SECONDS:
                self.jump_in_next_tick = True
        elif kind == "shard_rotation":
            new = self.control.rotate_shards(TABLE, split=self.rng.random() < 0.6)
            self.figures.fault_log[-1] += f" ({len(new)} new shards)"
        elif kind == "sensor_restart":
            from dynamo_cdc.aws import Clients
            from dynamo_cdc.config import Settings
            from dynamo_cdc.lake import Lake

            self.cursor = None
            self.clients = Clients(Settings(endpoint_url=self.endpoint))
            self.lake = Lake(self.root, self.clients.s3)
        elif kind == "duplicate_backfill":
            self._duplicate_backfill()
        elif kind == "concurrent_refresh":
            self._concurrent_refresh()
        elif kind == "ttl_sweep":
            deleted = self.control.ttl_sweep()
            self.figures.fault_log[-1] += f" ({deleted} deleted)"
        elif kind == "checkpoint_reset":
            from dynamo_cdc.heal import reset_checkpoint

            # as after a heal, some hours were compacted before the re-read reaches them
            self._compaction()
            reset_checkpoint(self.lake, TABLE)
        elif kind == "compaction":
            self._compaction()
        else:  # pragma: no cover
            raise ValueError(kind)

    def _duplicate_backfill(self) -> None:
        from dynamo_cdc.dagster.assets import hour_partition_key

        self.workload.run(100)
        hour = hour_partition_key(datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
        op = self.changes_asset.op.name
        config = {"ops": {op: {"config": {"capture": {"seconds": 10.0}}}}}
        if self.services is not None:
            # two runs launched together over GraphQL (the UI's "Materialize" twice)
            tags = {"dynamo_cdc/chaos": "duplicate backfill"}
            run_ids = self._launch([(self.changes_asset, hour, config, tags)] * 2)
            self.figures.dagster_runs["changes (duplicate backfill, GraphQL)"] += 2
            for run_id in run_ids:
                self._check_run(f"the duplicate backfill {run_id}", *self._outcome(run_id))
            return
        cmd = [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "dynamo_cdc.dagster.definitions",
            "--select",
            "/".join(self.changes_asset.key.path),
            "--partition",
            hour,
            "--config-json",
            json.dumps(config),
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        procs = [
            subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for _ in range(2)
        ]
        try:
            outputs = [p.communicate(timeout=240)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.figures.dagster_runs["changes (duplicate backfill, CLI)"] += 2
        codes = [p.returncode for p in procs]
        if codes != [0, 0]:
            raise ChaosFailure(
                f"seed {self.seed}, round {self.round}: concurrent backfills exited {codes}:\n"
                + "\n---\n".join(o[-3000:] for o in outputs)
            )

    def _concurrent_refresh(self) -> None:
        self._catch_up()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _REFRESH_CHILD, self.endpoint, self.root, TABLE],
                cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=240) for p in procs]
        codes = [p.returncode for p in procs]
        notes = [(o[0].strip() or o[1].strip()).splitlines()[-1:] for o in outs]
        self.figures.fault_log[-1] += f" (exit {codes}: {notes})"
        self.figures.dagster_runs["refresh_current (concurrent, plain processes)"] += 2
        for code, (_, err) in zip(codes, outs, strict=True):
            if code:
                # Recorded, not fatal: what matters is that the mirror is right afterwards.
                self.figures.refresh_failures.append(err.strip().splitlines()[-1])
                self.echo(f"  a concurrent refresh failed:\n{err[-1500:]}")
        _, _, differ = compare_current_with_scan(self.lake, TABLE, self.clients, ("pk", "sk"))
        if differ:
            self.figures.mid_run_mismatches += len(differ)
            self.figures.mismatch_sample += differ[:3]

    def _compaction(self) -> None:
        from dynamo_cdc.checkpoint import CheckpointStore
        from dynamo_cdc.compaction import compact_hour
        from dynamo_cdc.layout import hour_of_path

        files = Counter(
            h for p in self.lake.list(f"{TABLE}/changes") if (h := hour_of_path(p)) is not None
        )
        if not files:
            return
        # an hour with several files (else there is nothing to compact)
        hours = sorted(h for h, n in files.items() if n > 1) or sorted(files)
        hour = self.rng.choice(hours)
        checkpoint = CheckpointStore(self.lake, TABLE).load()
        result = compact_hour(self.lake, TABLE, hour, checkpoint, force=True, target_rows=2000)
        self.figures.fault_log[-1] += (
            f" ({len(result.files_before)} -> {len(result.files_after)} files)"
            if result.compacted
            else f" (refused: {result.reason[:60]})"
        )

    # -- the run -------------------------------------------------------------------------

    def run(self) -> ChaosFigures:
        from dynamo_cdc.local import launch_local_aws

        started = time.monotonic()
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        env.pop("MOTO_ACCOUNT_ID", None)
        server = launch_local_aws(
            0,
            export_delay_seconds=0.2,
            env=env,
            stderr_path=str(self.workdir / "local-aws.log"),
        )
        saved_env = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "AWS_ACCESS_KEY_ID")}
        try:
            self._setup(server.endpoint_url, server.control.token)
            with contextlib.ExitStack() as stack:
                stack.callback(self.instance.dispose)
                if self.with_services:
                    self.services = stack.enter_context(self._production_services())
                self._rounds(started)
                self._verify()
        finally:
            self.services = None
            server.stop()
            for k in self.env_overrides if hasattr(self, "env_overrides") else ():
                if k not in saved_env:
                    os.environ.pop(k, None)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self.figures.elapsed_seconds = time.monotonic() - started
            self.figures.operations.update(
                self.workload.counts if hasattr(self, "workload") else {}
            )
        return self.figures

    def _production_services(self) -> contextlib.AbstractContextManager[Any]:
        """The code server, webserver and daemon on this run's instance, lake and table (their
        sensors stopped: this run ticks the stream sensor itself, faults between ticks)."""
        from tests.e2e.helpers import dagster_process_env
        from tests.e2e.services import production_services

        folder = self.workdir / "services"
        folder.mkdir(exist_ok=True)
        env = dagster_process_env(
            self.endpoint, self.root, Path(self.env_overrides["DAGSTER_HOME"]), **self.env_overrides
        )
        return production_services(env, folder)

    def _rounds(self, started: float) -> None:
        deadline = started + self.minutes * 60
        self.workload.run(150)
        # The table has no snapshot: the tick captures, then requests today's snapshot, which
        # runs after (capture starts before the snapshot's ExportTime: stitching).
        self._tick(1000)
        if not self.figures.dagster_runs["snapshot (first, sensor)"]:
            raise ChaosFailure(f"seed {self.seed}: the sensor did not request a first snapshot")
        schedule = list(FAULTS)
        self.rng.shuffle(schedule)
        while schedule or time.monotonic() < deadline:
            self.round += 1
            self.workload.run(self.rng.randint(20, 120))
            if self.throttle_rounds:
                self.throttle_rounds -= 1
                if not self.throttle_rounds:
                    self.control.configure_streams(throttle_rate=0.0)
            if schedule and self.rng.random() < 0.7:
                self._fault(schedule.pop())
            elif not schedule and self.rng.random() < 0.5:
                kinds = list(FAULTS)
                self._fault(self.rng.choices(kinds, [_WEIGHTS.get(k, 1.0) for k in kinds])[0])
            self._tick(self.rng.choice([150, 400, 1500, 5000]))
            if self.round % 6 == 0:
                self._materialize("current", self.current_asset, None, None)
            self.echo(
                f"round {self.round}: {sum(self.workload.counts.values())} ops, "
                f"faults {dict(self.figures.faults)}"
            )
        self.figures.rounds = self.round

    def _verify(self) -> None:
        from tests.e2e.helpers import lake_dataset

        self.control.configure_streams(throttle_rate=0.0)
        self._catch_up()
        self._materialize("current", self.current_asset, None, None)
        f = self.figures
        truth = Counter(all_stream_event_ids(self.clients, TABLE))
        f.stream_records = sum(truth.values())
        rows = lake_dataset(self.lake, f"{TABLE}/changes").to_table(columns=["event_id", "source"])
        stream_mask = pc.equal(rows.column("source"), "stream")
        landed = Counter(rows.filter(stream_mask).column("event_id").to_pylist())
        f.stream_rows = sum(landed.values())
        f.export_rows = rows.num_rows - f.stream_rows
        lost = truth - landed
        f.rows_lost = sum(lost.values())
        f.lost_sample = sorted(lost)[:5]
        dups = {k: n - 1 for k, n in landed.items() if n > 1}
        f.duplicates = sum(dups.values())
        f.duplicate_sample = sorted(dups)[:5]
        f.unexpected_rows = sum((landed - truth).values()) - f.duplicates
        f.current_rows, f.scan_items, differ = compare_current_with_scan(
            self.lake, TABLE, self.clients, ("pk", "sk")
        )
        f.current_mismatches = len(differ)
        f.mismatch_sample += differ[:5]
        state = self.control.streams()
        f.server_errors = dict(state.get("errors", {}))


def run_chaos(
    seed: int,
    minutes: float,
    workdir: Path | None = None,
    echo: Callable[[str], None] = print,
    postgres_env: dict[str, str] | None = None,
    services: bool = False,
) -> ChaosFigures:
    """Run the chaos run (see the module docstring) and return its figures.

    Args:
        seed: seeds the workload and every random choice (printed, to replay a run).
        minutes: rounds go on until every fault kind ran once and this much time passed.
        workdir: where the lake, DAGSTER_HOME and the server's log go (default: a temp folder,
            removed afterwards).
        echo: progress lines.
        postgres_env: the ``DAGSTER_PG_*`` variables of a database: the Dagster instance is
            then deploy/dagster.yaml on PostgreSQL (default: SQLite).
        services: the production profile (needs ``postgres_env``): the lake on S3 of the local
            AWS, and every run launched over the webserver's GraphQL, dequeued by
            ``dagster-daemon`` and started by ``dagster code-server`` (tests/e2e/services.py);
            otherwise runs execute in this process and the lake is a folder.
    """
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return ChaosRun(seed, minutes, workdir, echo, postgres_env, services).run()
    with tempfile.TemporaryDirectory(prefix="dynamo-cdc-chaos-") as tmp:
        return ChaosRun(seed, minutes, Path(tmp), echo, postgres_env, services).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the lake here")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the Dagster instance on a PostgreSQL server started here (deploy/dagster.yaml)",
    )
    parser.add_argument(
        "--services",
        action="store_true",
        help="the production profile: PostgreSQL, the code server, webserver and daemon as "
        "processes, the lake on S3 (implies --postgres)",
    )
    args = parser.parse_args(argv)
    args.postgres = args.postgres or args.services
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    instance = "PostgreSQL" if args.postgres else "SQLite"
    if args.services:
        instance += ", separate services, S3 lake"
    print(f"chaos run: seed {seed}, {args.minutes} minutes, {instance}", flush=True)
    with contextlib.ExitStack() as stack:
        postgres_env = None
        if args.postgres:
            from tests.postgres import postgres_server

            postgres_env = stack.enter_context(postgres_server()).new_instance_env()
        figures = run_chaos(
            seed,
            args.minutes,
            args.workdir,
            echo=lambda s: print(s, flush=True),
            postgres_env=postgres_env,
            services=args.services,
        )
    print("faults in order: " + ", ".join(figures.fault_log))
    if figures.refresh_failures:
        print("concurrent refresh failures: " + "; ".join(figures.refresh_failures))
    print(figures.table())
    if not figures.ok:
        print(figures.problems())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
