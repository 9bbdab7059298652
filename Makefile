# vad — two commands on a fresh machine:  `make train` (quickstart)  and  `make test`.
# Installs into a local virtual environment (.venv) on first use; torch is pinned first so that pip takes the
# 2.13.0 wheel (CPU here; on a CUDA machine point PIP_EXTRA_INDEX_URL / PIP_INDEX_URL at the PyTorch wheel index).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH ?= torch==2.13.0
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train test test-all lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,onnx]"
	@touch $(STAMP)

install: $(STAMP)

# The quickstart: FFP on the synthetic scene (generated on first use), CPU-sized, then test + report.
train: $(STAMP)
	$(PY) -m vad.train experiment=quickstart $(ARGS)

# The fast default suite (slow tests excluded; `make test-all` runs everything).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "slow or not slow" $(PYTEST_ARGS)

# ruff, then the layers of src/vad (pyproject.toml's import-linter contracts; tests/test_architecture.py checks them
# too); all three run, so one pass reports every problem, and any failure fails the target.
lint: $(STAMP)
	@status=0; \
	$(VENV)/bin/ruff check src tests experiments || status=1; \
	$(VENV)/bin/ruff format --check src tests experiments || status=1; \
	$(VENV)/bin/lint-imports --no-cache || status=1; \
	exit $$status

format: $(STAMP)
	$(VENV)/bin/ruff format src tests experiments
	$(VENV)/bin/ruff check --fix src tests experiments

bench: $(STAMP)
	$(PY) experiments/bench_data.py
	$(PY) experiments/bench_train.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache build src/*.egg-info
