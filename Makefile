# One place for tasks. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

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

.PHONY: install
install: $(STAMP) ## Python deps, PostgreSQL 15 (apt, as root), Kafka/Connect/Debezium jars (Maven)
	$(BIN)/stockcdc infra install

.PHONY: demo
demo: install ## Run the product: start every service and show changes flowing
	$(BIN)/stockcdc demo

.PHONY: test
test: install lint ## Run the whole test suite against real services (started and stopped here)
	bash infra/run-tests.sh $(PYTEST_ARGS)

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
