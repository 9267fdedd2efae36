PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?=
ENV ?= hopper

.PHONY: install test benchmark data lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e ".[dev]"

test:
	$(PY) -m pytest tests

benchmark:
	$(PY) -m offrl_jax.cli bench $(if $(PROFILE),--profile $(PROFILE),)

data:
	$(PY) -m offrl_jax.cli data generate --env $(ENV) $(if $(PROFILE),--profile $(PROFILE),)

lint:
	$(PY) -m ruff check offrl_jax tests benchmarks

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
