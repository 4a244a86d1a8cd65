# The two commands of the quick start are `make demo` and `make test`; each
# installs what it needs first. Everything lands in .venv and .state/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SERVICES := packaging/services/pulsegate-services

.PHONY: demo test test-fast services services-stop bench lint clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/pulsegate demo

# The whole suite, against real RabbitMQ and Cassandra started on loopback.
test: $(STAMP) services
	$(BIN)/pytest

# Unit and pseudo-terminal tests only: no servers needed.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not servers"

services: $(STAMP)
	$(SERVICES) start

services-stop:
	$(SERVICES) stop

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .state
