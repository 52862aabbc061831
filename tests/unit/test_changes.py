"""Change rows: the contract's columns and types, canonical images, hour partitions, and files
that a re-run overwrites instead of duplicating."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_cdc import codec
from dynamo_cdc.changefiles import write_change_batch
from dynamo_cdc.changes import change_schema, image_text, key_column_name, records_to_table
from dynamo_cdc.lake import Lake

KEYS = (("pk", "S"), ("sk", "N"))
T0 = datetime(2024, 3, 1, 10, 59, 59, tzinfo=UTC)


def _record(
    i: int,
    event: str = "MODIFY",
    *,
    seq: int | None = None,
    when: datetime | float = T0,
    ttl: bool = False,
    pk: str = "a",
) -> dict:
    keys = {"pk": {"S": pk}, "sk": {"N": str(i)}}
    new = {**keys, "v": {"N": str(i * 10)}, "b": {"B": b"\x00\xff"}}
    old = {**keys, "v": {"N": "1.50"}}
    d: dict = {
        "Keys": keys,
        "SequenceNumber": str(seq if seq is not None else 1000 + i),
        "SizeBytes": 50,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
        "ApproximateCreationDateTime": when,
    }
    if event != "REMOVE":
        d["NewImage"] = new
    if event != "INSERT":
        d["OldImage"] = old
    rec = {"eventID": f"ev-{i}", "eventName": event, "eventSource": "aws:dynamodb", "dynamodb": d}
    if ttl:
        rec["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    return rec


def test_change_rows_have_the_contract_columns_and_types() -> None:
    rows = records_to_table(
        [_record(1, "INSERT"), _record(2, "REMOVE", ttl=True)], KEYS, shard_ids="shard-1"
    )
    assert rows.schema == change_schema(KEYS)
    assert rows.column_names == [
        "event_id",
        "event_name",
        "sequence_number",
        "shard_id",
        "approximate_creation_time",
        "ttl_delete",
        "source",
        "pk",
        "sk",
        "_keys",
        "_new_image",
        "_old_image",
    ]
    assert rows.schema.field("approximate_creation_time").type == pa.timestamp("us", tz="UTC")
    assert rows.schema.field("ttl_delete").type == pa.bool_()
    r = rows.to_pylist()
    assert [x["event_name"] for x in r] == ["INSERT", "REMOVE"]
    assert [x["ttl_delete"] for x in r] == [False, True]
    assert [x["source"] for x in r] == ["stream", "stream"]
    assert r[0]["shard_id"] == "shard-1"
    assert r[0]["approximate_creation_time"] == T0
    assert r[0]["pk"] == "a" and r[0]["sk"] == "1"
    assert r[0]["_old_image"] is None and r[1]["_new_image"] is None
    assert r[0]["_keys"] == '{"pk":{"S":"a"},"sk":{"N":"1"}}'
    # binary as base64 text, numbers canonical ("1.50" -> "1.5")
    assert orjson.loads(r[0]["_new_image"])["b"] == {"B": "AP8="}
    assert orjson.loads(r[1]["_old_image"])["v"] == {"N": "1.5"}


def test_sequence_numbers_sort_numerically_as_text() -> None:
    recs = [_record(0, seq=99), _record(1, seq=100), _record(2, seq=10**39)]
    seqs = records_to_table(recs, KEYS).column("sequence_number").to_pylist()
    assert all(len(s) == 40 for s in seqs)
    assert seqs == sorted(seqs)
    assert [int(s) for s in seqs] == [99, 100, 10**39]


def test_ttl_delete_needs_the_dynamodb_service_principal() -> None:
    user_delete = _record(1, "REMOVE")
    user_delete["userIdentity"] = {"Type": "Service", "PrincipalId": "someone.example.com"}
    rows = records_to_table([user_delete, _record(2, "REMOVE", ttl=True)], KEYS)
    assert rows.column("ttl_delete").to_pylist() == [False, True]


def test_key_types_come_from_the_attribute_definitions() -> None:
    keys = (("id", "B"), ("n", "N"))
    rec = _record(1)
    rec["dynamodb"]["Keys"] = {"id": {"B": b"\x01\x02"}, "n": {"N": "1.500"}}
    rows = records_to_table([rec], keys)
    assert rows.schema.field("id").type == pa.binary()
    assert rows.schema.field("n").type == pa.string()
    assert rows.to_pylist()[0]["id"] == b"\x01\x02"
    assert rows.to_pylist()[0]["n"] == "1.5"


def test_key_named_like_a_change_column_gets_a_prefix() -> None:
    assert key_column_name("source") == "key_source"
    assert key_column_name("pk") == "pk"


def test_key_named_like_a_change_column_in_other_case_or_like_a_prefixed_key_stays_apart() -> None:
    """DuckDB folds case (it would read ``EVENT_ID`` beside ``event_id`` as ``EVENT_ID_1``)."""
    assert key_column_name("EVENT_ID") == "key_EVENT_ID"
    assert key_column_name("_Keys") == "key__Keys"
    assert key_column_name("source", ["source", "key_source"]) == "key_key_source"
    assert key_column_name("key_source", ["source", "key_source"]) == "key_source"
    schema = change_schema([("Source", "S"), ("key_source", "N")])
    folded = [name.casefold() for name in schema.names]
    assert len(folded) == len(set(folded))
    assert "key_event_id" in change_schema((("event_id", "S"),)).names


def test_epoch_seconds_are_accepted_as_creation_time() -> None:
    rows = records_to_table([_record(1, when=T0.timestamp())], KEYS)
    assert rows.column("approximate_creation_time").to_pylist() == [T0]


def test_empty_batch_gives_an_empty_table_with_the_schema() -> None:
    rows = records_to_table([], KEYS)
    assert rows.num_rows == 0 and rows.schema == change_schema(KEYS)


# -- canonical image text ----------------------------------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=None)
    .filter(lambda d: d.is_finite() and (d == 0 or -130 <= d.adjusted() <= 125))
    .filter(lambda d: len(d.as_tuple().digits) <= 38)
    .map(str),
    st.sampled_from(["0", "-0", "1.50", "600", "0.00000001", "0.0000001", "1E+3", "1e-5", "00"]),
)


def _valid_number(text: str) -> bool:
    try:
        codec.parse_number(text)
        return True
    except Exception:
        return False


_scalar = st.one_of(
    st.text(max_size=5).map(lambda s: {"S": s}),
    _numbers.filter(_valid_number).map(lambda n: {"N": n}),
    st.binary(max_size=5).map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(st.text(max_size=3), min_size=1, max_size=3, unique=True).map(lambda x: {"SS": x}),
    st.lists(st.binary(max_size=3), min_size=1, max_size=3, unique=True).map(lambda x: {"BS": x}),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda x: {"L": x}),
        st.dictionaries(st.sampled_from(["N", "S", "SS", "a", "é"]), inner, max_size=3).map(
            lambda x: {"M": x}
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["pk", "N", "n", "x", "SS"]), _value, max_size=5))
def test_image_text_equals_the_codecs_canonical_text(image: dict) -> None:
    assert image_text(image) == codec.item_to_json_text(image)


def test_image_text_of_absent_image_is_none() -> None:
    assert image_text(None) is None


def test_records_to_table_is_fast() -> None:
    """The conversion path must not be the bottleneck (target: 100k records/s on one core)."""
    recs = [_record(i, "MODIFY") for i in range(20_000)]
    for r in recs:  # DynamoDB sends numbers normalised, so the codec's slow path is rare
        r["dynamodb"]["OldImage"]["v"] = {"N": "1.5"}
    records_to_table(recs[:1000], KEYS, shard_ids="s")
    start = time.perf_counter()
    rows = records_to_table(recs, KEYS, shard_ids="s")
    rate = len(recs) / (time.perf_counter() - start)
    assert rows.num_rows == 20_000
    # A loose floor so a busy shared machine does not fail it; bench/ measures the real rate.
    assert rate > 25_000, f"{rate:.0f} records/s"


# -- files -------------------------------------------------------------------------------------


def _hours_batch(shard: str, first_seq: int, n: int, start: datetime = T0) -> list[dict]:
    # One record per 10 minutes: n=12 spans three hour partitions from 10:59:59.
    return [
        _record(i, seq=first_seq + i, when=start.timestamp() + 600 * i, pk=f"k{i % 3}")
        for i in range(n)
    ]


def test_records_land_in_the_hour_partition_of_their_creation_time(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    files = write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    parts = sorted({f.rsplit("/", 1)[0] for f in files})
    assert parts == [
        "orders/changes/date=2024-03-01/hour=10",
        "orders/changes/date=2024-03-01/hour=11",
        "orders/changes/date=2024-03-01/hour=12",
    ]
    for f in files:
        table = pq.read_table(tmp_path / f)
        hour = int(f.split("hour=")[1][:2])
        assert {t.hour for t in table.column("approximate_creation_time").to_pylist()} == {hour}


def test_file_names_derive_from_shard_and_sequence_range(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 500, 3, start=datetime(2024, 3, 1, 10, 0, tzinfo=UTC))
    [f] = write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    assert f.endswith(f"/s1_{'500'.zfill(40)}_{'502'.zfill(40)}.parquet")


def test_rewriting_the_same_range_overwrites(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    rows = records_to_table(_hours_batch("s1", 10**21, 12), KEYS, shard_ids="s1")
    first = write_change_batch(lake, "orders", rows)
    second = write_change_batch(lake, "orders", rows)
    assert first == second
    assert lake.list("orders/changes") == first


def test_a_shorter_rerun_replaces_the_uncommitted_longer_file(tmp_path) -> None:
    """A crashed run wrote seq 0..11 but never committed; the re-run reads only 0..4, then the
    next run 5..11. The lake must end with every record exactly once."""
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(recs[:5], KEYS, shard_ids=["s1"] * 5))
    write_change_batch(lake, "orders", records_to_table(recs[5:], KEYS, shard_ids="s1"))
    ids = (
        duckdb.sql(
            f"select event_id from read_parquet('{tmp_path}/orders/changes/*/*/*.parquet', "
            "hive_partitioning=true)"
        )
        .fetchnumpy()["event_id"]
        .tolist()
    )
    assert sorted(ids) == sorted(r["eventID"] for r in recs)


def test_other_shards_files_are_left_alone(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 3)
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s2"))
    files = lake.list("orders/changes")
    assert len(files) == 4  # two hour partitions x two shards
    assert sorted({f.rsplit("/", 1)[1].split("_")[0] for f in files}) == ["s1", "s2"]


def test_duckdb_reads_the_partitions_with_hive_columns(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))
    rows = duckdb.sql(
        f"select date, hour, count(*) n, min(sequence_number) s from read_parquet("
        f"'{tmp_path}/orders/changes/*/*/*.parquet', hive_partitioning=true) "
        "group by all order by all"
    ).fetchall()
    assert [(str(d), h, n) for d, h, n, _ in rows] == [
        ("2024-03-01", 10, 1),
        ("2024-03-01", 11, 6),
        ("2024-03-01", 12, 5),
    ]


def test_export_rows_without_shard_need_a_batch_id(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    rows = records_to_table([_record(1)], KEYS, source="export")
    with pytest.raises(ValueError, match="batch_id"):
        write_change_batch(lake, "orders", rows)
    [f] = write_change_batch(lake, "orders", rows, batch_id="export-123")
    assert f.endswith("/export-123.parquet")
    assert pq.read_table(tmp_path / f).column("source").to_pylist() == ["export"]


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="source"):
        records_to_table([], KEYS, source="kafka")


def test_decimal_numbers_never_become_floats() -> None:
    rec = _record(1)
    rec["dynamodb"]["NewImage"]["v"] = {"N": "0.1000000000000000000000000000000000001"}
    text = records_to_table([rec], KEYS).column("_new_image")[0].as_py()
    assert Decimal(orjson.loads(text)["v"]["N"]) == Decimal(
        "0.1000000000000000000000000000000000001"
    )


def test_image_text_leaves_strings_that_look_like_numbers_or_sets_alone() -> None:
    image = {
        "s": {"S": '{"N":"1.50"} "SS":["b","a"] \\'},
        "N": {"M": {"SS": {"SS": ["b", "a"]}, "N": {"N": "1.50"}}},
    }
    assert image_text(image) == codec.item_to_json_text(image)
    assert orjson.loads(image_text(image))["s"]["S"] == image["s"]["S"]


def _landed_ids(root) -> list[str]:
    return sorted(
        duckdb.sql(
            f"select event_id from read_parquet('{root}/orders/changes/*/*/*.parquet', "
            "hive_partitioning=true)"
        )
        .fetchnumpy()["event_id"]
        .tolist()
    )


def test_a_reread_that_partly_overlaps_a_committed_file_loses_and_duplicates_nothing(
    tmp_path,
) -> None:
    """After a checkpoint reset, capture re-reads from TRIM_HORIZON: the stream was trimmed
    to seq 4, so the re-read starts inside the committed file 0..9 (records 0..3 are no longer
    in the stream). The committed file must stay, and the re-read add only 10..14."""
    lake = Lake(str(tmp_path))
    start = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    recs = [_record(i, seq=10**21 + i, when=start.timestamp() + i) for i in range(15)]
    [committed] = write_change_batch(
        lake, "orders", records_to_table(recs[:10], KEYS, shard_ids="s1")
    )

    paths = write_change_batch(lake, "orders", records_to_table(recs[4:], KEYS, shard_ids="s1"))

    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in recs)
    assert committed in paths and lake.exists(committed)
    [new] = [p for p in paths if p != committed]
    assert new.endswith(f"/s1_{str(10**21 + 10).zfill(40)}_{str(10**21 + 14).zfill(40)}.parquet")


def test_a_reread_inside_a_committed_file_writes_nothing(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    start = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    recs = [_record(i, seq=10**21 + i, when=start.timestamp() + i) for i in range(10)]
    [committed] = write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))

    paths = write_change_batch(lake, "orders", records_to_table(recs[3:6], KEYS, shard_ids="s1"))

    assert paths == [committed]
    assert lake.list("orders/changes") == [committed]
    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in recs)


def test_a_reread_over_a_compacted_hour_duplicates_nothing(tmp_path) -> None:
    """Compacted files carry no shard range in their names: the re-read must still find the
    records in them (by statistics and event_id), for its own shard only."""
    from dynamo_cdc.checkpoint import ShardCheckpoint, StreamCheckpoint
    from dynamo_cdc.dagster.compaction import COMPACTED_PREFIX, compact_hour

    lake = Lake(str(tmp_path))
    start = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    s1 = [_record(i, seq=10**21 + i, when=start.timestamp() + i) for i in range(10)]
    s2 = [_record(100 + i, seq=10**21 + i, when=start.timestamp() + i) for i in range(10)]
    write_change_batch(lake, "orders", records_to_table(s1[:6], KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(s1[6:], KEYS, shard_ids="s1"))
    write_change_batch(lake, "orders", records_to_table(s2[:5], KEYS, shard_ids="s2"))
    done = ShardCheckpoint(last_sequence_number=str(10**21 + 9))
    checkpoint = StreamCheckpoint("orders", "arn", {"s1": done, "s2": done})
    assert compact_hour(lake, "orders", start, checkpoint, force=True).compacted
    [compacted] = lake.list("orders/changes")
    assert compacted.rsplit("/", 1)[1].startswith(COMPACTED_PREFIX)

    # s1 re-read from seq 2 (trimmed before): nothing new; s2 re-read from 3: 5..9 are new
    write_change_batch(lake, "orders", records_to_table(s1[2:], KEYS, shard_ids="s1"))
    paths = write_change_batch(lake, "orders", records_to_table(s2[3:], KEYS, shard_ids="s2"))

    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in s1 + s2)
    assert compacted in paths and len(paths) == 2


def test_a_crashed_runs_files_are_kept_and_the_rerun_adds_only_the_rest(tmp_path) -> None:
    """A run wrote 0..7 in two hours and crashed before its commit; the re-run (another
    budget) reads 0..11: the lake ends with every record once, and no file was deleted."""
    lake = Lake(str(tmp_path))
    recs = _hours_batch("s1", 10**21, 12)
    crashed = write_change_batch(lake, "orders", records_to_table(recs[:8], KEYS, shard_ids="s1"))

    write_change_batch(lake, "orders", records_to_table(recs, KEYS, shard_ids="s1"))

    assert _landed_ids(tmp_path) == sorted(r["eventID"] for r in recs)
    assert set(crashed) <= set(lake.list("orders/changes"))


@given(st.lists(st.integers(0, 19), min_size=1, max_size=20), st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_file_s_rows_are_the_rows_picked_whether_taken_or_sliced(
    picks: list[int], run: bool
) -> None:
    import numpy as np

    from dynamo_cdc.changefiles import _rows_at

    rows = pa.Table.from_batches(  # two chunks, as a poll of two pages gives
        [pa.record_batch({"i": list(range(lo, lo + 10))}) for lo in (0, 10)]
    )
    idx = np.arange(picks[0], min(20, picks[0] + len(picks))) if run else np.array(picks)
    assert _rows_at(rows, idx).column("i").to_pylist() == idx.tolist()
