"""Two worker processes capture one table in two shard groups at once, under faults: throttled
GetRecords, shard splits, workers SIGKILLed mid-capture (their leases taken over: at once for a
local lake's lock, after they expire for an S3 lake's lease), and a worker stopped past its
lease's expiry that wakes up after another took its group over. Every stream record lands once
and ``current`` equals a Scan.

All on a local AWS of its own (a child process on 127.0.0.1), as the chaos run; the workers are
plain processes running :func:`dynamo_cdc.capture.capture_once` with ``groups=2``, as Dagster's
executor runs them in a capture job (see docs/scaling.md).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from tests.e2e.chaos import all_stream_event_ids, compare_current_with_scan, create_table

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TABLE = "grouped-orders.v1"
LEASE_SECONDS = 3.0

WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from dynamo_cdc import capture
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.config import Settings
    from dynamo_cdc.errors import LakeBusyError
    from dynamo_cdc.lake import Lake
    from dynamo_cdc.stream import ReadBudget

    endpoint, root, table, first, seconds, lease, mode = sys.argv[1:8]
    clients = Clients(Settings(endpoint_url=endpoint))
    lake = Lake(root, s3_client=clients.s3) if root.startswith("s3://") else Lake(root)

    def stop_after_write(files):
        print(f"stopping after {len(files)} files", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

    if mode == "stop-after-write":  # one capture of group `first`, stopped before its commit
        try:
            capture.capture_once(clients, lake, table, ReadBudget(max_records=500), groups=2,
                                 group=int(first), lease_seconds=float(lease),
                                 after_write=stop_after_write)
        except LakeBusyError as exc:
            print(f"refused: {exc}", flush=True)
            sys.exit(3)
        sys.exit(0)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        for group in (int(first), 1 - int(first)):
            try:
                r = capture.capture_once(
                    clients, lake, table, ReadBudget(max_records=400, max_seconds=5),
                    groups=2, group=group, lock_wait_seconds=0, lease_seconds=float(lease))
            except LakeBusyError:
                continue  # another worker holds the group's lease
            print(f"pid {os.getpid()} group {group}: {r.records} records", flush=True)
        time.sleep(0.05)
    """
)


