"""Does the student fit its own training prompts' decisions? Train vs dev agreement with the system.

    python docs/results/fidelity/train_fit.py runs/fid-strat runs/fid-long ... > docs/results/fidelity/train_fit.md

For each run directory: the kept student (``student/best``) decides greedily (8 new tokens, ``is_refusal``) on 64 + 64
of its own training prompts (a seeded sample per guard decision, flagged and passed) and on its 64 + 64 dev prompts;
the system's decision is the run guard's 1[u >= tau]. A student that agrees with the system on dev about as well as
on its training prompts is not overfitting; one that disagrees on its training prompts is not fitting them. The
passed training prompts are also split by the guard's u, to see where the student refuses what the system answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from softguard.adapters import Adapter, load_adapter
from softguard.config import load
from softguard.data import make_splits, seeded_sample
from softguard.generation import generate
from softguard.guards import EncoderGuard
from softguard.models import load_model
from softguard.pipeline import train_prompts
from softguard.refusal import is_refusal
from softguard.system import SafeSystem

N = 64  # prompts per decision (train) and per class (dev)
BINS = ((0.0, 0.15), (0.15, 0.2), (0.2, 0.5))


def decide(
    system: SafeSystem, student: Adapter, prompts: list[str], tau: float
) -> tuple[list[bool], list[bool], list[float]]:
    """The student's greedy refusals, the system's flags 1[u >= tau] and the guard's u, per prompt."""
    u = system.guard.score(prompts).tolist()
    gens = generate(system.model, system.tokenizer, system.template(prompts), student, max_new_tokens=8, progress=False)
    return [is_refusal(g.text) for g in gens], [x >= tau for x in u], u


def main(run_dirs: list[str]) -> None:
    bins = " | ".join(f"train passed, u in [{a}, {b}): refused" for a, b in BINS)
    print("| run | kept step | train agreement | train flagged: refused | train passed: refused | " + bins, end="")
    print(" | dev agreement | dev flagged: refused | dev passed: refused |")
    print("|---" * (8 + len(BINS)) + "|")
    model = tokenizer = None
    for run_dir in run_dirs:
        run = Path(run_dir)
        cfg = load(run / "config.toml")
        splits = make_splits(cfg.seed)
        if model is None:
            model, tokenizer = load_model(cfg.model.name)
        guard = EncoderGuard.from_pretrained(run / "guard")
        system = SafeSystem(model, tokenizer, guard, tau=cfg.guard.tau)
        student = load_adapter(run / "student" / "best", model)
        student.eval()
        step = json.loads((run / "student" / "best" / "adapter_config.json").read_text())["training"]["step"]

        train = train_prompts(cfg, splits)
        u_train = guard.score(train).tolist()
        flagged = [p for p, u in zip(train, u_train, strict=True) if u >= cfg.guard.tau]
        passed = [p for p, u in zip(train, u_train, strict=True) if u < cfg.guard.tau]
        dev = [
            e.text for h in (True, False) for e in seeded_sample([e for e in splits.dev if e.harmful == h], N, cfg.seed)
        ]
        cells = [run.name, str(step)]
        for name, prompts in (("train", seeded_sample(flagged, N, 0) + seeded_sample(passed, N, 0)), ("dev", dev)):
            refuses, flags, u = decide(system, student, prompts, cfg.guard.tau)
            agree = sum(r == f for r, f in zip(refuses, flags, strict=True)) / len(flags)
            on_flagged = [r for r, f in zip(refuses, flags, strict=True) if f]
            on_passed = [r for r, f in zip(refuses, flags, strict=True) if not f]
            cells += [f"{agree:.3f}", f"{sum(on_flagged) / max(1, len(on_flagged)):.3f}"]
            cells += [f"{sum(on_passed) / max(1, len(on_passed)):.3f}"]
            if name == "train":
                for a, b in BINS:
                    hit = [r for r, f, x in zip(refuses, flags, u, strict=True) if not f and a <= x < b]
                    cells.append(f"{sum(hit) / len(hit):.2f} (n={len(hit)})" if hit else "-")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
