# Two commands on a fresh machine: `make run` (the whole default pipeline on an embedded
# local Ray) and `make test` (the test suite). Both create/update .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/flights.yaml

.PHONY: setup run test bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints.txt pins every transitive dependency (torch to the 2.13.0 CPU build).
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rayline run --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/ingest.py --quick
	$(PY) benchmarks/train.py --quick

clean-venv:
	rm -rf $(VENV)
