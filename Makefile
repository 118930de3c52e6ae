# oodserve — the commands. `make serve` and `make test` are the two set-up commands;
# both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DATA_ROOT ?= ../shared/data

.PHONY: help venv serve-venv test lint models serve bench-train compose-test clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed-dev: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[train,serve,dev]'
	touch $@

$(VENV)/.installed-serve: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[serve]'
	touch $@

venv: $(VENV)/.installed-dev ## create .venv with everything (train, serve, dev)

test: $(VENV)/.installed-dev ## run the whole test suite
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

models: $(VENV)/.installed-dev ## retrain and export the bundled models (DATA_ROOT=../shared/data)
	$(PY) -m training.bundled --data-root $(DATA_ROOT) --out models

bench-train: $(VENV)/.installed-dev ## training throughput of plain / CEDA / ACET
	$(PY) bench/train_speed.py

clean:
	rm -rf runs .pytest_cache
