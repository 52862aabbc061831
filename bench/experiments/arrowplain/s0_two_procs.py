"""Current converter (snapshot.convert_data_file), K files on P processes, for comparison."""
import os as _os
REPO = _os.path.abspath(_os.path.join(_os.path.dirname(__file__), "..", "..", ".."))
HERE = _os.path.dirname(_os.path.abspath(__file__))

import sys, time, glob, os, tempfile, shutil
from multiprocessing import get_context
sys.path.insert(0, HERE)
from common import *
FILES = sorted(glob.glob(REPO + "/bench/out/export/AWSDynamoDB/*/data/*.json.gz"))
class D: item_count = 125000; key = "k"
def conv(i):
    from dynamo_cdc import snapshot
    out = tempfile.mkdtemp()
    snapshot.convert_data_file(i, FILES[i], D(), "DYNAMODB_JSON", "f", ["pk", "sk"], out, {})
    shutil.rmtree(out); return 125000
if __name__ == "__main__":
    P, K = int(sys.argv[1]), int(sys.argv[2])
    t = time.perf_counter()
    with get_context("spawn").Pool(P) as pool:
        n = sum(pool.map(conv, range(K), chunksize=1))
    report(f"current convert_data_file, {K} files, {P} processes", n, time.perf_counter() - t)
