"""Mean +- sd over seeds of each row's dev figures at its best dev-agreement step (the step `train` keeps):
python docs/results/compare-full-gpu/dev_table.py"""

import json
import statistics
from collections import defaultdict
from pathlib import Path

KEYS = ("dev_agreement", "dev_harmful_refusal", "dev_benign_compliance", "dev_tv")
cells: dict[str, list[dict]] = defaultdict(list)
for f in sorted(Path(__file__).parent.glob("rows/*/history.json")):
    evals = [e for e in json.loads(f.read_text()) if "dev_agreement" in e]
    best = max(evals, key=lambda e: (e["dev_agreement"], -e["dev_tv"]))  # as training keeps it (ties: lower TV)
    cells[f.parent.name.rsplit("-s", 1)[0]].append(best)
    print(f.parent.name, "step", best["step"], " ".join(f"{k} {best[k]:.3f}" for k in KEYS))
for cell, bests in cells.items():
    stats = (
        f"{k} {statistics.mean(b[k] for b in bests):.3f} +- {statistics.stdev(b[k] for b in bests):.3f}" for k in KEYS
    )
    print(cell, f"(n={len(bests)})", " | ".join(stats))
