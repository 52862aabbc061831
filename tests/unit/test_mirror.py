"""The ``current`` mirror on a local lake, no server: snapshot + change files -> one row per key.

Snapshot partitions and change files are written here exactly as the snapshot and changes
modules lay them out; a dict model of the table is the expected answer.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from dynamo_cdc import codec, convert, read_table, schema
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.convert import records_to_table
from dynamo_cdc.lake import Lake
from dynamo_cdc.mirror import (
    bucket_of,
    choose_bucket_count,
    duckdb_query,
    key_text,
    load_pointer,
    read_current,
    refresh_current,
    stats_from_schema,
)

TABLE = "orders"
KEYS = [("pk", "S"), ("sk", "N")]
KEY_NAMES = [k for k, _ in KEYS]
T_EXPORT = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def item(pk: str, sk: int, **attrs: dict[str, Any]) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}, **attrs}


def write_snapshot(lake: Lake, items: list[dict], when: datetime = T_EXPORT, files: int = 2):
    """A snapshot partition laid out as dynamo_cdc.snapshot publishes it."""
    date = when.strftime("%Y-%m-%d")
    rel = lake.table_path(TABLE, "snapshot", f"export_date={date}")
    data_schema = schema.decide_schema(schema.SchemaStats.of(items), KEY_NAMES)
    names = []
    chunk = max(1, -(-len(items) // files))
    for i in range(0, max(len(items), 1), chunk):
        part = items[i : i + chunk]
        name = f"part-{i // chunk:05d}-000.parquet"
        path = Path(lake.uri(rel)) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(convert.items_to_table(part, data_schema), path)
        names.append(name)
    lineage = {
        "export_time": when.isoformat().replace("+00:00", "Z"),
        "export_arn": f"arn:export/{when.timestamp()}",
        "files": names,
        "key_attributes": KEY_NAMES,
        "rows": len(items),
    }
    lake.write_bytes(f"{rel}/_lineage.json", json.dumps(lineage).encode())


class Stream:
    """Stream records with increasing sequence numbers, written as change files."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.seq = 10**20
        self.model: dict[str, dict] = {}

    def record(self, event: str, new: dict | None, old: dict | None, when: datetime) -> dict:
        self.seq += 7
        image = new or old
        assert image is not None
        keys = {k: image[k] for k in KEY_NAMES}
        d: dict[str, Any] = {
            "Keys": keys,
            "SequenceNumber": str(self.seq),
            "ApproximateCreationDateTime": when.replace(microsecond=0),
        }
        if new is not None:
            d["NewImage"] = new
        if old is not None:
            d["OldImage"] = old
        return {"eventID": f"e{self.seq}", "eventName": event, "dynamodb": d}

    def put(self, new: dict, when: datetime) -> dict:
        k = key_text(new, KEY_NAMES)
        old = self.model.get(k)
        self.model[k] = new
        return self.record("MODIFY" if old else "INSERT", new, old, when)

    def delete(self, keys: dict, when: datetime) -> dict:
        k = key_text(keys, KEY_NAMES)
        old = self.model.pop(k, None)
        return self.record("REMOVE", None, old or keys, when)

    def land(self, records: list[dict], shard: str = "shardId-1") -> list[str]:
        rows = records_to_table(records, KEYS, shard_ids=shard)
        return write_change_batch(self.lake, TABLE, rows)


def items_of(table) -> dict[str, dict]:
    out = {}
    for text in table.column("_item").to_pylist():
        it = codec.item_from_json_text(text)
        out[key_text(it, KEY_NAMES)] = codec.deserialize_item(it)
    return out


def expected(model: dict[str, dict]) -> dict[str, dict]:
    return {k: codec.deserialize_item(v) for k, v in model.items()}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def start(lake: Lake, n: int = 50) -> Stream:
    stream = Stream(lake)
    items = [item("p", i, v={"N": str(i)}, name={"S": f"n{i}"}) for i in range(n)]
    for it in items:
        stream.model[key_text(it, KEY_NAMES)] = it
    write_snapshot(lake, items)
    return stream


