# Everything creates what it needs: the venv on first use, the local AWS inside the commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv test lint typecheck unit demo bench clean

$(STAMP): pyproject.toml dynamo_cdc/_native.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

## make test: lint, type check, then every test (unit, integration on the local AWS, e2e)
test: lint typecheck
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

## make demo: the local AWS, demo tables, a workload and the pipeline, end to end
demo: venv
	$(VENV)/bin/dynamo-cdc demo

## make bench: BENCH_ITEMS=1000000 for the full size
bench: venv
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache lake .demo bench/out
