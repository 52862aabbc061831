"""Change rows (:mod:`dynamo_cdc.convert.records`): the contract's columns and types, canonical
images (the files they land in: test_changefiles.py; native against reference:
test_records_differential.py)."""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from dynamo_cdc import codec
from dynamo_cdc.convert import change_schema, image_text, key_column_name, records_to_table
from tests.unit.stream_records import KEYS, T0
from tests.unit.stream_records import record as _record


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
