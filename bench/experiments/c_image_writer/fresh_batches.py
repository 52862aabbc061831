"""Stream records -> change rows on fresh batches of 1,000 (see README.md). PYTHONPATH=. python ...."""
import time, sys, copy, pickle
from bench.stream_records import generate_records
from dynamo_cdc import changes
keys=[("pk","S"),("sk","S")]
pool = pickle.dumps(generate_records(1000, seed=3))
res = {True: [], False: []}
for rep in range(40):
    for native in (True, False):
        recs = pickle.loads(pool)  # fresh objects, as botocore's parser makes them per response
        changes.NATIVE = native
        t=time.perf_counter(); changes.records_to_table(recs, keys, shard_ids="s"); t1=time.perf_counter()
        res[native].append(t1-t)
import statistics
for k,v in res.items(): print("native" if k else "python", f"{1e6*statistics.median(v)/1000:.2f} us/record fresh batch of 1000")
