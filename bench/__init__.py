"""Benchmarks: export generator, references (naive, DuckDB, pyarrow) and the runner."""
