# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint format bench train-default clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU wheel. Anything that asks for torch afterwards finds it satisfied.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/seggpt demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

bench: $(STAMP)
	$(PY) benchmarks/model_forward.py

# Reproduce the embedded default model, then ship it into the package. Two stages: configs/embedded.yaml (one
# thread, 1500 steps), then configs/embedded_continue.yaml (both cores, 5000 steps on fresh samples); measured
# 44 + 85 minutes on an idle 2-core CPU.
train-default: $(STAMP)
	$(VENV)/bin/seggpt train configs/embedded.yaml --time-limit 100
	$(VENV)/bin/seggpt train configs/embedded_continue.yaml --time-limit 120
	$(PY) scripts/ship_embedded.py runs/embedded_continue/model.safetensors --overwrite \
		--note "trained by make train-default (configs/embedded.yaml, then configs/embedded_continue.yaml)"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
