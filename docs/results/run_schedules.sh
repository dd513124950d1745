#!/usr/bin/env bash
# Block schedules on the pretrained embedded SmolLM2-135M-Instruct (issue 12, docs/results/schedules.md).
# `arithmetic`, SFT and GRPO, the step budget of the per-block sweeps (docs/results/run_sweeps_smollm2.sh):
# SFT 20 steps x 16 examples, GRPO 20 steps x (2 prompts x 8 completions); 3 seeds; accuracy on
# 60 held-out problems, forgetting = perplexity on 4 x 256 tokens of general text.
# Arms: block mid:1 (block 14), mid:4 (13-16), LISA G=2 every 5 steps over all blocks,
# importance-sampled G=2 every 5 steps (p ~ exp(z), z = the SFT sweep's C(k) standardised),
# growth (4 phases from the SFT sweep's C(k)), LoRA r=16 on every linear layer, full.
# Learning rates as in the sweeps: one or a few blocks 3e-4 (SFT) / 5e-5 (GRPO), full 3e-5 / 1e-5,
# LoRA the defaults 1e-3 / 2e-4. --park keep (the default) for the schedules. Growth trains up to
# every block, so it also runs at full training's rate (growth-fulllr), after the other arms.
# Resumable: a run whose metrics.json says "completed" is skipped.
#   bash docs/results/run_schedules.sh [OUT_DIR]        (default out/schedules)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/schedules}
LW=.venv/bin/layerwise
C=docs/results/sweeps-smollm2/sft/contribution.json
done_run() { [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"; }
run() {  # run DIR ARGS...
  local dir=$1; shift
  if done_run "$dir"; then echo "skip $dir"; return; fi
  echo "run  $dir"
  $LW train --task arithmetic --steps 20 --batch-size 16 --eval-n 60 --report-to none -q "$@" \
      --out "$dir" --overwrite
}
for method in sft grpo; do
  if [ $method = sft ]; then LR=3e-4; FULL_LR=3e-5; EXTRA=(); else
    LR=5e-5; FULL_LR=1e-5; EXTRA=(--num-generations 8); fi
  for seed in 0 1 2; do
    S=$OUT/$method/seed$seed
    A=(--method $method --seed $seed "${EXTRA[@]}")
    run $S/block-mid "${A[@]}" --layers mid:1 --lr $LR
    run $S/mid4 "${A[@]}" --layers mid:4 --lr $LR
    run $S/lisa2 "${A[@]}" --layers all --schedule lisa:2@5 --lr $LR
    run $S/sample2 "${A[@]}" --layers all --schedule "sample:2@5@$C:contribution_mean" --lr $LR
    run $S/growth "${A[@]}" --layers all --schedule "growth@$C:contribution_mean@4" --lr $LR
    run $S/lora16 "${A[@]}" --lora --rank 16 --lora-targets all --lora-budget per-layer
    run $S/full "${A[@]}" --full --lr $FULL_LR
  done
done
for method in sft grpo; do  # growth at full training's learning rate (added after the first pass)
  if [ $method = sft ]; then FULL_LR=3e-5; EXTRA=(); else FULL_LR=1e-5; EXTRA=(--num-generations 8); fi
  for seed in 0 1 2; do
    run $OUT/$method/seed$seed/growth-fulllr --method $method --seed $seed "${EXTRA[@]}" --layers all \
        --schedule "growth@$C:contribution_mean@4" --lr $FULL_LR
  done
done
mkdir -p docs/results/schedules
.venv/bin/python docs/results/schedules_table.py $OUT > docs/results/schedules/table.md
