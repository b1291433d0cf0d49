#!/usr/bin/env bash
# GPU run of `prefloop bench eval` on random-weight checkpoints of SmolLM2's published shapes.
#
#   scripts/bench_eval_gpu.sh LIKE_DIR OUT_DIR [SHAPE:PAIRS:BATCH ...]
#
# LIKE_DIR holds the config and tokenizer files of SmolLM2-135M (e.g. the converted model under
# ~/.cache/prefloop/models/smollm2-135m-instruct; its weights are not needed). Each argument after
# OUT_DIR is one benchmark: a shape from trainer.random_checkpoint, the held-out pairs and the pairs
# per forward pass. Results land in OUT_DIR/<shape>.json and .txt.
set -euo pipefail
like=$1 out=$2
shift 2
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=("same:512:32" "smollm2-1.7b:512:32")
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PREFLOOP_HOME=$work/home PREFLOOP_CACHE_DIR=$work/cache PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU"; } | tee "$out/gpu.txt"
"$py" -c 'import torch, transformers, trl, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__)' | tee -a "$out/gpu.txt"
for run in "${runs[@]}"; do
    IFS=: read -r shape pairs batch <<<"$run"
    "$py" -m trainer.random_checkpoint --like "$like" --shape "$shape" --out "$work/models/$shape"
    "$py" -m prefloop.cli bench eval --model "$work/models/$shape" --pairs "$pairs" --batch-size "$batch" --device cuda \
        --json "$out/$shape.json" | tee "$out/$shape.txt"
    rm -rf "$work/models/$shape"
done
