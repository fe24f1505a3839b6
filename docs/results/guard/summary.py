"""Tabulate guard variants: python docs/results/guard/summary.py runs/guard-* > docs/results/guard/results.md

Each argument is a `softguard guard train --out` directory; its guard_eval.json gives the row: AUROC on dev, on all
test sets and on the held-out (prompt, response) pairs, how often a refusal scores safer than the base model's
answer to the same harmful prompt, and the share of each test set the guard flags at tau = 0.5 (its calibrated
threshold): the prompt-level system's refusal rate before the LLM's own refusals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SETS = ("harmbench", "strongreject", "xstest-unsafe", "xstest-safe", "benign")


def row(d: Path) -> str:
    ev = json.loads((d / "guard_eval.json").read_text())
    pairs = ev.get("pairs (held out)", {})
    cells = [
        f"{ev['dev']['auroc']:.3f}",
        f"{ev['test']['auroc']:.3f}",
        f"{pairs['auroc']:.3f}" if pairs else "-",
        f"{100 * pairs['refusal_preferred']:.1f} (n={pairs['n_refusal_pairs']})" if pairs else "-",
        *(f"{100 * ev['test']['flagged'][s]:.1f}" for s in SETS),
    ]
    return f"| {d.name} | " + " | ".join(cells) + " |"


def main(dirs: list[str]) -> str:
    head = (
        "| guard | dev AUROC | test AUROC | held-out pairs AUROC | refusal preferred (%) | "
        + " | ".join(f"{s} flagged (%)" for s in SETS)
        + " |"
    )
    return "\n".join([head, "|---" * (5 + len(SETS)) + "|", *(row(Path(d)) for d in dirs)]) + "\n"


if __name__ == "__main__":
    print(main(sys.argv[1:]), end="")
