import os as _os
REPO = _os.path.abspath(_os.path.join(_os.path.dirname(__file__), "..", "..", ".."))
HERE = _os.path.dirname(_os.path.abspath(__file__))

import gc, glob, time, os, sys, subprocess
sys.path.insert(0, REPO)
F = sorted(glob.glob(REPO + "/bench/out/export/AWSDynamoDB/*/data/*.json.gz"))[int(os.environ.get("PERFX_FILE", "0"))]
_CPU = [None]
def load_lines():
    from isal import igzip
    with igzip.open(F, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return data, lines
def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[1].strip()
def report(name, n, secs, extra="", cpu=None):
    cpu = _CPU[0] if cpu is None else cpu
    c = f" cpu {n/cpu:>9,.0f}/s" if cpu else ""
    print(f"{name:66s} wall {n/secs:>9,.0f} items/s{c}  ({secs:.3f}s) load[{uptime()}] {extra}", flush=True)
    _CPU[0] = None
def best(fn, reps=3):
    """min wall and min process CPU time over reps (CPU time is robust to other load on the
    machine for single-threaded code; wall is what counts when nothing else runs)."""
    ts, cs = [], []
    r = None
    for _ in range(reps):
        c = time.process_time(); t = time.perf_counter(); r = fn()
        ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
    _CPU[0] = min(cs)
    return min(ts), r
