#!/usr/bin/env bash
# Reproduces docs/results/smollm2-135m-wikitext2.md: the full diagnostics profile of the embedded
# SmolLM2-135M-Instruct on WikiText-2 test (../shared/data), and the recovery measurement.
# About 45 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data/wikitext2_test.txt
rm -rf out/smollm2-pruned4  # the pruned checkpoint (--save refuses to overwrite)
.venv/bin/layerwise diagnose --data "$data" --seq-len 512 --num-seqs 8 \
    --metrics default,prune --prune-blocks 4 --save out/smollm2-pruned4 \
    --out docs/results/smollm2-135m-wikitext2 --no-progress
.venv/bin/layerwise diagnose --data "$data" --seq-len 128 --num-seqs 8 --batch-size 4 \
    --metrics recovery --recovery-blocks 8,11,14,17 --noise-fraction 0.5 \
    --recovery-max-steps 200 --recovery-eval-every 10 --recovery-lr 1e-4 \
    --out docs/results/smollm2-135m-recovery --no-progress
