"""Tabulate the dev evaluations of training runs (`softguard train`, no test evaluation):

    python docs/results/fidelity/dev_screen.py runs/fid-unstrat runs/fid-strat ... > docs/results/fidelity/dev_screen.md

Each argument is a run directory whose `student/history.json` holds the dev evaluations (64 dev prompts per class
in the screening configs, greedy, `dev_max_new_tokens` tokens): one row per evaluated step, the kept step marked.
Dev prompts are held out of training and of the test sets, so a lever is screened here without touching the test
sets; the chosen one is then run end to end (`softguard run`) and tabulated by summary.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(d: Path) -> list[str]:
    history = json.loads((d / "student" / "history.json").read_text())
    config = (d / "config.toml").read_text()
    best = json.loads((d / "student" / "best" / "adapter_config.json").read_text())["training"]["step"]
    n_dev = next(line.split("=")[1].strip() for line in config.splitlines() if line.startswith("n_dev"))
    out = []
    for r in history:
        if "dev_agreement" in r:
            mark = " (kept)" if r["step"] == best else ""
            metrics = ("dev_agreement", "dev_harmful_refusal", "dev_benign_compliance", "dev_tv")
            cells = [d.name, n_dev, f"{r['step']}{mark}", *(f"{r[m]:.3f}" for m in metrics)]
            out.append("| " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    head = ["run", "dev prompts per class", "step", "dev agreement", "dev harmful refusal", "dev benign compliance"]
    head.append("dev TV")
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for d in sys.argv[1:]:
        print("\n".join(rows(Path(d))))
