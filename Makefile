# Two commands for a new user: `make demo` and `make test`. Each sets up .venv first:
# `make demo` installs what the demo needs, `make test` adds the test tools to it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
CONSTRAINTS ?= constraints/cpu.txt
# --no-compile: byte-compiling every module of every package at install time (tens of
# thousands of files) takes about as much CPU time as the rest of the install; Python
# compiles the few hundred modules a run imports when it first imports them.
PIP_INSTALL := $(PY) -m pip install --quiet --no-compile -c $(CONSTRAINTS)

.PHONY: setup demo test test-all lint clean

setup: $(DEV_STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "Installing into $(VENV) what the demo needs (torch, Ray, MLflow; first time only)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[dev]"
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/viewcoop demo

# The default suite (CI, ~13 minutes on 2 cores): everything but the tests marked slow.
# The 15 slowest tests are listed at the end, so a CI log shows where its time went.
test: $(DEV_STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=15

# Everything a CPU can run, slow tests included (whole sweeps through Ray Tune, the demo's
# console log; ~6 more minutes): before a release, or after changing orchestrator/sweep/
# or the console.
test-all: $(DEV_STAMP)
	$(PY) -m pytest -q

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check viewcoop_core workers orchestrator tests

clean:
	rm -rf $(VENV) runs data .pytest_cache
