"""Items covering every DynamoDB type and its limits, in the internal representation.

Each item has the key ``pk`` (S) and ``sk`` (N), as a table keyed ``pk``/``sk`` stores them.
``ALL_TYPES_ITEMS`` is small enough to put into a table, export and stream in any test;
``large_item()`` builds an item close to DynamoDB's 400 KB limit.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

KEY_ATTRIBUTES = ["pk", "sk"]
KEY_TYPES = {"pk": "S", "sk": "N"}

MAX_NUMBER = "9.9999999999999999999999999999999999999E+125"
MIN_POSITIVE_NUMBER = "1E-130"
MAX_NEGATIVE_NUMBER = "-1E-130"
MIN_NUMBER = "-9.9999999999999999999999999999999999999E+125"
DIGITS_38 = "12345678901234567890123456789012345678"
DECIMAL_38 = "1.2345678901234567890123456789012345678"

# Beyond the Basic Multilingual Plane (4-byte UTF-8), combining marks, right-to-left text.
UNICODE_TEXT = '😀 𝄞 𠜎 é e\u0301 שלום \u0000 \t\n "quoted" \\ \''


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _item(sk: int, **attributes: Any) -> dict[str, Any]:
    return {"pk": {"S": f"item-{sk:03d}"}, "sk": {"N": str(sk)}, **attributes}


ALL_TYPES_ITEMS: list[dict[str, Any]] = [
    _item(
        1,
        s={"S": "hello"},
        n={"N": "42"},
        b={"B": _b64(b"\x00\x01\xfe\xff")},
        bool_true={"BOOL": True},
        bool_false={"BOOL": False},
        null={"NULL": True},
        m={"M": {"a": {"S": "x"}, "n": {"N": "1.5"}, "empty": {"M": {}}}},
        l={"L": [{"S": "x"}, {"N": "-7"}, {"NULL": True}, {"L": []}]},
        ss={"SS": ["b", "a", "c"]},
        ns={"NS": ["3", "1.5", "-2"]},
        bs={"BS": [_b64(b"\x02"), _b64(b"\x01")]},
    ),
    _item(
        2,
        n_max={"N": MAX_NUMBER},
        n_min={"N": MIN_NUMBER},
        n_tiny={"N": MIN_POSITIVE_NUMBER},
        n_tiny_neg={"N": MAX_NEGATIVE_NUMBER},
        n_digits={"N": DIGITS_38},
        n_decimal={"N": DECIMAL_38},
        n_neg_zero={"N": "-0"},
        n_zero={"N": "0"},
        ns_limits={"NS": [MAX_NUMBER, MIN_POSITIVE_NUMBER, DIGITS_38, "-0.5"]},
    ),
    _item(
        3,
        s_empty={"S": ""},
        b_empty={"B": ""},
        s_unicode={"S": UNICODE_TEXT},
        ss_unicode={"SS": [UNICODE_TEXT, "😀", ""]},
        bs_empty={"BS": [""]},
        m_unicode={"M": {UNICODE_TEXT: {"S": UNICODE_TEXT}, "e": {"S": ""}}},
        **{"attr with spaces.and.dots": {"S": "odd name"}, "😀": {"N": "1"}},
    ),
    _item(
        4,
        deep={
            "M": {
                "l1": {
                    "L": [
                        {
                            "M": {
                                "l3": {
                                    "L": [
                                        {
                                            "M": {
                                                "ss": {"SS": ["x"]},
                                                "ns": {"NS": ["1E+2"]},
                                                "bs": {"BS": [_b64(b"deep")]},
                                                "b": {"B": _b64(b"\xff")},
                                                "bool": {"BOOL": False},
                                                "null": {"NULL": True},
                                            }
                                        }
                                    ]
                                }
                            }
                        }
                    ]
                }
            }
        },
    ),
]

# The same four items as Python values (what codec.deserialize_item must return).
ALL_TYPES_PYTHON: list[dict[str, Any]] = [
    {
        "pk": "item-001",
        "sk": Decimal(1),
        "s": "hello",
        "n": Decimal(42),
        "b": b"\x00\x01\xfe\xff",
        "bool_true": True,
        "bool_false": False,
        "null": None,
        "m": {"a": "x", "n": Decimal("1.5"), "empty": {}},
        "l": ["x", Decimal(-7), None, []],
        "ss": frozenset({"a", "b", "c"}),
        "ns": frozenset({Decimal(3), Decimal("1.5"), Decimal(-2)}),
        "bs": frozenset({b"\x01", b"\x02"}),
    },
    {
        "pk": "item-002",
        "sk": Decimal(2),
        "n_max": Decimal(MAX_NUMBER),
        "n_min": Decimal(MIN_NUMBER),
        "n_tiny": Decimal(MIN_POSITIVE_NUMBER),
        "n_tiny_neg": Decimal(MAX_NEGATIVE_NUMBER),
        "n_digits": Decimal(DIGITS_38),
        "n_decimal": Decimal(DECIMAL_38),
        "n_neg_zero": Decimal(0),
        "n_zero": Decimal(0),
        "ns_limits": frozenset(
            {Decimal(MAX_NUMBER), Decimal(MIN_POSITIVE_NUMBER), Decimal(DIGITS_38), Decimal("-0.5")}
        ),
    },
    {
        "pk": "item-003",
        "sk": Decimal(3),
        "s_empty": "",
        "b_empty": b"",
        "s_unicode": UNICODE_TEXT,
        "ss_unicode": frozenset({UNICODE_TEXT, "😀", ""}),
        "bs_empty": frozenset({b""}),
        "m_unicode": {UNICODE_TEXT: UNICODE_TEXT, "e": ""},
        "attr with spaces.and.dots": "odd name",
        "😀": Decimal(1),
    },
    {
        "pk": "item-004",
        "sk": Decimal(4),
        "deep": {
            "l1": [
                {
                    "l3": [
                        {
                            "ss": frozenset({"x"}),
                            "ns": frozenset({Decimal(100)}),
                            "bs": frozenset({b"deep"}),
                            "b": b"\xff",
                            "bool": False,
                            "null": None,
                        }
                    ]
                }
            ]
        },
    },
]


def large_item(size_bytes: int = 399_000) -> dict[str, Any]:
    """An item of about ``size_bytes`` (DynamoDB's limit is 400 KB, names included).

    One long string with 4-byte characters, one long binary, and a list of small maps.
    """
    blob = bytes(range(256)) * (size_bytes // 4 // 256)
    small_maps = [{"M": {"i": {"N": str(i)}, "s": {"S": "v" * 20}}} for i in range(200)]
    used = len(blob) + 200 * 30 + 100
    text_chars = max(size_bytes - used, 0) // 4  # "😀" is 4 bytes of UTF-8
    return {
        "pk": {"S": "large"},
        "sk": {"N": "0"},
        "big_s": {"S": "😀" * text_chars},
        "big_b": {"B": _b64(blob)},
        "maps": {"L": small_maps},
    }
