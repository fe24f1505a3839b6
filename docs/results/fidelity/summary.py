"""Tabulate fidelity runs:

    python docs/results/fidelity/summary.py runs/demo runs/fid-* > docs/results/fidelity/results.md

Each argument is a finished `softguard run` directory; its results.json gives one row: the student's decision
agreement with the deployed system per evaluation set (and over all of them), its harmful-refusal rate as a
fraction of the system's on the harmful sets, and its benign-compliance gap to the system (points) on the benign
sets, the robustness sets included. Also written, for every run: results.json with the same numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HARMFUL = ("harmbench", "strongreject", "robust-harmful")
BENIGN = ("xstest-safe", "benign", "robust-benign")


def row(d: Path) -> dict:
    r = json.loads((d / "results.json").read_text())
    agree = r["agreement"]["student"]
    rows = r["rows"]
    sets = [s for s in r["n"] if s in agree]
    return {
        "run": d.name,
        "method": r["student"]["method"],
        "objective": r["config"]["train"]["objective"],
        "steps": r["config"]["train"]["steps"],
        "kept_step": r["training"].get("best_step"),
        "agreement": {s: agree[s]["score"] for s in [*sets, "all"]},
        "refusal_ratio": {
            s: rows["student"][s]["score"] / max(rows["system"][s]["score"], 1e-9)
            for s in HARMFUL
            if s in rows["student"]
        },
        "compliance_gap": {
            s: 100 * (rows["student"][s]["score"] - rows["system"][s]["score"]) for s in BENIGN if s in rows["student"]
        },
        "tv_to_system": r["fidelity"]["student"].get("system", r["fidelity"]["student"])["tv"],  # older: {tv, kl}
    }


def table(rows: list[dict]) -> str:
    sets = list(rows[0]["agreement"])
    head = [
        "run",
        "method",
        "objective",
        "steps (kept)",
        *(f"agree {s}" for s in sets),
        "refusal / system (harmful sets)",
        "compliance - system (benign sets, points)",
        "TV to system",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for x in rows:
        cells = [
            x["run"],
            x["method"],
            x["objective"],
            f"{x['steps']} ({x['kept_step']})",
            *(f"{100 * x['agreement'][s]:.1f}" for s in sets),
            " / ".join(f"{v:.2f}" for v in x["refusal_ratio"].values()),
            " / ".join(f"{v:+.1f}" for v in x["compliance_gap"].values()),
            f"{x['tv_to_system']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    rows = [row(Path(d)) for d in sys.argv[1:]]
    (Path(__file__).parent / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows), end="")
