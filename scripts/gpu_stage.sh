#!/usr/bin/env bash
# One call on a machine lent with a GPU: the CUDA checks, then a training stage of the embedded model sized to fit.
#
#   scripts/gpu_stage.sh [MINUTES] [CONFIG]       defaults: 9, configs/experiments/embedded_gpu_256.yaml
#
# MINUTES is the whole script's: the checks and the probe first, then the stage gets what is left less 90 s.
#
# The machine sees only the working tree: pack the training data first (`python scripts/pack_training_data.py`,
# about 41 MiB in data/train-pack) and carry it. With this workplace's device tool, in one call of at most ten
# minutes: run(command="scripts/gpu_stage.sh 9", carry=["data/train-pack"], timeout_s=600).
# The machine's own python3 must hold torch with CUDA; the package runs from src/ (nothing is installed).
#
# Writes into $OUT (./gpu_out without it), at most eight files:
#   checks.log           the GPU, then `pytest -m cuda` (tests/test_cuda.py)
#   cuda_bench.md        benchmarks/gpu.py: ViT-L fp32 / bf16 / fp16 against transformers, the embedded predictor
#   probe.log            40 training steps, timed to size the stage
#   train.log            the stage
#   model.safetensors    the stage's model (fp32), metrics.jsonl, config.yaml
# Each part has its own time limit, so one that hangs does not take the stage with it. Config overrides for both
# training commands can be given in $STAGE_OVERRIDES (e.g. "batch_size=64 optim.lr=1.4e-4").
set -u
minutes=${1:-9}
config=${2:-configs/experiments/embedded_gpu_256.yaml}
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
start=$(date +%s)
deadline=$((start + 60 * minutes))
since() { echo "[$(($(date +%s) - start)) s] $*"; }

if [ ! -d data/train-pack ]; then
    echo "error: no data/train-pack here; run python scripts/pack_training_data.py and carry data/train-pack" >&2
    exit 2
fi

{
    since "GPU"
    nvidia-smi -L
    $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    since "pytest -m cuda"
    timeout 180 $py -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
    since "done: $?"
} > "$out/checks.log" 2>&1

since "benchmark" >&2
timeout 150 $py benchmarks/gpu.py --repeat 20 > "$out/cuda_bench.md" 2>&1

# Time 40 steps after 20 of warm-up (workers starting, kernels tuned), then size the stage to the time left.
probe=$(mktemp -d)
since "probe" >&2
timeout 150 $py -m seggpt.cli train "$config" ${STAGE_OVERRIDES:-} "run_dir=$probe" steps=60 checkpoint_every=1000 log_every=20 \
    plot=false --no-progress > "$out/probe.log" 2>&1
seconds=$((deadline - $(date +%s) - 90))
if [ "$seconds" -lt 120 ]; then
    echo "error: $seconds s left for the stage; give more MINUTES (the checks and the probe took the rest)" >&2
    rm -rf "$probe"
    exit 1
fi
steps=$($py - "$probe/metrics.jsonl" "$seconds" <<'EOF'
import json, sys
rows = {r["step"]: r for r in map(json.loads, open(sys.argv[1]))}
per_step = (rows[60]["elapsed_s"] - rows[20]["elapsed_s"]) / 40
print(max(100, int(0.9 * float(sys.argv[2]) / per_step) // 100 * 100))
EOF
) || { echo "error: the probe did not run 60 steps; see probe.log" >&2; rm -rf "$probe"; exit 1; }
rm -rf "$probe"
since "stage: $steps steps" >&2
echo "probe: $steps steps fit in the $seconds s left" >> "$out/probe.log"

run_dir=$(mktemp -d)/stage  # a fresh run folder: nothing left by an earlier call is resumed
timeout $((seconds + 60)) $py -m seggpt.cli train "$config" ${STAGE_OVERRIDES:-} "run_dir=$run_dir" "steps=$steps" \
    log_every=20 --no-progress \
    > "$out/train.log" 2>&1
since "stage done: $?" >&2
for f in model.safetensors metrics.jsonl config.yaml; do
    [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$out/"
done
rm -rf "$(dirname "$run_dir")"
ls -la "$out"
