"""Freshness of the demo: seconds from a DynamoDB write to its row being readable in ``changes``.

    python -m bench.freshness      # FRESH_WRITES=40 FRESH_SECONDS=300

Issue 6's target: median <= 30 s and 95th percentile <= 60 s, with default settings.

What it does:

1. Starts the demo exactly as ``make demo`` does, by running ``dynamo-cdc demo`` (``python -m
   dynamo_cdc.cli demo``) in a temporary folder (its ``.demo/`` home, DAGSTER_HOME and lake are
   there), with every ``DYNAMO_CDC_*`` and ``DAGSTER_*`` variable removed from its environment so
   the defaults apply (sensor interval, budget, ...). The demo starts the local AWS, the demo
   tables, the workload, ``dagster dev`` with the sensors on (they ask for the first
   snapshots); the probe starts once it prints that everything runs. Only 127.0.0.1 is contacted: the local AWS
   endpoint the demo prints and the Dagster UI on a free port.
2. A writer puts ``FRESH_WRITES`` marker items into ``orders`` (hash key
   ``freshness-probe-<run id>``) with boto3 against the local AWS, spread over
   ``FRESH_SECONDS``: one write at a random moment of each equal slot, so the writes land at
   random phases of the sensor interval. The wall time before each PutItem call is its write
   time.
3. A poller lists ``<lake>/orders/changes`` every ``FRESH_POLL_SECONDS`` (0.5) with the
   library's :class:`dynamo_cdc.lake.Lake` (hidden temp files are left out; files are published
   by rename) and reads each new Parquet file's key columns: a marker is *seen* when the poll
   that first lists a file holding it returns. The file's mtime is kept too (*landed*: the same
   without the poll's resolution). At the end every seen marker is checked again through
   :func:`dynamo_cdc.read_table` (the ``changes`` view, as users read it).
4. After the last write it waits up to ``FRESH_TIMEOUT`` seconds (180) for the markers not seen
   yet; those are *lost*.
5. Before stopping, the ticks of the stream sensors and their runs are read from the Dagster UI's
   GraphQL (interval in effect, tick spacing and duration, run start delays), to explain the
   figures, and every run created while the probe wrote and waited: runs per table per day
   (that count scaled to 24 h; the demo's workload writes to every demo table steadily).
6. Stops the demo by its pid (SIGTERM: the demo stops its workload, ``dagster dev`` and the local
   AWS by their pids); whatever it started that is still alive after that (recorded by pid and
   process group while it ran) is killed by pid. Also on Ctrl-C, SIGTERM or an error.

Output: one summary on stdout and one JSON line in ``$BENCH_OUT/freshness.json`` (default
``bench/out``; overwritten). Exit code: 0 target met, 1 markers lost, 2 the demo did not start,
3 target missed (nothing lost), 130 interrupted.

Environment:
    FRESH_WRITES        marker writes (default 40)
    FRESH_SECONDS       how long the writes are spread over (default 300)
    FRESH_TIMEOUT       how long to wait after the last write for unseen markers (default 180)
    FRESH_POLL_SECONDS  poll period of the changes dataset (default 0.5)
    FRESH_SEED          seed of the write moments (default: random, printed)
    FRESH_TABLE         demo table written to (default orders)
    FRESH_KEEP          1 keeps the temporary folder (logs, lake, Dagster home) and prints it
    BENCH_OUT           output folder (default bench/out)
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dynamo_cdc.config import dagster_safe_name
from dynamo_cdc.demo import _restore_signals, free_port
from dynamo_cdc.lake import Lake
from dynamo_cdc.local.demo import DEMO_TABLES

TARGET_MEDIAN_SECONDS = 30.0
TARGET_P95_SECONDS = 60.0
READY_LINE = "Ctrl-C stops everything."
ENDPOINT_PREFIX = "Local AWS: "
START_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 90.0
PROBE_PREFIX = "freshness-probe-"
_REPO_ROOT = Path(__file__).resolve().parent.parent

EXIT_OK, EXIT_LOST, EXIT_NOT_STARTED, EXIT_TARGET_MISSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    return float(text) if text else default


# -- pure parts (tested without a demo) ------------------------------------------------------


def write_offsets(writes: int, seconds: float, seed: int) -> list[float]:
    """Seconds after the start of each write: one random moment in each of ``writes`` equal
    slots of ``seconds`` (stratified, so writes are spread and their phase is random)."""
    rng = random.Random(seed)
    slot = seconds / max(writes, 1)
    return [i * slot + rng.uniform(0, slot) for i in range(writes)]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks (NumPy's
    default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_stats(values: Sequence[float]) -> dict[str, float | None]:
    """median, p95, max, min and mean of ``values`` (None when there are none)."""
    if not values:
        return dict.fromkeys(("median", "p95", "max", "min", "mean"))
    return {
        "median": round(statistics.median(values), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


@dataclass
class Marker:
    """One probe write and when its change row became readable."""

    order_id: str
    written_at: float  # wall time before PutItem
    acked_at: float | None = None  # wall time PutItem returned
    seen_at: float | None = None  # wall time the poll that first listed its file returned
    landed_at: float | None = None  # mtime of that file
    file: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.seen_at is None else self.seen_at - self.written_at

    @property
    def landed_latency(self) -> float | None:
        return None if self.landed_at is None else self.landed_at - self.written_at


def verdict(markers: Sequence[Marker], planned: int) -> tuple[dict[str, Any], int]:
    """Summary figures of the markers and the exit code (see the module docstring)."""
    latencies = [m.latency for m in markers if m.latency is not None]
    landed = [m.landed_latency for m in markers if m.landed_latency is not None]
    lost = [m.order_id for m in markers if m.seen_at is None]
    stats = latency_stats(latencies)
    met = (
        bool(latencies)
        and not lost
        and len(markers) == planned
        and stats["median"] is not None
        and stats["median"] <= TARGET_MEDIAN_SECONDS
        and stats["p95"] is not None
        and stats["p95"] <= TARGET_P95_SECONDS
    )
    summary = {
        "planned": planned,
        "writes": len(markers),
        "seen": len(latencies),
        "lost": lost,
        "latency_seconds": stats,
        "landed_latency_seconds": latency_stats(landed),
        "target": {"median": TARGET_MEDIAN_SECONDS, "p95": TARGET_P95_SECONDS, "met": met},
    }
    if lost or len(markers) < planned:
        code = EXIT_LOST
    elif met:
        code = EXIT_OK
    else:
        code = EXIT_TARGET_MISSED
    return summary, code


class ChangesPoller:
    """Finds marker rows in a table's ``changes`` dataset; each data file is read once."""

    def __init__(self, lake_root: str, table: str, probe_id: str) -> None:
        self.lake = Lake(lake_root)
        self.table = table
        self.rel = self.lake.table_path(table, "changes")
        keys = DEMO_TABLES[table]["KeySchema"]
        self.hash_key = keys[0]["AttributeName"]
        self.range_key = keys[1]["AttributeName"] if len(keys) > 1 else None
        self.probe_id = probe_id
        self.read: set[str] = set()
        self.polls = 0

    def poll(self) -> dict[str, tuple[float, float, str]]:
        """Markers (range key value) found in files not read before -> (seen wall time, file
        mtime, file)."""
        listing = [p for p in self.lake.list(self.rel) if p.endswith(".parquet")]
        now = time.time()
        self.polls += 1
        found: dict[str, tuple[float, float, str]] = {}
        for rel in listing:
            if rel in self.read:
                continue
            path = self.lake.uri(rel)
            try:
                mtime = os.stat(path).st_mtime
                columns = [self.hash_key] + ([self.range_key] if self.range_key else [])
                rows = pq.read_table(path, columns=columns).to_pydict()
            except FileNotFoundError:  # replaced by a compaction between list and read
                continue
            self.read.add(rel)
            ids = rows[self.range_key] if self.range_key else rows[self.hash_key]
            for hash_value, marker_id in zip(rows[self.hash_key], ids, strict=True):
                if hash_value == self.probe_id and marker_id not in found:
                    found[marker_id] = (now, mtime, rel)
        return found


