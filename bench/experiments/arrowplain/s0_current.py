"""Baseline: the project's current converter (convert_data_file) on one data file, 1 process,
plus a stage breakdown of the fast path (decompress/split, orjson.loads, ChunkColumns/stats, table)."""
import os as _os
REPO = _os.path.abspath(_os.path.join(_os.path.dirname(__file__), "..", "..", ".."))
HERE = _os.path.dirname(_os.path.abspath(__file__))

import gc, time, tempfile, json, os
from common import *
from pathlib import Path
from dynamo_cdc import snapshot, fastconvert, schema
from dynamo_cdc.export import DataFile

def whole():
    out = tempfile.mkdtemp()
    df = DataFile.__new__(DataFile)
    t = time.perf_counter()
    try:
        snapshot.convert_data_file(0, F, type("D", (), {"item_count":125000, "key":"k"})(), "DYNAMODB_JSON", "f", ["pk","sk"], out, {})
    except Exception as e:
        print("err", e)
    s = time.perf_counter() - t
    os.system(f"rm -rf {out}")
    return s
s = whole(); report("current convert_data_file (incl parquet write)", 125000, s)

gc.collect(); gc.freeze(); gc.disable()
t=time.perf_counter(); chunks = list(fastconvert.iter_line_chunks(Path(F), 4096)); t1=time.perf_counter()-t
report("  stage: decompress+split (iter_line_chunks)", 125000, t1)
tp=tc=tt=0; stats=schema.SchemaStats()
for lines in chunks:
    t=time.perf_counter(); items, texts = fastconvert.parse_item_lines(lines); tp+=time.perf_counter()-t
    t=time.perf_counter(); cc = fastconvert.ChunkColumns(items, texts); st=cc.stats(); stats=stats.merge(st); sch=schema.decide_schema(stats,["pk","sk"]); tc+=time.perf_counter()-t
    t=time.perf_counter(); tb = cc.table(sch); tt+=time.perf_counter()-t
    del items, texts, cc, tb
report("  stage: parse_item_lines (orjson.loads+checks)", 125000, tp)
report("  stage: ChunkColumns+stats+decide_schema", 125000, tc)
report("  stage: table()", 125000, tt)
