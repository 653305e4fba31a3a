# `make run` and `make test` set themselves up: each creates .venv if missing and installs
# the CPU wheel torch==2.13.0 first (the `fl` extra's torch range would let pip pull several
# GB of CUDA wheels), then flexmoe[all,dev] — pip keeps the torch it has.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flexmoe-installed

.PHONY: run test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flexmoe-bench demo --out results --overwrite

lint: $(STAMP)
	$(BIN)/ruff check flexmoe tests benchmarks
	$(BIN)/ruff format --check flexmoe tests benchmarks
	$(BIN)/mypy flexmoe

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow || test $$? -eq 5  # 5: no slow test collected

bench: $(STAMP)
	$(BIN)/python -m pytest -q benchmarks --benchmark-only --benchmark-columns=median,min,max,rounds

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
