#!/usr/bin/env bash
# Block schedules on the pretrained embedded SmolLM2-135M-Instruct (issues 12 and 30,
# docs/results/schedules.md). `arithmetic`, SFT and GRPO, the step budget of the per-block sweeps
# (docs/results/run_sweeps_smollm2.sh): SFT 20 steps x 16 examples, GRPO 20 steps x (2 prompts x 8
# completions); 3 seeds; accuracy on the 60 held-out problems, forgetting = perplexity on
# 4 x 256 tokens of general text.
# The importance of the sampled and growth arms comes from a per-block SFT sweep scored with
# --score-on validation: 60 problems of the training split that no run of that sweep trains on,
# disjoint from the held-out problems that score the arms (the selection never sees them).
# Arms: LISA G=2 every 5 steps over all blocks; importance-sampled G=2 every 5 steps
# (p ~ exp(z), z = that sweep's C(k) standardised); growth (4 phases from it), at the blocks' and
# at full training's learning rate; block mid:1 (block 14), mid:4 (13-16), LoRA r=16 on every
# linear layer, full. Learning rates as in the sweeps: one or a few blocks 3e-4 (SFT) / 5e-5
# (GRPO), full 3e-5 / 1e-5, LoRA the defaults 1e-3 / 2e-4. --park keep (the default).
# Resumable across machines: a run kept in docs/results/schedules/runs is skipped, and each
# finished run is kept there at once (docs/results/keep_runs.py: metrics.json without its curve).
#   bash docs/results/run_schedules.sh [OUT_DIR]        (default out/schedules)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/schedules}
KEPT=docs/results/schedules/runs
SEL=docs/results/schedules/selection-sft
LW=.venv/bin/layerwise
if [ ! -f $SEL/contribution.json ]; then  # the selection sweep: about 40 min on 2 cores
  $LW sweep --task arithmetic --method sft --layers each --seeds 0 --steps 20 --batch-size 16 \
      --lr 3e-4 --full-lr 3e-5 --eval-n 60 --score-on validation --out $OUT/selection-sft -q
  mkdir -p $SEL
  cp $OUT/selection-sft/contribution.{json,csv,png} $SEL/
fi
C=$SEL/contribution.json
run() {  # run METHOD SEED ARM ARGS...
  local method=$1 seed=$2 arm=$3; shift 3
  local rel=$method/seed$seed/$arm
  if [ -f $KEPT/$rel/metrics.json ]; then echo "kept $rel"; return; fi
  echo "run  $rel"
  local extra=(); [ $method = grpo ] && extra=(--num-generations 8)
  $LW train --task arithmetic --steps 20 --batch-size 16 --eval-n 60 --report-to none -q \
      --method $method --seed $seed "${extra[@]}" "$@" --out $OUT/runs/$rel --overwrite
  .venv/bin/python docs/results/keep_runs.py $OUT/runs/$rel $KEPT/$rel > /dev/null
}
lr() { [ $1 = sft ] && echo 3e-4 || echo 5e-5; }
full_lr() { [ $1 = sft ] && echo 3e-5 || echo 1e-5; }
# the comparison the selection question rests on first, then the rest
for method in grpo sft; do for seed in 0 1 2; do
  run $method $seed lisa2 --layers all --schedule lisa:2@5 --lr "$(lr $method)"
  run $method $seed sample2 --layers all --schedule "sample:2@5@$C:contribution_mean" --lr "$(lr $method)"
done; done
for method in grpo sft; do for seed in 0 1 2; do
  run $method $seed growth --layers all --schedule "growth@$C:contribution_mean@4" --lr "$(lr $method)"
  run $method $seed growth-fulllr --layers all --schedule "growth@$C:contribution_mean@4" --lr "$(full_lr $method)"
done; done
for method in sft grpo; do for seed in 0 1 2; do
  run $method $seed block-mid --layers mid:1 --lr "$(lr $method)"
  run $method $seed mid4 --layers mid:4 --lr "$(lr $method)"
  run $method $seed lora16 --lora --rank 16 --lora-targets all --lora-budget per-layer
  run $method $seed full --full --lr "$(full_lr $method)"
done; done
.venv/bin/python docs/results/schedules_table.py $KEPT > docs/results/schedules/table.md