class Run:
    """The local AWS, the table, the lake and the workers of one test."""

    def __init__(self, workdir: Path, lake_kind: str, seed: int) -> None:
        from dynamo_cdc.aws import Clients
        from dynamo_cdc.config import Settings
        from dynamo_cdc.lake import Lake
        from dynamo_cdc.local import launch_local_aws
        from dynamo_cdc.local.workload import Workload

        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        env.pop("MOTO_ACCOUNT_ID", None)
        self.server = launch_local_aws(
            0, export_delay_seconds=0.2, env=env, stderr_path=str(workdir / "local-aws.log")
        )
        self.rng = random.Random(seed)
        self.clients = Clients(Settings(endpoint_url=self.server.endpoint_url))
        self.clients.s3.create_bucket(Bucket="exports")
        if lake_kind == "s3":
            self.clients.s3.create_bucket(Bucket="lake")
            self.root = "s3://lake/root"
            self.lake = Lake(self.root, s3_client=self.clients.s3)
        else:
            self.root = str(workdir / "lake")
            self.lake = Lake(self.root)
        db = self.clients.dynamodb
        create_table(db, TABLE)
        self.workload = Workload(db, TABLE, "pk", "sk", seed=seed, keys=400, body_bytes=(500, 1500))
        self.workers: list[subprocess.Popen[str]] = []

    def worker(self, first: int, seconds: float, mode: str = "loop") -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                self.server.endpoint_url,
                self.root,
                TABLE,
                str(first),
                str(seconds),
                str(LEASE_SECONDS),
                mode,
            ],
            cwd=REPO,
            env=dict(
                os.environ,
                PYTHONPATH=str(REPO),
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.workers.append(proc)
        return proc

    def capture(self, group: int | None = None) -> Any:
        from dynamo_cdc.capture import capture_once
        from dynamo_cdc.stream import ReadBudget

        kwargs: dict[str, Any] = {} if group is None else {"groups": 2, "group": group}
        return capture_once(
            self.clients,
            self.lake,
            TABLE,
            ReadBudget(max_records=2000),
            lease_seconds=LEASE_SECONDS,
            **kwargs,
        )

    def catch_up(self, group: int | None = None) -> None:
        for _ in range(200):
            result = self.capture(group)
            if result.stopped_by == "caught_up" and result.records == 0:
                return
        raise AssertionError(f"group {group} never caught up")

    def outgrow_one_process(self) -> None:
        """A table captured by one process, its stream grown from one shard to four by two
        splits; a snapshot (for ``current``); then the capture moves to two groups."""
        from dynamo_cdc.capture import regroup
        from dynamo_cdc.export import ExportRequest
        from dynamo_cdc.snapshot import take_snapshot

        for _ in range(2):
            self.workload.run(200)
            self.server.control.rotate_shards(TABLE, split=True)
        self.workload.run(200)
        self.catch_up()
        take_snapshot(
            self.clients,
            self.lake,
            ExportRequest(table=TABLE, bucket="exports"),
            workers=1,
            poll_seconds=0.05,
        )
        parts = regroup(self.lake, TABLE, 2)
        assert all(part.shards for part in parts), "both groups must have shards to read"

    def verify(self) -> tuple[int, int]:
        """Every stream record landed once, ``current`` equals a Scan; returns (stream records,
        current rows)."""
        from dynamo_cdc.mirror import refresh_current

        self.server.control.configure_streams(throttle_rate=0.0)
        for group in (0, 1):
            self.catch_up(group)
        from dynamo_cdc.checkpoint import CheckpointStore
        from dynamo_cdc.stream import discover, list_shards

        # every open shard is read by exactly one group
        held = [set(CheckpointStore(self.lake, TABLE, g).load().shards) for g in (0, 1)]
        arn = discover(self.clients, TABLE).stream_arn
        open_shards = {s.shard_id for s in list_shards(self.clients.streams, arn) if not s.closed}
        assert not held[0] & held[1], held
        assert open_shards <= held[0] | held[1], (open_shards, held)
        truth = Counter(all_stream_event_ids(self.clients, TABLE))
        fs, base = self.lake.arrow_filesystem()
        rows = ds.dataset(
            f"{base}/{TABLE}/changes", format="parquet", partitioning="hive", filesystem=fs
        ).to_table(columns=["event_id", "source"])
        stream = rows.filter(pc.equal(rows.column("source"), "stream"))
        landed = Counter(stream.column("event_id").to_pylist())
        lost = truth - landed
        duplicated = {k: n for k, n in landed.items() if n > 1}
        assert sum(truth.values()) > 1000
        assert not lost, f"{sum(lost.values())} records lost, e.g. {sorted(lost)[:5]}"
        assert not duplicated, f"{len(duplicated)} duplicated, e.g. {sorted(duplicated)[:5]}"
        assert landed == truth
        refresh_current(self.lake, TABLE)
        current_rows, scan_items, differ = compare_current_with_scan(
            self.lake, TABLE, self.clients, ("pk", "sk")
        )
        assert not differ and current_rows == scan_items > 0, differ
        return sum(truth.values()), current_rows

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.server.stop()


@pytest.mark.parametrize("lake_kind", ["local", "s3"])
def test_two_workers_capturing_one_table_in_two_groups_under_faults_land_each_record_once(
    tmp_path: Path, lake_kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or 20)
    run = Run(tmp_path, lake_kind, seed)
    try:
        run.outgrow_one_process()
        seconds = 40.0
        started = time.monotonic()
        workers = {0: run.worker(0, seconds), 1: run.worker(1, seconds)}
        faults: Counter[str] = Counter()
        kinds = ["throttle_30pct", "split", "sigkill_worker", "sigkill_worker"]
        run.rng.shuffle(kinds)
        while time.monotonic() - started < seconds - 8:
            run.workload.run(run.rng.randint(40, 120))
            kind = kinds.pop() if kinds else run.rng.choice(["none", "split", "sigkill_worker"])
            faults[kind] += 1
            if kind == "throttle_30pct":
                run.server.control.configure_streams(throttle_rate=0.3)
            elif kind == "split":
                run.server.control.rotate_shards(TABLE, split=run.rng.random() < 0.5)
            elif kind == "sigkill_worker":
                which = run.rng.choice([0, 1])
                time.sleep(run.rng.uniform(0.0, 1.5))  # somewhere in a capture, maybe mid-write
                workers[which].send_signal(signal.SIGKILL)
                workers[which].wait()
                left = seconds - (time.monotonic() - started)
                workers[which] = run.worker(which, max(left, 1.0))
            time.sleep(run.rng.uniform(0.2, 1.0))
        captured_by: dict[str, set[str]] = {}
        captures: Counter[str] = Counter()
        for proc in run.workers:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
            for line in out.splitlines():
                pid, group = line.split(":")[0].split(" group ")
                captured_by.setdefault(group, set()).add(pid)
                captures[group] += 1
        # each group was captured by several workers: its lease changed hands
        assert all(len(pids) >= 2 for pids in captured_by.values()), captured_by
        assert faults["sigkill_worker"] >= 2 and faults["split"] >= 1
        throttled = run.server.control.streams()["errors"].get("LimitExceededException", 0)
        assert throttled > 0
        records, current_rows = run.verify()
        with capsys.disabled():
            print(
                f"\n2 workers, {lake_kind} lake, seed {seed}: {records} stream records landed "
                f"once, current = Scan ({current_rows} rows); faults {dict(faults)}; "
                f"{len(run.workers)} worker processes; captures per group {dict(captures)} by "
                f"{ {g: len(p) for g, p in captured_by.items()} } processes; {throttled} "
                "GetRecords throttled"
            )
    finally:
        run.stop()


def test_a_worker_stopped_past_its_lease_is_taken_over_and_its_late_commit_refused(
    tmp_path: Path,
) -> None:
    """S3 lake: a worker writes its group's files, then stops (SIGSTOP: no more renewals)
    before its commit. Its lease expires; another capture takes the group over and commits.
    When the stopped worker wakes up, its commit is refused (the group's checkpoint is no longer
    the one it loaded), and nothing is lost or duplicated."""
    run = Run(tmp_path, "s3", seed=5)
    try:
        run.outgrow_one_process()
        run.workload.run(300)
        zombie = run.worker(0, 0, mode="stop-after-write")
        assert zombie.stdout is not None
        line = zombie.stdout.readline()
        assert line.startswith("stopping after"), line + zombie.stderr.read()
        waited = time.monotonic()
        taken = run.capture(group=0)  # waits for the lease to expire, then takes it over
        assert time.monotonic() - waited >= LEASE_SECONDS * 0.5
        assert taken.records > 0
        zombie.send_signal(signal.SIGCONT)
        out, err = zombie.communicate(timeout=60)
        assert zombie.returncode == 3, err[-3000:]
        assert "was taken over" in out
        run.verify()
    finally:
        run.stop()


def test_the_capture_groups_job_runs_one_step_per_group_in_processes_of_their_own(
    clients, dagster_env, lake, local_aws, tmp_path
) -> None:
    """``dagster job execute`` of ``orders_capture_groups`` with 2 groups on the example
    project (the multiprocess executor): the plan splits the table's checkpoint, each group's
    capture step runs in a process of its own, every stream record lands once, and a stream
    sensor tick afterwards skips the grouped table instead of failing."""
    import json
    import re

    from dynamo_cdc.checkpoint import CheckpointStore
    from tests.e2e.helpers import run_dagster

    for i in range(300):
        clients.dynamodb.put_item(
            TableName="orders",
            Item={"customer_id": {"S": f"c-{i % 7}"}, "order_id": {"S": f"grouped-{i}"}},
        )
    local_aws.control.rotate_shards("orders", split=True)
    for i in range(300):
        clients.dynamodb.put_item(
            TableName="orders",
            Item={"customer_id": {"S": f"c-{i % 7}"}, "order_id": {"S": f"split-{i}"}},
        )
    config = {
        "ops": {
            "orders__capture_plan": {"config": {"groups": 2}},
            "orders__capture_group": {"config": {"seconds": 60.0}},
        }
    }
    config_file = tmp_path / "capture_groups.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    out = run_dagster(
        [
            "job",
            "execute",
            "-m",
            "dagster_project.location",
            "-j",
            "orders_capture_groups",
            "-c",
            str(config_file),
        ],
        dagster_env,
        timeout=600,
    )
    starts = dict(
        (step, pid)
        for pid, step in re.findall(r" - (\d+) - (\S+) - STEP_START - ", out)
        if "capture_group" in step
    )
    assert set(starts) == {
        "orders__capture_group[group_0]",
        "orders__capture_group[group_1]",
    }, out[-3000:]
    assert len(set(starts.values())) == 2, "each group's step runs in a process of its own"
    merged = CheckpointStore(lake, "orders")
    assert merged.load().shards and merged.groups == 2
    truth = Counter(all_stream_event_ids(clients, "orders"))
    fs, base = lake.arrow_filesystem()
    rows = ds.dataset(
        f"{base}/orders/changes", format="parquet", partitioning="hive", filesystem=fs
    ).to_table(columns=["event_id"])
    assert Counter(rows.column("event_id").to_pylist()) == truth

    from dynamo_cdc.config import TableSpec
    from dynamo_cdc.dagster.sensors import stream_tick
    from dynamo_cdc.stream import ReadBudget

    tick = stream_tick(
        TableSpec(name="orders"), None, clients, lake, op_name="-", budget=ReadBudget()
    )
    assert tick.skip_reason is not None
    assert "captured in 2 shard groups" in (tick.skip_reason.skip_message or ""), tick
