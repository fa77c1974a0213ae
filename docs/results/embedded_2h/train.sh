#!/bin/bash
# The embedded model's recipe in under two hours (the candidate of docs/results/embedded_2h/README.md): stage 1
# on two threads instead of one, stage 2 with a schedule of 2500 steps instead of 5000, stages 3 and 4 and the
# branch unchanged. Measured on two idle cores: branch 12.6 min, stages 27.6 + 43.4 + 4.4 + 29.6 min.
# Run from anywhere: bash docs/results/embedded_2h/train.sh (needs .venv: make test or make demo first).
set -e
cd "$(dirname "$0")/../../.."
R=runs/experiments/embedded_2h
S=.venv/bin/seggpt
t() { echo "$(date +%s) $*" >> $R/times.txt; }
[ -f runs/branch.safetensors ] || .venv/bin/python -m seggpt.train.branch --out runs/branch.safetensors
mkdir -p $R
t start1
$S train configs/embedded.yaml run_dir=$R/stage1 threads=2 keep_checkpoints=20 --no-progress
t end1
$S train configs/embedded_continue.yaml run_dir=$R/stage2 model.init_from=$R/stage1/model.safetensors steps=2500 keep_checkpoints=20 --no-progress
t end2
$S train configs/embedded_shapes.yaml run_dir=$R/stage3 model.init_from=$R/stage2/model.safetensors --stop-after 250 --no-progress
t end3
$S train configs/embedded_mix.yaml run_dir=$R/stage4 model.init_from=$R/stage3/checkpoints/step_0000250.pt keep_checkpoints=20 --no-progress
t end4
