# SyncRoot: `make run` starts everything, `make test` runs the suite. Both build what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test build coverage lint format faults bench fuzz migrate services clean

run: build ## Start the API, workers, beat and the CRM sandboxes in the foreground
	@bin/run

test: build services ## Run the test suite against local PostgreSQL and Redis
	$(BIN)/pytest $(PYTEST_ARGS)

build: $(STAMP) ## Create .venv with the pinned dependencies

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

services:
	@bin/ensure-services

migrate: build services
	$(BIN)/python bin/ensure-database
	$(BIN)/python manage.py migrate

coverage: build services ## Test suite with a coverage report
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

lint: build ## ruff, the import layers, and no model change without its migration
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	DJANGO_SETTINGS_MODULE=syncroot.test_settings $(BIN)/python manage.py makemigrations --check --dry-run

format: build
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

faults: build services ## Fault-injection suite against the real stack
	$(BIN)/python -m bench.faults

bench: build services ## Benchmarks (print JSON and a table)
	$(BIN)/python -m bench.all

fuzz: build services ## Schemathesis over the OpenAPI schema
	$(BIN)/pytest tests/test_schemathesis.py -q

clean:
	rm -rf $(VENV) var .pytest_cache .coverage htmlcov
