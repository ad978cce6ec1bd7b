# The two commands of the Quick start, and what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/sms plugins/orders plugins/notifications plugins/bench
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))

.PHONY: run test lint types layers pytest soak mariadb postgresql system-packages clean

# Set-up: a virtual environment with the core, the plugins (editable: the three of the demo
# and the bench, which adds `infsched bench` and holds the cluster harness) and the dev tools.
# -qq: errors only; setuptools reports every editable install of a flat-layout plugin as a warning.
$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]' $(addprefix -e ,$(PLUGINS))
	touch $@

run: $(STAMP)
	$(BIN)/infsched plugins list
	$(BIN)/infsched db init
	$(BIN)/infsched demo

mariadb:
	@bash .ci/ensure-mariadb

postgresql:
	@bash .ci/ensure-postgresql

# Kannel (bearerbox, smsbox, fakesmsc) for the SMS plugin's tests; installed when missing.
system-packages:
	@bash .ci/system-packages

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy core/infsched plugins/sms/infsched_sms plugins/orders/infsched_orders plugins/notifications/infsched_notifications plugins/bench/infsched_bench tests
	# Each plugin's tests import their helpers by module name: one run per plugin.
	for p in $(PLUGINS); do MYPYPATH=$$p/tests $(BIN)/mypy $$p/tests || exit 1; done
	MYPYPATH=docs/examples/spool $(BIN)/mypy docs/examples/spool

# The import contracts in pyproject.toml ([tool.importlinter]): an import running up a layer fails.
layers: $(STAMP)
	$(BIN)/lint-imports

# The default run leaves out the soak tests (pyproject's addopts: -m 'not soak').  Two
# workers, a test file each at a time (its module fixtures, a Galera cluster or Kannel's boxes,
# start once): most tests wait on nodes, leases and servers, so two share this 2-core
# machine's CPU and halve the run (387 s against 660 s, 2026-12-04).
PYTEST_WORKERS ?= 2
pytest: $(STAMP) mariadb postgresql system-packages
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# The long versions: 50,000 entities on three nodes, a 30 s outage, 10 minutes of downtime.
# One at a time: they are load runs, and measure what one machine does.
soak: $(STAMP) mariadb postgresql system-packages
	$(BIN)/python -m pytest -q -m soak

test: $(STAMP) mariadb postgresql lint types layers pytest

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
