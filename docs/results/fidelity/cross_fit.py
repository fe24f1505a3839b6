"""Can the gate learn the guard's out-of-sample decisions from guards that did not see the prompt? A cross-fit.

    python docs/results/fidelity/cross_fit.py runs/gate > docs/results/fidelity/cross-fit.txt

The deployed guard trained on every prompt of the train split, so its flags there are nearly the dataset's labels
(gate_data.py: 98.9 %), while on the test sets it errs on prompts it never saw, and the gate, fitted on those
in-sample flags, does not copy the errors. Here two guards of the deployed guard's kind (its config, the same pairs)
are trained on the two halves of the split (a seeded permutation, alternate prompts), and each scores the half it did
not see: out-of-fold scores, a stand-in for what a guard of this kind decides on an unseen prompt. The gate's
read-outs (``readout.table``: last@l and last+mean@l, L2 chosen on the run's dev prompts against the deployed
guard's flags) are then fitted to: the deployed guard's flags (the run's own gate), the out-of-fold flags, and the
out-of-fold flags on the split with the deployed guard's on the contextual prompts. Test agreement is with the
deployed system, as the gated model decides.

States come from the run's own cache entries (``training.cached_prompt_states``); the two guards are written to
``<run>/cross-fit-guard-<k>`` (reused when there).
"""

from __future__ import annotations

import random
import sys

import torch
from gate_data import GateRun, gate_features
from readout import cached, table

from softguard.data import Splits
from softguard.guard_training import guard_pairs, train_split_guard
from softguard.guards import EncoderGuard, GuardTrainConfig


def main(run_dir: str) -> None:
    gate_run = GateRun.open(run_dir)
    run, cfg, splits, system, rows = gate_run.path, gate_run.cfg, gate_run.splits, gate_run.system, gate_run.rows
    own, contextual, prompts = gate_run.own, gate_run.contextual, gate_run.prompts
    assert prompts == [e.text for e in own + contextual], "a run on the split + contextual prompts, no rewordings"

    # out-of-fold scores of the split's prompts
    order = list(range(len(splits.train)))
    random.Random(cfg.seed).shuffle(order)
    gcfg = GuardTrainConfig(epochs=cfg.guard.epochs, max_length=cfg.guard.max_length, seed=cfg.seed)
    pairs = guard_pairs(cfg, splits, system) if cfg.guard.pairs > 0 else None
    oof: dict[str, float] = {}
    for k in range(2):
        held = set(order[k::2])
        fold = Splits([e for i, e in enumerate(splits.train) if i not in held], splits.dev, splits.test)
        out = run / f"cross-fit-guard-{k}"
        if not (out / "guard_config.json").is_file():
            train_split_guard(fold, out, cfg.guard, gcfg, pairs)
        guard = EncoderGuard.from_pretrained(out)
        texts = [splits.train[i].text for i in sorted(held)]
        oof.update(zip(texts, guard.score(texts).tolist(), strict=True))
    u_deployed = system.guard.score(prompts)
    u_oof = torch.tensor([oof[e.text] for e in own])
    labels = torch.tensor([e.harmful for e in own])
    tau = cfg.guard.tau
    flags_deployed, flags_oof = u_deployed[: len(own)] >= tau, u_oof >= tau
    print(f"# Cross-fitted guard flags, {run}\n")
    print(f"On the {len(own)} split prompts: the deployed guard's flags equal the labels on ", end="")
    print(f"{float((flags_deployed == labels).float().mean()):.3f}, the out-of-fold flags on ", end="")
    print(f"{float((flags_oof == labels).float().mean()):.3f}; the two agree on ", end="")
    print(f"{float((flags_oof == flags_deployed).float().mean()):.3f}.")

    layers, x, dev_x = gate_run.states()
    dev_part = {"x": dev_x.transpose(1, 2), "u": system.guard.score(gate_run.dev)}
    test_part = cached(
        run / "readout-test.safetensors", [r["prompt"] for r in rows], system.model, system.tokenizer, system
    )
    features = gate_features(layers)
    xs = x.transpose(1, 2)  # readout's [n, 2, L, d]
    n = len(own)
    for title, train in (
        ("deployed guard's flags, split + contextual (the run's gate)", {"x": xs, "u": u_deployed}),
        ("out-of-fold flags, split only", {"x": xs[:n], "u": u_oof}),
        (
            "out-of-fold flags on the split + deployed flags on contextual",
            {"x": xs, "u": torch.cat([u_oof, u_deployed[n:]])},
        ),
    ):
        table(title, train, dev_part, test_part, tau, rows, features, soft_targets=False)


if __name__ == "__main__":
    main(sys.argv[1])