# -- the demo as a child process ---------------------------------------------------------------


def _proc_children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out.extend(int(x) for x in text.split())
    return out


def _proc_identity(pid: int) -> tuple[int, str] | None:
    """(process group, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # after "pid (comm) ": state ppid pgrp session ... starttime is field 22 (index 19 here)
    return int(fields[2]), fields[19]


def _process_groups_members(pgids: set[int]) -> list[int]:
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        ident = _proc_identity(int(name))
        if ident is not None and ident[0] in pgids:
            out.append(int(name))
    return out


@dataclass
class Demo:
    """``dynamo-cdc demo`` running in ``folder``."""

    folder: Path
    ui_port: int
    proc: subprocess.Popen[str] | None = None
    endpoint_url: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    started_at: float = 0.0
    ready_at: float | None = None
    bad_endpoint: str | None = None
    # every process the demo started, as seen while it ran: pid -> (pgid, start time)
    family: dict[int, tuple[int, str]] = field(default_factory=dict)

    @property
    def lake_root(self) -> str:
        return str(self.folder / "lake")

    @property
    def home(self) -> Path:
        return self.folder / ".demo"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMO_CDC_", "DAGSTER_"))}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        return env

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "dynamo_cdc.cli",
            "demo",
            "--lake-root",
            self.lake_root,
            "--ui-port",
            str(self.ui_port),
        ]
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.folder,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_restore_signals,
            start_new_session=True,  # Ctrl-C reaches this process only; it stops the demo
        )
        threading.Thread(target=self._drain, name="demo-output", daemon=True).start()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.folder / "demo.out", "a") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                line = line.rstrip("\n")
                self.lines.append(line)
                if line.startswith(ENDPOINT_PREFIX):
                    url = line[len(ENDPOINT_PREFIX) :].split()[0]
                    if url.startswith("http://127.0.0.1:"):
                        self.endpoint_url = url
                    else:
                        self.bad_endpoint = url
                if line.strip() == READY_LINE:
                    self.ready_at = time.time()
                    self.ready.set()

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self.ready.wait(1.0):
            self.record_family()
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo exited {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the demo was not ready in {timeout:.0f} s:\n{self.tail()}")
        if self.endpoint_url is None:
            raise RuntimeError(
                f"the demo printed no 127.0.0.1 endpoint ({self.bad_endpoint}):\n{self.tail()}"
            )
        self.record_family()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def record_family(self) -> None:
        """Remember every descendant of the demo (pid, process group, start time)."""
        if self.proc is None:
            return
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            ident = _proc_identity(pid)
            if ident is None:
                continue
            self.family.setdefault(pid, ident)
            todo.extend(_proc_children(pid))

    def _leftovers(self, groups: set[int]) -> set[int]:
        assert self.proc is not None
        return {
            pid
            for pid, ident in self.family.items()
            if pid != self.proc.pid and _proc_identity(pid) == ident
        } | set(_process_groups_members(groups))

    def stop(self, grace: float = 15.0) -> dict[str, list[str]]:
        """Stop the demo by its pid (SIGTERM; it stops its children by their pids), then wait
        up to ``grace`` seconds for whatever it started to exit, then kill what is left by pid.

        Returns ``{"lingered": [...], "killed": [...]}``: processes still alive when the demo
        had exited (``pid cmdline``), and those of them killed here.
        """
        if self.proc is None:
            return {"lingered": [], "killed": []}
        self.record_family()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # Left behind: a recorded process still alive with the same start time, or a member of
        # a recorded process group other than ours (dagster dev's children run in its group).
        groups = {pgid for pgid, _ in self.family.values()} - {os.getpgrp()}
        left = self._leftovers(groups)
        lingered = [f"{pid} {_cmdline(pid)}" for pid in sorted(left)]
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self._leftovers(groups)
        killed = [f"{pid} {_cmdline(pid)}" for pid in sorted(left)]
        for pid in sorted(left):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return {"lingered": lingered, "killed": killed}


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


# -- Dagster: the sensors' ticks and runs, to explain the figures ------------------------------

SENSOR_QUERY = """
query ($name: String!) {
  sensorOrError(sensorSelector: {repositoryLocationName: "dynamo_cdc",
                                 repositoryName: "__repository__", sensorName: $name}) {
    ... on Sensor {
      minIntervalSeconds
      sensorState { status ticks(limit: 1000) { status timestamp endTimestamp runIds
                                                skipReason error { message } } }
    }
    ... on PythonError { message }
  }
  runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $name}]}) {
    ... on Runs { results { runId status creationTime startTime endTime } }
  }
}
"""


def _graphql(port: int, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc = json.loads(resp.read())
    if doc.get("errors"):
        raise RuntimeError(f"GraphQL errors: {doc['errors']}")
    return dict(doc["data"])


def sensor_facts(port: int, name: str, since: float, until: float) -> dict[str, Any]:
    """Interval in effect, tick spacing and duration, and run start delays of sensor ``name``
    within [since, until]."""
    data = _graphql(port, SENSOR_QUERY, {"name": name})
    sensor = data["sensorOrError"]
    if "minIntervalSeconds" not in sensor:
        return {"error": sensor.get("message", str(sensor))}
    ticks = sorted(
        (t for t in sensor["sensorState"]["ticks"] if since <= t["timestamp"] <= until),
        key=lambda t: t["timestamp"],
    )
    starts = [t["timestamp"] for t in ticks]
    spacing = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    durations = [t["endTimestamp"] - t["timestamp"] for t in ticks if t["endTimestamp"]]
    statuses: dict[str, int] = {}
    for t in ticks:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
    runs = [
        r for r in (data["runsOrError"].get("results") or []) if since <= r["creationTime"] <= until
    ]
    launch = [r["startTime"] - r["creationTime"] for r in runs if r.get("startTime")]
    run_wall = [r["endTime"] - r["creationTime"] for r in runs if r.get("endTime")]
    run_status: dict[str, int] = {}
    for r in runs:
        run_status[r["status"]] = run_status.get(r["status"], 0) + 1
    return {
        "interval_seconds": sensor["minIntervalSeconds"],
        "status": sensor["sensorState"]["status"],
        "ticks": len(ticks),
        "tick_statuses": statuses,
        "tick_errors": [t["error"]["message"][:300] for t in ticks if t.get("error")][:5],
        "tick_spacing_seconds": latency_stats(spacing),
        "tick_duration_seconds": latency_stats(durations),
        "runs": len(runs),
        "run_statuses": run_status,
        "run_start_delay_seconds": latency_stats(launch),
        "run_created_to_end_seconds": latency_stats(run_wall),
        "_ticks": [[t["timestamp"], t["endTimestamp"]] for t in ticks],
    }


RUNS_QUERY = """
{
  runsOrError(limit: 5000) {
    ... on Runs { results { runId status creationTime tags { key value } assetSelection { path } } }
  }
}
"""

DAY_SECONDS = 86400.0


def runs_per_table_per_day(
    runs: Sequence[dict[str, Any]], tables: Sequence[str], since: float, until: float
) -> dict[str, Any]:
    """Runs created within [since, until] of each table, extrapolated to a day.

    A run belongs to the table of its ``dynamo_cdc/table`` tag, else of the second part of the
    first asset key it selects (``dynamodb/<safe name>/...``); others are ``other``.
    """
    safe = {dagster_safe_name(t): t for t in tables}
    counts: dict[str, int] = dict.fromkeys(tables, 0)
    kinds: dict[str, dict[str, int]] = {t: {} for t in tables}
    other = 0
    for run in runs:
        if not since <= run["creationTime"] <= until:
            continue
        tags = {t["key"]: t["value"] for t in run.get("tags") or []}
        name = tags.get("dynamo_cdc/table")
        paths = [a["path"] for a in run.get("assetSelection") or []]
        if name is None and paths and len(paths[0]) == 3 and paths[0][0] == "dynamodb":
            name = paths[0][1]
        table = safe.get(name or "")
        if table is None:
            other += 1
            continue
        counts[table] += 1
        kind = tags.get("dynamo_cdc/kind") or ",".join(sorted({p[-1] for p in paths})) or "?"
        kinds[table][kind] = kinds[table].get(kind, 0) + 1
    scale = DAY_SECONDS / max(until - since, 1e-9)
    return {
        "window_seconds": round(until - since, 1),
        "runs": counts,
        "by_kind": kinds,
        "other_runs": other,
        "per_table_per_day": {t: round(n * scale, 1) for t, n in counts.items()},
    }


def attribute_to_ticks(markers: Sequence[Marker], ticks: Sequence[Sequence[float]]) -> dict:
    """Split each landed latency into waiting for the tick that landed the marker and the
    tick's own time until the file was written."""
    waits, works = [], []
    for m in markers:
        if m.landed_at is None:
            continue
        tick = next(
            (t for t in ticks if t[0] - 0.5 <= m.landed_at <= (t[1] or t[0]) + 0.5),
            None,
        )
        if tick is None:
            continue
        waits.append(tick[0] - m.written_at)
        works.append(m.landed_at - tick[0])
    return {
        "attributed": len(waits),
        "write_to_tick_start_seconds": latency_stats(waits),
        "tick_start_to_file_seconds": latency_stats(works),
    }


