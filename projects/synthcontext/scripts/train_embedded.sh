#!/bin/bash
# The old embedded model (vit_small with a conv branch, trained on SynthContext and scikit-image photo pairs; the
# package's default before lite_small) from scratch, as the shipped file was trained: the conv branch pretrained
# alone, then the four stages of configs/recipe/. Measured on two idle cores: branch 12.6 min, stages 27.6 + 43.4 +
# 4.4 + 29.6 min (118 in all). Writes runs/branch.safetensors and runs/experiments/embedded_2h/stage1..4, the
# folders the experiment configs start from; times.txt there logs each stage's start and end.
# Run from anywhere: bash projects/synthcontext/scripts/train_embedded.sh (needs .venv: make test first). Ship the
# result with: python scripts/ship_embedded.py runs/experiments/embedded_2h/stage4/model.safetensors --overwrite
set -e
cd "$(dirname "$0")/../../.."
R=runs/experiments/embedded_2h
C=projects/synthcontext/configs/recipe
S=.venv/bin/seggpt
t() { echo "$(date +%s) $*" >> $R/times.txt; }
[ -f runs/branch.safetensors ] || .venv/bin/python projects/synthcontext/scripts/pretrain_branch.py --out runs/branch.safetensors
mkdir -p $R
t start1
$S train $C/embedded.yaml --no-progress
t end1
$S train $C/embedded_continue.yaml --no-progress
t end2
$S train $C/embedded_shapes.yaml --stop-after 250 --no-progress
t end3
$S train $C/embedded_mix.yaml --no-progress
t end4
