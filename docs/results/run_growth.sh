#!/usr/bin/env bash
# Growth Transformer Training vs uniform training, from scratch (issue 12, docs/results/growth.md).
# A 12-block llama of 10,007,232 parameters (width 192, bpe:8192 tokenizer trained on the training
# text) on the `lm` task: trains on WikiText-2 *valid*, held-out loss on WikiText-2 *test*.
# Per seed (the seed also draws the random init, so all runs of a seed start from the same weights):
#   probe     : full training for PROBE steps (10% of N) -> importance = diagnose's removal_delta_pct
#               (perplexity change when a block is skipped) on 64 windows of the *training* text
#   uniform   : full training, N steps
#   growth    : embeddings, final norm, head every step; blocks by growth@diagnostics (4 phases),
#               anti-layers (removal delta < 0) never train (@skip, the paper's "skipped"), N steps
#   growth50  : the same schedule over N/2 steps
#   growth-last, growth50-last: the same, but anti-layers train in the last phase (@last)
#   growth-random: the control: growth's phase lengths and sizes, blocks in a random order
#               (random.Random(seed)), so only the importance ranking differs from growth
# Resumable: a run whose metrics.json says "completed" is skipped; anything else is rerun.
#   bash docs/results/run_growth.sh [OUT_DIR] [N]       (default out/growth, N=400)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-out/growth}
N=${2:-400}
PROBE=$((N / 10))
LW=.venv/bin/layerwise
MODEL="tiny:llama:layers=12,hidden=192,heads=6,ffn=800"
COMMON=(--model "$MODEL" --tokenizer bpe:8192 --task lm --lr 1e-3 --warmup-ratio 0.05
        --batch-size 8 --n-train 100000 --eval-n 256 --general-seqs 4 --report-to none -q)
done_run() { [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"; }
run() {  # run DIR ARGS...
  local dir=$1; shift
  if done_run "$dir"; then echo "skip $dir"; return; fi
  echo "run  $dir"
  $LW train "${COMMON[@]}" "$@" --out "$dir" --overwrite
}
for seed in 0 1 2; do
  S=$OUT/seed$seed
  run $S/probe --full --steps $PROBE --seed $seed
  if [ ! -f $S/diag/diagnostics.json ]; then
    $LW diagnose --model $S/probe/model --data ../shared/data/wikitext2_valid.txt --seq-len 128 \
        --num-seqs 64 --metrics removal --seed $seed --out $S/diag -q --no-progress
  fi
  GROWTH=(--layers "embed,norm,head+all" --schedule "growth@$S/diag/diagnostics.json:removal_delta_pct@4")
  LAST=(--layers "embed,norm,head+all" --schedule "growth@$S/diag/diagnostics.json:removal_delta_pct@4@last")
  run $S/uniform --full --steps $N --seed $seed
  run $S/growth "${GROWTH[@]}" --steps $N --seed $seed
  run $S/growth50 "${GROWTH[@]}" --steps $((N / 2)) --seed $seed
  run $S/growth-last "${LAST[@]}" --steps $N --seed $seed
  run $S/growth50-last "${LAST[@]}" --steps $((N / 2)) --seed $seed
done
for seed in 0 1 2; do  # the control, after the main arms (resumable)
  S=$OUT/seed$seed
  PHASES=$(.venv/bin/python - "$S/growth/metrics.json" $seed <<'PY'
import json, random, sys
phases = json.load(open(sys.argv[1]))["schedule"]["phases"]
order = list(range(12))
random.Random(int(sys.argv[2])).shuffle(order)
print(";".join(f"{','.join(map(str, sorted(order[:len(p['blocks'])])))}@{p['to'] - p['from'] + 1}"
               for p in phases))
PY
)
  run $S/growth-random --layers "embed,norm,head+all" --schedule "phases:$PHASES" --steps $N --seed $seed
done
mkdir -p docs/results/growth
.venv/bin/python docs/results/growth_table.py $OUT --steps $N --plot docs/results/growth/curves.png \
    > docs/results/growth/table.md