def test_bootstrap_alone_equals_the_snapshot_with_typed_columns(lake):
    stream = start(lake)

    result = refresh_current(lake, TABLE, bucket_count=4)
    current = read_current(lake, TABLE)

    assert result.rows == 50 and result.version == 1 and result.rebuilt
    assert items_of(current) == expected(stream.model)
    assert str(current.schema.field("sk").type) == "int64"
    assert current.column_names[-2:] == ["_change_time", "_sequence_number"]
    assert read_table(lake.root, TABLE, "current").num_rows == 50


def test_changes_after_export_minus_margin_are_applied_and_older_ones_ignored(lake):
    stream = start(lake)
    t = T_EXPORT
    before_margin = stream.record(
        "MODIFY", item("p", 1, v={"N": "-1"}), None, t - timedelta(hours=1)
    )
    stream.land([before_margin])
    stream.land(
        [
            stream.put(item("p", 2, v={"N": "20"}), t - timedelta(seconds=30)),
            stream.delete(item("p", 3), t + timedelta(seconds=5)),
            stream.put(item("q", 1, v={"N": "1.5"}), t + timedelta(seconds=6)),
            stream.put(item("p", 2, v={"N": "21"}), t + timedelta(seconds=6)),
        ]
    )

    result = refresh_current(lake, TABLE, bucket_count=4)
    current = read_current(lake, TABLE)

    assert items_of(current) == expected(stream.model)
    assert result.changes_applied == 4
    # q/1 brought a fraction: the v column widened from int64 to decimal, every file rewritten.
    assert result.schema_changed
    assert str(current.schema.field("v").type) == "decimal128(3, 1)"


def test_a_late_file_with_older_records_never_overwrites_newer_rows_or_resurrects(lake):
    stream = start(lake)
    t = T_EXPORT + timedelta(minutes=10)
    old_put = stream.record("MODIFY", item("p", 5, v={"N": "500"}), None, t)
    old_insert = stream.record("INSERT", item("p", 6, v={"N": "600"}), None, t)
    stream.land(
        [
            stream.put(item("p", 5, v={"N": "501"}), t + timedelta(seconds=1)),
            stream.delete(item("p", 6), t + timedelta(seconds=1)),
        ],
        shard="shardId-2",
    )
    stream.model[key_text(item("p", 5), KEY_NAMES)] = item("p", 5, v={"N": "501"})
    refresh_current(lake, TABLE, bucket_count=4)

    stream.land([old_put, old_insert], shard="shardId-1")  # older records, landed later
    result = refresh_current(lake, TABLE, bucket_count=4)

    assert result.change_files_applied == 1
    assert items_of(read_current(lake, TABLE)) == expected(stream.model)


def test_refresh_without_new_change_files_keeps_the_version_and_writes_nothing(lake):
    start(lake)
    first = refresh_current(lake, TABLE, bucket_count=4)

    again = refresh_current(lake, TABLE, bucket_count=4)

    assert again.version == first.version
    assert again.bytes_written == 0 and again.changes_applied == 0


def test_reapplying_renamed_change_files_is_idempotent(lake):
    stream = start(lake)
    paths = stream.land(
        [stream.put(item("p", i, v={"N": str(i + 1000)}), T_EXPORT) for i in range(10)]
    )
    refresh_current(lake, TABLE, bucket_count=4)
    for rel in paths:  # an hour compaction renames files: the mirror applies them again
        data = lake.read_bytes(rel)
        lake.delete(rel)
        lake.write_bytes(rel.replace("shardId-1", "compacted-x"), data)

    result = refresh_current(lake, TABLE, bucket_count=4)

    assert result.change_files_applied == len(paths)
    assert items_of(read_current(lake, TABLE)) == expected(stream.model)
    state = load_pointer(lake, TABLE)
    assert state is not None and state["rows"] == 50


