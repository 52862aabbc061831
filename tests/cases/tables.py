"""Helpers for comparing Arrow tables in tests."""

from __future__ import annotations

import pyarrow as pa


def first_difference(actual: pa.Table, expected: pa.Table) -> str:
    """The first differing cell of two tables (for an assertion message)."""
    for name in expected.column_names:
        a, e = actual.column(name).to_pylist(), expected.column(name).to_pylist()
        if a != e:
            i = next(i for i, (x, y) in enumerate(zip(a, e, strict=True)) if x != y)
            return f"column {name} row {i}: {a[i]!r} != {e[i]!r}"
    return "tables differ"
