# Every target installs what is missing first (idempotently), then acts.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.r1f-installed

# Prefect keeps its state inside the project's working area and never phones home.
export PREFECT_HOME ?= $(CURDIR)/work/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
# Nothing is ever fetched from a hub.
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-dist test-slow test-ray check bench bench-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/r1f demo

test: setup
	$(PY) -m pytest -m "not slow and not gpu and not vllm and not ray and not dist" -n 2

# Data, expert and pipeline parallelism against a single process: each test starts 2 or 4
# local processes (gloo on loopback), so they run on their own, without xdist.
test-dist: setup
	$(PY) -m pytest -m "dist and not slow"

# Ray is an optional extra (several hundred MB); this installs its core and
# runs the filter steps on a local Ray cluster (loopback only).
test-ray: setup
	$(PY) -m pip install --quiet --disable-pip-version-check "ray==2.60.0"
	$(PY) -m pytest -m ray

test-slow: setup
	$(PY) -m pytest -m "slow"

check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

bench-quick: setup
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf work .pytest_cache .mypy_cache .ruff_cache
