# One-command set-up: every target creates its virtualenv on first use and reinstalls
# only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.milonga-installed

# The scheduler's tests, and those of the tango_events recorder built on it, again on
# PyTango 9.5.1, which lacks asynchronous subscription.
# Only the client runs on it: the sandbox's database and device servers need PyTango
# 10.3 or later and run on $(VENV)'s interpreter (MILONGA_SANDBOX_PYTHON).
PYTANGO9 := 9.5.1
VENV9 := .venv-pytango9
BIN9 := $(VENV9)/bin
STAMP9 := $(VENV9)/.milonga-installed

.PHONY: test lint typecheck pytest pytest-pytango9 demo bench check-reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(STAMP9): pyproject.toml
	test -x $(BIN9)/python || $(PYTHON) -m venv $(VENV9)
	$(BIN9)/python -m pip install --quiet --disable-pip-version-check --only-binary pytango \
		-e '.[test]' 'pytango==$(PYTANGO9)'
	touch $(STAMP9)

test: lint typecheck pytest pytest-pytango9

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The main suite needs $(VENV9) too: some tests run a device server on PyTango 9.5, one
# without QueryEventSystem, as older facilities have.
pytest: $(STAMP) $(STAMP9)
	$(BIN)/pytest

pytest-pytango9: $(STAMP) $(STAMP9)
	MILONGA_SANDBOX_PYTHON='$(abspath $(BIN)/python)' $(BIN9)/pytest tests/scheduler \
		tests/testing/test_recorder_tango.py tests/testing/test_matching.py

demo: $(STAMP)
	$(BIN)/milonga demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Not part of `make test`: runs it again and again, on the idle machine and then with every
# core kept busy, and stops at the first failure.  Settings (CHECK_IDLE_RUNS=5,
# CHECK_BUSY_RUNS=3, CHECK_COMMAND, CHECK_LOG_DIR) in scripts/check_reliability.py.
check-reliability:
	$(PYTHON) scripts/check_reliability.py

clean:
	rm -rf $(VENV) $(VENV9) build src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
