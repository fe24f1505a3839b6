"""Is the student's decision ranked right but thresholded wrong? Its first-token lead on dev and on the test sets.

    python docs/results/fidelity/threshold.py runs/demo > docs/results/fidelity/threshold.txt

For a run's student (``student/best``) and the base model, at the first response token of every prompt: the greedy
lead of r*'s first token, lead(x) = log q("I" | x) - max_{v != "I"} log q(v | x), so that greedy decoding starts the
refusal exactly when lead > 0. On the run's dev prompts (64 per class, the deployed system's decisions rebuilt from
the cache as the run built them) it picks the threshold theta that maximises the share of prompts where
1[lead > theta] equals the system's decision; on each test set of the run (prompts and the system's and the
student's greedy decisions from its ``generations.jsonl``) it reports the AUROC of the lead against the system's
decision, the agreement of 1[lead > 0] (the first-token proxy of the greedy decision), of the greedy decision itself,
and of 1[lead > theta]. A proxy that tracks the greedy decision and a large gain at theta say the student orders the
prompts like the system and only its refusal threshold is off: a one-number calibration would recover the gain.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from softguard.adapters import load_adapter
from softguard.config import PRESETS, load
from softguard.data import make_splits
from softguard.guards import auroc
from softguard.pipeline import dev_stage, guard_dir, guard_stage, system_stage

sys.path.insert(0, str(Path(__file__).parent))
from discrimination import first_token_logp, greedy_lead


def agree(decide: torch.Tensor, target: list[bool]) -> float:
    return float((decide == torch.tensor(target)).float().mean())


def best_threshold(score: torch.Tensor, target: list[bool]) -> float:
    """The theta maximising agreement of 1[score > theta] with ``target`` (midpoints of sorted scores; ties: the
    theta nearest 0, the greedy decision)."""
    s = score.sort().values
    candidates = torch.cat([s[:1] - 1, (s[1:] + s[:-1]) / 2, s[-1:] + 1])
    accs = torch.tensor([agree(score > t, target) for t in candidates])
    best = candidates[accs == accs.max()]
    return float(best[best.abs().argmin()])


def main(run: Path) -> None:
    torch.set_num_threads(2)
    cfg = load(run / "config.toml", PRESETS["quick"])
    splits = make_splits(cfg.seed)
    system = system_stage(cfg, run, torch.device("cpu"))
    system.guard = guard_stage(cfg, splits, guard_dir(cfg, run), system)
    model, tok = system.model, system.tokenizer
    i_id = system.refusal_ids()[0]
    adapter = load_adapter(run / "student" / "best", model)
    rows = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    dev = dev_stage(cfg, system, splits)
    print(f"{run}: {len(dev.prompts)} dev prompts, the system refuses {sum(dev.system_refuses)}")
    for name, ad in (("base model", None), ("student", adapter)):
        dev_lead = greedy_lead(first_token_logp(model, tok, dev.prompts, ad), i_id)
        theta = best_threshold(dev_lead, dev.system_refuses)
        print(
            f"\n{name}: dev AUROC {auroc(dev_lead, torch.tensor(dev.system_refuses)):.3f}, agreement at 0 "
            f"{agree(dev_lead > 0, dev.system_refuses):.3f}, theta on dev {theta:+.2f} (agreement "
            f"{agree(dev_lead > theta, dev.system_refuses):.3f})\n"
        )
        who = "base" if ad is None else "student"
        print(f"| test set | n | system refuses | AUROC | lead > 0 | greedy {who} | lead > theta |")
        print("|---|---|---|---|---|---|---|")
        totals = {"n": 0, "zero": 0.0, "greedy": 0.0, "theta": 0.0}
        for s in dict.fromkeys(r["set"] for r in rows):
            part = [r for r in rows if r["set"] == s]
            target = [r["system"]["refused"] for r in part]
            templated = system.template([r["prompt"] for r in part])
            test_lead = greedy_lead(first_token_logp(model, tok, templated, ad), i_id)
            greedy = agree(torch.tensor([r[who]["refused"] for r in part]), target)
            zero, at = agree(test_lead > 0, target), agree(test_lead > theta, target)
            print(
                f"| {s} | {len(part)} | {sum(target)} | {auroc(test_lead, torch.tensor(target)):.3f} | {zero:.3f} "
                f"| {greedy:.3f} | {at:.3f} |"
            )
            for key, value in (("zero", zero), ("greedy", greedy), ("theta", at)):
                totals[key] += value * len(part)
            totals["n"] += len(part)
        n = totals["n"]
        print(f"| all | {n} | | | {totals['zero'] / n:.3f} | {totals['greedy'] / n:.3f} | {totals['theta'] / n:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
