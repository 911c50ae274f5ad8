# One place for tasks. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# The dashboard's front-end packages (npm registry, pinned by the lock file), copied into
# the API's static files: nothing is loaded from a CDN at run time.
VENDOR := query_api/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed-$(shell sha1sum frontend/package-lock.json | cut -c1-12)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

$(VENDOR_STAMP): frontend/package.json frontend/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the dashboard's front-end packages: sudo apt-get install -y nodejs npm" >&2; exit 1; }
	cd frontend && npm ci --no-audit --no-fund --ignore-scripts
	mkdir -p $(VENDOR)
	cp frontend/node_modules/uplot/dist/uPlot.esm.js frontend/node_modules/uplot/dist/uPlot.min.css $(VENDOR)/
	cp frontend/node_modules/uplot/LICENSE $(VENDOR)/uPlot.LICENSE
	@rm -f $(VENDOR)/.installed-*; touch $@

.PHONY: vendor
vendor: $(VENDOR_STAMP) ## Dashboard front-end packages: npm ci, copied into query_api/static/vendor

.PHONY: install
install: $(STAMP) $(VENDOR_STAMP) ## Python deps, PostgreSQL 15 (apt, as root), Kafka/Connect/Debezium jars (Maven), dashboard packages (npm)
	$(BIN)/stockcdc infra install

.PHONY: browser
browser: $(STAMP) ## Chromium for the dashboard's browser tests (Debian's package: apt, as root)
	$(BIN)/stockcdc infra install --browser

.PHONY: demo
demo: install ## Run the product: start every service and show changes flowing
	$(BIN)/stockcdc demo

.PHONY: test
test: install browser lint ## Run the whole test suite against real services (started and stopped here)
	bash infra/run-tests.sh $(PYTEST_ARGS)

.PHONY: faults
faults: install ## The fault suite's long profile: 25 kill -9, 60 s outages (services started and stopped here)
	STOCKCDC_FAULT_PROFILE=long bash infra/run-tests.sh tests/integration/faults $(PYTEST_ARGS)

.PHONY: bench
bench: install ## Every benchmark, full profile (about an hour): bench/results/full.json and PNGs; BENCH_ARGS="--only api"
	$(BIN)/stockcdc infra up
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: unit
unit: $(STAMP) ## Fast unit tests only (no services)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: up
up: install ## Start the services (idempotent)
	$(BIN)/stockcdc infra up

.PHONY: down
down: ## Stop the services
	@if [ -x $(BIN)/stockcdc ]; then $(BIN)/stockcdc infra down; fi

.PHONY: status
status: $(STAMP) ## Show each service, port, pid and connector state
	$(BIN)/stockcdc infra status

.PHONY: reset
reset: $(STAMP) ## Stop the services and wipe the state dir
	$(BIN)/stockcdc infra reset
