# The README's commands. Everything installs into .venv; nothing is needed beforehand but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch; on the project's machines this exact version comes from local disk.
TORCH_SPEC ?= torch==2.13.0
# test-min: the oldest versions pyproject.toml allows, in their own venv, with `.[test]` alone
# (no torch, jax, matplotlib or tqdm): the lower bounds are tested, not guessed.
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_SPECS ?= numpy==2.0.0 array-api-compat==1.11 array-api-strict==2.3 pytest==8.0.0
# gpu-wheels: what the GPU machine (CPython 3.12, no network) lacks, for benchmarks/gpu.sh
GPU_WHEELS ?= array-api-compat==1.16.0 array-api-strict==2.6.1

.PHONY: setup demo test test-min lint bench gpu-wheels clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || echo "note: $(TORCH_SPEC) could not be installed; the torch backend will be skipped"
	$(PY) -m pip install -q "jax>=0.4.30" || echo "note: jax could not be installed; the jax backend will be skipped"
	$(PY) -m pip install -q "mpi4py>=4" mpich || echo "note: mpi4py and mpich (MPI from wheels) could not be installed; the multi-rank tests of tests/test_distributed.py will be skipped"
	$(PY) -m pip install -q -e ".[test,plot,progress]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	PY=$(PY) scripts/demo.sh

# The suite in parallel (pytest-xdist, one worker per core); MPI tests share one worker.
# `make test PYTEST_ARGS=` runs it in one process.
PYTEST_ARGS ?= -n auto --dist loadgroup

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

$(MIN_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install -q $(MIN_SPECS)
	$(MIN_PY) -m pip install -q -e ".[test]" $(MIN_SPECS)
	touch $@

test-min: $(MIN_VENV)/.installed
	$(MIN_PY) -m pip list 2>/dev/null | grep -i -E "^(numpy|array.api|pytest) "
	$(MIN_PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check ailib tests examples benchmarks
	$(PY) -m ruff format --check ailib tests examples benchmarks

bench: setup
	$(PY) -m benchmarks.mlp

gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	ls -1 .whl

clean:
	rm -rf $(VENV) $(MIN_VENV) .whl .pytest_cache build *.egg-info
