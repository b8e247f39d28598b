# eqlstream: `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup tools check test demo broker bench bench-quick fuzz reliability clean

setup: $(STAMP)

# Reinstalls only when the dependency declarations change; constraints.txt pins every version. The
# product (.) and its development tools (dev/: embedded broker, demo, synthetic events) side by side.
$(STAMP): pyproject.toml dev/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' -e ./dev
	touch $(STAMP)

# The deployment checkers the tests run (helm, hadolint, kubernetes-validate, promtool, prometheus,
# stunnel, CRD validators), pinned, into .tools/; quick when already there. Needs root for apt.
tools:
	bash scripts/install-tools.sh

# Static checks: lint, formatting, the import-layer contract, types (strict on the detection core).
check: setup
	$(BIN)/ruff check app dev tests bench
	$(BIN)/ruff format --check app dev tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

test: setup tools check
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/python -m app demo

# The embedded development broker in the foreground (Ctrl-C stops it); prints how to use it.
broker: setup
	$(BIN)/python -m app broker

# Every measurement of bench/RESULTS.md in one run; bench-quick is the small smoke run CI does.
bench: setup
	$(BIN)/python -m bench $(if $(RULES),--rules $(RULES))

bench-quick: setup
	$(BIN)/python -m bench --quick

# The fault tests in full mode (5 kill -9 loops, 30 s broker outages); rewrites the figures in
# docs/RELIABILITY.md. CI runs the same tests in quick mode.
reliability: setup tools
	EQLSTREAM_RELIABILITY_FULL=1 $(BIN)/python -m pytest tests/integration/reliability -v

# Longer fuzzing than CI's: 5,000 hypothesis examples per property, then 10 minutes of atheris.
fuzz: setup
	EQLSTREAM_FUZZ_EXAMPLES=5000 $(BIN)/python -m pytest -q tests/fuzz
	mkdir -p .fuzz/corpus
	$(BIN)/python -m tests.fuzz.atheris_extractor -max_total_time=600 -max_len=8192 -artifact_prefix=.fuzz/ .fuzz/corpus

clean:
	rm -rf $(VENV) .tools .fuzz .pytest_cache .hypothesis .mypy_cache build *.egg-info dev/*.egg-info
