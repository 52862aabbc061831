"""Hypothesis strategies for random DynamoDB items (internal representation).

``items()`` draws items over all ten types (S, N, B, BOOL, NULL, M, L, SS, NS, BS), nested up to
five levels deep, with numbers across DynamoDB's whole range (38 digits, exponents -130..+125),
empty strings and binaries, and text beyond the Basic Multilingual Plane. Binary is base64 text,
as exports write it. Import it from any test::

    from strategies import items  # tests/unit is on sys.path for tests in tests/unit
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from dynamo_cdc import codec

# Any Unicode scalar value: surrogates are not valid UTF-8, so DynamoDB cannot hold them.
text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
attribute_names = st.text(
    alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10
)


@st.composite
def decimals(draw: st.DrawFn) -> Decimal:
    """A number DynamoDB can store: up to 38 significant digits, 1E-130 <= |n| < 1E+126."""
    if draw(st.booleans()):
        # Common shapes: small integers and short decimals.
        value = draw(st.integers(-(10**20), 10**20))
        return _exact(value < 0, abs(value), -draw(st.integers(0, 4)))
    n_digits = draw(st.integers(1, 38))
    coefficient = draw(st.integers(10 ** (n_digits - 1), 10**n_digits - 1))
    adjusted = draw(st.integers(-130, 125))
    return _exact(draw(st.booleans()), coefficient, adjusted - n_digits + 1)


def _exact(negative: bool, coefficient: int, exponent: int) -> Decimal:
    # Built from digits, not by arithmetic: the default 28-digit context would round.
    return Decimal((int(negative), tuple(map(int, str(coefficient))), exponent))


def number_texts() -> st.SearchStrategy[str]:
    """N text in the forms a writer may use: plain, with exponent, with trailing zeros."""
    return st.one_of(
        decimals().map(str),
        decimals().map(lambda d: format(d, "f")),
        decimals().map(lambda d: format(d, "E")),
    )


binaries = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode("ascii"))

scalars: st.SearchStrategy[dict[str, Any]] = st.one_of(
    text.map(lambda s: {"S": s}),
    number_texts().map(lambda n: {"N": n}),
    binaries.map(lambda b: {"B": b}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(text, min_size=1, max_size=4, unique=True).map(lambda v: {"SS": v}),
    st.lists(decimals(), min_size=1, max_size=4, unique=True).map(
        lambda v: {"NS": [str(n) for n in v]}
    ),
    st.lists(st.binary(max_size=6), min_size=1, max_size=4, unique=True).map(
        lambda v: {"BS": [base64.b64encode(b).decode("ascii") for b in v]}
    ),
)


def attribute_values(max_depth: int = 5) -> st.SearchStrategy[dict[str, Any]]:
    """Attribute values of any type; M and L nest up to ``max_depth`` levels."""
    if max_depth <= 1:
        return scalars
    inner = attribute_values(max_depth - 1)
    return st.one_of(
        scalars,
        # Map keys follow attribute-name rules (at least one character).
        st.dictionaries(attribute_names, inner, max_size=3).map(lambda m: {"M": m}),
        st.lists(inner, max_size=3).map(lambda values: {"L": values}),
    )


def items(
    max_depth: int = 5,
    max_attributes: int = 6,
    names: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Whole items: ``pk`` (S) plus random attributes of any type.

    Args:
        max_depth: deepest nesting of M and L.
        max_attributes: most attributes besides ``pk``.
        names: attribute names (default: any text); e.g. ``st.sampled_from("abc")`` makes items
            share attributes, with types that differ between items.
    """
    return st.builds(
        lambda pk, rest: {"pk": {"S": pk}, **rest},
        text,
        st.dictionaries(
            (attribute_names if names is None else names).filter(lambda n: n != "pk"),
            attribute_values(max_depth),
            max_size=max_attributes,
        ),
    )


def as_aws_writes(av: dict[str, Any]) -> dict[str, Any]:
    """The value with its numbers as DynamoDB stores them (canonical); exponent forms, which the
    C readers leave to the other paths, made plain."""

    def plain(text: str) -> str:
        canonical = codec.canonical_number_text(text)
        return "7" if "E" in canonical else canonical

    ((tag, value),) = av.items()
    if tag == "N":
        return {"N": plain(value)}
    if tag == "NS":
        return {"NS": [plain(v) for v in value]}
    if tag == "M":
        return {"M": {k: as_aws_writes(v) for k, v in value.items()}}
    if tag == "L":
        return {"L": [as_aws_writes(v) for v in value]}
    return av


# Byte edits for fuzz tests: (position, operation, byte); 0 replaces, 1 drops, 2 inserts, 3 cuts.
byte_edits = st.lists(
    st.tuples(
        st.integers(0, 10**6),
        st.integers(0, 3),
        st.sampled_from(
            list(b'{}[]":,\\/0123456789.-+eEuSNBLMTRUEnull\x00\x1f\x7f\xc3\xa9\xff\n ')
        ),
    ),
    min_size=1,
    max_size=4,
)


def damaged(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """``data`` with bytes flipped, dropped, inserted or cut (see ``byte_edits``)."""
    out = bytearray(data)
    for at, op, byte in edits:
        at %= len(out) + 1
        if op == 0 and at < len(out):
            out[at] = byte
        elif op == 1 and at < len(out):
            del out[at]
        elif op == 2:
            out.insert(at, byte)
        else:
            del out[at:]
    return bytes(out)


class FastPathShare:
    """How many of a property test's generated cases the fast path (a C reader, the Arrow
    path) took. A test that lets the fast path refuse a case (and then returns, or checks the
    fallback) would pass even if the fast path refused everything: :meth:`check` fails it
    unless the fast path took at least ``at_least`` of the cases. The shares stated in the tests
    are about half of what was measured on their strategies (at least three standard deviations
    below it), so a reader that starts refusing what it used to take fails, and Hypothesis's
    random draws do not.

    Use: create one in the test, count each case in the ``@given`` function, check after::

        share = FastPathShare("the C reader", at_least=0.4)

        @given(...)
        def case(...):
            share.count(took=...)

        case()
        share.check()
    """

    def __init__(self, path: str, at_least: float) -> None:
        self.path = path
        self.at_least = at_least
        self.taken = 0
        self.cases = 0

    def count(self, *, took: bool) -> None:
        self.cases += 1
        self.taken += bool(took)

    def check(self) -> None:
        assert self.cases, "no generated case was counted"
        assert self.taken >= self.at_least * self.cases, (
            f"{self.path} took {self.taken} of {self.cases} generated cases, fewer than the "
            f"stated {self.at_least:.0%}"
        )
