"""Where the regex transform's time goes (one file, all M/L columns)."""
import gc, time
from itertools import repeat
from common import *
import orjson, mlplain
gc.collect(); gc.freeze(); gc.disable()
_, lines = load_lines()
items = [orjson.loads(l)["Item"] for l in lines]
cols = ["customer", "line_items", "shipping", "dims", "promo"]
blobs = []
t = time.perf_counter()
for c in cols:
    v = list(map(dict.get, items, repeat(c)))
    for i in range(0, len(v), 4096):
        ch = v[i:i+4096]; objs = [None]*(2*len(ch)-1); objs[1::2] = repeat("\x01", len(ch)-1); objs[::2] = ch
        blobs.append(orjson.dumps(objs, option=orjson.OPT_SORT_KEYS))
report("gather + orjson.dumps(tagged, sorted) per column chunk", len(items), time.perf_counter()-t, f"{sum(map(len,blobs))/1e6:.0f} MB")
def step(name, fn):
    global blobs
    t = time.perf_counter(); blobs = [fn(b) for b in blobs]; report("  " + name, len(items), time.perf_counter()-t)
step("_AMBIG.search + bad checks", lambda b: (mlplain._AMBIG.search(b), b)[1])
step("NULL replace", lambda b: b.replace(b'{"NULL":true}', b"null"))
step("_SCALAR.sub(itemgetter(1))", lambda b: mlplain._SCALAR.sub(mlplain._G1, b))
step("_CONTAINER.sub pass 1", lambda b: mlplain._CONTAINER.sub(mlplain._G1, b))
step("_CONTAINER.sub pass 2", lambda b: mlplain._CONTAINER.sub(mlplain._G1, b))
print(sum(b.count(b'{"M":') + b.count(b'{"L":') for b in blobs), "wrappers left")
