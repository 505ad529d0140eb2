# Two commands on a fresh machine: `make run` (the whole default pipeline on an embedded
# local Ray) and `make test` (the test suite). Both create/update .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/flights.yaml

.PHONY: setup run test bench mlflow-ui clean-venv

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

# The MLflow UI over the runs `make run` recorded (the embedded store under the storage root).
# The full `mlflow` (server + UI) lives in its own environment, at the client's version.
MLFLOW_VENV ?= .venv-mlflow
STORAGE_ROOT ?= .rayline
MLFLOW_PORT ?= 5000
mlflow-ui:
	test -x $(MLFLOW_VENV)/bin/mlflow || ($(PYTHON) -m venv $(MLFLOW_VENV) && \
		$(MLFLOW_VENV)/bin/pip install -q "mlflow==$$(grep -i '^mlflow-skinny==' constraints.txt | cut -d= -f3)")
	$(MLFLOW_VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(abspath $(STORAGE_ROOT))/mlflow/mlflow.db" \
		--host 127.0.0.1 --port $(MLFLOW_PORT)

clean-venv:
	rm -rf $(VENV)
