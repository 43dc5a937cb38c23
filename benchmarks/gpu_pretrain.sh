#!/usr/bin/env bash
# Pretraining tokens/s and MFU of components.train on one GPU: the gpu preset's model (depth 16, ≈270M
# parameters, seq 2048, bf16, ZeRO-1, micro-batch 16) on synthetic token shards (vocab 32768, 64M tokens), then
# depth 24 (≈780M) while the time budget lasts; --compile adds a torch.compile run after each. It runs
# `benchmarks/pretrain_throughput.py mfu`: one torchrun rank per run, 200 steps, the first 10 not timed, no
# checkpoint; MFU is against the datasheet's dense bf16 peak (components.train.mfu: 989 TFLOP/s for H100/H200).
#
# Made for the lent H200 (the device tool): nothing can be downloaded there, and its image has torch but neither
# DeepSpeed nor pydantic, so they travel as wheels.
#   1. Here, once, with internet:  bash benchmarks/gpu_pretrain.sh wheels
#      → .llm-lifecycle/wheels/ (git-ignored, ≈ 5 MB): deepspeed at infra/constraints.txt's version, built from
#        its sdist without ops (pure Python), and hjson, pydantic, pydantic-core, annotated-types,
#        typing-inspection, typing-extensions for the image's Python 3.12.
#   2. The device tool:
#        run(command="bash benchmarks/gpu_pretrain.sh", carry=[".llm-lifecycle/wheels"], timeout_s=600)
#      or command="bash benchmarks/gpu_pretrain.sh --compile". Runs start only within the first 480 s
#      (--budget) and are stopped at its end, so the command ends in about 9 minutes at most; $OUT brings back
#      results.md (the table), metrics-<run>.jsonl (every step) and gpu_pretrain.log (everything printed).
#   3. Here, on CPU, the same code on a tiny model for 3 steps:  bash benchmarks/gpu_pretrain.sh --dry-run
# Further arguments go to `pretrain_throughput.py mfu`, e.g. --depths 16 --micro-batch 32 --steps 300.
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

dry_run() {
  source infra/env.sh
  python benchmarks/pretrain_throughput.py mfu --depths 2 --seq 64 --micro-batch 2 --steps 3 --skip 1 \
    --tokens 200000 --budget 600 --out "$OUT" "$@"
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
  python3 benchmarks/pretrain_throughput.py mfu --out "$OUT" "$@"
}

case ${1:-} in
  wheels) wheels ;;
  --dry-run) shift; OUT=${OUT:-$(mktemp -d)}; dry_run "$@" 2>&1 | tee "$OUT/gpu_pretrain.log" ;;
  *) OUT=${OUT:-$(mktemp -d)}; on_gpu "$@" 2>&1 | tee "$OUT/gpu_pretrain.log" ;;
esac
