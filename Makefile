# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates .venv (if missing or stale), installs the package with pinned ranges, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench install clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "workbench needs Python 3.11: run make PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench demo

test: $(STAMP)
	$(BIN)/ruff check workbench tests bench notebooks
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -n auto --dist loadfile --nbval-lax notebooks tests

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/lake.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/walkforward.py
	$(BIN)/python bench/paper_tick.py
	$(BIN)/python bench/collect.py
	$(BIN)/python bench/stream_tick.py
	$(BIN)/python bench/ml.py
	$(BIN)/python bench/portfolio.py

clean-venv:
	rm -rf $(VENV)
