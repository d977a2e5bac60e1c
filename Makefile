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
	$(PY) -m pytest -q

demo: install
	$(PY) -m experiments.transfer_study --workdir=workdirs/demo --config=experiments/configs/demo.py

paper: install
	$(PY) -m experiments.pretrain --workdir=workdirs/oqmd --config=experiments/configs/oqmd.py
	$(PY) -m experiments.transfer_study --workdir=workdirs/study_paper \
	  --config=experiments/configs/paper.py --config.study.pretrained=workdirs/oqmd

benchmark: install
	$(PY) -m experiments.benchmark --output=workdirs/benchmark.json
