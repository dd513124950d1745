#!/usr/bin/env bash
# Ground truth for the estimators of `layerwise estimate` / `layerwise tune` (issue 15): complete
# per-block sweeps of the embedded SmolLM2-135M-Instruct, every block, 2 seeds, SFT and GRPO, on
# `arithmetic` and on `decision` (a multi-turn game scored by success: a task of another kind,
# where the reward comes from an environment over several turns instead of one answer).
# Each sweep is resumable (a SQLite store): rerun the same command after an interruption and only
# missing runs run, so it can be spread over several sittings. Budget on 2 CPU cores (31 runs x
# 2 seeds): about 1.2 h per SFT sweep, 6 h per GRPO sweep; the steps come from the curves first:
#   bash docs/results/run_groundtruth.sh curves [OUT]   # full and block-15 runs, 120 steps,
#                                                       # scored every 10: where the curve flattens
#   bash docs/results/run_groundtruth.sh sweeps [OUT]   # the four sweeps at STEPS_SFT/STEPS_GRPO
# (defaults out/groundtruth; STEPS_SFT=60, STEPS_GRPO=120: the arithmetic curves of
#  docs/results/groundtruth.md (SFT flat by step 40; GRPO still rising at 120);
#  TASKS="arithmetic" for one task, CURVE_STEPS=120 for the curves)
set -euo pipefail
cd "$(dirname "$0")/../.."
WHAT=${1:-sweeps}
OUT=${2:-out/groundtruth}
LW=.venv/bin/layerwise
# learning rates: one block / full training
SFT_BASE=(--method sft --batch-size 16 --eval-n 60); SFT_LR=3e-4; SFT_FULL_LR=3e-5
GRPO_BASE=(--method grpo --batch-size 16 --num-generations 8 --eval-n 60); GRPO_LR=5e-5; GRPO_FULL_LR=1e-5
SFT=("${SFT_BASE[@]}" --lr $SFT_LR --full-lr $SFT_FULL_LR)
GRPO=("${GRPO_BASE[@]}" --lr $GRPO_LR --full-lr $GRPO_FULL_LR)
if [ "$WHAT" = curves ]; then
  # Held-out score every 10 steps (--eval-every: the training is the same as without it), for the
  # full run and for one middle block (15), so both curves can be seen to flatten or not.
  for task in ${TASKS:-arithmetic decision}; do
    for m in sft grpo; do
      if [ $m = sft ]; then
        ARGS=("${SFT_BASE[@]}"); LR=$SFT_LR; FULL_LR=$SFT_FULL_LR
      else
        ARGS=("${GRPO_BASE[@]}"); LR=$GRPO_LR; FULL_LR=$GRPO_FULL_LR
      fi
      for what in full block15; do
        dir=$OUT/curve-$task-$m-$what
        grep -qs '"status": "completed"' $dir/metrics.json && continue
        if [ $what = full ]; then sel=(--full --lr $FULL_LR); else sel=(--layers 15 --lr $LR); fi
        $LW train --task $task "${ARGS[@]}" "${sel[@]}" --steps ${CURVE_STEPS:-120} \
            --eval-every 10 --out $dir --overwrite -q || true
      done
    done
  done
  exit 0
fi
for task in ${TASKS:-arithmetic decision}; do
  $LW sweep --task $task "${SFT[@]}" --layers each --seeds 0,1 --steps ${STEPS_SFT:-60} \
      --out $OUT/$task-sft -q
  $LW sweep --task $task "${GRPO[@]}" --layers each --seeds 0,1 --steps ${STEPS_GRPO:-120} \
      --out $OUT/$task-grpo -q
  for m in sft grpo; do
    $LW estimate $OUT/$task-$m --diagnostics docs/results/smollm2-135m-wikitext2/diagnostics.json -q
  done
done
