# The two commands of the quick start are `make demo` and `make test`; each
# installs what it needs first. Everything lands in .venv and .state/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SERVICES := packaging/services/pulsegate-services

.PHONY: demo test test-fast test-helm deb services services-stop bench lint clean

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
	$(BIN)/pytest -m "not helm"

# Unit and pseudo-terminal tests only: no servers needed.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not servers and not helm"

# The Helm chart checks that run the helm binary (not in Debian; e.g.
# go install helm.sh/helm/v4/cmd/helm@v4.3.2).
test-helm: $(STAMP)
	$(BIN)/pytest -m helm tests/packaging

# The appliance's Debian package, into dist/.
deb: $(STAMP)
	packaging/debian/build-deb --out dist

services: $(STAMP)
	$(SERVICES) start

services-stop:
	$(SERVICES) stop

# Each prints its figures beside a raw baseline measured in the same run.
bench: $(STAMP) services
	$(BIN)/python benchmarks/gateway_ingest.py
	$(BIN)/python benchmarks/uplink_drain.py
	$(BIN)/python benchmarks/central_ingest.py

clean:
	rm -rf $(VENV) .state
