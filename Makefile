# The two commands of the Quick start, and what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/sms plugins/orders plugins/notifications
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))

.PHONY: run test lint types pytest mariadb clean

# Set-up: a virtual environment with the core, the three plugins (editable) and the dev tools.
$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(addprefix -e ,$(PLUGINS))
	touch $@

run: $(STAMP)
	$(BIN)/infsched plugins list
	$(BIN)/infsched db init
	$(BIN)/infsched demo

mariadb:
	@bash .ci/ensure-mariadb

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy core/infsched plugins/sms/infsched_sms plugins/orders/infsched_orders plugins/notifications/infsched_notifications tests

pytest: $(STAMP) mariadb
	$(BIN)/python -m pytest -q

test: $(STAMP) mariadb lint types pytest

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
