"""Per-column cost of the current fast path's table() (fastconvert._Column.array)."""
import gc, time
from common import *
from pathlib import Path
from collections import defaultdict
from dynamo_cdc import fastconvert, schema
gc.collect(); gc.freeze(); gc.disable()
_, lines = load_lines()
stats = schema.SchemaStats(); per = defaultdict(float); tparse=0
for i in range(0, len(lines), 4096):
    ch = lines[i:i+4096]
    t=time.perf_counter(); items, texts = fastconvert.parse_item_lines(ch); tparse+=time.perf_counter()-t
    t=time.perf_counter(); cc = fastconvert.ChunkColumns(items, texts); per["<gather+stats>"]+=time.perf_counter()-t
    stats = stats.merge(cc.stats()); sch = schema.decide_schema(stats, ["pk","sk"])
    for f in sch:
        t=time.perf_counter()
        if f.name == "_item":
            pa.array(texts, pa.binary()).cast(pa.string()) if False else None
            import pyarrow as pa; pa.array(texts, pa.binary()).cast(pa.string())
        else:
            cc.columns[f.name].array(f)
        per[f"{f.name} [{f.type}]"] += time.perf_counter()-t
print("schema:", sch)
print(f"parse {tparse:.3f}s")
for k,v in sorted(per.items(), key=lambda kv:-kv[1]): print(f"{v:8.3f}s  {k}")
print("load", uptime())
