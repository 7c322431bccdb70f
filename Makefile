# batchq: everything runs from the repository root, inside .venv.
#   make install   create .venv, install requirements.txt and requirements-dev.txt (tests, lint); skipped while
#                  nothing changed. `make install-prod` installs only what the service runs with
#   make run       the whole stack in the foreground, embedded PostgreSQL/Redis unless
#                  DATABASE_URL / REDIS_URL are set; Ctrl-C stops everything it started
#   make test      the test suite (PYTEST_ARGS="-k foo -x" to narrow it)
#   make test-faults  the fault-injection suite alone (killed workers, a stopped Redis, lost messages)
#   make fuzz      schemathesis against the API from its openapi.json, FUZZ_EXAMPLES (500) cases per operation
#                  instead of the suite's 50 (same seed, same checks; tests/api/test_fuzz.py)
#   make lint      ruff check, ruff format --check and mypy (strict for app/services and tasks)
#   make bench     bench.handoff, .live, .control, .recovery, .estimates, .profiles_form in turn
#                  (BENCH_ARGS, LIVE_ARGS, CONTROL_ARGS, RECOVERY_ARGS, ESTIMATE_ARGS, PROFILES_ARGS)
#   make clean     caches; `make distclean` also stops the embedded servers and removes .venv and var/

SHELL := /bin/sh
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROD_STAMP := $(VENV)/.installed-prod
PYTEST_ARGS ?=
BENCH_ARGS ?=
LIVE_ARGS ?=
CONTROL_ARGS ?=
ESTIMATE_ARGS ?=

.PHONY: help install install-prod run test test-faults fuzz lint bench clean distclean

help:
	@sed -n '2,13s/^# \{0,1\}//p' Makefile

install: $(STAMP)

install-prod: $(PROD_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A stamp is newer than its requirements once they are installed: pip runs only when they change.
$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP) $(PROD_STAMP)

$(PROD_STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(PROD_STAMP)

# honcho hands each process a PORT of its own, counting from its base (5000 unless told): the base
# is the web port, so web, the first process, listens on PORT (8000 by default), as README says.
run: install-prod
	$(BIN)/python -m app.embedded run -- sh -c '$(BIN)/flask --app wsgi db upgrade && \
	  exec $(BIN)/honcho start --port "$${PORT:-8000}" web worker beat flower'

# Exit code 5 means pytest collected nothing: a suite that silently vanished is a failure too.
test: install
	@rc=0; $(BIN)/python -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

# The fault-injection suite alone (it is part of `make test` too).
test-faults: install
	@$(MAKE) --no-print-directory test PYTEST_ARGS="-m faults tests/faults $(PYTEST_ARGS)"

# The suite's fuzz test at length: more cases per operation, the same derandomized seed and checks.
fuzz: install
	@FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(MAKE) --no-print-directory test PYTEST_ARGS="tests/api/test_fuzz.py $(PYTEST_ARGS)"

# ruff and mypy are developer tools, pinned in requirements-dev.txt; mypy's settings are in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The benchmarks print figures and never fail on them; each migrates a database of its own.
# All seven run, one after the other, on the same servers; the target fails if one of them crashed.
# BENCH_ARGS go to bench.handoff (--batches 500), LIVE_ARGS to bench.live (--samples 60 --batches 10000),
# CONTROL_ARGS to bench.control (--iterations 20 --queued 10000), RECOVERY_ARGS to bench.recovery
# (--rounds 5 --soak-batches 1000 --kill-every 100; it also fails if a batch was lost or two overlapped),
# ESTIMATE_ARGS to bench.estimates (--batches 30 --warmup 6 --seed 20261203; it also fails if a batch did not finish),
# PROFILES_ARGS to bench.profiles_form (--profiles 10000 --samples 30),
# LOGS_ARGS to bench.logs (--lines 100000 --samples 40).
bench: install
	$(BIN)/python -m app.embedded run -- sh -c 'rc=0; \
	  echo "== bench.handoff"; $(BIN)/python -m bench.handoff $(BENCH_ARGS) || rc=1; \
	  echo "== bench.live"; $(BIN)/python -m bench.live $(LIVE_ARGS) || rc=1; \
	  echo "== bench.control"; $(BIN)/python -m bench.control $(CONTROL_ARGS) || rc=1; \
	  echo "== bench.recovery"; $(BIN)/python -m bench.recovery $(RECOVERY_ARGS) || rc=1; \
	  echo "== bench.estimates"; $(BIN)/python -m bench.estimates $(ESTIMATE_ARGS) || rc=1; \
	  echo "== bench.profiles_form"; $(BIN)/python -m bench.profiles_form $(PROFILES_ARGS) || rc=1; \
	  echo "== bench.logs"; $(BIN)/python -m bench.logs $(LOGS_ARGS) || rc=1; \
	  exit $$rc'

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache
	find . \( -path ./$(VENV) -o -path ./var \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m app.embedded down; fi
	rm -rf $(VENV) var
