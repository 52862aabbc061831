"""How often the C reader refuses an export block, and what the reference costs then.

    python -m bench.convert_paths      # BENCH_ITEMS=100000 (bench items), 600 Hypothesis cases

Prints, for the bench generator's items (8 MB blocks, string and number sort keys), the
all-types test items and the Hypothesis strategies of the tests (tests/unit/strategies.py): the
blocks the C reader (``scan_block``) refused, and why. Then the items/s of one 8 MB block of
bench items converted (statistics and table, one core) by the C reader and by the reference
(``dynamo_cdc.convert.items``), which a refused block takes.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench.generate import generate_items
from dynamo_cdc import schema
from dynamo_cdc.convert import items, native_items

_TESTS = Path(__file__).resolve().parent.parent / "tests"


def _line(item: dict[str, Any]) -> bytes:
    return b'{"Item":' + orjson.dumps(item) + b"}"


def _blocks(lines: list[bytes], size: int = 8 << 20) -> list[bytes]:
    out: list[bytes] = []
    start, n = 0, 0
    for i, line in enumerate(lines):
        n += len(line) + 1
        if n >= size:
            out.append(b"\n".join(lines[start : i + 1]))
            start, n = i + 1, 0
    if start < len(lines):
        out.append(b"\n".join(lines[start:]))
    return out


def _refused(blocks: list[bytes]) -> tuple[int, int, Counter[str]]:
    reasons: Counter[str] = Counter()
    for block in blocks:
        try:
            native_items.read_block(block).stats()
        except native_items.Unsupported as exc:
            reasons[str(exc)] += 1
    return len(blocks), sum(reasons.values()), reasons


def _hypothesis_blocks(strategy: Any, examples: int) -> list[bytes]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    out: list[bytes] = []

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(strategy, min_size=1, max_size=12))
    def draw(drawn: list[dict[str, Any]]) -> None:
        out.append(b"\n".join(map(_line, drawn)))

    draw()
    return out


def refusals(n_items: int, examples: int) -> None:
    sys.path[:0] = [str(_TESTS), str(_TESTS / "unit")]
    from cases.all_types import ALL_TYPES_ITEMS, large_item
    from hypothesis import strategies as st
    from strategies import as_aws_writes
    from strategies import items as random_items

    cases: dict[str, list[bytes]] = {
        "bench items, S sort key": _blocks([_line(i) for i in generate_items(n_items, seed=42)]),
        "bench items, N sort key": _blocks(
            [_line(i) for i in generate_items(n_items, seed=42, sk_type="N")]
        ),
        "all-types items, one a block": [_line(i) for i in [*ALL_TYPES_ITEMS, large_item()]],
        "Hypothesis items()": _hypothesis_blocks(random_items(max_depth=3), examples),
        "Hypothesis items(names=abcd)": _hypothesis_blocks(
            random_items(max_depth=3, names=st.sampled_from("abcd")), examples
        ),
        "Hypothesis items() as AWS writes them": _hypothesis_blocks(
            random_items(max_depth=4).map(lambda i: {k: as_aws_writes(v) for k, v in i.items()}),
            examples,
        ),
    }
    print("blocks the C reader refused:")
    for name, blocks in cases.items():
        total, refused, reasons = _refused(blocks)
        why = ", ".join(f"{r}: {n}" for r, n in reasons.most_common())
        print(f"  {name}: {refused} of {total}" + (f" ({why})" if why else ""))


def cost(repeat: int = 5) -> None:
    lines = [_line(i) for i in generate_items(8_000, seed=42)]
    block = b"\n".join(lines)
    target = schema.decide_schema(items.ItemsChunk.of_block(block).stats(), ["pk", "sk"])
    paths = {
        "C reader": native_items.read_block,
        "reference": items.ItemsChunk.of_block,
    }
    print(f"one block of {len(lines):,} bench items ({len(block) >> 20} MB), stats and table:")
    for name, read in paths.items():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            chunk = read(block)
            chunk.stats()
            chunk.table(target)
            times.append(time.perf_counter() - started)
        times.sort()
        print(f"  {name}: {len(lines) / times[0]:,.0f} items/s (best of {repeat})")


def main() -> None:
    refusals(int(os.environ.get("BENCH_ITEMS") or 100_000), 600)
    cost()


if __name__ == "__main__":
    main()
