# One entry point for people and CI. Everything a target needs, it installs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for the suite: its tests mostly wait on real peers (a serial run
# kept about a third of one core busy), so two workers overlap the waits. One test file per
# work unit (tests/conftest.py), handed out in collection order: the long integration files
# first, the many short unit files fill the end. PYTEST_WORKERS=0 runs it serially.
PYTEST_WORKERS ?= 2
WORKERS = -n $(PYTEST_WORKERS) --no-loadscope-reorder
# pip-compile lives in a virtual environment of its own: it pins pip, which the project's must not.
PIP_TOOLS := $(VENV)/pip-tools
PIP_TOOLS_VERSION := 7.6.2

.PHONY: help venv tools run demo test test-unit test-integration proto proto-check openapi lint lock clean

help:
	@echo "make run      start the devstack and every service on this machine (Ctrl-C stops)"
	@echo "make demo     tell the product's story against a fresh stack (order to invoice)"
	@echo "make test     install what is missing, lint, then run the whole suite against real peers"
	@echo "make proto    regenerate the Python package idc/ from proto/"
	@echo "make openapi  regenerate openapi/partner.json from the REST facade's operations"
	@echo "make lint     ruff, mypy (strict), buf lint and buf breaking"
	@echo "make lock     re-resolve requirements.lock (with hashes) after pyproject.toml changed"

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# requirements.lock: what `make venv` installs (dev extra and the build backend);
# requirements-runtime.lock: the image's subset, at the same versions. Both keep every pin
# they already have; `make lock LOCK_ARGS=--upgrade-package=NAME` moves one.
COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(PIP_TOOLS)/bin/pip-compile --quiet \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock:
	test -x $(PIP_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(PIP_TOOLS) \
	  && $(PIP_TOOLS)/bin/pip install --quiet pip-tools==$(PIP_TOOLS_VERSION); }
	$(COMPILE) --extra dev --build-deps-for editable $(LOCK_ARGS) -o requirements.lock pyproject.toml
	$(COMPILE) --build-deps-for wheel -c requirements.lock -o requirements-runtime.lock pyproject.toml

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

# What a reviewer checks comes first: a lint failure stops before the suite starts.
test: tools lint
	$(PY) -m pytest $(WORKERS) $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: tools
	$(PY) -m pytest $(WORKERS) -m integration $(PYTEST_ARGS)

proto: venv
	$(PY) tools/protogen.py

proto-check: venv
	$(PY) tools/protogen.py --check

# The partner REST facade's contract; tests/unit/order/test_rest_openapi.py fails when stale.
openapi: venv
	$(PY) -m services.order.rest.openapi

lint: venv node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	node_modules/.bin/buf lint proto
	$(PY) -m tools.breaking

clean:
	rm -rf $(VENV) node_modules var .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (BENCHMARKS.md): `make bench`, or `make bench QUICK=1` for a run under 3 minutes.
.PHONY: bench
bench: tools
	$(PY) -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)
