"""(b) plain JSON of M/L columns on one file: current recursive Python (fastconvert.plain +
one orjson.dumps per column) vs regex/bytes transform vs keeping DynamoDB JSON text. Checks
equality of the regex result with the reference codec.value_to_plain_json."""
import gc, time
from itertools import repeat
from common import *
import orjson, pyarrow as pa
from dynamo_cdc import fastconvert, codec
import mlplain
gc.collect(); gc.freeze(); gc.disable()
_, lines = load_lines()
items = [orjson.loads(l)["Item"] for l in lines]
N = len(items)
cols = ["customer", "line_items", "shipping", "dims", "promo"]
E = {}
vals = {c: list(map(dict.get, items, repeat(c))) for c in cols}
B = 4096
def run(fn):
    out = {}
    for c in cols:
        v = vals[c]; parts = []
        for i in range(0, N, B):
            parts.append(fn(v[i:i+B]))
        out[c] = parts
    return out
for name, fn in [("recursive Python plain() + 1 dumps/column/chunk (current)", lambda v: fastconvert._plain_json_column(v, v.count(None))),
                 ("regex/bytes transform of orjson.dumps(tagged)", mlplain.plain_column_regex),
                 ("keep DynamoDB JSON text (dumps sorted, NOT contract)", mlplain.tagged_column)]:
    s, out = best(lambda: run(fn), 3)
    report(f"(b) {name}", N, s)
    if "regex" in name:
        res = out
# correctness: regex vs reference per value
bad = 0; fb = 0
for c in cols:
    got = [x for a in res[c] if a is not None for x in a.to_pylist()] if all(a is not None for a in res[c]) else None
    if got is None:
        fb += 1; continue
    ref = [None if v is None else codec.value_to_plain_json(v) for v in vals[c]]
    bad += sum(a != b for a, b in zip(got, ref))
print("regex vs codec.value_to_plain_json mismatches:", bad, "columns with a fallback chunk:", fb)
# unit edge cases
cases = [{"M":{}}, {"L":[]}, {"M":{"a":{"S":'x"}}]}'}, "b":{"L":[{"M":{"c":{"N":"-0.5"}}},{"NULL":True},{"BOOL":False}]}}},
         {"L":[{"L":[{"L":[{"S":"deep"}]}]}]}, {"M":{"S":{"S":"x"}}}, {"M":{"a":{"N":"1.50"}}}, {"M":{"z":{"SS":["b","a"]}}},
         {"M":{"k\\":{"S":"\\"}, "u":{"S":"é\u0001"}}}, {"L":[{"M":{"x":{"M":{"y":{"M":{"z":{"M":{"w":{"M":{"v":{"N":"1"}}}}}}}}}}}]}]
for av in cases:
    a = mlplain.plain_column_regex([av, None, av])
    ref = codec.value_to_plain_json(av)
    print("fallback" if a is None else ("OK " if a.to_pylist() == [ref, None, ref] else "BAD"), ref[:70])
