# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo ui bench bench-signals clean

# The editable install also compiles the mapper (Cython, setup.py); a change to its source builds it again
$(STAMP): pyproject.toml setup.py py_load_eudravigilance/mapping/_core.pyx
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

# The Dagster instance of the demo lives here, so `make ui` shows the demo's run
export DAGSTER_HOME := $(CURDIR)/.dagster_home

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/eudravigloader generate demo-data --files 3 --cases 40
	$(BIN)/python -m eudravig_assets.demo demo-data --dsn sqlite:///eudravig.db

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	PY_LOAD_EUDRAVIGILANCE_SOURCE_URI=$${PY_LOAD_EUDRAVIGILANCE_SOURCE_URI:-demo-data} $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) eudravig.db demo-data .dagster_home .pytest_cache .ruff_cache

# Throughput and memory of every load path against a bare-parse baseline (needs PostgreSQL);
# pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS="--cases 2000 --big-mb 256"
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# refresh time of the drug-event statistics on 100,000 generated cases (BENCH_ARGS="--cases 20000" for less)
bench-signals: $(STAMP)
	$(BIN)/python -m benchmarks.signals $(BENCH_ARGS)
