"""The codec: DynamoDB JSON, Ion and boto3 values <-> Python values <-> canonical text."""

from __future__ import annotations

import base64
import copy
import json
from decimal import Decimal

import pytest
from amazon.ion import simpleion
from cases.all_types import ALL_TYPES_ITEMS, ALL_TYPES_PYTHON, large_item
from hypothesis import HealthCheck, given, settings
from strategies import decimals, items, number_texts

from dynamo_cdc import codec
from dynamo_cdc.codec import (
    canonical_number_text,
    deserialize_item,
    deserialize_value,
    ion_decimal_text,
    ion_item_to_item,
    ion_line_to_record,
    ion_value_to_av,
    item_from_json_text,
    item_to_ion_text,
    item_to_json_text,
    normalize_stream_item,
    serialize_item,
    serialize_value,
    value_to_plain_json,
)
from dynamo_cdc.errors import CodecError

# --------------------------------------------------------------------------------------------
# One test per mapping row: DynamoDB JSON -> Python -> DynamoDB JSON


@pytest.mark.parametrize(
    ("av", "python"),
    [
        ({"S": "text"}, "text"),
        ({"N": "1.5"}, Decimal("1.5")),
        ({"B": "aGk="}, b"hi"),
        ({"BOOL": True}, True),
        ({"NULL": True}, None),
        ({"M": {"k": {"S": "v"}}}, {"k": "v"}),
        ({"L": [{"S": "a"}, {"N": "2"}]}, ["a", Decimal(2)]),
        ({"SS": ["a", "b"]}, frozenset({"a", "b"})),
        ({"NS": ["1", "2.5"]}, frozenset({Decimal(1), Decimal("2.5")})),
        ({"BS": ["aGk=", "AA=="]}, frozenset({b"hi", b"\x00"})),
    ],
    ids=["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"],
)
def test_each_type_decodes_to_its_python_value_and_encodes_back(av, python) -> None:
    decoded = deserialize_value(av)
    assert decoded == python
    assert type(decoded) is type(python)
    assert serialize_value(decoded) == av or deserialize_value(serialize_value(decoded)) == python


def test_binary_decodes_from_bytes_as_boto3_gives_it() -> None:
    assert deserialize_value({"B": b"\x00\xff"}) == b"\x00\xff"
    assert deserialize_value({"BS": [b"a", "Yg=="]}) == frozenset({b"a", b"b"})


def test_bool_is_not_encoded_as_a_number() -> None:
    assert serialize_value(True) == {"BOOL": True}
    assert serialize_value(1) == {"N": "1"}


def test_float_is_refused_because_it_is_not_exact() -> None:
    with pytest.raises(CodecError, match="float 0.1 cannot be stored exactly.*Decimal"):
        serialize_value(0.1)


@pytest.mark.parametrize(
    ("value", "message"),
    [(set(), "empty sets"), ({"a", 1}, "only strings, only numbers or only bytes")],
)
def test_bad_sets_are_refused(value, message) -> None:
    with pytest.raises(CodecError, match=message):
        serialize_value(value)


def test_all_types_case_items_decode_to_the_expected_python_values() -> None:
    assert [deserialize_item(item) for item in ALL_TYPES_ITEMS] == ALL_TYPES_PYTHON


def test_python_values_serialize_to_items_that_decode_back() -> None:
    for python in ALL_TYPES_PYTHON:
        item = serialize_item(python)
        assert deserialize_item(item) == python
        assert all(isinstance(b, str) for b in _binary_leaves(item))


def _binary_leaves(av_or_item):
    if isinstance(av_or_item, dict):
        for key, value in av_or_item.items():
            if key == "B":
                yield value
            elif key == "BS":
                yield from value
            else:
                yield from _binary_leaves(value)
    elif isinstance(av_or_item, list):
        for value in av_or_item:
            yield from _binary_leaves(value)


# --------------------------------------------------------------------------------------------
# Numbers: limits and canonical text


