#!/usr/bin/env bash
# The mid-block comparison of PAPERS.md section 2 on `arithmetic` for the embedded SmolLM2-135M:
# full tuning of the middle 20-80% of depth, mid-segment LoRA (the whole rank budget of r=16 x 30
# blocks placed in the middle fifth, blocks 12-17), standard LoRA r=16 on every block, and full
# fine-tuning; SFT, 40 steps of 16 examples, seed 0; forgetting on the embedded text.
#   bash docs/results/run_midblock.sh [OUT_DIR]      (default out/midblock)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/midblock}
LW=.venv/bin/layerwise
COMMON="--task arithmetic --method sft --steps 40 --batch-size 16 --eval-n 60 --seed 0 -q"
$LW train $COMMON --layers 20%-80% --lr 1e-4 --out $OUT/mid-20-80
$LW train $COMMON --lora --rank 16 --lora-layers 40%-60% --lr 1e-3 --out $OUT/lora-mid-segment
$LW train $COMMON --lora --rank 16 --lr 1e-3 --out $OUT/lora-standard
$LW train $COMMON --full --lr 3e-5 --out $OUT/full
mkdir -p docs/results/midblock
for d in $OUT/*/; do
  mkdir -p docs/results/midblock/$(basename $d)
  cp $d/metrics.json $d/curves.png docs/results/midblock/$(basename $d)/
done
.venv/bin/python bench/summarize_runs.py $OUT/* --table docs/results/midblock/summary.md
