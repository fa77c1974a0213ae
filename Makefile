# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint format bench train-default embedded-results clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU wheel. Anything that asks for torch afterwards finds it satisfied.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# With ../shared/data beside the checkout (as in CI), the demo also segments real photographs from the validation
# parts of DAVIS-2016, Kvasir-SEG and CamVid, read where they are.
DEMO_DATA := $(wildcard ../shared/data)
demo: $(STAMP)
	$(VENV)/bin/seggpt demo $(if $(DEMO_DATA),--data $(DEMO_DATA),)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts projects
	$(VENV)/bin/ruff format --check src tests benchmarks scripts projects
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts projects
	$(VENV)/bin/ruff format --check src tests benchmarks scripts projects

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts projects
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts projects

bench: $(STAMP)
	$(PY) benchmarks/model_forward.py

# Reproduce the embedded default model, then ship it into the package. Four stages and a side run, 118 min on an
# idle 2-core CPU: configs/embedded.yaml (1500 steps, 27.6 min), configs/embedded_continue.yaml (2500 steps on fresh
# samples, 43.4 min), a conv branch pretrained on SynthContext attributes (12.6 min), configs/embedded_shapes.yaml
# (shape categories only, stopped at step 250 of its schedule, 4.4 min), configs/embedded_mix.yaml (1500 steps,
# 29.6 min).
train-default: $(STAMP)
	$(VENV)/bin/seggpt train configs/embedded.yaml --time-limit 100
	$(VENV)/bin/seggpt train configs/embedded_continue.yaml --time-limit 120
	[ -f runs/branch.safetensors ] || $(PY) -m seggpt.train.branch --out runs/branch.safetensors
	$(VENV)/bin/seggpt train configs/embedded_shapes.yaml --stop-after 250
	$(VENV)/bin/seggpt train configs/embedded_mix.yaml --time-limit 60
	$(PY) scripts/ship_embedded.py runs/embedded_mix/model.safetensors --overwrite \
		--note "trained by make train-default (configs/embedded.yaml, embedded_continue.yaml, seggpt.train.branch, embedded_shapes.yaml to step 250, embedded_mix.yaml)"

# Every report in docs/results that measures the embedded model, written again (after shipping a new one; the
# README's tables quote them). 72 minutes on two idle cores, 52 of them the tuning benchmark. To measure a candidate
# without touching the shipped reports: make embedded-results WEIGHTS=runs/x/model.safetensors RESULTS=runs/x/results
WEIGHTS ?=
RESULTS ?= docs/results
W := $(if $(WEIGHTS),--weights $(WEIGHTS),)
embedded-results: $(STAMP)
	mkdir -p $(RESULTS)
	for px in 96 64; do \
	  sfx=$$( [ $$px = 96 ] || echo _$${px}px ); \
	  for k in 1 2 4 8 16; do \
	    $(VENV)/bin/seggpt eval synthcontext $(W) --image-size $$px --shots $$k --ensemble feature --episodes 300 \
	      --seed 0 --json $(RESULTS)/synth_$${k}shot_feature$$sfx.json --overwrite --no-progress || exit 1; \
	    [ $$k = 1 ] || $(VENV)/bin/seggpt eval synthcontext $(W) --image-size $$px --shots $$k --ensemble spatial \
	      --episodes 300 --seed 0 --json $(RESULTS)/synth_$${k}shot_spatial$$sfx.json --overwrite --no-progress \
	      || exit 1; \
	  done; \
	done
	$(PY) benchmarks/image_size.py $(W) --sizes 64 80 96 112 128 --episodes 300 --threads 2 \
		--json $(RESULTS)/image_size.json
	$(PY) benchmarks/tuning_synth.py $(W) --image-size 96 --threads 2 --train 512 --test 96 --steps 200 \
		--seeds 1000 2000 --shots 1 4 16 --tune-prompts 4 --loss iou --out $(RESULTS)/tuning_synth.json
	$(PY) benchmarks/video.py $(W) --image-size 96 --threads 1 --json $(RESULTS)/video_synth.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
