# Every target sets itself up from a fresh clone: uv (from PyPI if missing), then the locked venv.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test bench bench-distributed bench-learning lint setup

$(UV):
	$(PYTHON) -m pip install --user --quiet uv || $(PYTHON) -m pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups
	@touch $@

setup: .venv/.synced

run: setup
	$(UV) run --frozen recloop serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

test: setup
	@command -v promtool >/dev/null || (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)) || echo "promtool not installed: the monitoring assets' checks skip (fail with RECLOOP_REQUIRE_SERVICES=1)"
	$(UV) run --frozen pytest $(PYTEST_ARGS)

bench: setup
	@command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)) || echo "wrk not installed: the wrk-driven benchmarks (single event, read path) fall back to the Python load generator"
	$(UV) run --frozen python -m benchmarks $(BENCH_ARGS)

bench-distributed: setup
	$(UV) run --frozen python -m benchmarks.distributed $(BENCH_ARGS)

bench-learning: setup
	$(UV) run --frozen python -m benchmarks.learning $(BENCH_ARGS)

lint: setup
	$(UV) run --frozen ruff check src tests benchmarks clients
	$(UV) run --frozen ruff format --check src tests benchmarks clients
	$(UV) run --frozen mypy