def test_a_newer_snapshot_rebuilds_from_it(lake):
    start(lake)
    refresh_current(lake, TABLE, bucket_count=4)
    later = T_EXPORT + timedelta(days=1)
    write_snapshot(lake, [item("z", 1, v={"N": "1"})], when=later, files=1)

    result = refresh_current(lake, TABLE, bucket_count=4)

    assert result.rebuilt and result.rows == 1
    assert list(items_of(read_current(lake, TABLE))) == [key_text(item("z", 1), KEY_NAMES)]


def test_duckdb_one_line_query_reads_exactly_the_pointers_version(lake):
    stream = start(lake)
    refresh_current(lake, TABLE, bucket_count=4)
    stream.land(
        [stream.delete(item("p", 1), T_EXPORT), stream.put(item("p", 2, v={"N": "9"}), T_EXPORT)]
    )
    refresh_current(lake, TABLE, bucket_count=4, compact_ratio=1.0)
    pointer = load_pointer(lake, TABLE)
    assert pointer is not None and pointer["deltas"] == 1  # merge on read is exercised

    con = duckdb.connect()
    rows = con.sql(duckdb_query(lake, TABLE)).to_arrow_table()

    assert items_of(rows) == expected(stream.model)
    assert sorted(rows.column_names) == sorted(read_current(lake, TABLE).column_names)


def test_compaction_merges_deltas_and_drops_only_old_tombstones(lake):
    stream = start(lake)
    refresh_current(lake, TABLE, bucket_count=4)
    t = T_EXPORT + timedelta(hours=1)
    stream.land([stream.delete(item("p", 7), t)])
    refresh_current(lake, TABLE, bucket_count=4, compact_ratio=1.0)
    stream.land([stream.put(item("p", 8, v={"N": "1"}), t + timedelta(hours=3))])

    result = refresh_current(lake, TABLE, bucket_count=4, compact_ratio=0.0, tombstone_seconds=3600)

    assert result.compacted
    pointer = load_pointer(lake, TABLE)
    assert pointer is not None and pointer["deltas"] == 0
    files = [lake.uri(f"{TABLE}/current/{f}") for f in pointer["files"]]
    raw = pq.read_table(files)
    assert raw.num_rows == 49  # the tombstone of p/7 is older than 1 h: gone
    assert items_of(read_current(lake, TABLE)) == expected(stream.model)


def test_replaced_versions_are_deleted_after_the_grace_period_but_never_the_previous(lake):
    stream = start(lake)
    refresh_current(lake, TABLE, bucket_count=2, now=1000.0)
    for i in range(3):
        stream.land([stream.put(item("p", i, v={"N": "7"}), T_EXPORT + timedelta(minutes=i))])
        refresh_current(lake, TABLE, bucket_count=2, now=1000.0 + i)
    root = Path(lake.uri(f"{TABLE}/current"))
    assert sorted(p.name for p in root.glob("version=*")) == [
        f"version={v:06d}" for v in (1, 2, 3, 4)
    ]

    stream.land([stream.put(item("p", 9, v={"N": "7"}), T_EXPORT + timedelta(minutes=9))])
    refresh_current(lake, TABLE, bucket_count=2, now=1000.0 + 3600 + 1.5)

    assert sorted(p.name for p in root.glob("version=*")) == [
        "version=000003",
        "version=000004",
        "version=000005",
    ]


def test_unchanged_base_files_are_hard_links_not_copies(lake):
    stream = start(lake)
    refresh_current(lake, TABLE, bucket_count=4)
    stream.land([stream.put(item("p", 1, v={"N": "2"}), T_EXPORT)])

    refresh_current(lake, TABLE, bucket_count=4, compact_ratio=1.0)

    root = Path(lake.uri(f"{TABLE}/current"))
    for b in range(4):
        old = root / "version=000001" / f"bucket-{b:04d}.parquet"
        new = root / "version=000002" / f"bucket-{b:04d}.parquet"
        assert old.stat().st_ino == new.stat().st_ino


