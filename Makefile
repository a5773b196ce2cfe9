# Two commands do everything on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install quickstart test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Runs the quickstart study (bundled digits data, CPU, a few minutes) end to end:
# sweep on Ray Tune -> Parquet + MLflow -> report in reports/quickstart/index.html.
quickstart: install
	rm -rf results/quickstart reports/quickstart
	$(VENV)/bin/bkd-sweep validate studies/*.yaml
	$(VENV)/bin/bkd-sweep run studies/quickstart.yaml
	$(VENV)/bin/bkd-sweep results quickstart
	$(VENV)/bin/bkd-sweep report studies/quickstart.yaml

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The unit tier: no Ray, no server, no browser, nothing that takes minutes (< 90 s on 2 cores).
FAST_TIER := not slow and not ray and not server and not browser and not cluster

test-fast: install
	$(PY) -m pytest -m "$(FAST_TIER)" $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py

clean:
	rm -rf results reports .pytest_cache
