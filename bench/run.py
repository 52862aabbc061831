"""Export -> Parquet benchmark: every approach on the same export, side by side.

    python -m bench.run            # BENCH_ITEMS=100000 BENCH_FILES=8 BENCH_REPEAT=1

Environment:
    BENCH_ITEMS       items in the generated export (default 100000)
    BENCH_FILES       gzip data files (default 8)
    BENCH_REPEAT      runs per approach; the table shows the median (default 1; 3 for the full run)
    BENCH_SEED        generator seed (default 42)
    BENCH_APPROACHES  comma-separated subset of APPROACHES (default: all)
    BENCH_OUT         output folder (default bench/out)
    BENCH_STREAM      0 skips the stream records benchmark that follows the table (default 1)
    BENCH_MIRROR      0 skips the mirror refresh benchmark (default 1)
    BENCH_SHARDS      0 skips the many-shards capture load test (bench/shards.py: 1,000 shards,
                      5,000 records/s for 30 s, 60 s at the full size; default 1)
    BENCH_SCALING     0 skips the snapshot-as-steps scaling benchmark (1 against 2 convert
                      steps in parallel, bench/scaling.py; default 1)
    BENCH_FRESHNESS   0 skips the demo freshness probe, which runs the demo for 3-8 minutes
                      (default 1; FRESH_* variables as in bench/freshness.py)

The export is generated once into ``$BENCH_OUT/export`` (reused while items, files and seed are
unchanged). Each run of each approach is a separate Python process, so its peak RSS
(``ru_maxrss`` from ``os.wait4``) is its own and its wall time includes interpreter start and
imports: whole-process figures, as PERF.md measures them. For an approach that forks worker
processes, ``ru_maxrss`` is the largest single process among the child and its reaped
descendants, not their sum. Approaches are dotted paths imported
lazily in the child; one whose module or function does not exist yet is skipped with a note.
Results go to stdout (one table) and ``$BENCH_OUT/results.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.generate import ExportInfo, generate_export

# name -> "module:function" taking (export_dir, out_dir) and returning items written.
APPROACHES: dict[str, str] = {
    "naive": "bench.baselines:naive",
    "duckdb_raw": "bench.baselines:duckdb_raw",
    "duckdb_typed": "bench.baselines:duckdb_typed",
    "pyarrow_raw": "bench.baselines:pyarrow_raw",
    "ours": "dynamo_cdc.snapshot:convert_export_dir",
}

# Exit code of a child whose approach cannot be imported (not written yet).
EXIT_UNAVAILABLE = 3
_BENCH_ROOT = Path(__file__).resolve().parent
_REPO_ROOT = _BENCH_ROOT.parent


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def load_approach(spec: str) -> Any:
    """Import ``"module:function"`` and return the function."""
    module_name, _, func_name = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)


def ensure_export(out: Path, items: int, files: int, seed: int) -> ExportInfo:
    """Generate the export into ``out/export`` unless the same one is already there."""
    info_path = out / "export_info.json"
    if info_path.exists():
        cached = json.loads(info_path.read_text())
        if (cached["items"], cached["files"], cached["seed"], cached["format"]) == (
            items,
            files,
            seed,
            "json",
        ) and Path(cached["export_dir"], "manifest-summary.json").exists():
            return ExportInfo(**cached)
    shutil.rmtree(out / "export", ignore_errors=True)
    info = generate_export(out / "export", items=items, files=files, seed=seed)
    info_path.write_text(json.dumps(asdict(info), indent=2))
    return info


def run_child(name: str, spec: str, export_dir: str, out_dir: Path) -> dict[str, Any]:
    """Run one approach in a fresh process; wall time, peak RSS, items, status."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "bench.run", "--child", spec, export_dir, str(out_dir)]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=_REPO_ROOT
    )
    # wait4 gives this child's own rusage (getrusage(RUSAGE_CHILDREN) would be a running max).
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "exit_code": proc.returncode,
    }
    if proc.returncode == 0:
        result["items"] = json.loads(stdout.strip().splitlines()[-1])["items"]
        result["status"] = "ok"
    elif proc.returncode == EXIT_UNAVAILABLE:
        result["status"] = "skipped"
        result["note"] = stderr.strip().splitlines()[-1] if stderr.strip() else "unavailable"
    else:
        result["status"] = "failed"
        result["note"] = stderr.strip().splitlines()[-1] if stderr.strip() else "no stderr"
    result["stderr_tail"] = stderr[-2000:]
    return result


