"""How well can the frozen LLM's own representation decide like the system? A linear probe.

    python docs/results/fidelity/probe.py runs/demo > docs/results/fidelity/probe.txt
    python docs/results/fidelity/probe.py runs/demo 1000 > docs/results/fidelity/probe-1000.txt
    python docs/results/fidelity/probe.py runs/demo 160 2 > docs/results/fidelity/probe-g15-reph2.txt

The student decides refuse / answer at the position that predicts the first response token (the last position of the
templated prompt). This fits, for each of a few decoder layers, an L2-regularised logistic regression from the
frozen model's hidden state there (no soft prompt) to the deployed system's prompt-level decision 1[u(x) >= tau]
(the run's guard) on the run's 320 training prompts (or on N train-split prompts per class, the optional second
argument: the guard labels any prompt, so more of them cost only the guard's and the probe's time; the optional third
argument adds that many rewordings of each, ``data.rephrasings``); the layer and
the L2 weight are chosen on the run's 64 + 64 dev prompts, and the chosen probe's agreement with the guard's
decision is reported per test set of the run. A soft prompt can change these states (the prompt attends to it), so
the probe is not a bound; it says whether the decision is already legible where the student has to make it, with as
much training data as the student has.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from softguard.config import load, update
from softguard.data import make_splits, seeded_sample
from softguard.generation import tokenize_prompts
from softguard.guards import EncoderGuard
from softguard.models import load_model
from softguard.pipeline import eval_sets, train_prompts
from softguard.system import SafeSystem

LAYERS = (5, 10, 15, 20, 25, 30)
L2 = (1e-3, 1e-2, 1e-1, 1.0)


@torch.no_grad()
def last_states(model, tokenizer, templated: list[str], batch_size: int = 16) -> torch.Tensor:
    """Hidden states at the last prompt position, [n, len(LAYERS), d] (left padding: the last column)."""
    out = []
    for start in range(0, len(templated), batch_size):
        ids, mask = tokenize_prompts(tokenizer, templated[start : start + batch_size], model.device)
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1).hidden_states
        out.append(torch.stack([hs[layer][:, -1] for layer in LAYERS], 1).float())
    return torch.cat(out)


def fit(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on standardised features, L-BFGS; returns (weights, bias) in the standardised space."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w @ w) / 2
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def agreement(x: torch.Tensor, y: torch.Tensor, probe: tuple) -> float:
    """Share of prompts where the probe (layer index, mean, std, w, b) decides like the guard."""
    j, mean, std, w, b = probe
    return float(((((x[:, j] - mean) / std) @ w + b > 0).float() == y).float().mean())


def setup(run_dir: str, n_train: int | None = None, rephrasings: int = 0) -> tuple:
    """The run's config (with ``n_train`` per class and ``rephrasings``), splits, system and ``data``: prompts ->
    (last-position states [n, len(LAYERS), d], the guard's flags [n]); then the train and dev data."""
    run = Path(run_dir)
    cfg = load(run / "config.toml")
    if n_train is not None:
        cfg = update(cfg, {"data": {"n_train_harmful": n_train, "n_train_benign": n_train}})
    cfg = update(cfg, {"data": {"rephrasings": rephrasings}})
    splits = make_splits(cfg.seed)
    model, tokenizer = load_model(cfg.model.name)
    guard = EncoderGuard.from_pretrained(run / "guard")
    system = SafeSystem(model, tokenizer, guard, tau=cfg.guard.tau)

    def data(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        y = (guard.score(prompts) >= cfg.guard.tau).float()
        return last_states(model, tokenizer, system.template(prompts)), y

    dev = [
        e.text
        for h in (True, False)
        for e in seeded_sample([e for e in splits.dev if e.harmful == h], cfg.data.n_dev, cfg.seed)
    ]
    return cfg, splits, system, data, data(train_prompts(cfg, splits)), data(dev)


def choose(train: tuple, dev: tuple, table: bool = True) -> tuple:
    """Fit every (layer, L2) on ``train`` = (x, y) and keep the best on ``dev``: (dev agreement, layer, l2, probe);
    ``table`` prints the grid."""
    (train_x, train_y), (dev_x, dev_y) = train, dev
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    best = None
    if table:
        print(f"train: {len(train_y)} prompts, {int(train_y.sum())} flagged; ", end="")
        print(f"dev: {len(dev_y)}, {int(dev_y.sum())} flagged")
        print("| layer | l2 | train agreement | dev agreement |\n|---|---|---|---|")
    for j, layer in enumerate(LAYERS):
        for l2 in L2:
            probe = (j, mean[j], std[j], *fit((train_x[:, j] - mean[j]) / std[j], train_y, l2))
            dev_acc = agreement(dev_x, dev_y, probe)
            if table:
                print(f"| {layer} | {l2:g} | {agreement(train_x, train_y, probe):.3f} | {dev_acc:.3f} |")
            if best is None or dev_acc > best[0]:
                best = (dev_acc, layer, l2, probe)
    return best


def main(run_dir: str, n_train: int | None = None, rephrasings: int = 0) -> None:
    cfg, splits, _, data, train, dev = setup(run_dir, n_train, rephrasings)
    _, layer, l2, probe = choose(train, dev)
    print(f"\nchosen on dev: layer {layer}, l2 {l2:g}\n")
    print("| test set | n | flagged | probe agreement with the guard |\n|---|---|---|---|")
    for name, exs in eval_sets(cfg, splits).items():
        x, y = data([e.text for e in exs])
        print(f"| {name} | {len(y)} | {int(y.sum())} | {agreement(x, y, probe):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
