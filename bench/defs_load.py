"""How long the code location takes to load its definitions for N tables.

    python -m bench.defs_load 100 1000 2000

Builds the definitions of N tables named table-00000... (``build_defs``) and Dagster's
repository from them (what a code server does at load), and prints the seconds and ms a table.
"""

from __future__ import annotations

import sys
import time
import warnings


def main(argv: list[str]) -> None:
    warnings.simplefilter("ignore")
    from dynamo_cdc.config import TableSpec
    from dynamo_cdc.dagster.definitions import build_defs

    for n in [int(a) for a in argv] or [100, 1000]:
        specs = [TableSpec(name=f"table-{i:05d}") for i in range(n)]
        started = time.perf_counter()
        build_defs(specs).get_repository_def()
        seconds = time.perf_counter() - started
        print(f"{n} tables: {seconds:.1f} s, {seconds * 1000 / n:.1f} ms a table", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
