# One entry point for people and CI. Everything a target needs, it installs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv tools run demo test test-unit test-integration proto proto-check lint clean

help:
	@echo "make run      start the devstack and every service on this machine (Ctrl-C stops)"
	@echo "make demo     tell the product's story against a fresh stack (order to invoice)"
	@echo "make test     install what is missing and run the whole suite against real peers"
	@echo "make proto    regenerate the Python package idc/ from proto/"
	@echo "make lint     ruff, mypy (strict) and buf lint"

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

venv: $(STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

tools: venv node_modules/.installed
	$(PY) -m tools.prereqs

run: tools
	$(PY) -m devstack.run

demo: tools
	$(PY) -m devstack.demo

test: tools
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: tools
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

proto: venv
	$(PY) tools/protogen.py

proto-check: venv
	$(PY) tools/protogen.py --check

lint: venv node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	node_modules/.bin/buf lint proto

clean:
	rm -rf $(VENV) node_modules var .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (BENCHMARKS.md): `make bench`, or `make bench QUICK=1` for a run under 3 minutes.
.PHONY: bench
bench: tools
	$(PY) -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)
