#!/usr/bin/env bash
# Guard variants on the widened train split (issue 11): each `softguard guard train` writes OUT/guard_eval.json
# (dev / test AUROC, per-test-set flag rates, held-out pairs, refusal preference); summary.py tabulates them.
# Usage: bash docs/results/guard/sweep.sh [RUNS_DIR]   (the three quick variants: see README.md for the time)
set -euo pipefail
RUNS=${1:-runs}
SG=${SG:-softguard}
run() { local name=$1; shift; [ -f "$RUNS/$name/guard_eval.json" ] || $SG guard train --out "$RUNS/$name" "$@"; }
run guard-quick        --quick                                   # the quick preset: 1 epoch, 64 tokens, 64 pairs/class
run guard-quick-e3     --quick --epochs 3
run guard-quick-e3-rsp --quick --epochs 3 --pooling response
[ -n "${FULL:-}" ] || exit 0                                     # FULL=1: the full preset's guard too (slow on a CPU)
run guard-full         --pairs 400                               # the full preset: 2 epochs, 128 tokens
