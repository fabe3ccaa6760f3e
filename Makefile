# All set-up happens here: a fresh clone needs only python3 (>= 3.10) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[test,adaptive]"
	touch $(STAMP)

## demo: run a real scan on local ipyparallel engines; writes demo-results/ (NetCDF store + PNG)
demo: $(STAMP)
	$(BIN)/notebookscan demo --out demo-results

## lint: ruff over the package, tests and benchmarks
lint: $(STAMP)
	$(BIN)/ruff check notebookscan tests benchmarks

## test: lint, then every test not marked slow
test: $(STAMP) lint
	@if [ -f tests/browser/install-chromium.sh ]; then bash tests/browser/install-chromium.sh; fi
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## test-slow: the long variants only
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

## bench: run every benchmark and rewrite benchmarks/RESULTS.md
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test,adaptive,bench]"
	$(BIN)/python benchmarks/run_all.py

## docs: regenerate the API reference in docs/api/ from the docstrings
docs: $(STAMP)
	$(BIN)/python docs/build_api.py

clean:
	rm -rf $(VENV) demo-results .pytest_cache .ruff_cache .hypothesis
