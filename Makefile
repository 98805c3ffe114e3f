# The two commands of the README: `make demo` and `make test`.
# Each creates .venv with python3 and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# DEMO_ARGS=--smoke: run it headless once and report (see docs/demo.md).
demo: $(BIN)/.installed
	$(BIN)/python example_project/run_demo.py $(DEMO_ARGS)

# HOSTS: the app in host configurations that cannot change within one run (a user model
# of the host's own); each runs apart: tests/hosts/<host>_checks.py with the settings
# tests/hosts/settings_<host>.py.
HOSTS := $(patsubst tests/hosts/%_checks.py,%,$(wildcard tests/hosts/*_checks.py))

# PYTEST_ARGS (a selection such as -m worker, -k or a path) go to the main run only, and
# then the host runs are left out: a selection of the main suite is not meant for them.
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
ifeq ($(strip $(PYTEST_ARGS)),)
	for host in $(HOSTS); do \
	  $(BIN)/python -m pytest -q -p no:cacheprovider \
	    --ds=tests.hosts.settings_$$host tests/hosts/$${host}_checks.py || exit 1; \
	done
endif

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (docs/performance.md): about 10 minutes, its own database and Redis DB.
# BENCH_FULL=1: memory up to 100,000 deliveries; BENCH_PROFILE=1: sample with py-spy;
# BENCH_ARGS="--only send,pixel": some of them.
.PHONY: bench
$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	touch $@

bench: $(BIN)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts example_project/var
