#!/usr/bin/env bash
# The real-model demonstration of docs/compare.md (PAPERS.md section 3) on the embedded
# SmolLM2-135M-Instruct, one-digit arithmetic, the same hyper-parameters as run_train_demo.sh.
#   bash docs/results/run_compare_demo.sh [DEMO_DIR] [OUT_DIR]
# DEMO_DIR holds the fp32 runs of run_train_demo.sh (default out/demo); the bf16 and masked runs
# go to OUT_DIR (default out/compare-demo). About 15 min of training + 2 min of compare on 2 cores.
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
run $OUT/grpo-masked-bf16-s0 $GRPO --dtype bfloat16 --seed 0 --mask-from embedded,$OUT/grpo-full-bf16-s0/model

R=docs/results/compare-demo
mkdir -p $R
# 1. sparsity of RL vs SFT, fp32 vs bf16 training, and every overlap (incl. two GRPO seeds)
$LW compare embedded $DEMO/sft-full-s0/model $DEMO/grpo-full-s0/model $DEMO/grpo-full-s1/model \
  $OUT/sft-full-bf16-s0/model $OUT/grpo-full-bf16-s0/model $OUT/grpo-full-bf16-s1/model \
  --labels sft-fp32,grpo-fp32-s0,grpo-fp32-s1,sft-bf16,grpo-bf16-s0,grpo-bf16-s1 \
  --tol 1e-5,1e-6,1e-7,1e-8,0 --out $R/precision | tee $R/precision.txt
# 2. fp32 training, checkpoints saved in bf16 (both sides rounded to bf16 before the diff)
$LW compare embedded $DEMO/sft-full-s0/model $DEMO/grpo-full-s0/model $DEMO/grpo-full-s1/model \
  --labels sft-fp32,grpo-fp32-s0,grpo-fp32-s1 --rounding bfloat16 --tol 1e-5,0 --no-rank \
  --out $R/fp32-saved-bf16 | tee $R/fp32-saved-bf16.txt
# 3. single-block runs: every changed entry inside block 15 (checked against their own --layers)
$LW compare embedded $DEMO/sft-block15-s0/model $DEMO/grpo-block15-s0/model --expect-layers 15 \
  --tol 1e-5,0 --out $R/single-block | tee $R/single-block.txt
# 4. masked runs against the full runs their masks came from: share of identical entries
$LW compare $DEMO/grpo-full-s0/model $OUT/grpo-masked-s0/model --tol 1e-5,1e-4 --no-rank \
  --out $R/masked-fp32 | tee $R/masked-fp32.txt
$LW compare $OUT/grpo-full-bf16-s0/model $OUT/grpo-masked-bf16-s0/model --tol 1e-5,1e-4 --no-rank \
  --out $R/masked-bf16 | tee $R/masked-bf16.txt
for d in $OUT/*/; do
  mkdir -p $R/runs/$(basename "$d") && cp "$d/metrics.json" $R/runs/$(basename "$d")/
done
