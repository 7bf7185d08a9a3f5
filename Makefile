# Two commands on a fresh machine:  `make demo` (set up + run the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench serve clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: the CPU build (see README for GPU).
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## data -> Ray Train (2 workers, DDP) -> evaluate on adult.test -> MLflow run + registry
demo: setup
	$(BIN)/ray-app data
	$(BIN)/ray-app train
	@echo
	@echo "Results:"
	@echo "  MLflow store : sqlite:///$(CURDIR)/mlflow.db  (artifacts in $(CURDIR)/mlartifacts)"
	@echo "  Browse       : $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db  -> http://127.0.0.1:5000"
	@echo "  Checkpoints  : $(CURDIR)/ray_results/"
	@echo "  Champion     : $(BIN)/ray-app evaluate --model-uri models:/adult-income@champion"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ray_app benchmarks

## lint + types + every test (real local Ray, real MLflow sqlite store)
test: lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/tune_bench.py
	$(BIN)/python benchmarks/serve_bench.py

## the Serve graph locally on the champion in ./mlflow.db (after `make demo`)
serve: setup
	$(BIN)/ray-app serve

clean:
	rm -rf ray_results mlruns mlartifacts mlflow.db .pytest_cache .mypy_cache .ruff_cache
