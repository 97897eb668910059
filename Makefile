# The two commands (see README): `make run` starts the service locally, `make test` runs every test.
# Both create or refresh the .venv (and node_modules for the test services) when missing or stale.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# Local Ray sized for a small machine (2 cores); override on a bigger one: make run RAY_NUM_CPUS=8
RAY_NUM_CPUS ?= 2
RAY_OBJECT_STORE_BYTES ?= 2000000000

.PHONY: run test venv node system-deps lint bench clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python && $(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
		|| { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

node: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

system-deps:
	@bash scripts/system-deps.sh

run: venv
	@bash scripts/run-local.sh

test: venv node system-deps
	$(BIN)/python -m pytest --cov=treecore --cov-report=term

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/detect_speed.py
	$(BIN)/python benchmarks/obj_speed.py
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis .coverage test-artifacts generated_models
