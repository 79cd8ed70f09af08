# Every target creates .venv and installs what it needs when missing: the runtime dependencies for
# install, demo and ui; the development extras too (pytest, ruff, moto, ...) for test, lint and bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
SOURCES := pyproject.toml setup.py py_load_eudravigilance/mapping/_core.pyx py_load_eudravigilance/mapping/_unmapped.pyx

.PHONY: install test lint demo ui bench bench-signals bench-scale clean

# The editable install also compiles the mapper (Cython, setup.py); a change to its source builds it again
$(RUNTIME_STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

# Everything: the runtime install is part of it
$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUNTIME_STAMP)

install: $(RUNTIME_STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto

lint: $(STAMP)
	$(BIN)/ruff check .

# The Dagster instance of the demo lives here, so `make ui` shows the demo's run
export DAGSTER_HOME := $(CURDIR)/.dagster_home

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

demo: $(RUNTIME_STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/eudravigloader generate demo-data --files 3 --cases 40
	$(BIN)/python -m eudravig_assets.demo demo-data --dsn sqlite:///eudravig.db

# The example configuration (owners and tags of the assets, the demo's folder and database) unless another is set
ui: $(RUNTIME_STAMP) $(DAGSTER_HOME)/dagster.yaml
	PY_LOAD_EUDRAVIGILANCE_CONFIG=$${PY_LOAD_EUDRAVIGILANCE_CONFIG:-$(CURDIR)/examples/config.yaml} $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) eudravig.db examples.db demo-data quarantine .dagster_home .pytest_cache .ruff_cache

# Throughput and memory of every load path against a bare-parse baseline, on the FDA examples replicated (needs
# PostgreSQL); pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS="--cases 2000 --big-mb 256"
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# One 1,000-case load by the CLI and by Dagster, phase by phase, into an empty database and one grown to
# 300,000 cases (a quick look: make bench-scale BENCH_ARGS="--cases 20000")
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale $(BENCH_ARGS)

# refresh time of the drug-event statistics on 100,000 generated cases (BENCH_ARGS="--cases 20000" for less)
bench-signals: $(STAMP)
	$(BIN)/python -m benchmarks.signals $(BENCH_ARGS)