@pytest.mark.parametrize(
    "text",
    [
        "12345678901234567890123456789012345678",
        "1.2345678901234567890123456789012345678",
        "1E-130",
        "-1E-130",
        "9.9999999999999999999999999999999999999E+125",
        "-9.9999999999999999999999999999999999999E+125",
        "-0",
        "0",
        "1234567890123456789012345678901234567800000",  # 38 significant digits + zeros
        "0.000",
    ],
)
def test_numbers_at_dynamodb_limits_decode_exactly(text: str) -> None:
    assert deserialize_value({"N": text}) == Decimal(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("123456789012345678901234567890123456789", "39 significant digits"),
        ("1E-131", "outside DynamoDB's number range"),
        ("1E+126", "outside DynamoDB's number range"),
        ("1E+99999999999999999999", "outside DynamoDB's number range"),
        ("NaN", "not a DynamoDB number"),
        ("Infinity", "not a DynamoDB number"),
        ("1_000", "not a DynamoDB number"),
        (" 1", "not a DynamoDB number"),
        ("", "not a DynamoDB number"),
        ("0x10", "not a DynamoDB number"),
    ],
)
def test_numbers_dynamodb_refuses_raise_codec_error(text: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        deserialize_value({"N": text})


def test_bad_number_error_names_the_attribute_path() -> None:
    item = {"a": {"M": {"b": {"L": [{"S": "x"}, {"N": "1.2.3"}]}}}}
    with pytest.raises(CodecError, match=r"attribute a\.b\[1\]: '1\.2\.3' is not"):
        deserialize_item(item)


def test_unknown_tag_error_names_the_attribute() -> None:
    with pytest.raises(CodecError, match="attribute weird: unknown type tag 'X'"):
        deserialize_item({"weird": {"X": "1"}})


def test_value_with_two_tags_is_refused() -> None:
    with pytest.raises(CodecError, match="attribute a: .*one type tag"):
        deserialize_item({"a": {"S": "x", "N": "1"}})


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("600", "600"),
        ("6E+2", "600"),
        ("1.50", "1.5"),
        ("-0", "0"),
        ("0.000", "0"),
        ("+7", "7"),
        (".5", "0.5"),
        ("5.", "5"),
        ("0.00012", "0.00012"),
        ("1E-8", "1E-8"),
        ("1E-130", "1E-130"),
        ("1e38", "100000000000000000000000000000000000000"),
        ("1e39", "1E+39"),
        (
            "9.9999999999999999999999999999999999999E+125",
            "9.9999999999999999999999999999999999999E+125",
        ),
        ("-1.5e-3", "-0.0015"),
    ],
)
def test_canonical_number_text(text: str, canonical: str) -> None:
    assert canonical_number_text(text) == canonical
    assert Decimal(canonical) == Decimal(text)
    json.loads(canonical)  # a valid JSON number, for the plain-JSON typed view


@given(decimals())
def test_canonical_number_text_is_exact_stable_and_accepted(value: Decimal) -> None:
    text = canonical_number_text(value)
    assert Decimal(text) == value
    assert canonical_number_text(text) == text
    assert codec.parse_number(text) == value


@given(number_texts())
def test_canonical_number_text_fast_path_agrees_with_decimal_arithmetic(text: str) -> None:
    assert canonical_number_text(text) == canonical_number_text(Decimal(text))


# --------------------------------------------------------------------------------------------
# boto3 records


def test_stream_item_binary_bytes_become_base64_text_at_every_depth() -> None:
    boto3_item = {
        "b": {"B": b"\x00\xff"},
        "bs": {"BS": [b"a", b"b"]},
        "m": {"M": {"l": {"L": [{"B": b"hi"}, {"S": "s"}]}}},
        "n": {"N": "1"},
    }
    item = normalize_stream_item(boto3_item)
    assert item == {
        "b": {"B": "AP8="},
        "bs": {"BS": ["YQ==", "Yg=="]},
        "m": {"M": {"l": {"L": [{"B": "aGk="}, {"S": "s"}]}}},
        "n": {"N": "1"},
    }
    assert normalize_stream_item(item) == item  # idempotent
    assert codec.to_boto3_item(item) == boto3_item


# --------------------------------------------------------------------------------------------
# Canonical JSON text


def test_item_json_text_is_canonical_sorted_compact_and_utf8() -> None:
    item = {
        "z": {"NS": ["10", "9", "1E+2"]},
        "a": {"SS": ["b", "a"]},
        "é": {"M": {"y": {"B": "AP8="}, "x": {"S": "😀"}}},
    }
    text = item_to_json_text(item)
    assert text == (
        '{"a":{"SS":["a","b"]},"z":{"NS":["9","10","100"]},'
        '"é":{"M":{"x":{"S":"😀"},"y":{"B":"AP8="}}}}'
    )


def test_item_json_text_does_not_depend_on_key_or_set_order() -> None:
    item = ALL_TYPES_ITEMS[0]
    shuffled = {k: item[k] for k in reversed(list(item))}
    shuffled["ss"] = {"SS": list(reversed(item["ss"]["SS"]))}
    assert item_to_json_text(shuffled) == item_to_json_text(item)


