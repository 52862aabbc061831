"""Bytes a refresh of ``current`` writes after a few changes, against the naive full rewrite,
and bytes the publish of the plain Iceberg ``current`` writes after the same changes.

    python -m bench.mirror_refresh [--rows 1000000] [--changes 1000] [--buckets 64]

Builds a snapshot partition of ``--rows`` items in a temporary lake (laid out as
``dynamo_cdc.snapshot`` publishes it), bootstraps ``current``, lands ``--changes`` stream
changes to random keys as one change file, refreshes, and prints rows, buckets, the bytes the
refresh wrote, the mirror's bytes, and their ratio. The naive baseline (rewrite the whole mirror
on every refresh) writes the mirror's bytes: ratio 1.0.

Then the Iceberg ``current`` (:func:`dynamo_cdc.catalog.publish_current`, embedded SQLite
catalog): published once after the bootstrap, then again after the changes; it prints the
Parquet bytes the second publish wrote (only the buckets holding a changed key are rewritten,
copy on write), the Iceberg metadata bytes it wrote (manifests, manifest list, table metadata),
the buckets it rewrote and the ratio to the Iceberg table's data bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from dynamo_cdc import catalog, convert, schema
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.convert import records_to_table
from dynamo_cdc.lake import Lake
from dynamo_cdc.mirror import refresh_current

TABLE = "bench"
EXPORT_TIME = datetime(2024, 3, 1, 12, tzinfo=UTC)


def _item(i: int, rng: random.Random) -> dict:
    return {
        "pk": {"S": f"user-{i:09d}"},
        "name": {"S": f"name {rng.random():.12f}"},
        "amount": {"N": f"{rng.randrange(10**6)}.{rng.randrange(100):02d}"},
        "qty": {"N": str(rng.randrange(100))},
        "status": {"S": rng.choice(["new", "paid", "shipped"])},
    }


def build_snapshot(lake: Lake, rows: int, seed: int, chunk: int = 200_000) -> None:
    rng = random.Random(seed)
    rel = lake.table_path(TABLE, "snapshot", f"export_date={EXPORT_TIME:%Y-%m-%d}")
    folder = Path(lake.uri(rel))
    folder.mkdir(parents=True, exist_ok=True)
    probe = [_item(i, random.Random(0)) for i in range(10)]
    target = schema.decide_schema(schema.SchemaStats.of(probe), ["pk"])
    names = []
    for start in range(0, rows, chunk):
        items = [_item(i, rng) for i in range(start, min(rows, start + chunk))]
        name = f"part-{start // chunk:05d}-000.parquet"
        pq.write_table(convert.items_to_table(items, target), folder / name, compression="zstd")
        names.append(name)
    lineage = {
        "export_time": EXPORT_TIME.isoformat().replace("+00:00", "Z"),
        "export_arn": "arn:bench",
        "files": names,
        "key_attributes": ["pk"],
        "rows": rows,
    }
    lake.write_bytes(f"{rel}/_lineage.json", json.dumps(lineage).encode())


def land_changes(lake: Lake, rows: int, changes: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    records = []
    for n, i in enumerate(rng.sample(range(rows), changes)):
        new = _item(i, rng)
        records.append(
            {
                "eventID": f"e{n}",
                "eventName": "MODIFY",
                "dynamodb": {
                    "Keys": {"pk": new["pk"]},
                    "NewImage": new,
                    "SequenceNumber": str(10**20 + n),
                    "ApproximateCreationDateTime": EXPORT_TIME + timedelta(minutes=5),
                },
            }
        )
    write_change_batch(lake, TABLE, records_to_table(records, [("pk", "S")], shard_ids="s-1"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=1_000)
    parser.add_argument("--buckets", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    os.environ["DYNAMO_CDC_ICEBERG"] = "off"  # the refreshes alone; the publishes measured apart
    iceberg = catalog.IcebergSettings(kind="sql")
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        lake = Lake(tmp)
        t0 = time.perf_counter()
        build_snapshot(lake, args.rows, args.seed)
        t1 = time.perf_counter()
        boot = refresh_current(lake, TABLE, bucket_count=args.buckets)
        t2 = time.perf_counter()
        first = catalog.publish_current(lake, TABLE, iceberg)
        t3 = time.perf_counter()
        land_changes(lake, args.rows, args.changes, args.seed)
        t4 = time.perf_counter()
        result = refresh_current(lake, TABLE, bucket_count=args.buckets)
        t5 = time.perf_counter()
        metadata = lake.table_path(TABLE, "_iceberg", "current", "metadata")
        before = _sizes(lake, metadata)
        publish = catalog.publish_current(lake, TABLE, iceberg)
        t6 = time.perf_counter()
        metadata_bytes = sum(n for rel, n in _sizes(lake, metadata).items() if rel not in before)
        data = lake.table_path(TABLE, "_iceberg", "current", "data")
        live = {
            df.file_path
            for df in catalog._live_files(catalog.load_table(lake, TABLE, "current", iceberg))
        }
        iceberg_bytes = sum(
            n for rel, n in _sizes(lake, data).items() if f"file://{lake.uri(rel)}" in live
        )
    out = {
        "rows": result.rows,
        "buckets": result.buckets,
        "changes": result.changes_applied,
        "bytes_written": result.bytes_written,
        "mirror_bytes": result.bytes_total,
        "ratio": round(result.bytes_written / result.bytes_total, 5),
        "naive_full_rewrite_ratio": 1.0,
        "snapshot_seconds": round(t1 - t0, 2),
        "bootstrap_seconds": round(t2 - t1, 2),
        "bootstrap_bytes": boot.bytes_written,
        "refresh_seconds": round(t5 - t4, 2),
        "iceberg_first_publish_bytes": first.bytes_written,
        "iceberg_first_publish_seconds": round(t3 - t2, 2),
        "iceberg_publish_buckets": len(publish.buckets),
        "iceberg_publish_data_bytes": publish.bytes_written,
        "iceberg_publish_metadata_bytes": metadata_bytes,
        "iceberg_table_bytes": iceberg_bytes,
        "iceberg_publish_ratio": round(
            (publish.bytes_written + metadata_bytes) / max(iceberg_bytes, 1), 5
        ),
        "iceberg_publish_seconds": round(t6 - t5, 2),
    }
    for k, v in out.items():
        print(f"{k:>26}: {v}")  # noqa: T201 - a benchmark prints its figures
    return out


def _sizes(lake: Lake, rel: str) -> dict[str, int]:
    return {r: Path(lake.uri(r)).stat().st_size for r in lake.list(rel)}


if __name__ == "__main__":
    main()
