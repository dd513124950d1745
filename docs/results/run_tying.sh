#!/usr/bin/env bash
# Layer tying from scratch (issue 13, docs/results/tying.md).
# A 12-block llama (width 128, 4 heads, MLP 512, bpe:8192 tokenizer trained on the training text;
# 5.3M parameters untied) on the `lm` task: trains on WikiText-2 *valid*, held-out loss on 256
# windows of WikiText-2 *test*; N steps of 8 x 128 tokens, AdamW lr 1e-3, 5% warm-up; 3 seeds
# (the seed also draws the init, so every arm of a seed starts from the same weights).
# Arms: untied | static:all (ALBERT) | static:pairs | static:mirror | random | dqn (the paper's
# agent, faults fixed) | dqn:faithful (the official code, faults and all) | dqn-gain (ours) |
# retrain-dqn, retrain-gain: the final map of dqn / dqn-gain, retrained from scratch (static:map).
# The dynamic arms decide every step (--tie-every 1): at 4 steps per decision (the paper's) a CPU
# budget gives the agent ~6 episodes, in which its epsilon (x0.95 per episode) stays above 0.7.
# Resumable: a run whose metrics.json says "completed" is skipped.
#   bash docs/results/run_tying.sh [OUT_DIR] [N]        (default out/tying, N=250; SEEDS="0 1" for some)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/tying}
N=${2:-250}
LW=.venv/bin/layerwise
MODEL="tiny:llama:layers=12,hidden=128,heads=4,ffn=512"
COMMON=(--model "$MODEL" --tokenizer bpe:8192 --task lm --full --lr 1e-3 --warmup-ratio 0.05
        --batch-size 8 --n-train 100000 --eval-n 256 --general-seqs 4 --steps $N --report-to none -q)
done_run() { [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"; }
run() {  # run DIR ARGS...
  local dir=$1; shift
  if done_run "$dir"; then echo "skip $dir"; return; fi
  echo "run  $dir"
  $LW train "${COMMON[@]}" "$@" --out "$dir" --overwrite || echo "FAILED $dir (rc $?)"
}
for seed in ${SEEDS:-0 1 2}; do
  S=$OUT/seed$seed
  run $S/untied --seed $seed
  run $S/all --seed $seed --tying static:all
  run $S/pairs --seed $seed --tying static:pairs
  run $S/mirror --seed $seed --tying static:mirror
  run $S/random --seed $seed --tying random --tie-every 1
  run $S/dqn --seed $seed --tying dqn --tie-every 1
  run $S/dqn-faithful --seed $seed --tying dqn:faithful --tie-every 1
  run $S/dqn-gain --seed $seed --tying dqn-gain --tie-every 1
  run $S/retrain-dqn --seed $seed --tying static:map:$S/dqn
  run $S/retrain-gain --seed $seed --tying static:map:$S/dqn-gain
done
