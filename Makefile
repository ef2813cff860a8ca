# Two commands on a fresh machine: `make run` (set up, fetch MNIST, train the classic model) and
# `make test` (set up with every backend, run every test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast setup setup-all browser postgres wrk notebook clean

run: setup
	$(BIN)/mnist-mlp data fetch
	$(BIN)/mnist-mlp inspect
	$(BIN)/mnist-mlp train  # the classic recipe (configs/default.toml), into runs/classic-<date>-<time>/

# Two workers (pytest-xdist), each taking whole test files, so a file's shared trained run is made once:
# 340 s of pytest for `make test` on 2 cores, against 670 s in one process (docs/development.md)
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile

test: setup-all browser postgres wrk
	$(PYTEST)

test-fast: setup-all  # the edit-test loop: offline, synthetic data (under a minute on 2 cores)
	$(PYTEST) -m "not slow and not mnist" -q

notebook: setup-all  # examples/walkthrough.ipynb from examples/walkthrough.py (the one source; a test compares them)
	$(BIN)/jupytext --to ipynb --update --set-kernel python3 examples/walkthrough.py

browser:  # Debian's Chromium for the browser test (Playwright drives it; no browser download)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

postgres:  # Debian's PostgreSQL server binaries for the many-machines sweep test (the test starts its own)
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

wrk:  # Debian's wrk, the C load generator `bench --serve` and its test drive the server with
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)

setup: $(VENV)/.setup-base
setup-all: $(VENV)/.setup-all

$(VENV)/.setup-base: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(VENV)/.setup-all: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[torch,tensorflow,postgres,dev]'
	touch $@ $(VENV)/.setup-base

clean:
	rm -rf $(VENV) runs .pytest_cache
