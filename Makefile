PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?=
ENV ?= hopper

# Installed once; test, benchmark and data install first when needed, so each works as the very
# first command on a fresh clone.
STAMP := $(VENV)/.installed

# GPU=1 (the default where `nvidia-smi -L` lists a GPU): CUDA-enabled JAX. The environment sees
# the system's packages, so a GPU image's own jax (within pyproject's ranges) is used as is;
# otherwise jax[cuda$(CUDA)] comes from PyPI. CPU: the pinned versions of constraints.txt.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
CUDA ?= 12
ifeq ($(GPU),1)
VENV_FLAGS := --system-site-packages
# No cuda extra when the system's jax already runs on the GPU (one import, GPU installs only).
HAVE_GPU_JAX = $(shell $(PYTHON) -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >/dev/null 2>&1 && echo 1)
EXTRAS = dev$(if $(HAVE_GPU_JAX),,$(comma)cuda$(CUDA))
CONSTRAINTS :=
else
VENV_FLAGS :=
EXTRAS = dev
CONSTRAINTS := -c constraints.txt
endif
comma := ,

.PHONY: install test test-all benchmark results-quick validate data lint clean

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e ".[$(EXTRAS)]" $(CONSTRAINTS)
	touch $(STAMP)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -e ".[$(EXTRAS)]" $(CONSTRAINTS)
	touch $(STAMP)

# The fast set (every module; budget 15 min on 2 cores). test-all adds the tests marked slow.
test: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest tests

# A user's run: into runs/PROFILE (outside git), never over the committed results/.
benchmark: $(STAMP)
	$(PY) -m offrl_jax.cli bench $(if $(PROFILE),--profile $(PROFILE),)

# Regenerates the committed results/quick (README "Results"): an explicit, separate command.
results-quick: $(STAMP)
	$(PY) -m offrl_jax.cli bench --profile quick --out results/quick

# The reproduction report (docs/validation.md): hours of CPU, resumable (re-run to continue; a
# finished cell whose records are in git is not retrained). One task at a time, so that each
# task's rows are complete before the next starts: the cheap methods and 10%BC with 5 seeds on
# every task; the costly eight with 3 seeds on hopper-medium-replay only (on a CPU they take
# about 8 hours a task; the GPU slice, benchmarks/gpu_slice.sh, advances them). The three-seed
# run shares the five-seed run's model store (a link), so COMBO, RAMBO and MOBILE reuse MOPO's
# fitted seeds 0 to 2. MOReL, the costliest of the five-seed set, runs last.
VALIDATE_TASKS := hopper-medium-replay hopper-medium-expert walker2d-medium-replay \
  halfcheetah-medium-replay
VALIDATE_COSTLY_TASKS := hopper-medium-replay
VALIDATE_FIVE := bc bc10 iql mopo td3bc rebrac morel
VALIDATE_THREE := mobile rambo combo sacn atac armor cql edac
validate: $(STAMP)
	set -e; for task in $(VALIDATE_TASKS); do \
	  $(PY) -m offrl_jax.cli bench --profile validate --tasks $$task --algos $(VALIDATE_FIVE) \
	    --seeds 5 --out results/validate/$$task/five-seeds; \
	done; \
	for task in $(VALIDATE_COSTLY_TASKS); do \
	  mkdir -p results/validate/$$task/three-seeds results/validate/$$task/five-seeds/models; \
	  [ -e results/validate/$$task/three-seeds/models ] || \
	    ln -s ../five-seeds/models results/validate/$$task/three-seeds/models; \
	  $(PY) -m offrl_jax.cli bench --profile validate --tasks $$task --algos $(VALIDATE_THREE) \
	    --seeds 3 --out results/validate/$$task/three-seeds; \
	done
	$(PY) -m offrl_jax.cli report results/validate/*/*-seeds --out results/validate

data: $(STAMP)
	$(PY) -m offrl_jax.cli data generate --env $(ENV) $(if $(PROFILE),--profile $(PROFILE),)

lint:
	$(PY) -m ruff check offrl_jax tests benchmarks

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
