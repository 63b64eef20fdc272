# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.keras-kd-installed
# pytest-xdist workers: `auto` is one per CPU core. `worksteal` hands tests to
# idle workers, so the few minute-long ones do not queue behind each other.
TEST_WORKERS ?= auto

.PHONY: demo test docs docs-test lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/keras-kd demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The documentation site, into site/ (warnings are errors: a broken reference, a
# page missing from the navigation or a public name without a docstring fails).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/mkdocs build --strict

# The guides' runnable code blocks and the strict build (also part of `make test`).
docs-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_docs.py

lint: $(STAMP)
	$(BIN)/ruff check keras_kd tests examples benchmarks

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
