# Every target sets itself up from a fresh clone: uv (from PyPI if missing), then the locked venv.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run run-distributed test bench bench-distributed bench-learning bench-loop lint setup serve-setup

$(UV):
	$(PYTHON) -m pip install --user --quiet uv || $(PYTHON) -m pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
# --compile-bytecode (here and below): the dependencies' .pyc are written once, at install,
# so a server starts without compiling them again where bytecode is not written at run
# time (PYTHONDONTWRITEBYTECODE, a read-only venv).
	$(UV) sync --frozen --all-groups --compile-bytecode
	@touch $@

# Serving needs only the project's own dependencies: no dev group. --inexact keeps what
# `make setup` installed (so switching between `make run` and `make test` reinstalls
# nothing); the full sync above is exact and includes everything serving needs.
.venv/.served: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --no-dev --inexact --compile-bytecode
	@touch $@

# The try-out distributed deployment also needs the test broker's wheel (its group).
.venv/.served-distributed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --no-dev --group broker --inexact --compile-bytecode
	@touch $@

setup: .venv/.synced

serve-setup: .venv/.served

run: serve-setup
	$(UV) run --frozen --no-sync recloop serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# Broker, migrations, one API and two workers on this machine's PostgreSQL and Redis;
# Ctrl-C stops them all (docs/operations.md, "Trying the distributed deployment").
run-distributed: .venv/.served-distributed
	$(UV) run --frozen --no-sync python -m recloop.devcluster --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

test: setup
	@(command -v chromium && command -v chromedriver) >/dev/null 2>&1 || (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) || echo "chromium not installed: the console's browser test skips (and fails under RECLOOP_REQUIRE_SERVICES=1)"
	@command -v promtool >/dev/null || (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)) || echo "promtool not installed: the monitoring assets' checks skip (fail with RECLOOP_REQUIRE_SERVICES=1)"
	$(UV) run --frozen pytest $(PYTEST_ARGS)

bench: setup
	@command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)) || echo "wrk not installed: the wrk-driven benchmarks (single event, read path) fall back to the Python load generator"
	$(UV) run --frozen python -m benchmarks $(BENCH_ARGS)

bench-distributed: setup
	$(UV) run --frozen python -m benchmarks.distributed $(BENCH_ARGS)

bench-learning: setup
	$(UV) run --frozen python -m benchmarks.learning $(BENCH_ARGS)

# The closed loop against a static blend and an oracle on simulated worlds (issue 15).
bench-loop: setup
	$(UV) run --frozen python -m benchmarks.loop $(BENCH_ARGS)

lint: setup
	$(UV) run --frozen ruff check src tests benchmarks clients
	$(UV) run --frozen ruff format --check src tests benchmarks clients
	$(UV) run --frozen mypy
