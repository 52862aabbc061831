"""(e) end to end (isal decompress -> arrowplain -> zstd Parquet) on K files with P processes.
Usage: se_two_procs.py P K   (schema decided once from file 0's reference stats, for the test)."""
import os as _os
REPO = _os.path.abspath(_os.path.join(_os.path.dirname(__file__), "..", "..", ".."))
HERE = _os.path.dirname(_os.path.abspath(__file__))

import sys, time, glob, gc, os
from multiprocessing import get_context
sys.path.insert(0, HERE)
from common import *
FILES = sorted(glob.glob(REPO + "/bench/out/export/AWSDynamoDB/*/data/*.json.gz"))
BLOCK = 8 << 20
def target_schema():
    from dynamo_cdc import fastconvert, schema
    import pickle, os
    p = HERE + "/target_schema.pkl"
    if os.path.exists(p):
        return pickle.load(open(p, "rb"))
    _, lines = load_lines(); stats = schema.SchemaStats()
    for i in range(0, len(lines), 16384):
        items, texts = fastconvert.parse_item_lines(lines[i:i+16384]); stats = stats.merge(fastconvert.ChunkColumns(items, texts).stats())
    s = schema.decide_schema(stats, ["pk", "sk"]); pickle.dump(s, open(p, "wb")); return s
def convert(args):
    path, target, out = args
    gc.collect(); gc.freeze(); gc.disable()
    import arrowplain, pyarrow.parquet as pq
    from isal import igzip
    t = time.perf_counter(); n = 0
    w = pq.ParquetWriter(out, target, compression="zstd", use_dictionary=[f.name for f in target if f.name != "_item"])
    with igzip.open(path, "rb") as fh:
        rest = b""
        while True:
            blk = fh.read(BLOCK)
            if not blk: break
            blk = rest + blk; cut = blk.rfind(b"\n") + 1; rest = blk[cut:]
            tb = arrowplain.block_table(blk[:cut], target); n += tb.num_rows; w.write_table(tb, 131072)
        if rest: tb = arrowplain.block_table(rest, target); n += tb.num_rows; w.write_table(tb, 131072)
    w.close(); os.unlink(out)
    return n, time.perf_counter() - t
if __name__ == "__main__":
    P, K = int(sys.argv[1]), int(sys.argv[2])
    target = target_schema()
    t = time.perf_counter()
    with get_context("spawn").Pool(P) as pool:
        res = pool.map(convert, [(FILES[i], target, fHERE + "/out_{i}.parquet") for i in range(K)], chunksize=1)
    s = time.perf_counter() - t
    n = sum(r[0] for r in res)
    report(f"(e) end-to-end {K} files, {P} processes (incl. spawn, zstd Parquet)", n, s)
