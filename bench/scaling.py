"""Snapshot conversion spread over convert steps: 1 step against 2 steps in parallel.

    python -m bench.scaling        # BENCH_ITEMS=100000 BENCH_FILES=8 (the export of bench.run)

A snapshot is steps (``dynamo_cdc.snapshot``: plan -> convert groups -> commit). Here each
convert step is its own process converting its group with one worker, as a Dagster executor
runs one step a process (or a pod): first all the files in one step, then the same files in two
groups converted by two steps at once, each followed by the commit. Printed: wall seconds
(plan to published), items/s, the scaling efficiency (speed-up / steps) and the peak RSS of the
largest step, all measured in the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.run import _BENCH_ROOT, _REPO_ROOT, _env_int, ensure_export

STEP = (
    "import json, sys\n"
    "from dynamo_cdc.lake import Lake\n"
    "from dynamo_cdc.snapshot import SnapshotPlan, convert_group\n"
    "plan = SnapshotPlan.from_dict(json.loads(open(sys.argv[1]).read()))\n"
    "convert_group(plan, int(sys.argv[2]), Lake(sys.argv[3]), workers=1)\n"
)


def run_steps(export_dir: str, lake_root: Path, steps: int) -> dict[str, float]:
    """Plan, convert ``steps`` groups in as many processes at once, commit; figures."""
    from dynamo_cdc.export import open_manifest
    from dynamo_cdc.lake import Lake
    from dynamo_cdc.snapshot import _guess_keys, commit_snapshot, plan_snapshot

    shutil.rmtree(lake_root, ignore_errors=True)
    started = time.perf_counter()
    manifest = open_manifest(export_dir)
    plan = plan_snapshot(manifest, "bench", "2026-01-01", _guess_keys(manifest), groups=steps)
    plan_file = lake_root.parent / f"plan-{steps}.json"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan.to_dict()))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STEP, str(plan_file), str(i), str(lake_root)],
            env=env,
            cwd=_REPO_ROOT,
        )
        for i in range(len(plan.groups))
    ]
    peak_kb = 0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"a convert step failed (exit {os.waitstatus_to_exitcode(status)})")
        peak_kb = max(peak_kb, usage.ru_maxrss)
    result = commit_snapshot(plan, Lake(str(lake_root)))
    seconds = time.perf_counter() - started
    return {
        "steps": len(plan.groups),
        "items": result.rows,
        "seconds": seconds,
        "items_per_s": result.rows / seconds,
        "peak_rss_mb": peak_kb / 1024,
    }


def main() -> int:
    items = _env_int("BENCH_ITEMS", 100_000)
    files = _env_int("BENCH_FILES", 8)
    seed = _env_int("BENCH_SEED", 42)
    out = Path(os.environ.get("BENCH_OUT") or _BENCH_ROOT / "out").resolve()
    info = ensure_export(out, items, files, seed)
    one = run_steps(info.export_dir, out / "scaling" / "one", 1)
    two = run_steps(info.export_dir, out / "scaling" / "two", 2)
    shutil.rmtree(out / "scaling", ignore_errors=True)
    efficiency = two["items_per_s"] / one["items_per_s"] / two["steps"]
    print(
        f"\nsnapshot as steps: {info.items:,} items in {info.files} data files, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print("| convert steps in parallel | seconds | items/s | peak RSS MB (a step) | scaling |")
    print("|---:|---:|---:|---:|---:|")
    for row, scale in ((one, "1.00"), (two, f"{efficiency:.2f}")):
        print(
            f"| {row['steps']} | {row['seconds']:.2f} | {row['items_per_s']:,.0f} | "
            f"{row['peak_rss_mb']:,.0f} | {scale} |"
        )
    print(f"\nscaling efficiency with 2 steps: {efficiency:.2f} (speed-up / steps)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
