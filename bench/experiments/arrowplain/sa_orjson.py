"""(a)/(d): orjson parse variants with the GC frozen+disabled, then per-attribute gathering
(one Python pass over items vs column-wise C-level map(dict.get)), then typed scalar columns with
pa.array + Arrow casts. One file, one process."""
import gc, time, binascii
from itertools import repeat
from collections import defaultdict
from common import *
import orjson, pyarrow as pa, pyarrow.compute as pc
data, lines = load_lines()
N = len(lines)
def gc_state(on):
    if on: gc.enable()
    else: gc.collect(); gc.freeze(); gc.disable()
for on in ((False,) if len(sys.argv) > 1 else (True, False)):
    gc_state(on)
    s, items = best(lambda: [orjson.loads(l) for l in lines], 3); del items
    report(f"(a) orjson.loads per line, gc {'ON' if on else 'frozen+disabled'}", N, s)
gc_state(False)
s, _ = best(lambda: list(map(orjson.loads, lines)), 3); report("(a) list(map(orjson.loads, lines)) gc off", N, s)
def block_loads(B=4096):
    out = []
    for i in range(0, N, B):
        out.extend(orjson.loads(b"[" + b",".join(lines[i:i+B]) + b"]"))
    return out
s, _ = best(block_loads, 3); report("(d) orjson.loads per 4,096-line block (joined as a JSON array)", N, s)
def block_loads_raw(B=8 << 20):
    out = []; pos = 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + B, len(data)) - 1); end = len(data) if end < 0 else end
        out.extend(orjson.loads(b"[" + data[pos:end].replace(b"\n", b",") + b"]")); pos = end + 1
    return out
s, _ = best(block_loads_raw, 3); report("(d) orjson.loads of 8 MB decompressed block, \\n->, replace", N, s)
docs = [orjson.loads(l) for l in lines]
items = [d["Item"] for d in docs]
# gathering
def one_pass():
    cols = defaultdict(lambda: [None] * N)
    for i, it in enumerate(items):
        for k, v in it.items():
            cols[k][i] = v
    return cols
s, cols = best(one_pass, 3); report("(a) one Python pass over items -> per-attribute lists", N, s)
def colwise():
    names = set().union(*items)
    return {n: list(map(dict.get, items, repeat(n))) for n in names}
s, cols = best(colwise, 3); report("(a) column-wise list(map(dict.get, items, repeat(name)))", N, s)
# typed scalar columns (S, N->decimal, BOOL, B, SS, NS), Arrow casts
def scalars():
    out = {}
    for n, tag, typ in [("pk","S",None),("sk","S",None),("order_id","S",None),("status","S",None),("created_at","S",None),
                        ("coupon","S",None),("gift_message","S",None),("is_paid","BOOL",pa.bool_()),
                        ("total","N",pa.decimal128(7,2)),("ledger_id","N",pa.decimal128(38,0))]:
        v = cols[n]; raw = [None if x is None else x.get(tag) for x in v] if None in v else list(map(dict.get, v, repeat(tag)))
        a = pa.array(raw, pa.bool_() if tag == "BOOL" else pa.string())
        out[n] = pc.cast(a, typ) if tag == "N" else a
    v = cols["thumbnail"]; out["thumbnail"] = pa.array([None if x is None else binascii.a2b_base64(x["B"], strict_mode=True) for x in v], pa.binary())
    v = cols["tags"]; out["tags"] = pa.array([None if x is None else sorted(x["SS"]) for x in v], pa.list_(pa.string()))
    return out
s, _ = best(scalars, 3); report("(a) typed scalar columns: dict.get + pa.array + Arrow cast (S/N/BOOL/B/SS)", N, s)
s, _ = best(lambda: pc.binary_slice(pa.array(lines, pa.binary()), 8, -1).cast(pa.string()), 3); report("(a) _item: pa.array(lines) + binary_slice", N, s)
