# Everything creates what it needs: the venv on first use, the local AWS inside the commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv test lint typecheck checkdefs unit demo bench asan clean system-deps

NATIVE_SRC := $(wildcard dynamo_cdc/convert/_native/*.c) dynamo_cdc/convert/_native/common.h

$(STAMP): pyproject.toml $(NATIVE_SRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[dev]'  # quiet: setuptools calls ext-modules experimental
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

## make checkdefs: `dg check defs` of the example project (dagster_project/defs/*/defs.yaml)
# Tests and checks reach no address off this machine, not even the EC2 metadata service that
# boto3's credential chain asks (the example project's partitions start on a set day, so
# loading it asks DynamoDB nothing).
test unit checkdefs: export AWS_EC2_METADATA_DISABLED = true
checkdefs: venv
	VIRTUAL_ENV=$(abspath $(VENV)) DYNAMO_CDC_PARTITIONS_START=2025-01-01 $(VENV)/bin/dg check defs

## make system-deps: the Debian packages the tests use that pip cannot install: chromium (the UI
## test) and postgresql (the tests of Dagster on PostgreSQL). apt-get installs what is missing
## when run as root; otherwise it prints what to install and goes on.
CHROMIUM ?= /usr/bin/chromium
PG_ROOT  ?= /usr/lib/postgresql
APT_GET  ?= apt-get
UID_NOW  ?= $(shell id -u)
system-deps:
	@missing=""; \
	[ -x "$(CHROMIUM)" ] || missing="$$missing chromium"; \
	[ -d "$(PG_ROOT)" ] || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$(UID_NOW)" != 0 ] || ! command -v $(firstword $(APT_GET)) >/dev/null; then \
		echo "make test: Debian packages missing:$$missing (not installed: not root or no apt-get)."; \
		echo "  The tests that need them will fail. Fix: sudo apt-get install -y$$missing"; \
		exit 0; \
	fi; \
	echo "Installing Debian packages the tests need:$$missing ..."; \
	$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $$missing >/dev/null

## make test: lint, type check, the example project's defs, the Debian packages the tests need,
## then every test (unit, integration on the local AWS, e2e)
test: lint typecheck checkdefs system-deps
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

## make demo: the local AWS, demo tables, a workload and the pipeline, end to end
demo: venv
	$(VENV)/bin/dynamo-cdc demo

## make bench: BENCH_ITEMS=1000000 for the full size
bench: venv
	$(PY) -m bench.run

## make asan: the C readers' tests against a build with AddressSanitizer and UBSan (in build/asan)
ASAN_DIR := build/asan
asan: venv
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	cp -r pyproject.toml dynamo_cdc bench tests $(ASAN_DIR)/
	rm -f $(ASAN_DIR)/dynamo_cdc/convert/*.so
	$(CC) -shared -fPIC -O1 -g -std=c99 -fno-omit-frame-pointer \
		-fsanitize=address,undefined -fno-sanitize-recover=undefined \
		-I"$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
		$(filter %.c,$(NATIVE_SRC)) \
		-o $(ASAN_DIR)/dynamo_cdc/convert/_native$$($(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=0 \
		LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
		$(abspath $(PY)) -m pytest -p no:cacheprovider tests/unit/convert/test_items_differential.py tests/unit/test_record_pages.py \
		tests/unit/test_record_dicts_native.py -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache lake .demo bench/out build dynamo_cdc/convert/*.so
