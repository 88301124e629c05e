# `make demo` and `make test` each bootstrap .venv on a fresh machine (only Python and pip needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[transformers,bench,dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m attnsieve demo

test: $(VENV)/.installed
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2 --durations=15

lint: $(VENV)/.installed
	$(PY) -m ruff check attnsieve tests benchmarks
	$(PY) -m ruff format --check attnsieve tests benchmarks

clean:
	rm -rf $(VENV)
