"""The typed Arrow view: statistics, schema decisions, items -> Arrow, narrower files -> final."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cases.all_types import ALL_TYPES_ITEMS, KEY_ATTRIBUTES, KEY_TYPES, large_item
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import decimals, number_texts
from strategies import items as random_items

from dynamo_cdc import codec
from dynamo_cdc.convert import items_to_table
from dynamo_cdc.errors import CodecError
from dynamo_cdc.schema import (
    ITEM_COLUMN,
    ColumnStats,
    SchemaStats,
    cast_table_to_schema,
    decide_schema,
)


def _column(values: list, name: str = "a") -> tuple[pa.Field, list]:
    """Type and values of attribute ``name`` when each item holds one of ``values``."""
    items = [{"pk": {"S": str(i)}} | ({} if v is None else {name: v}) for i, v in enumerate(values)]
    schema = decide_schema(SchemaStats.of(items), ["pk"])
    table = items_to_table(items, schema)
    return schema.field(name), table.column(name).to_pylist()


# --------------------------------------------------------------------------------------------
# One test per row of the type mapping


def test_s_becomes_string() -> None:
    f, values = _column([{"S": "x"}, {"S": ""}])
    assert f.type == pa.string()
    assert values == ["x", ""]


def test_n_integers_in_int64_become_int64() -> None:
    f, values = _column([{"N": "1"}, {"N": "-9223372036854775808"}, {"N": "1E+2"}, {"N": "5.0"}])
    assert f.type == pa.int64()
    assert values == [1, -(2**63), 100, 5]


def test_n_integers_of_nineteen_digits_in_int64_become_int64_whatever_their_form() -> None:
    f, values = _column([{"N": "9223372036854775807"}, {"N": "100.000"}, {"N": "-7.0"}])
    assert f.type == pa.int64()
    assert values == [2**63 - 1, 100, -7]


@given(st.lists(number_texts(), min_size=2, max_size=30), st.integers(1, 29))
@example(["9223372036854775807", "100.000"], 1).via("19 digits next to trailing zeros")
@settings(max_examples=200, deadline=None)
def test_number_statistics_do_not_depend_on_how_a_column_is_split_into_chunks(
    numbers: list[str], cut: int
) -> None:
    cut = min(cut, len(numbers) - 1)
    items = [{"pk": {"S": str(i)}, "n": {"N": v}} for i, v in enumerate(numbers)]
    whole = SchemaStats.of(items)
    parts = SchemaStats.of(items[:cut]).merge(SchemaStats.of(items[cut:]))
    assert parts == whole


def test_n_decimals_become_decimal128_with_room_for_every_value() -> None:
    f, values = _column([{"N": "12345.6"}, {"N": "0.001"}, {"N": "-7"}])
    assert f.type == pa.decimal128(8, 3)
    assert values == [Decimal("12345.6"), Decimal("0.001"), Decimal(-7)]


def test_n_integers_beyond_int64_become_decimal128_of_scale_zero() -> None:
    big = "12345678901234567890123456789012345678"
    f, values = _column([{"N": big}, {"N": "9223372036854775808"}])
    assert f.type == pa.decimal128(38, 0)
    assert values == [Decimal(big), Decimal(2**63)]


def test_n_beyond_38_digits_of_precision_becomes_exact_text_never_float() -> None:
    f, values = _column([{"N": "9.9999999999999999999999999999999999999E+125"}, {"N": "1E-130"}])
    assert f.type == pa.string()
    assert values == ["9.9999999999999999999999999999999999999E+125", "1E-130"]
    f, values = _column([{"N": "1E+20"}, {"N": "1E-20"}])  # each fits, together p = 41
    assert f.type == pa.string()
    assert values == ["100000000000000000000", "1E-20"]


def test_b_becomes_binary() -> None:
    f, values = _column([{"B": "AP8="}, {"B": ""}])
    assert f.type == pa.binary()
    assert values == [b"\x00\xff", b""]


def test_bool_becomes_bool() -> None:
    f, values = _column([{"BOOL": True}, {"BOOL": False}])
    assert f.type == pa.bool_()
    assert values == [True, False]


def test_only_null_values_become_a_string_column_of_nulls_never_parquets_null_type() -> None:
    # Parquet's NULL logical type is refused by Athena and Spark
    f, values = _column([{"NULL": True}, None])
    assert f.type == pa.string()
    assert f.metadata[b"dynamodb_type"] == b"NULL"
    assert values == [None, None]


def test_null_next_to_another_type_is_a_null_cell_not_a_conflict() -> None:
    f, values = _column([{"S": "x"}, {"NULL": True}])
    assert f.type == pa.string()
    assert f.metadata[b"dynamodb_type"] == b"S"
    assert values == ["x", None]


def test_m_becomes_plain_json_text_with_exact_numbers() -> None:
    av = {"M": {"b": {"N": "1E+125"}, "a": {"SS": ["y", "x"]}, "c": {"B": "aGk="}}}
    f, values = _column([av])
    assert f.type == pa.string()
    assert values == ['{"a":["x","y"],"b":1E+125,"c":"aGk="}']


def test_l_becomes_plain_json_text() -> None:
    f, values = _column([{"L": [{"S": "x"}, {"N": "0.10"}, {"NULL": True}, {"M": {}}]}])
    assert f.type == pa.string()
    assert values == ['["x",0.1,null,{}]']
    assert json.loads(values[0]) == ["x", 0.1, None, {}]


def test_ss_becomes_sorted_list_of_strings() -> None:
    f, values = _column([{"SS": ["b", "a"]}])
    assert f.type == pa.list_(pa.string())
    assert values == [["a", "b"]]


def test_ns_becomes_sorted_list_by_the_n_rule() -> None:
    f, values = _column([{"NS": ["10", "9"]}])
    assert f.type == pa.list_(pa.int64())
    assert values == [[9, 10]]
    f, values = _column([{"NS": ["1.5", "-2"]}])
    assert f.type == pa.list_(pa.decimal128(2, 1))
    assert values == [[Decimal(-2), Decimal("1.5")]]
    f, values = _column([{"NS": ["1E-130", "1"]}])
    assert f.type == pa.list_(pa.string())
    assert values == [["1E-130", "1"]]


def test_bs_becomes_sorted_list_of_binary() -> None:
    f, values = _column([{"BS": ["Ag==", "AQ=="]}])
    assert f.type == pa.list_(pa.binary())
    assert values == [[b"\x01", b"\x02"]]


def test_type_conflict_column_becomes_text_of_each_value() -> None:
    f, values = _column(
        [
            {"S": "x"},
            {"N": "1.50"},
            {"B": "aGk="},
            {"BOOL": True},
            {"NULL": True},
            {"M": {"k": {"N": "1"}}},
            {"NS": ["2", "1"]},
            None,
        ]
    )
    assert f.type == pa.string()
    assert f.metadata[b"dynamodb_type"] == b"MIXED"
    assert values == ["x", "1.5", "aGk=", "true", None, '{"k":1}', "[1,2]", None]


def test_missing_attribute_is_null() -> None:
    _, values = _column([{"S": "x"}, None])
    assert values == ["x", None]


# --------------------------------------------------------------------------------------------
# Schema layout and names


def test_schema_has_keys_first_non_nullable_then_attributes_by_name_then_item() -> None:
    schema = decide_schema(SchemaStats.of(ALL_TYPES_ITEMS), KEY_ATTRIBUTES)
    names = schema.names
    assert names[:2] == ["pk", "sk"]
    assert names[-1] == ITEM_COLUMN
    assert names[2:-1] == sorted(names[2:-1])
    assert [schema.field(n).nullable for n in ("pk", "sk", ITEM_COLUMN)] == [False] * 3
    assert schema.field("sk").type == pa.int64()
    assert all(schema.field(n).nullable for n in names[2:-1])


def test_key_types_give_key_columns_for_an_empty_chunk() -> None:
    schema = decide_schema(SchemaStats(), KEY_ATTRIBUTES, key_types=KEY_TYPES)
    assert schema.names == ["pk", "sk", ITEM_COLUMN]
    assert schema.field("sk").type == pa.int64()
    assert items_to_table([], schema).num_rows == 0


def test_item_without_its_key_attribute_is_refused() -> None:
    schema = decide_schema(SchemaStats(), ["pk"], key_types={"pk": "S"})
    with pytest.raises(CodecError, match="attribute pk: 1 item.*lack this key attribute"):
        items_to_table([{"other": {"S": "x"}}], schema)


def test_attribute_named_item_gets_no_typed_column_and_item_keeps_the_truth() -> None:
    items = [{"pk": {"S": "a"}, "_item": {"S": "not the item"}}]
    schema = decide_schema(SchemaStats.of(items), ["pk"])
    assert schema.names == ["pk", ITEM_COLUMN]
    table = items_to_table(items, schema)
    assert codec.item_from_json_text(table.column(ITEM_COLUMN)[0].as_py()) == items[0]


def test_names_that_collide_after_case_folding_get_no_typed_column() -> None:
    items = [
        {
            "pk": {"S": "a"},
            "Name": {"S": "x"},
            "name": {"S": "y"},
            "PK": {"S": "z"},
            "_ITEM": {"S": "w"},
            "ok": {"S": "v"},
        }
    ]
    schema = decide_schema(SchemaStats.of(items), ["pk"])
    assert schema.names == ["pk", "ok", ITEM_COLUMN]


def test_reserved_names_from_the_caller_get_no_typed_column() -> None:
    items = [{"pk": {"S": "a"}, "export_date": {"S": "x"}}]
    schema = decide_schema(SchemaStats.of(items), ["pk"], reserved=["export_date"])
    assert schema.names == ["pk", ITEM_COLUMN]


def test_max_columns_keeps_the_most_frequent_attributes() -> None:
    items = [
        {"pk": {"S": "1"}, "rare": {"S": "x"}, "common": {"S": "x"}, "also": {"S": "x"}},
        {"pk": {"S": "2"}, "common": {"S": "y"}, "also": {"S": "y"}},
    ]
    schema = decide_schema(SchemaStats.of(items), ["pk"], max_columns=2)
    assert schema.names == ["pk", "also", "common", ITEM_COLUMN]


# --------------------------------------------------------------------------------------------
# Items -> table


def test_item_column_is_the_canonical_json_of_each_item() -> None:
    schema = decide_schema(SchemaStats.of(ALL_TYPES_ITEMS), KEY_ATTRIBUTES)
    table = items_to_table(ALL_TYPES_ITEMS, schema)
    texts = table.column(ITEM_COLUMN).to_pylist()
    assert texts == [codec.item_to_json_text(item) for item in ALL_TYPES_ITEMS]
    for text, item in zip(texts, ALL_TYPES_ITEMS, strict=True):
        back = codec.item_from_json_text(text)
        assert codec.deserialize_item(back) == codec.deserialize_item(item)


def test_item_texts_given_are_stored_verbatim() -> None:
    items = [{"pk": {"S": "a"}, "n": {"N": "1.50"}}]
    original = '{"pk":{"S":"a"},"n":{"N":"1.50"}}'
    schema = decide_schema(SchemaStats.of(items), ["pk"])
    table = items_to_table(items, schema, item_texts=[original])
    assert table.column(ITEM_COLUMN).to_pylist() == [original]
    assert table.column("n").to_pylist() == [Decimal("1.5")]


def test_value_that_does_not_fit_the_schema_is_refused() -> None:
    schema = decide_schema(SchemaStats.of([{"pk": {"S": "a"}, "n": {"N": "1"}}]), ["pk"])
    with pytest.raises(CodecError, match="attribute n: a S value in a N column"):
        items_to_table([{"pk": {"S": "b"}, "n": {"S": "x"}}], schema)
    with pytest.raises(CodecError, match="attribute n: a number does not fit"):
        items_to_table([{"pk": {"S": "b"}, "n": {"N": "1.5"}}], schema)


def test_a_400_kb_item_becomes_a_row() -> None:
    item = large_item()
    schema = decide_schema(SchemaStats.of([item]), KEY_ATTRIBUTES)
    row = items_to_table([item], schema).to_pylist()[0]
    assert row["big_b"] == codec.decode_binary(item["big_b"]["B"])
    assert row["big_s"] == item["big_s"]["S"]


# --------------------------------------------------------------------------------------------
# Mergeable statistics and unifying files

_random = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_random
@given(st.lists(random_items(max_attributes=4), max_size=8), st.integers(0, 8))
def test_stats_merge_equals_stats_of_the_concatenation(items, split) -> None:
    left, right = items[:split], items[split:]
    merged = SchemaStats.of(left).merge(SchemaStats.of(right))
    assert merged == SchemaStats.of(items)
    assert SchemaStats.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged


def test_column_stats_merge_is_commutative_and_keeps_the_widest_numbers() -> None:
    a, b = ColumnStats(), ColumnStats()
    a.update([{"N": "123"}])
    b.update([{"N": "0.25"}, {"S": "x"}])
    assert a.merge(b) == b.merge(a)
    merged = a.merge(b)
    assert (merged.count, merged.all_int64, merged.int_digits, merged.scale) == (3, False, 3, 2)
    assert merged.kind == "MIXED"


def test_chunk_schemas_decided_separately_unify_after_cast_to_the_final_schema(tmp_path) -> None:
    chunk_a = [{"pk": {"S": "1"}, "v": {"N": "1"}, "only_a": {"S": "x"}, "w": {"N": "5"}}]
    chunk_b = [{"pk": {"S": "2"}, "v": {"S": "text"}, "w": {"N": "2.5"}, "z": {"NULL": True}}]
    tables = []
    for chunk in (chunk_a, chunk_b):
        table = items_to_table(chunk, decide_schema(SchemaStats.of(chunk), ["pk"]))
        pq.write_table(table, tmp_path / f"{chunk[0]['pk']['S']}.parquet")
        tables.append(table)
    final = decide_schema(SchemaStats.of(chunk_a).merge(SchemaStats.of(chunk_b)), ["pk"])
    assert final.field("v").type == pa.string()  # N in one chunk, S in the other
    assert final.field("w").type == pa.decimal128(2, 1)
    cast = [cast_table_to_schema(pq.read_table(tmp_path / f"{i}.parquet"), final) for i in "12"]
    combined = pa.concat_tables(cast)
    assert combined.schema.equals(final, check_metadata=True)
    assert combined.column("v").to_pylist() == ["1", "text"]
    assert combined.column("w").to_pylist() == [Decimal(5), Decimal("2.5")]
    assert combined.column("only_a").to_pylist() == ["x", None]
    assert pa.unify_schemas([t.schema for t in cast]).equals(final)
    assert combined.equals(items_to_table(chunk_a + chunk_b, final))


_shared_names = st.sampled_from(["a", "b", "c", "Ü"])
_chunked_items = st.one_of(
    st.lists(random_items(max_depth=3, max_attributes=4), max_size=8),
    st.lists(random_items(max_depth=2, max_attributes=4, names=_shared_names), max_size=8),
    # Numbers only: int64, decimal and text columns meet, so casts are exercised.
    st.lists(
        st.builds(
            lambda pk, rest: {"pk": {"S": pk}, **rest},
            st.text(max_size=3),
            st.dictionaries(
                _shared_names,
                st.one_of(
                    number_texts().map(lambda n: {"N": n}),
                    st.lists(decimals(), min_size=1, max_size=3, unique=True).map(
                        lambda ns: {"NS": [str(n) for n in ns]}
                    ),
                    st.just({"NULL": True}),
                ),
                max_size=3,
            ),
        ),
        max_size=8,
    ),
)


@_random
@given(_chunked_items, st.integers(0, 8))
def test_any_chunk_cast_to_the_final_schema_equals_building_it_with_the_final_schema(
    items, split
) -> None:
    items = list({item["pk"]["S"]: item for item in items}.values())
    chunks = [items[:split], items[split:]]
    final = decide_schema(SchemaStats.of(chunks[0]).merge(SchemaStats.of(chunks[1])), ["pk"])
    for chunk in chunks:
        narrow = items_to_table(chunk, decide_schema(SchemaStats.of(chunk), ["pk"]))
        cast = cast_table_to_schema(narrow, final)
        assert cast.schema.equals(final, check_metadata=True)
        assert cast.equals(items_to_table(chunk, final))


def test_int64_file_widens_to_decimal_and_text_without_reparsing() -> None:
    items = [{"pk": {"S": "1"}, "n": {"N": "42"}, "m": {"N": "-7"}}]
    narrow = items_to_table(items, decide_schema(SchemaStats.of(items), ["pk"]))
    wider = [*items, {"pk": {"S": "2"}, "n": {"N": "0.5"}, "m": {"S": "x"}}]
    final = decide_schema(SchemaStats.of(wider), ["pk"])
    # Without _item, only exact Arrow casts can do it: proves no row was re-parsed.
    cast = cast_table_to_schema(
        narrow.drop_columns([ITEM_COLUMN]), final.remove(final.get_field_index(ITEM_COLUMN))
    )
    assert cast.column("n").to_pylist() == [Decimal("42.0")]
    assert cast.column("m").to_pylist() == ["-7"]


def test_column_that_needs_rebuilding_without_item_column_is_an_error() -> None:
    items = [{"pk": {"S": "1"}}]
    narrow = items_to_table(items, decide_schema(SchemaStats.of(items), ["pk"]))
    final = decide_schema(SchemaStats.of([*items, {"pk": {"S": "2"}, "x": {"S": "y"}}]), ["pk"])
    with pytest.raises(CodecError, match="'x' must be rebuilt from _item"):
        cast_table_to_schema(
            narrow.drop_columns([ITEM_COLUMN]), final.remove(final.get_field_index(ITEM_COLUMN))
        )


def test_a_number_set_member_that_is_not_a_number_raises_codec_error() -> None:
    items = [{"pk": {"S": "a"}, "ns": {"NS": ["", "4.5"]}}]
    target = decide_schema(SchemaStats.of(items), ["pk"])
    with pytest.raises(CodecError):
        items_to_table(items, target)
