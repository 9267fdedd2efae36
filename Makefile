PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?=
ENV ?= hopper

# Installed once; test, benchmark and data install first when needed, so each works as the very
# first command on a fresh clone.
STAMP := $(VENV)/.installed

.PHONY: install test test-all benchmark data lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

# The fast set (every module; budget 15 min on 2 cores). test-all adds the tests marked slow.
test: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest tests

benchmark: $(STAMP)
	$(PY) -m offrl_jax.cli bench $(if $(PROFILE),--profile $(PROFILE),)

data: $(STAMP)
	$(PY) -m offrl_jax.cli data generate --env $(ENV) $(if $(PROFILE),--profile $(PROFILE),)

lint:
	$(PY) -m ruff check offrl_jax tests benchmarks

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
