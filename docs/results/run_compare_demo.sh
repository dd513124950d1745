#!/usr/bin/env bash
# The real-model demonstration of docs/compare.md (PAPERS.md section 3) on the embedded
# SmolLM2-135M-Instruct, one-digit arithmetic, the same hyper-parameters as run_train_demo.sh.
#   bash docs/results/run_compare_demo.sh [DEMO_DIR] [OUT_DIR]
# DEMO_DIR holds the fp32 runs of run_train_demo.sh (default out/demo); the bf16 and masked runs
# go to OUT_DIR (default out/compare-demo). About 35 min of training + 5 min of compare on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO=${1:-out/demo}
OUT=${2:-out/compare-demo}
LW=.venv/bin/layerwise
COMMON="--task arithmetic --eval-n 60 -q"
GRPO="--method grpo --full --lr 1e-5 --steps 30 --batch-size 16 --num-generations 8"
SFT="--method sft --full --lr 3e-5 --steps 60 --batch-size 16"
for d in sft-full-s0 grpo-full-s0 grpo-full-s1 sft-block15-s0 grpo-block15-s0; do
  [ -f "$DEMO/$d/model/model.safetensors" ] || { echo "missing $DEMO/$d: run docs/results/run_train_demo.sh first" >&2; exit 2; }
done
run() { [ -f "$1/model/config.json" ] || $LW train $COMMON "${@:2}" --out "$1"; }
# bf16 weights (pure bf16 AdamW, as when checkpoints and optimizer live in bf16)
run $OUT/grpo-full-bf16-s0 $GRPO --dtype bfloat16 --seed 0
run $OUT/grpo-full-bf16-s1 $GRPO --dtype bfloat16 --seed 1
run $OUT/sft-full-bf16-s0 $SFT --dtype bfloat16 --seed 0
# subnetwork-only retraining: mask = entries the full run changed, same data, steps and seed
run $OUT/grpo-masked-s0 $GRPO --seed 0 --mask-from embedded,$DEMO/grpo-full-s0/model