# -- the probe ----------------------------------------------------------------------------------


def _writer(
    clients: Any,
    table: str,
    probe_id: str,
    offsets: Sequence[float],
    markers: list[Marker],
    stop: threading.Event,
    errors: list[str],
) -> None:
    keys = DEMO_TABLES[table]["KeySchema"]
    hash_key = keys[0]["AttributeName"]
    range_key = keys[1]["AttributeName"]
    start = time.monotonic()
    for i, offset in enumerate(offsets):
        if stop.wait(max(0.0, start + offset - time.monotonic())):
            return
        marker_id = f"m{i:04d}"
        item = {hash_key: {"S": probe_id}, range_key: {"S": marker_id}, "probe": {"N": str(i)}}
        marker = Marker(order_id=marker_id, written_at=time.time())
        try:
            clients.dynamodb.put_item(TableName=table, Item=item)
        except Exception as exc:  # a failed write is reported, not counted
            errors.append(f"{marker_id}: {exc}")
            continue
        marker.acked_at = time.time()
        markers.append(marker)


def run_probe(
    demo: Demo,
    table: str,
    writes: int,
    seconds: float,
    timeout: float,
    poll_seconds: float,
    seed: int,
    markers: list[Marker],
) -> dict[str, Any]:
    """Write the markers (appended to ``markers``) and watch ``changes`` until all are seen or
    ``timeout`` after the last write. Returns facts about the run."""
    from dynamo_cdc.aws import Clients
    from dynamo_cdc.demo import demo_settings

    assert demo.endpoint_url is not None
    if range_key_of(table) is None:
        raise ValueError(f"{table}: the probe needs a table with a range key")
    probe_id = f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}"
    clients = Clients(demo_settings(demo.endpoint_url))  # the only key the demo's AWS takes
    poller = ChangesPoller(demo.lake_root, table, probe_id)
    poller.poll()  # files landed before the probe started are not the probe's
    stop = threading.Event()
    errors: list[str] = []
    offsets = write_offsets(writes, seconds, seed)
    writer = threading.Thread(
        target=_writer,
        args=(clients, table, probe_id, offsets, markers, stop, errors),
        name="probe-writer",
        daemon=True,
    )
    probe_started = time.time()
    writer.start()
    by_id: dict[str, Marker] = {}
    found_early: dict[str, tuple[float, float, str]] = {}
    deadline: float | None = None
    last_report = time.monotonic()
    try:
        while True:
            tick = time.monotonic()
            found_early.update(poller.poll())
            for m in list(markers):
                by_id.setdefault(m.order_id, m)
            for marker_id, (seen, mtime, rel) in list(found_early.items()):
                hit = by_id.get(marker_id)
                if hit is None:
                    continue  # seen before the writer appended it (only between its lines)
                if hit.seen_at is None:
                    hit.seen_at, hit.landed_at, hit.file = seen, mtime, rel
                del found_early[marker_id]
            if not writer.is_alive() and deadline is None:
                deadline = time.monotonic() + timeout
            unseen = [m for m in by_id.values() if m.seen_at is None]
            if deadline is not None and (not unseen or time.monotonic() > deadline):
                break
            if demo.proc is not None and demo.proc.poll() is not None:
                raise RuntimeError(f"the demo exited {demo.proc.returncode}:\n{demo.tail()}")
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                done = [m.latency for m in by_id.values() if m.latency is not None]
                print(
                    f"  {time.time() - probe_started:5.0f} s: {len(markers)}/{writes} written, "
                    f"{len(done)} seen" + (f", last {done[-1]:.1f} s" if done else ""),
                    flush=True,
                )
            time.sleep(max(0.0, poll_seconds - (time.monotonic() - tick)))
    finally:
        stop.set()
        writer.join(timeout=10)
    markers.sort(key=lambda m: m.order_id)
    facts = {
        "probe_id": probe_id,
        "probe_started": probe_started,
        "probe_ended": time.time(),
        "write_errors": errors,
        "polls": poller.polls,
        "files_read": len(poller.read),
        "put_seconds": latency_stats(
            [m.acked_at - m.written_at for m in markers if m.acked_at is not None]
        ),
    }
    # The seen rows as users read them: the changes view of the library.
    from dynamo_cdc import read_table

    rows = read_table(demo.lake_root, table, "changes").to_pydict()
    hash_key = DEMO_TABLES[table]["KeySchema"][0]["AttributeName"]
    range_key = range_key_of(table)
    readable = {r for h, r in zip(rows[hash_key], rows[range_key], strict=True) if h == probe_id}
    facts["seen_but_not_in_read_table"] = sorted(
        m.order_id for m in markers if m.seen_at is not None and m.order_id not in readable
    )
    return facts


