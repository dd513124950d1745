#!/usr/bin/env bash
# Ground truth for the estimators of `layerwise estimate` / `layerwise tune` (issue 15): complete
# per-block sweeps of the embedded SmolLM2-135M-Instruct, every block, 2 seeds, SFT and GRPO, on
# `arithmetic` and on `decision` (a multi-turn game scored by success: a task of another kind,
# where the reward comes from an environment over several turns instead of one answer).
# Each sweep is resumable (a SQLite store): rerun the same command after an interruption and only
# missing runs run, so it can be spread over several sittings. Budget: about 2.5 h per sweep on
# 2 CPU cores (31 runs x 2 seeds); the step counts are chosen from the full run's curve first:
#   bash docs/results/run_groundtruth.sh curves [OUT]   # full runs only, 80 steps, to see where
#                                                       # the curve flattens
#   bash docs/results/run_groundtruth.sh sweeps [OUT]   # the four sweeps at STEPS_SFT/STEPS_GRPO
# (defaults out/groundtruth; STEPS_SFT=60 STEPS_GRPO=60 until the curves say otherwise)
set -euo pipefail
cd "$(dirname "$0")/../.."
WHAT=${1:-sweeps}
OUT=${2:-out/groundtruth}
LW=.venv/bin/layerwise
SFT=(--method sft --batch-size 16 --lr 3e-4 --full-lr 3e-5 --eval-n 60)
GRPO=(--method grpo --batch-size 16 --num-generations 8 --lr 5e-5 --full-lr 1e-5 --eval-n 60)
if [ "$WHAT" = curves ]; then
  for task in arithmetic decision; do
    $LW train --task $task --method sft --batch-size 16 --full --steps 80 --lr 3e-5 \
        --eval-n 60 --out $OUT/curve-$task-sft -q || true
    $LW train --task $task --method grpo --batch-size 16 --num-generations 8 --full --steps 80 \
        --lr 1e-5 --eval-n 60 --out $OUT/curve-$task-grpo -q || true
  done
  exit 0
fi
for task in arithmetic decision; do
  $LW sweep --task $task "${SFT[@]}" --layers each --seeds 0,1 --steps ${STEPS_SFT:-60} \
      --out $OUT/$task-sft -q
  $LW sweep --task $task "${GRPO[@]}" --layers each --seeds 0,1 --steps ${STEPS_GRPO:-60} \
      --out $OUT/$task-grpo -q
  for m in sft grpo; do
    $LW estimate $OUT/$task-$m --diagnostics docs/results/smollm2-135m-wikitext2/diagnostics.json -q
  done
done
