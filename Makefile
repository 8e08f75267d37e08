# The README's commands. Everything installs into .venv; nothing is needed beforehand but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch; on the project's machines this exact version comes from local disk.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test lint bench clean

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

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check ailib tests examples benchmarks
	$(PY) -m ruff format --check ailib tests examples benchmarks

bench: setup
	$(PY) -m benchmarks.mlp

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