def test_item_from_json_text_refuses_non_objects() -> None:
    with pytest.raises(CodecError, match="not an object"):
        item_from_json_text("[1]")
    with pytest.raises(CodecError, match="not JSON"):
        item_from_json_text("{")
    with pytest.raises(CodecError, match="attribute a"):
        item_from_json_text('{"a":{"N":"x"}}', validate=True)


@pytest.mark.parametrize("item", [*ALL_TYPES_ITEMS, large_item()], ids=lambda i: i["pk"]["S"])
def test_case_items_round_trip_through_json_text(item) -> None:
    text = item_to_json_text(item)
    assert deserialize_item(item_from_json_text(text)) == deserialize_item(item)


def test_a_400_kb_item_round_trips_through_json_and_ion() -> None:
    item = large_item()
    text = item_to_json_text(item)
    assert len(text.encode()) > 390_000
    assert deserialize_item(item_from_json_text(text)) == deserialize_item(item)
    assert deserialize_item(ion_item_to_item(item_to_ion_text(item))) == deserialize_item(item)


def test_plain_json_drops_tags_and_keeps_numbers_exact() -> None:
    av = {
        "M": {
            "n": {"N": "9.9999999999999999999999999999999999999E+125"},
            "l": {"L": [{"BOOL": True}, {"NULL": True}, {"B": "aGk="}]},
            "ns": {"NS": ["2", "1"]},
        }
    }
    assert value_to_plain_json(av) == (
        '{"l":[true,null,"aGk="],"n":9.9999999999999999999999999999999999999E+125,"ns":[1,2]}'
    )


# --------------------------------------------------------------------------------------------
# Ion

# The line from AWS's documentation of ION exports (written on one line, as exports are).
AWS_DOC_ION_LINE = (
    '$ion_1_0 {Item:{Authors:$dynamodb_SS::["Author1","Author2"],'
    'Dimensions:"8.5 x 11.0 x 1.5",ISBN:"333-3333333333",Id:103.,InPublication:false,'
    'PageCount:6d2,Price:2d3,ProductCategory:"Book",Title:"Book 103 Title"}}'
)


def test_aws_documented_ion_line_decodes_to_the_item() -> None:
    assert ion_item_to_item(AWS_DOC_ION_LINE) == {
        "Authors": {"SS": ["Author1", "Author2"]},
        "Dimensions": {"S": "8.5 x 11.0 x 1.5"},
        "ISBN": {"S": "333-3333333333"},
        "Id": {"N": "103"},
        "InPublication": {"BOOL": False},
        "PageCount": {"N": "600"},
        "Price": {"N": "2000"},
        "ProductCategory": {"S": "Book"},
        "Title": {"S": "Book 103 Title"},
    }


def test_writing_the_aws_documented_item_gives_the_aws_line() -> None:
    assert item_to_ion_text(ion_item_to_item(AWS_DOC_ION_LINE)) == AWS_DOC_ION_LINE


@pytest.mark.parametrize(
    ("ion", "av"),
    [
        ('"text"', {"S": "text"}),
        ("1.5", {"N": "1.5"}),
        ("7", {"N": "7"}),  # Ion int, as a writer may emit
        ("1d-130", {"N": "1E-130"}),
        ("-0.", {"N": "0"}),
        ("{{aGk=}}", {"B": "aGk="}),
        ("true", {"BOOL": True}),
        ("null", {"NULL": True}),
        ("{a:1.}", {"M": {"a": {"N": "1"}}}),
        ('[1.,"x"]', {"L": [{"N": "1"}, {"S": "x"}]}),
        ('$dynamodb_SS::["a"]', {"SS": ["a"]}),
        ("$dynamodb_NS::[1.5,2d1]", {"NS": ["1.5", "20"]}),
        ("$dynamodb_BS::[{{aGk=}}]", {"BS": ["aGk="]}),
    ],
    ids=[
        "S",
        "N",
        "N-int",
        "N-tiny",
        "N-neg-zero",
        "B",
        "BOOL",
        "NULL",
        "M",
        "L",
        "SS",
        "NS",
        "BS",
    ],
)
def test_each_ion_type_decodes_to_its_attribute_value(ion: str, av) -> None:
    assert ion_value_to_av(simpleion.loads(ion)) == av
    # The faster value model gives bare Python values; they convert the same way.
    fast = simpleion.IonPyValueModel.MAY_BE_BARE | simpleion.IonPyValueModel.STRUCT_AS_STD_DICT
    assert ion_value_to_av(simpleion.loads(ion, value_model=fast)) == av
    assert ion_line_to_record(f"$ion_1_0 {{Item:{{v:{ion}}}}}") == {"Item": {"v": av}}


