"""One compare report from several `softguard compare` runs of the same system, judge, dev and evaluation prompts
that differ only in their grid (here: the TV rows of session 25 and the sft rows of session 26).

    python docs/results/compare-quick-3seeds-s26/merge.py \
        runs/compare-quick-3seeds-s25 runs/compare-quick-sft-3seeds-s26

Checks that the runs share what a row is measured against (the base and system rows' responses to every prompt,
the guards' and judge's evaluations, the evaluation set sizes, the run config), then writes results.json,
report.md, pareto.png and generations.jsonl beside this file with softguard's own functions: every grid row as
its run measured it, its kept adapter's dev record read from its run directory (``compare.kept_dev``, which runs
made before session 26 did not store), the cells and the objective chosen on dev per method recomputed over all
rows (``compare.aggregate``, ``compare.chosen_on_dev``). Timings are summed per stage over the runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from softguard.compare import Row, aggregate, chosen_on_dev, kept_dev
from softguard.io import atomic_write_text, read_json, write_json
from softguard.reporting import plot_pareto, render_compare_report

HERE = Path(__file__).parent
SHARED_ROWS = ("base", "system")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]


def merge(runs: list[Path]) -> tuple[dict, list[dict]]:
    results = [read_json(run / "results.json") for run in runs]
    gens = [records(run) for run in runs]
    first, first_gens = results[0], gens[0]
    for run, res, gen in zip(runs[1:], results[1:], gens[1:], strict=True):
        for key in ("n", "n_mmlu", "guard", "judge"):
            if res[key] != first[key]:
                raise SystemExit(f"{run} differs from {runs[0]} in {key}: not the same comparison")
        if res["config"]["run"] != first["config"]["run"]:
            raise SystemExit(f"{run} has another run config than {runs[0]}")
        shared = [{k: r[k] for k in ("set", "prompt", "guard_u", *SHARED_ROWS)} for r in gen]
        if shared != [{k: r[k] for k in ("set", "prompt", "guard_u", *SHARED_ROWS)} for r in first_gens]:
            raise SystemExit(f"{run}'s base or system responses differ from {runs[0]}'s: not the same system")
    rows = {name: first["rows"][name] for name in SHARED_ROWS}
    grid_rows: list[Row] = []
    for run, res in zip(runs, results, strict=True):
        for name, row in res["rows"].items():
            if name in SHARED_ROWS:
                continue
            if name in rows:
                raise SystemExit(f"row {name} is in two of the runs")
            rows[name] = row | {"dev": kept_dev(run / "rows" / name / "student")}
            grid_rows.append(Row(row["method"], row["objective"], row["seed"]))
    methods = list(dict.fromkeys(m for res in results for m in res["config"]["methods"]))
    objectives = list(dict.fromkeys(o for res in results for o in res["config"]["objectives"]))
    grid_rows.sort(key=lambda r: (methods.index(r.method), objectives.index(r.objective), r.seed))
    rows = {name: rows[name] for name in SHARED_ROWS} | {r.name: rows[r.name] for r in grid_rows}
    cells = aggregate(rows, grid_rows)
    timings: dict[str, float] = {}
    for res in results:
        for stage, seconds in res["timings"].items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 1)
    config = first["config"] | {"name": HERE.name, "methods": methods, "objectives": objectives}
    merged = first | {
        "config": config,
        "rows": rows,
        "cells": cells,
        "chosen_on_dev": chosen_on_dev(cells, grid_rows),
        "timings": timings,
        "merged_from": [str(run) for run in runs],
    }
    fields = [k for k in first_gens[0] if k not in first["rows"]]  # the prompt's own: set, label, text, guard_u
    by_prompt = [{k: v for r in rs for k, v in r.items()} for rs in zip(*gens, strict=True)]
    return merged, [{k: r[k] for k in (*fields, *rows)} for r in by_prompt]


def main() -> None:
    merged, generations = merge([Path(a) for a in sys.argv[1:]])
    write_json(HERE / "results.json", merged)
    atomic_write_text(HERE / "report.md", render_compare_report(merged))
    atomic_write_text(HERE / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in generations))
    plot_pareto(merged, HERE / "pareto.png")
    print("\n".join(f"{method}: {cell}" for method, cell in merged["chosen_on_dev"].items()))


if __name__ == "__main__":
    main()
