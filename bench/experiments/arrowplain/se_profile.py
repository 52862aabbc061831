"""Per-stage / per-column cost of arrowplain on one file."""
import gc, time, io
from collections import defaultdict
from common import *
import pyarrow as pa, pyarrow.compute as pc
from dynamo_cdc import fastconvert, schema
import arrowplain
gc.collect(); gc.freeze(); gc.disable()
data, lines = load_lines()
stats = schema.SchemaStats()
for i in range(0, len(lines), 16384):
    items, texts = fastconvert.parse_item_lines(lines[i:i+16384]); stats = stats.merge(fastconvert.ChunkColumns(items, texts).stats())
target = schema.decide_schema(stats, ["pk", "sk"])
BLOCK = 8 << 20
blocks = []; pos = 0
while pos < len(data):
    end = data.find(b"\n", min(pos + BLOCK, len(data)) - 1); end = len(data) if end < 0 else end + 1
    blocks.append(data[pos:end]); pos = end
per = defaultdict(float)
for b in blocks:
    t0 = time.perf_counter(); arr = pc.split_pattern(pa.array([b[:-1]], pa.large_binary()), b"\n").values; arrowplain._NO_ESCAPES[0] = b"\\" not in b; per["split lines (Arrow)"] += time.perf_counter() - t0
    t0 = time.perf_counter(); t = arrowplain._read(b, False); per["read_json (inferred)"] += time.perf_counter() - t0
    item = t.column("Item").combine_chunks()
    for f in target:
        t0 = time.perf_counter()
        if f.name == "_item": pc.binary_slice(arr, 8, -1).cast(pa.string())
        elif item.type.get_field_index(f.name) >= 0: arrowplain.typed_column(item.field(f.name), f)
        per[f"{f.name} [{f.metadata[b'dynamodb_type'].decode() if f.metadata else ''}]"] += time.perf_counter() - t0
tot = sum(per.values())
for k, v in sorted(per.items(), key=lambda kv: -kv[1]): print(f"{v:7.3f}s {v/tot*100:5.1f}%  {k}")
print(f"total {tot:.3f}s = {125000/tot:,.0f} items/s  load[{uptime()}]")
