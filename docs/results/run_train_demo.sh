#!/usr/bin/env bash
# The real-model demonstration of docs/training.md: SFT and GRPO on `arithmetic` (one-digit
# + - *, the embedded default) for the embedded SmolLM2-135M-Instruct, training one middle block
# (15 of 30) vs all parameters vs LoRA r=16 on every block, 3 seeds each, the same steps, batch
# and data for every run. CPU budget: see the step counts below (about an hour on 2 cores).
#   bash docs/results/run_train_demo.sh [OUT_DIR]      (checkpoints go to OUT_DIR, default out/demo)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/demo}
LW=.venv/bin/layerwise
COMMON="--task arithmetic --eval-n 60 -q"
for seed in 0 1 2; do
  $LW train $COMMON --method sft --layers 15 --lr 3e-4 --steps 60 --batch-size 16 --seed $seed --out $OUT/sft-block15-s$seed
  $LW train $COMMON --method sft --full --lr 3e-5 --steps 60 --batch-size 16 --seed $seed --out $OUT/sft-full-s$seed
  $LW train $COMMON --method sft --lora --rank 16 --lr 1e-3 --steps 60 --batch-size 16 --seed $seed --out $OUT/sft-lora16-s$seed
done
for seed in 0 1 2; do
  $LW train $COMMON --method grpo --layers 15 --lr 5e-5 --steps 30 --batch-size 16 --num-generations 8 --seed $seed --out $OUT/grpo-block15-s$seed
  $LW train $COMMON --method grpo --full --lr 1e-5 --steps 30 --batch-size 16 --num-generations 8 --seed $seed --out $OUT/grpo-full-s$seed
  $LW train $COMMON --method grpo --lora --rank 16 --lr 2e-4 --steps 30 --batch-size 16 --num-generations 8 --seed $seed --out $OUT/grpo-lora16-s$seed
done
mkdir -p docs/results/train-demo
for d in $OUT/*/; do
  name=$(basename "$d")
  mkdir -p docs/results/train-demo/$name
  cp "$d/metrics.json" "$d/curves.png" docs/results/train-demo/$name/
done
.venv/bin/python bench/summarize_runs.py $OUT/sft-* $OUT/grpo-* --table docs/results/train-demo/summary.md --plot docs/results/train-demo/curves.png