def range_key_of(table: str) -> str | None:
    keys = DEMO_TABLES[table]["KeySchema"]
    return keys[1]["AttributeName"] if len(keys) > 1 else None


def _uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        load = os.getloadavg()
        return f"load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="dynamo-cdc-freshness-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"Kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    writes = int(_env_number("FRESH_WRITES", 40))
    seconds = _env_number("FRESH_SECONDS", 300)
    timeout = _env_number("FRESH_TIMEOUT", 180)
    poll_seconds = _env_number("FRESH_POLL_SECONDS", 0.5)
    seed_text = os.environ.get("FRESH_SEED", "").strip()
    seed = int(seed_text) if seed_text else random.randrange(2**31)
    table = os.environ.get("FRESH_TABLE", "orders").strip() or "orders"
    keep = os.environ.get("FRESH_KEEP", "") == "1"
    out = Path(os.environ.get("BENCH_OUT", "") or _REPO_ROOT / "bench" / "out")
    out.mkdir(parents=True, exist_ok=True)
    # boto3 in this process: the local AWS takes any credentials; never look for real ones
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    signal.signal(signal.SIGTERM, _interrupt)

    load_before = _uptime()
    print(
        f"Freshness probe: {writes} writes over {seconds:g} s into {table} (seed {seed}); "
        f"target median <= {TARGET_MEDIAN_SECONDS:g} s, p95 <= {TARGET_P95_SECONDS:g} s",
        flush=True,
    )
    print(f"Before: {load_before}", flush=True)
    code = EXIT_NOT_STARTED
    result: dict[str, Any] = {
        "bench": "freshness",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "writes": writes,
            "seconds": seconds,
            "timeout": timeout,
            "poll_seconds": poll_seconds,
            "seed": seed,
            "table": table,
        },
        "load_before": load_before,
    }
    markers: list[Marker] = []
    with _workdir(keep) as folder:
        demo = Demo(folder=folder, ui_port=free_port())
        try:
            print(f"Starting the demo in {folder} (dynamo-cdc demo) ...", flush=True)
            demo.start()
            demo.wait_ready()
            assert demo.ready_at is not None
            result["demo_start_seconds"] = round(demo.ready_at - demo.started_at, 1)
            print(
                f"Demo up in {result['demo_start_seconds']} s: local AWS {demo.endpoint_url}, "
                f"Dagster UI http://127.0.0.1:{demo.ui_port}",
                flush=True,
            )
            facts = run_probe(demo, table, writes, seconds, timeout, poll_seconds, seed, markers)
            result.update(facts)
            summary, code = verdict(markers, writes)
            if facts["write_errors"]:
                code = EXIT_LOST
            result.update(summary)
            try:
                since = demo.started_at
                sensors = {}
                for t in DEMO_TABLES:
                    name = f"{dagster_safe_name(t)}_stream_sensor"
                    sensors[name] = sensor_facts(demo.ui_port, name, since, time.time())
                sensors["dynamo_cdc_automation_sensor"] = sensor_facts(
                    demo.ui_port, "dynamo_cdc_automation_sensor", since, time.time()
                )
                own = sensors[f"{dagster_safe_name(table)}_stream_sensor"]
                result["attribution"] = attribute_to_ticks(markers, own.get("_ticks", []))
                for facts_ in sensors.values():
                    facts_.pop("_ticks", None)
                result["sensors"] = sensors
                result["interval_seconds"] = own.get("interval_seconds")
                runs = _graphql(demo.ui_port, RUNS_QUERY, {})["runsOrError"].get("results") or []
                result["runs_per_table_per_day"] = runs_per_table_per_day(
                    runs, list(DEMO_TABLES), result["probe_started"], result["probe_ended"]
                )
            except (OSError, RuntimeError, KeyError) as exc:
                result["sensors_error"] = str(exc)
        except KeyboardInterrupt:
            print("Interrupted: stopping the demo ...", flush=True)
            code = EXIT_INTERRUPTED
            summary, _ = verdict(markers, writes)
            result.update(summary)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            code = EXIT_NOT_STARTED if demo.ready_at is None else EXIT_LOST
        finally:
            print("Stopping the demo ...", flush=True)
            stopped = demo.stop()
            result["after_stop"] = stopped
            result["demo_exit_code"] = demo.proc.returncode if demo.proc else None
            for line in stopped["lingered"]:
                print(f"  still running when the demo had exited: {line}", flush=True)
            for line in stopped["killed"]:
                print(f"  killed by pid: {line}", flush=True)
    result["load_after"] = _uptime()
    result["markers"] = [
        {**asdict(m), "latency": m.latency, "landed_latency": m.landed_latency} for m in markers
    ]
    result["exit_code"] = code
    (out / "freshness.json").write_text(json.dumps(result, sort_keys=True) + "\n")

    lat = result.get("latency_seconds") or {}
    landed = result.get("landed_latency_seconds") or {}
    print()
    print(f"writes            {result.get('writes', len(markers))} (planned {writes})")
    print(f"seen              {result.get('seen', 0)}")
    print(f"lost              {len(result.get('lost', []))} {result.get('lost') or ''}".rstrip())
    print(
        f"latency (s)       median {_fmt(lat.get('median'))}  p95 {_fmt(lat.get('p95'))}  "
        f"max {_fmt(lat.get('max'))}  min {_fmt(lat.get('min'))}"
    )
    print(
        f"landed (s)        median {_fmt(landed.get('median'))}  p95 {_fmt(landed.get('p95'))}  "
        f"max {_fmt(landed.get('max'))}  (file mtime, no poll resolution)"
    )
    print(f"sensor interval   {result.get('interval_seconds', '?')} s (in effect, from Dagster)")
    for name, s in (result.get("sensors") or {}).items():
        if "error" in s:
            print(f"  {name}: {s['error']}")
            continue
        sp, du, rd = (
            s["tick_spacing_seconds"],
            s["tick_duration_seconds"],
            s["run_start_delay_seconds"],
        )
        print(
            f"  {name}: {s['ticks']} ticks, spacing median {_fmt(sp['median'])} "
            f"max {_fmt(sp['max'])}, duration median {_fmt(du['median'])} max {_fmt(du['max'])}; "
            f"{s['runs']} runs {s['run_statuses']}, start delay median {_fmt(rd['median'])}"
        )
    per_day = result.get("runs_per_table_per_day")
    if per_day:
        for t, n in per_day["per_table_per_day"].items():
            print(
                f"runs per day      {t}: {n:g} ({per_day['runs'][t]} runs in "
                f"{per_day['window_seconds']:g} s of probe: {per_day['by_kind'][t]})"
            )
    att = result.get("attribution")
    if att:
        w, k = att["write_to_tick_start_seconds"], att["tick_start_to_file_seconds"]
        print(
            f"  per marker: write -> tick start median {_fmt(w['median'])} max {_fmt(w['max'])}; "
            f"tick start -> file median {_fmt(k['median'])} max {_fmt(k['max'])} "
            f"({att['attributed']} attributed)"
        )
    target = result.get("target") or {}
    print(
        f"target            median <= {TARGET_MEDIAN_SECONDS:g} s, p95 <= "
        f"{TARGET_P95_SECONDS:g} s: {'met' if target.get('met') else 'MISSED'}"
    )
    print(f"load              before: {load_before}")
    print(f"                  after:  {result['load_after']}")
    print(f"JSON              {out / 'freshness.json'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
