#!/usr/bin/env bash
# Tying vs removing blocks on the pretrained SmolLM2-135M-Instruct (issue 13, docs/results/tying.md).
# K=4 of 30 blocks lose their own weights, either way (equal unique-parameter count):
#   tie-weight : static:similar:4 by neighbour_mean_delta_pct (the perplexity cost of replacing a
#                block's weights by its neighbours' mean: a weight-space similarity), each tied to
#                its predecessor
#   tie-repr   : the same by block_influence (ShortGPT, 1 - cos(x_l, x_l+1): a representation metric)
#   remove     : SLEB (diagnose --metrics prune: greedy removal by perplexity), the pruned checkpoint
#   heal-only  : nothing removed or tied, the same healing (what the healing alone does)
# All three choices from one `layerwise diagnose` on the *training* text (16 x 256 tokens of
# WikiText-2 valid), so nothing is chosen on the held-out text. Healing: full training on WikiText-2 *valid*
# (lm, 128-token windows, 4 per step, 40 steps, lr 3e-5); held-out loss on 64 windows of
# WikiText-2 *test*; then arithmetic accuracy on 60 held-out problems (layerwise eval).
# Resumable: completed runs and existing eval.json files are skipped.
#   bash docs/results/run_tying_smollm2.sh [OUT_DIR]      (default out/tying-smollm2)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/tying-smollm2}
LW=.venv/bin/layerwise
D=$OUT/diag/diagnostics.json
HEAL=(--task lm --task-option seq_len=128 --full --steps 40 --batch-size 4 --lr 3e-5 --eval-n 64
      --n-train 100000 --general-seqs 4 --report-to none -q)
done_run() { [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"; }
heal() {  # heal DIR MODEL ARGS...
  local dir=$1 model=$2; shift 2
  if done_run "$dir"; then echo "skip $dir"; else
    echo "run  $dir"; $LW train --model "$model" "${HEAL[@]}" "$@" --out "$dir" --overwrite || echo "FAILED $dir"; fi
}
arith() {  # arith MODEL OUT
  [ -f "$2/eval.json" ] && { echo "skip $2"; return; }
  $LW eval --model "$1" --task arithmetic --n 60 --out "$2" -q || echo "FAILED eval $1"
}
mkdir -p $OUT
arith embedded $OUT/base-arith
if [ ! -f $OUT/pruned/config.json ]; then
  $LW diagnose --data ../shared/data/wikitext2_valid.txt --seq-len 256 --num-seqs 16 \
      --metrics neighbour-mean,block-influence,prune --prune-blocks 4 --save $OUT/pruned \
      --out $OUT/diag -q --no-progress
fi
arith $OUT/pruned $OUT/pruned-arith
heal $OUT/heal-only embedded
heal $OUT/tie-weight embedded --tying "static:similar:4@$D:neighbour_mean_delta_pct"
heal $OUT/tie-repr embedded --tying "static:similar:4@$D:block_influence"
heal $OUT/remove $OUT/pruned
for arm in heal-only tie-weight tie-repr remove; do arith $OUT/$arm/model $OUT/$arm/arith; done
