# Two commands: `make demo` runs the main job, `make test` runs the tests. Each creates .venv
# and installs the package with its dependencies on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint demo paper benchmark

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check elemnet_jax experiments tests
	$(PY) -m ruff format --check elemnet_jax experiments tests

test: lint
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist worksteal

demo: install
	$(VENV)/bin/elemnet-jax study --config=demo --workdir=workdirs/demo

paper: install
	$(VENV)/bin/elemnet-jax train --config=oqmd --workdir=workdirs/oqmd
	$(VENV)/bin/elemnet-jax study --config=paper "--config.study.learning_rates=()" --workdir=workdirs/study_paper --config.study.pretrained=workdirs/oqmd

benchmark: install
	$(VENV)/bin/elemnet-jax benchmark --output=workdirs/benchmark.json
