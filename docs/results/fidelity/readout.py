"""Which read-out of the frozen LLM's state decides most like the guard? The gate's last token against richer ones.

    python docs/results/fidelity/readout.py runs/fid-gate-1000 > docs/results/fidelity/readout-1000.txt
    python docs/results/fidelity/readout.py runs/fid-gate-1000 all 256 > docs/results/fidelity/readout-all.txt

The gate (docs/gate.md) reads one state: decoder layer l's output at the last templated-prompt position. The guard
reads the whole prompt with its own encoder. This script fits the gate's logistic regression (``fit_gate``: float64
L-BFGS, standardised, L2 grid) on other read-outs of the same forward pass and compares them on the run's dev prompts
(where a read-out and its L2 are chosen, as ``select_gate`` does) and on its test prompts:

- ``last@l``: the gate's own feature, [d];
- ``mean@l``: the mean of layer l's outputs over the prompt's own positions (after the chat template's leading tokens
  that every prompt shares, whose states do not depend on the prompt), [d];
- ``last+mean@l``: both, [2d];
- ``last@all`` / ``last+mean@all``: concatenated over the layers, [5d] / [10d].

Each read-out is fitted to the guard's flags 1[u >= tau] and, as a second row, to its soft confidence.
Training prompts: N per class of the train split (the second argument, a number or ``all``; the run's own count
without it), then, with a third argument C, a second table with C of them per class also under a passage of other
train text (``data.contextual_prompts``, ``data.contexts``). Test agreement is reported twice: with the guard's flags
(the read-out alone) and with the deployed system's decision as the gated model would make it (it refuses where the
read-out fires or where the base model's greedy response, from the run's ``generations.jsonl``, already is a
refusal: for the gate's own read-out this is the run's agreement, e.g. 0.806 for fid-gate-1000's layer 15). The
states and scores are cached in ``<run>/readout-*.safetensors``, each checked against its prompts' sha256.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from softguard.adapters import fit_gate, prompt_states
from softguard.config import load, update
from softguard.data import contextual_prompts, make_splits, seeded_sample
from softguard.guards import EncoderGuard, auroc
from softguard.losses import shared_head
from softguard.models import load_model
from softguard.pipeline import eval_sets, train_prompts, train_set
from softguard.system import SafeSystem

LAYERS = (5, 10, 15, 20, 25)
L2 = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def states(model: Any, tokenizer: Any, templated: list[str], batch_size: int = 16) -> torch.Tensor:
    """[n, 2, len(LAYERS), d]: decoder layer l's output at the last position (0) and its mean over the prompt's own
    positions (1), those after the ``head`` leading tokens every templated prompt shares (``prompt_states``, the
    gate's own read-outs)."""
    head = shared_head([tokenizer(t, add_special_tokens=False)["input_ids"] for t in templated])
    states = prompt_states(model, tokenizer, templated, list(LAYERS), head, batch_size, "states")
    return states.transpose(1, 2).contiguous()


FEATURES = {
    **{f"last@{layer}": (lambda s, j=j: s[:, 0, j]) for j, layer in enumerate(LAYERS)},
    **{f"mean@{layer}": (lambda s, j=j: s[:, 1, j]) for j, layer in enumerate(LAYERS)},
    **{f"last+mean@{layer}": (lambda s, j=j: s[:, :, j].flatten(1)) for j, layer in enumerate(LAYERS)},
    "last@all": lambda s: s[:, 0].flatten(1),
    "mean@all": lambda s: s[:, 1].flatten(1),
    "last+mean@all": lambda s: s.flatten(1),
}


def cached(path: Path, prompts: list[str], model: Any, tokenizer: Any, system: SafeSystem) -> dict[str, torch.Tensor]:
    """``{"x": states [n, 2, len(LAYERS), d], "u": the guard's scores [n]}`` of ``prompts``, from ``path`` when it
    exists (its prompts' sha256 checked), else computed and written there (temp file + rename)."""
    key = torch.frombuffer(bytearray(hashlib.sha256("\0".join(prompts).encode()).digest()), dtype=torch.uint8)
    if path.exists():
        tensors = load_file(path)
        if torch.equal(tensors["sha256"], key):
            return tensors
    tensors = {"x": states(model, tokenizer, system.template(prompts)), "u": system.guard.score(prompts), "sha256": key}
    save_file(tensors, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return tensors


def table(
    title: str,
    train: dict[str, torch.Tensor],
    dev: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    tau: float,
    rows: list[dict],
    features: dict[str, Any] = FEATURES,
    soft_targets: bool = True,
) -> None:
    """Fit every read-out on ``train`` (to the guard's flags, and to its soft confidence sigmoid(logit u - logit tau),
    0.5 exactly at tau), keep each one's L2 on ``dev``, print dev and test agreement: with the guard's flags, and with
    the system's decision as the gated model makes it (``rows``: the run's generations of the test prompts).
    ``features``: the read-outs to fit (all of ``FEATURES`` by default); ``soft_targets``: also fit each to the soft
    confidence."""
    flags = {name: (part["u"] >= tau).float() for name, part in (("train", train), ("dev", dev), ("test", test))}
    soft = torch.sigmoid(torch.logit(train["u"].double().clamp(1e-6, 1 - 1e-6)) - math.log(tau / (1 - tau))).float()
    base_refused = torch.tensor([str(r["base"]["refused"]) == "True" for r in rows])
    system_refused = torch.tensor([str(r["system"]["refused"]) == "True" for r in rows])
    sets = [r["set"] for r in rows]
    names = list(dict.fromkeys(sets))
    ty, dy, sy = flags["train"], flags["dev"], flags["test"]
    print(f"\n## {title}\n\ntrain {len(ty)} prompts ({int(ty.sum())} flagged), ", end="")
    print(f"dev {len(dy)} ({int(dy.sum())}), test {len(sy)}\n")
    print(
        "| read-out | targets | dims | L2 (dev) | dev agreement | dev AUROC | test: with the guard | with the system |"
    )
    print("|---|---|---|---|---|---|---|---|")
    per_set = {}
    kinds = (("flags", ty), ("soft", soft)) if soft_targets else (("flags", ty),)
    for (feature, take), (kind, targets) in itertools.product(features.items(), kinds):
        best = None
        for l2 in L2:
            w, b = fit_gate(take(train["x"]), targets, l2)
            dev_score = take(dev["x"]) @ w + b
            acc = float(((dev_score > 0).float() == dy).float().mean())
            if best is None or acc > best[0]:
                best = (acc, l2, w, b, auroc(dev_score, dy))
        acc, l2, w, b, dev_auroc = best
        fires = take(test["x"]) @ w + b > 0
        guard_agree = float((fires.float() == sy).float().mean())
        agree = (fires | base_refused) == system_refused
        per_set[f"{feature} | {kind}"] = [float(agree[[s == n for s in sets]].float().mean()) for n in names]
        print(
            f"| {feature} | {kind} | {take(train['x']).shape[1]} | {l2:g} | {acc:.3f} | {dev_auroc:.3f} | "
            f"{guard_agree:.3f} | {float(agree.float().mean()):.3f} |"
        )
    print("\nAgreement with the system per test set (the gated model's decision):\n")
    print("| read-out | targets | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for feature, values in per_set.items():
        print(f"| {feature} | " + " | ".join(f"{v:.3f}" for v in values) + " |")


def main(run_dir: str, n_train: str | None = None, contexts: int = 0) -> None:
    run = Path(run_dir)
    cfg = load(run / "config.toml")
    if n_train is not None:
        n = None if n_train == "all" else int(n_train)
        cfg = update(cfg, {"data": {"n_train_harmful": n, "n_train_benign": n}})
    cfg = update(cfg, {"data": {"rephrasings": 0}})
    splits = make_splits(cfg.seed)
    model, tokenizer = load_model(cfg.model.name)
    system = SafeSystem(model, tokenizer, EncoderGuard.from_pretrained(run / "guard"), tau=cfg.guard.tau)
    rows = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in rows} <= {e.text for exs in eval_sets(cfg, splits).values() for e in exs}
    dev = [
        e.text
        for h in (True, False)
        for e in seeded_sample([e for e in splits.dev if e.harmful == h], cfg.data.n_dev, cfg.seed)
    ]
    contextual = [e.text for e in contextual_prompts(train_set(cfg, splits), contexts, cfg.seed)]
    train_tag = f"{n_train or 'run'}"
    parts = {
        "train": cached(
            run / f"readout-train-{train_tag}.safetensors", train_prompts(cfg, splits), model, tokenizer, system
        ),
        "dev": cached(run / "readout-dev.safetensors", dev, model, tokenizer, system),
        "test": cached(run / "readout-test.safetensors", [r["prompt"] for r in rows], model, tokenizer, system),
    }
    table(f"train split ({train_tag} per class)", parts["train"], parts["dev"], parts["test"], cfg.guard.tau, rows)
    if contexts:
        ctx = cached(run / f"readout-contexts-{train_tag}-{contexts}.safetensors", contextual, model, tokenizer, system)
        both = {k: torch.cat([parts["train"][k], ctx[k]]) for k in ("x", "u")}
        title = f"train split ({train_tag} per class) + {contexts} per class under a passage"
        table(title, both, parts["dev"], parts["test"], cfg.guard.tau, rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