def summarise(name: str, runs: list[dict[str, Any]], info: ExportInfo) -> dict[str, Any]:
    """Median over the ok runs, as one row of the table."""
    ok = [r for r in runs if r["status"] == "ok"]
    row: dict[str, Any] = {"approach": name, "runs": runs}
    if not ok:
        row["status"] = runs[-1]["status"]
        row["note"] = runs[-1].get("note", "")
        return row
    seconds = statistics.median(r["seconds"] for r in ok)
    row.update(
        status="ok",
        seconds=seconds,
        items=ok[-1]["items"],
        items_per_s=info.items / seconds,
        mb_per_s=info.uncompressed_bytes / 1e6 / seconds,
        peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
    )
    if ok[-1]["items"] != info.items:
        row["note"] = f"wrote {ok[-1]['items']} items, expected {info.items}"
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results table (markdown, so it can go into the README as is)."""
    base = {r["approach"]: r.get("items_per_s") for r in rows}

    def ratio(r: dict[str, Any], ref: str) -> str:
        if r.get("items_per_s") and base.get(ref):
            return f"{r['items_per_s'] / base[ref]:.2f}x"
        return "-"

    lines = [
        "| approach | items/s | MB/s | peak RSS MB | vs naive | vs duckdb_raw | vs duckdb_typed "
        "| note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(
                f"| {r['approach']} | - | - | - | - | - | - | {r['status']}: {r['note']} |"
            )
            continue
        lines.append(
            f"| {r['approach']} | {r['items_per_s']:,.0f} | {r['mb_per_s']:,.1f} | "
            f"{r['peak_rss_mb']:,.0f} | {ratio(r, 'naive')} | {ratio(r, 'duckdb_raw')} | "
            f"{ratio(r, 'duckdb_typed')} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("duckdb", "pyarrow", "pandas", "boto3", "orjson", "isal"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 - a missing library is just not reported
            pass
    return out


def main() -> int:
    """Generate (or reuse) the export, run every approach, print and save the table."""
    items = _env_int("BENCH_ITEMS", 100_000)
    files = _env_int("BENCH_FILES", 8)
    repeat = max(1, _env_int("BENCH_REPEAT", 1))
    seed = _env_int("BENCH_SEED", 42)
    out = Path(os.environ.get("BENCH_OUT") or _BENCH_ROOT / "out").resolve()
    selected = [s.strip() for s in os.environ.get("BENCH_APPROACHES", "").split(",") if s.strip()]
    unknown = [s for s in selected if s not in APPROACHES]
    if unknown:
        print(f"unknown approaches {unknown}; known: {list(APPROACHES)}", file=sys.stderr)
        return 2
    names = selected or list(APPROACHES)
    out.mkdir(parents=True, exist_ok=True)

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info = ensure_export(out, items, files, seed)
    print(
        f"export: {info.items:,} items, {info.files} files, "
        f"{info.uncompressed_bytes / 1e6:,.0f} MB JSON, {info.compressed_bytes / 1e6:,.0f} MB gzip "
        f"({info.export_dir})",
        flush=True,
    )
    rows = []
    for name in names:
        runs = []
        for i in range(repeat):
            run = run_child(name, APPROACHES[name], info.export_dir, out / "parquet" / name)
            runs.append(run)
            print(
                f"  {name} run {i + 1}/{repeat}: {run['status']} {run['seconds']:.2f} s "
                f"{run['peak_rss_mb']:.0f} MB {run.get('note', '')}",
                file=sys.stderr,
                flush=True,
            )
            if run["status"] != "ok":
                break
        rows.append(summarise(name, runs, info))
        shutil.rmtree(out / "parquet" / name, ignore_errors=True)

    table = format_table(rows)
    cpu = os.cpu_count()
    print(
        f"\n{info.items:,} items, {cpu} CPUs, median of {repeat}, whole-process wall time; "
        "peak RSS is the largest single process (an approach's own or one of its workers'), "
        f"load average before the run {load_before}\n"
    )
    print(table, flush=True)
    if os.environ.get("BENCH_STREAM", "1") != "0":
        # The stream records -> change rows benchmark, in the same output (its own process:
        # it pins itself to one core).
        subprocess.run([sys.executable, "-m", "bench.stream_records"], cwd=_REPO_ROOT, check=False)
    if os.environ.get("BENCH_SCALING", "1") != "0":
        # The same export converted by 1 and by 2 convert steps in parallel (bench/scaling.py).
        subprocess.run([sys.executable, "-m", "bench.scaling"], cwd=_REPO_ROOT, check=False)
    if os.environ.get("BENCH_SHARDS", "1") != "0":
        # One table of 1,000 open shards written 5,000 records/s on the Streams simulator with
        # 20-50 ms a call; records/s per shard with 2 KB and 300 KB items (bench/shards.py).
        quick = (
            []
            if items >= 1_000_000
            else ["--seconds", "30", "--per-shard", "2000:10000,300000:150"]
        )
        subprocess.run([sys.executable, "-m", "bench.shards", *quick], cwd=_REPO_ROOT, check=False)
    if os.environ.get("BENCH_MIRROR", "1") != "0":
        # Bytes a refresh of current rewrites for 0.1% of keys changed (1,000 of 1,000,000 at
        # the full size; 100 of 100,000 at the quick one).
        rows_ = 1_000_000 if items >= 1_000_000 else 100_000
        mirror = [
            "-m",
            "bench.mirror_refresh",
            "--rows",
            str(rows_),
            "--changes",
            str(rows_ // 1000),
        ]
        subprocess.run([sys.executable, *mirror], cwd=_REPO_ROOT, check=False)
    if os.environ.get("BENCH_FRESHNESS", "1") != "0":
        # Write -> readable row in changes, through the real demo (local AWS + dagster dev);
        # the quick size writes for 2 minutes, the full one for 5 (bench/freshness.py).
        env = dict(os.environ)
        if items < 1_000_000:
            env.setdefault("FRESH_WRITES", "16")
            env.setdefault("FRESH_SECONDS", "120")
        subprocess.run(
            [sys.executable, "-m", "bench.freshness"], cwd=_REPO_ROOT, check=False, env=env
        )
    results = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": cpu, "platform": platform.platform(), **_versions()},
        "export": asdict(info),
        "repeat": repeat,
        "approaches": APPROACHES,
        "rows": rows,
        "table": table,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    failed = [r["approach"] for r in rows if r["status"] == "failed"]
    return 1 if failed else 0


def _child(argv: list[str]) -> int:
    spec, export_dir, out_dir = argv
    try:
        func = load_approach(spec)
    except (ImportError, AttributeError) as exc:
        print(f"{spec} not available yet ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    items = func(export_dir, out_dir)
    print(json.dumps({"items": int(items)}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raise SystemExit(_child(sys.argv[2:]))
    raise SystemExit(main())
