"""The system with its guard replaced by a linear gate on the LLM's own state: how often does it decide like the system?

    python docs/results/fidelity/gate.py runs/demo > docs/results/fidelity/gate.txt
    python docs/results/fidelity/gate.py runs/demo 160 2 >> docs/results/fidelity/gate.txt
    python docs/results/fidelity/gate.py runs/demo 1000 >> docs/results/fidelity/gate.txt

The gated model answers a prompt x with the frozen LLM's own greedy response, unless its gate fires,
w . h_l(x) + b > 0 (h_l the state of decoder output ``l`` at the last templated-prompt position), and then with the
system's refusal r*. It is a student of the system too (the LLM alone plus d + 1 numbers, no second model): its
responses are the system's exactly wherever the gate and the guard decide alike, so its decision agreement with the
deployed system is what its TV to the system is made of. The gate is ``probe.py``'s probe: logistic regression on the
guard's flags 1[u >= tau] of the run's training prompts (or N per class, with R rewordings of each: the optional
arguments, as in ``probe.py``), layer and L2 chosen on the run's dev prompts.

Its refusal on a test prompt is ``gate fires or the base model's greedy response is a refusal`` (the base model's own
refusals stay, as they do in the system), read from the run's ``generations.jsonl``; the table compares it with the
system's refusal there, set by set, next to the run's student. No generation runs: the gated model's responses
are the base row's or r*.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from probe import choose, last_states, setup

from softguard.guards import auroc


def main(run_dir: str, n_train: int | None = None, rephrasings: int = 0) -> None:
    _, _, system, _, train, dev = setup(run_dir, n_train, rephrasings)
    (_, train_y), (dev_x, dev_y) = train, dev
    dev_acc, layer, l2, (j, mu, sd, w, b) = choose(train, dev, table=False)
    dev_auroc = auroc(((dev_x[:, j] - mu) / sd) @ w + b, dev_y)
    run = Path(run_dir)
    model, tokenizer = system.model, system.tokenizer

    rows = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    states = last_states(model, tokenizer, system.template([r["prompt"] for r in rows]))
    fires = ((((states[:, j] - mu) / sd) @ w + b) > 0).tolist()
    sets: dict[str, list[tuple[bool, bool, bool, bool, bool]]] = {}
    for r, gate in zip(rows, fires, strict=True):
        refused = {k: str(r[k]["refused"]) == "True" for k in ("base", "system", "student")}
        gated = gate or refused["base"]
        sets.setdefault(r["set"], []).append((r["harmful"], refused["system"], gated, refused["student"], gate))
    print(f"\n## gate fitted on {len(train_y)} prompts ({int(train_y.sum())} flagged), rewordings {rephrasings}")
    print(f"layer {layer}, l2 {l2:g}; {len(dev_y)} dev prompts: agreement with the guard {dev_acc:.3f}, ", end="")
    print(f"AUROC of the gate's score against its flags {dev_auroc:.3f}\n")
    print("| test set | n | system refuses | gated model refuses | gated model agrees | student agrees |")
    print("|---|---|---|---|---|---|")
    total = [0, 0, 0]
    for name, items in sets.items():
        n = len(items)
        agree = sum(s == g for _, s, g, _, _ in items)
        student = sum(s == t for _, s, _, t, _ in items)
        total = [total[0] + n, total[1] + agree, total[2] + student]
        sys_ref, gate_ref = sum(s for _, s, _, _, _ in items), sum(g for _, _, g, _, _ in items)
        print(f"| {name} | {n} | {sys_ref} | {gate_ref} | {agree / n:.3f} | {student / n:.3f} |")
    print(f"| all | {total[0]} | | | {total[1] / total[0]:.3f} | {total[2] / total[0]:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