def test_a_seeded_random_history_landed_out_of_order_equals_the_model(lake):
    rng = random.Random(5)
    stream = start(lake, n=200)
    t = T_EXPORT - timedelta(minutes=4)
    pending: list[list[dict]] = []
    for step in range(30):
        batch = []
        for _ in range(40):
            t += timedelta(milliseconds=rng.randrange(1, 900))
            i = rng.randrange(260)
            if rng.random() < 0.3:
                batch.append(stream.delete(item("p", i), t))
            else:
                value = {"N": str(rng.randrange(1000))} if rng.random() < 0.9 else {"S": "x"}
                batch.append(stream.put(item("p", i, v=value, s={"N": str(step)}), t))
        pending.append(batch)
        if rng.random() < 0.5:  # land a random subset now, out of order
            rng.shuffle(pending)
            for b in pending[: rng.randrange(1, len(pending) + 1)]:
                stream.land(b, shard=f"shardId-{rng.randrange(3)}-{len(b)}-{id(b)}")
                pending.remove(b)
            refresh_current(lake, TABLE, bucket_count=8, compact_ratio=0.3)
    for b in pending:
        stream.land(b, shard=f"shardId-9-{id(b)}")

    refresh_current(lake, TABLE, bucket_count=8, compact_ratio=0.3)

    assert items_of(read_current(lake, TABLE)) == expected(stream.model)


def test_a_refresh_after_a_tenth_of_a_percent_of_keys_change_writes_under_5_percent(lake):
    n = 50_000
    rng = random.Random(1)
    items = [
        item("k", i, a={"S": f"value-{rng.random()}"}, b={"N": str(rng.randrange(10**9))})
        for i in range(n)
    ]
    stream = Stream(lake)
    write_snapshot(lake, items, files=4)
    refresh_current(lake, TABLE, bucket_count=64)
    changed = rng.sample(range(n), n // 1000)
    stream.land([stream.put(item("k", i, a={"S": "new"}, b={"N": "1"}), T_EXPORT) for i in changed])

    result = refresh_current(lake, TABLE, bucket_count=64)

    assert result.changes_applied == len(changed)
    assert result.bytes_written <= 0.05 * result.bytes_total, result
    assert result.rows == n


def test_bucket_of_is_stable_and_the_count_follows_the_snapshot_size():
    assert bucket_of('{"pk":{"S":"a"}}', 64) == bucket_of('{"pk":{"S":"a"}}', 64)
    assert bucket_of('{"pk":{"S":"a"}}', 1) == 0
    assert choose_bucket_count(0, 100) == 1
    assert choose_bucket_count(1000, 100) == 16
    assert choose_bucket_count(10**15, 100) == 4096


def test_stats_from_schema_give_the_same_schema_back():
    items = [
        item(
            "a", 1, d={"N": "1.25"}, m={"S": "x"}, x={"N": "1"}, s={"SS": ["a"]}, z={"NULL": True}
        ),
        item("b", 2, m={"N": "3"}, big={"N": "1" * 38 + "0" * 10}),
    ]
    decided = schema.decide_schema(schema.SchemaStats.of(items), KEY_NAMES)

    again = schema.decide_schema(stats_from_schema(decided, 2), KEY_NAMES)

    assert again.equals(decided, check_metadata=True)


def test_concurrent_refreshes_of_one_table_take_turns_and_both_succeed(lake):
    from concurrent.futures import ThreadPoolExecutor

    stream = start(lake, n=200)
    refresh_current(lake, TABLE, bucket_count=4)
    t = T_EXPORT + timedelta(minutes=1)
    stream.land([stream.put(item("p", i, v={"N": str(-i)}), t) for i in range(0, 200, 3)])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: refresh_current(lake, TABLE, bucket_count=4), range(4)))

    # one refresh applies the changes; the others, in turn, find nothing new
    assert sorted(r.changes_applied for r in results) == [0, 0, 0, len(range(0, 200, 3))]
    assert len({r.version for r in results}) == 1
    assert items_of(read_current(lake, TABLE)) == expected(stream.model)
