"""Side costs for (e): pyarrow.json.read_json variants on nested DynamoDB JSON, and Parquet write
settings for the typed table (one file, one process)."""
import os as _os
REPO = _os.path.abspath(_os.path.join(_os.path.dirname(__file__), "..", "..", ".."))
HERE = _os.path.dirname(_os.path.abspath(__file__))

import gc, io, pickle
from common import *
import pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq
import arrowplain
gc.collect(); gc.freeze(); gc.disable()
data, lines = load_lines()
target = pickle.load(open(HERE + "/target_schema.pkl", "rb"))
BLOCK = 8 << 20
blocks = []; pos = 0
while pos < len(data):
    end = data.find(b"\n", min(pos + BLOCK, len(data)) - 1); end = len(data) if end < 0 else end + 1
    blocks.append(data[pos:end]); pos = end
arrowplain._read(blocks[0], False)
learned = arrowplain._SCHEMA[0]
def rd(po, thr=False):
    return [pj.read_json(io.BytesIO(b), read_options=pj.ReadOptions(use_threads=thr, block_size=1 << 26), parse_options=po) for b in blocks]
s, _ = best(lambda: rd(pj.ParseOptions(explicit_schema=learned, unexpected_field_behavior="infer")), 3)
report("read_json 8MB blocks, explicit learned nested schema + infer", 125000, s)
s, _ = best(lambda: rd(pj.ParseOptions(explicit_schema=learned, unexpected_field_behavior="ignore")), 3)
report("read_json 8MB blocks, explicit learned nested schema + ignore", 125000, s)
s, _ = best(lambda: rd(None), 3)
report("read_json 8MB blocks, fully inferred (timestamps!)", 125000, s)
s, _ = best(lambda: [pj.read_json(io.BytesIO(b), read_options=pj.ReadOptions(use_threads=True, block_size=1 << 20), parse_options=pj.ParseOptions(explicit_schema=learned, unexpected_field_behavior="infer")) for b in blocks], 3)
report("read_json 8MB blocks, learned schema, use_threads=True 1MB chunks", 125000, s, cpu=0)
tables = [arrowplain.block_table(b, target) for b in blocks]
tbl = pa.concat_tables(tables)
def write(**kw):
    with pq.ParquetWriter(HERE + "/w.parquet", target, **kw) as w:
        for t in tables: w.write_table(t, 131072)
dict_cols = [f.name for f in target if f.name != "_item"]
lowcard = [f.name for f in target if f.name in ("status", "coupon", "is_paid", "gift_message", "revision", "tags", "ratings", "total")]
for name, kw in [("zstd(default level 1) dict all-but-_item (current)", dict(compression="zstd", use_dictionary=dict_cols)),
                 ("zstd, dictionary only low-cardinality columns", dict(compression="zstd", use_dictionary=lowcard)),
                 ("snappy, dict all-but-_item", dict(compression="snappy", use_dictionary=dict_cols)),
                 ("none, no dict", dict(compression="none", use_dictionary=False))]:
    s, _ = best(lambda: write(**kw), 2)
    report(f"Parquet write: {name}", 125000, s, f"{os.path.getsize(HERE + '/w.parquet')/1e6:.0f} MB")
from isal import igzip
def dec():
    with igzip.open(F, "rb") as fh:
        while fh.read(BLOCK): pass
s, _ = best(dec, 3); report("isal decompression of the file (8 MB reads)", 125000, s)
os.unlink(HERE + "/w.parquet")
