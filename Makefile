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
#   make bench     bench.handoff, .live, .viewers, .control, .recovery, .several_hosts, .estimates, .profiles_form,
#                  .logs, .metrics, .retention, .submissions, .items, .size (BENCH_ARGS, LIVE_ARGS, VIEWERS_ARGS,
#                  CONTROL_ARGS, RECOVERY_ARGS, HOSTS_ARGS, ESTIMATE_ARGS, PROFILES_ARGS, LOGS_ARGS, METRICS_ARGS,
#                  RETENTION_ARGS, SUBMIT_ARGS, ITEMS_ARGS, SIZE_ARGS)
#   make bench-smoke  every benchmark at a tiny size (CI runs it: the benchmarks keep working; no figure counts)
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
VIEWERS_ARGS ?=
CONTROL_ARGS ?=
ESTIMATE_ARGS ?=
SUBMIT_ARGS ?=
HOSTS_ARGS ?=

.PHONY: help install install-prod run test test-faults fuzz lint bench bench-smoke clean distclean

help:
	@sed -n '2,15s/^# \{0,1\}//p' Makefile

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
# All fourteen run, one after the other, on the same servers; the target fails if one of them crashed.
# BENCH_ARGS go to bench.handoff (--batches 500), LIVE_ARGS to bench.live (--samples 60 --batches 10000),
# VIEWERS_ARGS to bench.viewers (--viewers 10,50,200,500 --batches 1000),
# CONTROL_ARGS to bench.control (--iterations 20 --queued 10000), RECOVERY_ARGS to bench.recovery
# (--rounds 5 --soak-batches 1000 --kill-every 100; it also fails if a batch was lost or two overlapped),
# HOSTS_ARGS to bench.several_hosts (--batches 500 --kill-every 100: two worker hosts, two web servers, two beats;
# it also fails if a rule of the queue broke after a kill or at the end),
# ESTIMATE_ARGS to bench.estimates (--batches 30 --warmup 6 --seed 20261203; it also fails if a batch did not finish),
# PROFILES_ARGS to bench.profiles_form (--profiles 10000 --samples 30),
# LOGS_ARGS to bench.logs (--lines 100000 --samples 40), METRICS_ARGS to bench.metrics (--batches 100000 --samples 50),
# RETENTION_ARGS to bench.retention (--batches 100000 --chunk 1000 --samples 200),
# SUBMIT_ARGS to bench.submissions (--requests 1000 --clients 16; it also fails if a queue rule broke),
# ITEMS_ARGS to bench.items (--items 10000 --stops 5; it also fails if an item started after its batch's stop),
# SIZE_ARGS to bench.size (--sizes 1000,100000,1000000 --samples 30: finished batches, a tenth as many queued,
# at most --max-queued 100000; the 1,000,000 fill takes about a minute and 1 GB of disk).
# bench.memory samples every service process's memory meanwhile; each benchmark records its headline figures in
# BENCH_RESULTS, and bench.report prints them as one table beside their baselines and targets and (REPORT_ARGS=--save)
# writes it to bench/results/ as JSON and into docs/benchmarks.md.
BENCH_RESULTS ?= var/bench-results.jsonl
REPORT_ARGS ?= --save
bench: install
	@mkdir -p $(dir $(BENCH_RESULTS)) && : > $(BENCH_RESULTS)
	$(BIN)/python -m app.embedded run -- sh -c 'rc=0; export BENCH_RESULTS=$(BENCH_RESULTS); \
	  $(BIN)/python -m bench.memory & memory=$$!; \
	  echo "== bench.handoff"; $(BIN)/python -m bench.handoff $(BENCH_ARGS) || rc=1; \
	  echo "== bench.live"; $(BIN)/python -m bench.live $(LIVE_ARGS) || rc=1; \
	  echo "== bench.viewers"; $(BIN)/python -m bench.viewers $(VIEWERS_ARGS) || rc=1; \
	  echo "== bench.control"; $(BIN)/python -m bench.control $(CONTROL_ARGS) || rc=1; \
	  echo "== bench.recovery"; $(BIN)/python -m bench.recovery $(RECOVERY_ARGS) || rc=1; \
	  echo "== bench.several_hosts"; $(BIN)/python -m bench.several_hosts $(HOSTS_ARGS) || rc=1; \
	  echo "== bench.estimates"; $(BIN)/python -m bench.estimates $(ESTIMATE_ARGS) || rc=1; \
	  echo "== bench.profiles_form"; $(BIN)/python -m bench.profiles_form $(PROFILES_ARGS) || rc=1; \
	  echo "== bench.logs"; $(BIN)/python -m bench.logs $(LOGS_ARGS) || rc=1; \
	  echo "== bench.metrics"; $(BIN)/python -m bench.metrics $(METRICS_ARGS) || rc=1; \
	  echo "== bench.retention"; $(BIN)/python -m bench.retention $(RETENTION_ARGS) || rc=1; \
	  echo "== bench.submissions"; $(BIN)/python -m bench.submissions $(SUBMIT_ARGS) || rc=1; \
	  echo "== bench.items"; $(BIN)/python -m bench.items $(ITEMS_ARGS) || rc=1; \
	  echo "== bench.size"; $(BIN)/python -m bench.size $(SIZE_ARGS) || rc=1; \
	  kill $$memory; wait $$memory || rc=1; \
	  $(BIN)/python -m bench.report $(BENCH_RESULTS) $(REPORT_ARGS) || rc=1; \
	  exit $$rc'

# The same benchmarks at a tiny size: what CI runs so that a benchmark never silently stops working.
# Its table is printed, never saved: tiny figures mean nothing.
bench-smoke:
	@$(MAKE) --no-print-directory bench BENCH_RESULTS=var/bench-smoke-results.jsonl REPORT_ARGS= \
	  BENCH_ARGS="--batches 20" LIVE_ARGS="--samples 4 --batches 300" \
	  VIEWERS_ARGS="--viewers 5 --batches 20" CONTROL_ARGS="--iterations 2 --queued 200 --samples 5" \
	  RECOVERY_ARGS="--rounds 1 --heartbeat-timeout 3 --reconcile-interval 1 --soak-batches 30 --kill-every 15" \
	  HOSTS_ARGS="--batches 30 --kill-every 10" ESTIMATE_ARGS="--batches 6 --warmup 2" \
	  PROFILES_ARGS="--profiles 200 --samples 3" LOGS_ARGS="--lines 2000 --samples 3" \
	  METRICS_ARGS="--batches 2000 --queued 100 --samples 5" RETENTION_ARGS="--batches 2000 --young 100 --samples 5" \
	  SUBMIT_ARGS="--requests 40 --clients 4" ITEMS_ARGS="--items 300 --stops 1" \
	  SIZE_ARGS="--sizes 200,1000 --samples 5"

clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache
	find . \( -path ./$(VENV) -o -path ./var \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m app.embedded down; fi
	rm -rf $(VENV) var
