# The two commands (see README): `make run` starts the service locally (Ray Serve on :8000), `make test` runs every test.
# Both create or refresh the .venv when missing or stale (it depends on the requirements files).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv node lint bench clean train

venv: $(STAMP)

# Test-only services from npm (Azurite), installed into ./node_modules from package-lock.json.
NODE_STAMP := node_modules/.installed
node: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python && $(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
		|| { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

# Ctrl-C reaches only `serve run` (the script runs it as a foreground job of its own), so make exits 0 with it.
run: venv
	@bash scripts/run-local.sh

# Extra pytest arguments, e.g. `make test PYTEST_ARGS=--hypothesis-seed=3` (locally Hypothesis explores at random;
# with CI=true its examples are derandomized: tests/conftest.py).
PYTEST_ARGS ?=
# The coverage gate (pyproject: fail_under) holds for both packages together, then for each alone. Ray replicas run
# in other processes and are not measured: the deployments' classes count through tests/serve_app/test_deployments.py.
test: venv node lint
	$(BIN)/python -m pytest --cov=treecore --cov=serve_app --cov-report=term $(PYTEST_ARGS)
	$(BIN)/coverage report --include='treecore/*' --fail-under=90 --skip-covered
	$(BIN)/coverage report --include='serve_app/*' --fail-under=90 --skip-covered

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/detect_speed.py
	$(BIN)/python benchmarks/obj_speed.py
	$(BIN)/python benchmarks/serve_pipeline.py --legacy-case
	$(BIN)/python benchmarks/load.py
	$(BIN)/python benchmarks/quality.py

# Retrain the heatmap method's network (treecore/models/tree_centres.onnx) on CPU: the training extras
# (requirements-train.txt, never in the image) go into the .venv; TRAIN_ARGS=--check retrains and compares bytes.
train: venv
	$(BIN)/python -m pip install --quiet -r requirements-train.txt
	$(BIN)/python training/train_heatmap.py $(TRAIN_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis .coverage test-artifacts generated_models