@pytest.mark.parametrize(
    ("ion", "message"),
    [
        ("1.5e0", "FLOAT"),
        ("2020-01-01T", "TIMESTAMP"),
        ("null.string", "typed Ion null"),
        ("$other::[1]", "unknown Ion list annotation"),
        ('$dynamodb_NS::["x"]', "must hold only N"),
    ],
)
def test_ion_values_exports_never_write_are_refused(ion: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        ion_value_to_av(simpleion.loads(ion))
    with pytest.raises(CodecError, match=r"attribute Item\.v: "):
        ion_line_to_record(f"$ion_1_0 {{Item:{{v:{ion}}}}}")


@pytest.mark.parametrize(
    ("text", "ion"),
    [
        ("103", "103."),
        ("600", "6d2"),
        ("2000", "2d3"),
        ("1.5", "1.5"),
        ("0.001", "0.001"),
        ("-0", "0."),
        ("1E-130", "1d-130"),
        ("12345678901234567890123456789012345678", "12345678901234567890123456789012345678."),
        (
            "9.9999999999999999999999999999999999999E+125",
            "99999999999999999999999999999999999999d88",
        ),
    ],
)
def test_ion_decimal_text_follows_aws_examples_and_reads_back_exactly(text: str, ion: str) -> None:
    assert ion_decimal_text(text) == ion
    assert Decimal(simpleion.loads(ion)) == Decimal(text)


def test_ion_line_is_read_by_amazon_ion_with_set_annotations() -> None:
    line = item_to_ion_text(ALL_TYPES_ITEMS[0])
    assert line.startswith("$ion_1_0 {Item:{")
    value = simpleion.loads(line)["Item"]
    assert [a.text for a in value["ss"].ion_annotations] == ["$dynamodb_SS"]
    assert [a.text for a in value["ns"].ion_annotations] == ["$dynamodb_NS"]
    assert [a.text for a in value["bs"].ion_annotations] == ["$dynamodb_BS"]


def test_ion_field_names_that_are_not_identifiers_are_quoted() -> None:
    item = {"null": {"S": "kw"}, "a b": {"S": "x"}, "it's": {"S": "y"}, "$x": {"S": "z"}}
    line = item_to_ion_text(item)
    assert "'null':" in line and "'a b':" in line and "'it\\'s':" in line and "'$x':" in line
    assert ion_item_to_item(line) == item


def test_incremental_ion_record_round_trips_with_metadata() -> None:
    record = {
        "Metadata": {"WriteTimestampMicros": 1700000000123456},
        "Keys": {"pk": {"S": "a"}},
        "NewImage": {"pk": {"S": "a"}, "n": {"N": "2"}},
        "OldImage": {"pk": {"S": "a"}, "n": {"N": "1"}},
    }
    line = codec.ion_record_to_text(record)
    assert line.startswith("$ion_1_0 {Metadata:{WriteTimestampMicros:1700000000123456},Keys:")
    assert ion_line_to_record(line) == record


@pytest.mark.parametrize("item", ALL_TYPES_ITEMS, ids=lambda i: i["pk"]["S"])
def test_case_items_round_trip_through_ion_text(item) -> None:
    back = ion_item_to_item(item_to_ion_text(item))
    assert deserialize_item(back) == deserialize_item(item)


# --------------------------------------------------------------------------------------------
# Round trips over random items of all ten types nested five deep

_random = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_random
@given(items())
def test_random_items_round_trip_through_json_text(item) -> None:
    original = copy.deepcopy(item)
    text = item_to_json_text(item)
    back = item_from_json_text(text)
    assert deserialize_item(back) == deserialize_item(item)
    assert item_to_json_text(back) == text  # canonical: stable under a second pass
    assert item == original  # the input is not modified


@_random
@given(items())
def test_random_items_round_trip_through_ion_text(item) -> None:
    back = ion_item_to_item(item_to_ion_text(item))
    assert deserialize_item(back) == deserialize_item(item)
    assert item_to_json_text(back) == item_to_json_text(item)


@_random
@given(items())
def test_random_items_round_trip_through_python_values(item) -> None:
    python = deserialize_item(item)
    assert deserialize_item(serialize_item(python)) == python


@_random
@given(items())
def test_random_items_survive_boto3_binary_conversion(item) -> None:
    boto3_item = codec.to_boto3_item(item)
    assert deserialize_item(boto3_item) == deserialize_item(item)
    assert item_to_json_text(normalize_stream_item(boto3_item)) == item_to_json_text(item)


def test_base64_helpers_match_the_standard_library() -> None:
    assert codec.encode_binary(b"\x00\xff") == base64.b64encode(b"\x00\xff").decode()
    with pytest.raises(CodecError, match="not valid base64"):
        codec.decode_binary("***")
