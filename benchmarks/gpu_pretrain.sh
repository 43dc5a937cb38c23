#!/usr/bin/env bash
# Pretraining tokens/s, MFU and peak GPU memory of components.train on one GPU, for the gpu preset's model (depth 16,
# ≈270M parameters, seq 2048, bf16, ZeRO-1, micro-batch 16) on synthetic token shards (vocab 32768, 64M tokens),
# in four variants, one run each:
#
#     compile    loss       what it measures
#     blocks     chunked    the trainer as configured: each decoder block torch.compiled, the LM head + cross-entropy
#                           in chunks recomputed in the backward (components/train/objectives/causal_lm.py)
#     model      chunked    the whole model compiled in one graph instead
#     blocks     plain      the full (tokens x vocabulary) logits materialised, one cross-entropy
#     model      plain      both old choices
#
# It runs `benchmarks/pretrain_throughput.py mfu --depths 16 --compile --compile-mode MODE --loss LOSS` per
# variant (TrainConfig's `compile_mode` and the causal_lm objective's `options.loss`): one torchrun rank, --steps 50
# (the first 10 not timed), no checkpoint, an eager run first and then the compiled one (that is how `mfu --compile`
# runs; the eager rows of a loss repeat, a free check of run-to-run noise). MFU is against the datasheet's dense
# bf16 peak of the exact device name (components/train/mfu.py: 989 TFLOP/s for "NVIDIA H200"). Each variant stops
# at its budget (115 s), so the four take about 7.7 minutes at most (plus the wheels' install).
#
# Made for the lent H200 (the device tool): nothing can be downloaded there, and its image has torch but neither
# DeepSpeed nor pydantic, so they travel as wheels.
#   1. Here, once, with internet:  bash benchmarks/gpu_pretrain.sh wheels
#      → .llm-lifecycle/wheels/ (git-ignored, ≈ 5 MB): deepspeed at infra/constraints.txt's version, built from
#        its sdist without ops (pure Python), and hjson, pydantic, pydantic-core, annotated-types,
#        typing-inspection, typing-extensions for the image's Python 3.12.
#   2. The device tool:
#        run(command="bash benchmarks/gpu_pretrain.sh", carry=[".llm-lifecycle/wheels"], timeout_s=540)
#      $OUT brings back results.md (one table, a row per variant), metrics-<run>.jsonl and gpu_pretrain.log.
#   3. Here, on CPU, the same code on a tiny model for 3 steps:  bash benchmarks/gpu_pretrain.sh --dry-run
# Further arguments go to every `pretrain_throughput.py mfu` run, e.g. --micro-batch 32 --steps 150.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.llm-lifecycle/wheels

wheels() {
  local python=${PYTHON:-python3}
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"  # one version of each: two would stop the install there
  "$python" -m pip wheel --no-deps -w "$WHEELS" "$(grep -i '^deepspeed==' infra/constraints.txt)"
  # shellcheck disable=SC2046  # one argument per pinned requirement
  "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" \
    $(grep -i -E '^(hjson|pydantic|pydantic[-_]core|annotated-types|typing-inspection|typing[-_]extensions)==' \
      infra/constraints.txt)
  ls -l "$WHEELS"
}

VARIANTS=("blocks chunked" "model chunked" "blocks plain" "model plain")
RUN_BUDGET_S=115  # per variant (its eager and compiled runs; a run does not start with < 60 s left): 4 x 115 s ≈ 7.7 min

variants() {  # PYTHON, then the arguments for every run
  local python=$1 mode loss
  shift
  for variant in "${VARIANTS[@]}"; do
    read -r mode loss <<< "$variant"
    "$python" benchmarks/pretrain_throughput.py mfu --compile --compile-mode "$mode" --loss "$loss" \
      --out "$OUT/$mode-$loss" "$@"
  done
  # one table: the first run's header (device, shape; columns), then each run's rows named by their variant
  { sed -n '1,4p' "$OUT/${VARIANTS[0]// /-}/results.md"
    for variant in "${VARIANTS[@]}"; do
      sed -n '5,$p' "$OUT/${variant// /-}/results.md" | sed "s/^| /| --compile-mode ${variant% *} --loss ${variant#* }: /"
    done; } > "$OUT/results.md"
  cat "$OUT/results.md"
}

dry_run() {
  source infra/env.sh
  variants python --depths 2 --seq 64 --micro-batch 2 --steps 3 --skip 1 --tokens 200000 --budget 600 "$@"
}

on_gpu() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl
  # DS_ACCELERATOR: fail rather than fall back to training on the CPU when DeepSpeed sees no GPU
  export PYTHONPATH="$PWD:/tmp/site" DS_ACCELERATOR=cuda PYTHONUNBUFFERED=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c 'import torch, deepspeed, transformers, pydantic
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), deepspeed {deepspeed.__version__}, "
      f"transformers {transformers.__version__}, pydantic {pydantic.__version__}")'
  variants python3 --depths 16 --steps 50 --skip 10 --budget "$RUN_BUDGET_S" "$@"
}

case ${1:-} in
  wheels) wheels ;;
  --dry-run) shift; OUT=${OUT:-$(mktemp -d)}; dry_run "$@" 2>&1 | tee "$OUT/gpu_pretrain.log" ;;
  *) OUT=${OUT:-$(mktemp -d)}; on_gpu "$@" 2>&1 | tee "$OUT/gpu_pretrain.log" ;;
esac
