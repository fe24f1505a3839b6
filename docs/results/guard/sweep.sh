#!/usr/bin/env bash
# Guard variants on the widened train split (issue 11): each `softguard guard train` writes OUT/guard_eval.json
# (dev / test AUROC, per-test-set flag rates, held-out pairs, refusal preference); summary.py tabulates them.
# Usage: bash docs/results/guard/sweep.sh [RUNS_DIR]   (the three quick variants: see README.md for the time)
set -euo pipefail
RUNS=${1:-runs}
SG=${SG:-softguard}
run() { local name=$1; shift; [ -f "$RUNS/$name/guard_eval.json" ] || $SG guard train --out "$RUNS/$name" "$@"; }
# The guards of sessions 8-14: prompts cut on the right, no contextual prompts (the defaults before session 15)
OLD=(--truncation right --contexts 0)
run guard-quick        --epochs 1 "${OLD[@]}"                    # the presets' guard with 1 epoch (the old default)
run guard-right64      "${OLD[@]}"                               # 3 epochs, 64 tokens, 64 pairs/class (guard-quick-e3)
run guard-quick-e3-rsp --pooling response "${OLD[@]}"
# Session 15: long prompts keep their head and tail, and 256 train prompts per class are also seen under a passage
run guard-ht64         --truncation head-tail --contexts 0
run guard-ht64-ctx256                                            # the presets' guard now (head-tail, 256 contexts)
[ -n "${FULL:-}" ] || exit 0                                     # FULL=1: the full preset's guard too (slow on a CPU)
run guard-full         --pairs 400                               # the full preset: 2 epochs, 128 tokens
