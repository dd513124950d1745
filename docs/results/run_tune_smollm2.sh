#!/usr/bin/env bash
# `layerwise tune` on the embedded SmolLM2-135M-Instruct (issue 15, docs/results/tune-smollm2.md):
# budget 3 of 30 blocks on `arithmetic`, SFT and GRPO, with the same steps spent on the baselines.
# The settings are those of the per-block sweeps (docs/results/sweeps-smollm2.md) so the choice
# can be read against them. Resumable: rerun and completed runs are kept.
#   bash docs/results/run_tune_smollm2.sh [OUT_DIR]        (default out/tune-smollm2)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/tune-smollm2}
LW=.venv/bin/layerwise
# SFT: 40 steps of 16 examples; lr 3e-4 for the blocks (and LoRA), 3e-5 for full training.
# --estimate-batches 1: the kept reports were made when one batch was tune's default (now 4)
$LW tune --task arithmetic --method sft --budget 3 --baseline mid,full,lora --steps 40 \
    --batch-size 16 --lr 3e-4 --full-lr 3e-5 --eval-n 60 --estimate-batches 1 --max-step-cost 1 \
    --out $OUT/sft -q
# GRPO: 20 steps of 2 prompts x 8 completions; lr 5e-5 for the blocks, 1e-5 for full training.
$LW tune --task arithmetic --method grpo --budget 3 --baseline mid,full --steps 20 \
    --batch-size 16 --num-generations 8 --lr 5e-5 --full-lr 1e-5 --eval-n 60 \
    --estimate-batches 1 --max-step-cost 1 --out $OUT/grpo -q
mkdir -p docs/results/tune-smollm2
for m in sft grpo; do
  mkdir -p docs/results/tune-smollm2/$m
  cp $OUT/$m/tune.json $OUT/$m/report.html $OUT/$m/estimates.png docs/results/tune-smollm2/$m/
done
