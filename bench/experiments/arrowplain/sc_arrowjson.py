"""(c) pyarrow.json.read_json on one file with an explicit schema of the scalar tags
(S/N/BOOL/NULL/B as string/bool, SS/NS/BS as list<string>), unexpected_field_behavior='ignore'
(drops M/L and the lossless text), use_threads on/off. Reads the gzip directly (Arrow inflates)
and from decompressed bytes in memory."""
import gc, time, io
from common import *
import pyarrow as pa, pyarrow.json as pj, pyarrow.compute as pc
S = pa.struct([("S", pa.string())]); Nn = pa.struct([("N", pa.string())])
def tag(t): return pa.struct([(t, pa.string() if t in "SNB" else pa.bool_())])
item = pa.struct([
    ("pk", tag("S")), ("sk", tag("S")), ("order_id", tag("S")), ("status", tag("S")), ("created_at", tag("S")),
    ("coupon", tag("S")), ("gift_message", tag("S")), ("total", tag("N")), ("ledger_id", tag("N")),
    ("revision", pa.struct([("S", pa.string()), ("N", pa.string())])),
    ("tags", pa.struct([("SS", pa.list_(pa.string()))])), ("ratings", pa.struct([("NS", pa.list_(pa.string()))])),
    ("is_paid", tag("BOOL")), ("thumbnail", tag("B")),
])
sch = pa.schema([("Item", item)])
data, lines = load_lines()
for threads in (True, False):
    po = pj.ParseOptions(explicit_schema=sch, unexpected_field_behavior="ignore")
    ro = pj.ReadOptions(use_threads=threads, block_size=16 << 20)
    s, t = best(lambda: pj.read_json(F, read_options=ro, parse_options=po), 3)
    report(f"(c) read_json(gzip file) scalar tags, use_threads={threads}", t.num_rows, s)
    s, t = best(lambda: pj.read_json(io.BytesIO(data), read_options=ro, parse_options=po), 3)
    report(f"(c) read_json(decompressed bytes) scalar tags, use_threads={threads}", t.num_rows, s)
# post-processing to typed columns (cast N, flatten)
def post(t):
    it = t.column("Item").combine_chunks()
    out = {}
    for f in item:
        col = it.field(f.name)
        if f.name in ("total",):
            out[f.name] = pc.cast(col.field("N"), pa.decimal128(7, 2))
        elif f.name == "ledger_id":
            out[f.name] = pc.cast(col.field("N"), pa.decimal128(38, 0))
        else:
            out[f.name] = col.field(0)
    return out
ro = pj.ReadOptions(use_threads=False, block_size=16 << 20)
po = pj.ParseOptions(explicit_schema=sch, unexpected_field_behavior="ignore")
t = pj.read_json(io.BytesIO(data), read_options=ro, parse_options=po)
s, _ = best(lambda: post(t), 3)
report("(c) + flatten/cast of the scalar columns (Arrow compute)", t.num_rows, s)
# _item text: line slices via Arrow compute
def item_col():
    arr = pa.array(lines, pa.binary())
    ok = pc.all(pc.starts_with(arr.cast(pa.string()), '{"Item":')).as_py()
    return pc.binary_slice(arr, 8, -1).cast(pa.string()), ok
s, _ = best(item_col, 3)
report("    _item = pc.binary_slice(lines,8,-1) (+prefix check)", len(lines), s)
