#!/bin/bash
# The objective sweep of docs/results/objective-sweep: every method x objective with the quick preset, on the same
# data, teacher guard and budget, then `softguard summarize`. Usage (from the repository root):
#   bash docs/results/objective-sweep/sweep.sh [RUNS_DIR] [PARALLEL] [DEVICE]
# Defaults: runs, 1 run at a time, auto (CUDA when available); run names start with $PREFIX (default sweep; the
# committed runs used PREFIX=gpu). On one H100, PARALLEL=4 took 9.5 minutes; on a
# 2-core CPU expect about 15 minutes a run (reinforce several times that), so run it where a GPU is.
set -euo pipefail
R=${1:-runs} P=${2:-1} D=${3:-auto} N=${PREFIX:-sweep}
run() { softguard run --quick --runs-dir "$R" --device "$D" "$@"; }
mkdir -p "$R"
# the first run trains the quick preset's guard; every other run reuses it (`--guard`), so all share one teacher
run --name "$N-soft-prompt-tv" > "$R/$N-soft-prompt-tv.log" 2>&1
export -f run
export R D N
printf '%s\n' "soft-prompt kl" "lora tv" "steering tv" "soft-prompt sft" "lora kl" "steering kl" "soft-prompt rkl" \
  "lora sft" "steering sft" "soft-prompt jsd" "lora rkl" "steering rkl" "lora jsd" "steering jsd" \
  "steering diff-of-means" "soft-prompt reinforce" "lora reinforce" "steering reinforce" |
  xargs -P "$P" -L 1 bash -c 'run --name "$N-$0-$1" --method "$0" --objective "$1" \
    --guard "$R/$N-soft-prompt-tv/guard" > "$R/$N-$0-$1.log" 2>&1'
softguard summarize "$R/$N"-*/ --out "$R/$N.md"
