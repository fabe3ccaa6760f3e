# All set-up happens here: a fresh clone needs only python3 (>= 3.10) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint bench docs clean brian2-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[test,adaptive]"
	touch $(STAMP)

## brian2-env: Brian2 (it needs numpy < 2.3) with notebookscan in its own venv, for
## tests/test_brian2.py and the Brian2 benchmark
BRIAN2_VENV ?= .venv-brian2
brian2-env: $(BRIAN2_VENV)/.installed

$(BRIAN2_VENV)/.installed: pyproject.toml
	test -x $(BRIAN2_VENV)/bin/python || $(PYTHON) -m venv $(BRIAN2_VENV)
	$(BRIAN2_VENV)/bin/python -m pip install -q "numpy<2.3" brian2 -e .
	touch $@

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
	rm -rf $(VENV) $(BRIAN2_VENV) demo-results .pytest_cache .ruff_cache .hypothesis
