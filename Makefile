# eqlstream: `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup tools test demo bench clean

setup: $(STAMP)

# Reinstalls only when the dependency declarations change; constraints.txt pins every version.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The deployment checkers the tests run (helm, hadolint, kubernetes-validate, promtool, prometheus,
# stunnel, CRD validators), pinned, into .tools/; quick when already there.
tools:
	bash scripts/install-tools.sh

test: setup tools
	$(BIN)/ruff check app tests bench
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/python -m app demo

bench: setup
	$(BIN)/python -m bench.replay_throughput

clean:
	rm -rf $(VENV) .tools .pytest_cache .hypothesis build *.egg-info
