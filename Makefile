# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/eudravigloader generate demo-data --files 3 --cases 40
	$(BIN)/eudravigloader run demo-data --dsn sqlite:///eudravig.db
	$(BIN)/eudravigloader status --dsn sqlite:///eudravig.db

clean:
	rm -rf $(VENV) eudravig.db demo-data .pytest_cache .ruff_cache
