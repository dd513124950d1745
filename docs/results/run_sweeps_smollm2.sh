#!/usr/bin/env bash
# Per-block sweeps of the embedded SmolLM2-135M-Instruct on `arithmetic` (docs/results/sweeps-smollm2.md).
# Both are resumable: rerun the same command after an interruption and only missing runs run.
#   bash docs/results/run_sweeps_smollm2.sh [OUT_DIR]        (default out/sweeps)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/sweeps}
LW=.venv/bin/layerwise
# SFT: every block, 20 steps of 16 examples each (lr 3e-4 for one block, 3e-5 for full), 1 seed.
$LW sweep --task arithmetic --method sft --layers each --seeds 0 --steps 20 --batch-size 16 \
    --lr 3e-4 --full-lr 3e-5 --eval-n 60 --out $OUT/sft -q
# GRPO (smaller budget): every third block, 20 steps of 2 prompts x 8 completions (lr 5e-5 for one
# block, 1e-5 for full), 1 seed.
$LW sweep --task arithmetic --method grpo --layers "1;4;7;10;13;16;19;22;25;28" --seeds 0 --steps 20 \
    --batch-size 16 --num-generations 8 --lr 5e-5 --full-lr 1e-5 --eval-n 60 --out $OUT/grpo -q
$LW report $OUT/sft $OUT/grpo --out $OUT/report
$LW estimate $OUT/sft --diagnostics docs/results/smollm2-135m-wikitext2/diagnostics.json -q
$LW estimate $OUT/grpo --diagnostics docs/results/smollm2-135m-wikitext2/diagnostics.json -q
mkdir -p docs/results/sweeps-smollm2
for s in sft grpo; do
  mkdir -p docs/results/sweeps-smollm2/$s
  cp $OUT/$s/contribution.json $OUT/$s/contribution.csv $OUT/$s/contribution.png $OUT/$s/estimators.json \
     docs/results/sweeps-smollm2/$s/
done
cp $OUT/report/heatmap.png $OUT/report/consistency.json docs/results/sweeps-smollm2/
