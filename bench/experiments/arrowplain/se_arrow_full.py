"""(e) full typed + lossless conversion of one file with arrowplain (Arrow reader + compute), vs
the reference table (current fastconvert), plus Parquet write cost."""
import os as _os
REPO = _os.path.abspath(_os.path.join(_os.path.dirname(__file__), "..", "..", ".."))
HERE = _os.path.dirname(_os.path.abspath(__file__))

import gc, time, sys
from common import *
import orjson, pyarrow as pa, pyarrow.parquet as pq
from dynamo_cdc import fastconvert, schema
import arrowplain
gc.collect(); gc.freeze(); gc.disable()
data, lines = load_lines()
# reference: stats of the whole file -> schema; reference table chunkwise by the current fast path
stats = schema.SchemaStats(); ccs = []
for i in range(0, len(lines), 4096):
    items, texts = fastconvert.parse_item_lines(lines[i:i+4096]); cc = fastconvert.ChunkColumns(items, texts)
    stats = stats.merge(cc.stats()); ccs.append(cc)
target = schema.decide_schema(stats, ["pk", "sk"])
ref = pa.concat_tables([cc.table(target) for cc in ccs]).combine_chunks(); del ccs
BLOCK = int(sys.argv[1]) if len(sys.argv) > 1 else 8 << 20
def blocks():
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + BLOCK, len(data)) - 1)
        end = len(data) if end < 0 else end + 1
        yield data[pos:end]; pos = end
def run(threads):
    return pa.concat_tables([arrowplain.block_table(b, target, threads) for b in blocks()])
for threads in (False,):
    s, got = best(lambda: run(threads), 3)
    report(f"(e) Arrow reader+compute typed+lossless, block {BLOCK>>20} MB, use_threads={threads}", got.num_rows, s)
got = got.combine_chunks()
bad = [f.name for f in target if not got.column(f.name).equals(ref.column(f.name))]
print("columns differing from the reference:", bad)
for name in bad[:3]:
    a, b = got.column(name).to_pylist(), ref.column(name).to_pylist()
    i = next(i for i in range(len(a)) if a[i] != b[i]); print(name, i, repr(a[i])[:200], "|", repr(b[i])[:200])
# one-file wall including isal decompression and zstd Parquet write
def whole():
    from isal import igzip
    w = pq.ParquetWriter(HERE + "/out_e.parquet", target, compression="zstd",
                         use_dictionary=[f.name for f in target if f.name != "_item"])
    with igzip.open(F, "rb") as fh:
        rest = b""
        while True:
            blk = fh.read(BLOCK)
            if not blk: break
            blk = rest + blk; cut = blk.rfind(b"\n") + 1
            rest = blk[cut:]
            w.write_table(arrowplain.block_table(blk[:cut], target), 131072)
        if rest: w.write_table(arrowplain.block_table(rest, target), 131072)
    w.close()
s, _ = best(whole, 1)
report("(e) whole file: isal decompress + (e) + zstd Parquet write, 1 process", 125000, s)
