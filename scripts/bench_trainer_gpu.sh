#!/usr/bin/env bash
# GPU run of `prefloop bench trainer` on random-weight checkpoints of SmolLM2's published shapes.
#
#   scripts/bench_trainer_gpu.sh LIKE_DIR OUT_DIR [SHAPE:PAIRS:STEPS:BATCH ...]
#
# LIKE_DIR holds the config and tokenizer files of SmolLM2-135M (e.g. the converted model under
# ~/.cache/prefloop/models/smollm2-135m-instruct; its weights are not needed). Each argument after
# OUT_DIR is one benchmark: a shape from trainer.random_checkpoint, the pairs, the optimizer steps,
# the pairs per step and optionally the arms ('+'-separated names of `prefloop bench trainer --arms`;
# default: TRL default, prefloop cold and warm). Results land in OUT_DIR/<shape>.json and .txt.
set -euo pipefail
like=$1 out=$2
shift 2
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=("same:256:16:16" "smollm2-1.7b:256:16:16")
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PREFLOOP_HOME=$work/home PREFLOOP_CACHE_DIR=$work/cache PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU"; } | tee "$out/gpu.txt"
"$py" -c 'import torch, transformers, trl, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__)' | tee -a "$out/gpu.txt"
for run in "${runs[@]}"; do
    IFS=: read -r shape pairs steps batch arms <<<"$run"
    arms=${arms:-trl-default+prefloop+prefloop-warm-cache}
    "$py" -m trainer.random_checkpoint --like "$like" --shape "$shape" --out "$work/models/$shape"
    "$py" -m prefloop.cli bench trainer --model "$work/models/$shape" --pairs "$pairs" --steps "$steps" \
        --batch-size "$batch" --arms "${arms//+/,}" --time-limit "${ARM_TIME_LIMIT:-240}" --json "$out/$shape.json" \
        | tee "$out/$shape.txt"
    rm -rf "$work/models/$shape"
done
