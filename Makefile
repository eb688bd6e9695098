# qtts-sweep: a thin, self-documenting layer over the CLI. `make help` lists the targets.
SHELL := /bin/bash
PY_SYS ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-deps demo sweep test test-fast dry-run lint format clean
SWEEP ?= tiny
# Test processes (pytest-xdist, whole files per process: module fixtures are built once). 2 fits a 2-core machine.
TEST_WORKERS ?= 2

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	$(PY) -m pip check
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package (quick no-op when up to date)

system-deps: ## install the Debian packages the tests need (root + apt), else print the one command to run
	@bash scripts/system-deps.sh

demo: install ## a whole sweep on the tiny preset, offline: prepare, sweep, promote, synth; prints where to look
	$(VENV)/bin/qtts-sweep demo

sweep: install ## run a sweep: make sweep SWEEP=tiny ARGS="..." (SWEEP: a name in sweeps/ or a path)
	$(VENV)/bin/qtts-sweep sweep $(SWEEP) $(ARGS)

test: install system-deps ## the whole test suite (what CI runs)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

test-fast: install system-deps ## unit tests only (skips the slow end-to-end tests)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

dry-run: install ## the whole path at the 1.7B size, random weights (CPU: ~13 GB RAM, ~14 min); prints a GPU memory plan
	$(VENV)/bin/qtts-sweep dry-run model=qwen3_tts_1.7b_base $(ARGS)

lint: install ## ruff lint + format check
	$(VENV)/bin/ruff check qtts_sweep tests scripts
	$(VENV)/bin/ruff format --check qtts_sweep tests scripts

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix qtts_sweep tests scripts
	$(VENV)/bin/ruff format qtts_sweep tests scripts

clean: ## remove runs/ (all outputs: models, data cache, checkpoints, MLflow store)
	rm -rf runs
