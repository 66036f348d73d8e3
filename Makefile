# Two commands for a new user: `make demo` and `make test`. Each sets up .venv first:
# `make demo` installs what the demo needs, `make test` adds the test tools to it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
CONSTRAINTS ?= constraints/cpu.txt
# The installer: uv (installed from PyPI into .venv) downloads and unpacks the stack in
# parallel, 29 s here for what pip installs in ~110 s (the same resolved versions). Where
# uv fails (an index only pip's configuration knows, say), pip installs instead;
# `make demo INSTALLER=pip` skips uv. Neither byte-compiles every module at install
# (18,729 files, 57 s on 2 cores, mostly never imported): orchestrator.precompile then
# compiles the modules a run's processes import (its docstring says why that pays off).
INSTALLER ?= uv
UV_INSTALL := $(VENV)/bin/uv pip install --quiet --python $(PY) -c $(CONSTRAINTS)
PIP_INSTALL := $(PY) -m pip install --quiet --no-compile -c $(CONSTRAINTS)
# $(call install,REQUIREMENT): uv when chosen and working, else pip.
install = { [ "$(INSTALLER)" = uv ] && $(PY) -m pip install --quiet uv && $(UV_INSTALL) $(1); } \
	|| { echo "installing with pip"; $(PY) -m pip install --quiet --upgrade pip && $(PIP_INSTALL) $(1); }

.PHONY: setup demo test test-all lint clean

setup: $(DEV_STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "Installing into $(VENV) what the demo needs (torch, Ray, MLflow; first time only)"
	$(PYTHON) -m venv $(VENV)
	$(call install,-e .)
	$(PY) -m orchestrator.precompile
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(call install,-e ".[dev]")
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/viewcoop demo

# The default suite (CI, 10-16 minutes on 2 cores): everything but the tests marked slow.
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
