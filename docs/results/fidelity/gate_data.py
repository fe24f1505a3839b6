"""Which training prompts teach the gate the guard's decisions? The gate refitted on parts of a gate run's prompts.

    python docs/results/fidelity/gate_data.py runs/fid-gate-all-reph > docs/results/fidelity/gate-data.txt

The guard trains on the whole train split and on 256 of its prompts per class under a passage (guard_training), the
same prompts the gate of fid-gate-all-readout is fitted on: there the guard's flags are in-sample, nearly its
training labels, while on the test sets it decides on prompts it never saw, and errs. The run's rewordings
(``data.rephrasings``, TRAIN_TRANSFORMS, which the guard never trained on) show the gate the guard's decisions out of
its training sample. This script reads the run's training prompts in three parts (the train split, the rewordings,
the contextual prompts), prints how often the guard's flags equal the dataset's labels on the parts that have labels,
then refits the gate's read-outs (``readout.table``: last@l and last+mean@l, the run's layers, fitted to the
guard's flags, the L2 grid chosen on dev) on: the split + contextual (fid-gate-all-readout's data), the rewordings
alone, the rewordings + contextual, and all three (the run's own data). Test agreement with the system is that of
the gated model (``readout.table``).

The training states are read back from the run's own cache entry (``training.cached_prompt_states``, the same key
the run used); dev and test states come from ``readout.cached`` (``<run>/readout-*.safetensors``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from readout import cached, table

from softguard.adapters.gate import default_layers
from softguard.adapters.steering import decoder_layers
from softguard.config import RunConfig, load
from softguard.data import Example, Splits, contextual_prompts, make_splits, seeded_sample
from softguard.guards import EncoderGuard
from softguard.losses import shared_head
from softguard.models import load_model
from softguard.pipeline import train_prompts, train_set
from softguard.system import SafeSystem
from softguard.training import cached_prompt_states

#: The gate's own read-outs, in ``readout.FEATURES``' names, at the default layers of SmolLM2-135M.
LAYERS = (5, 10, 15, 20, 25)


def gate_features(layers: list[int]) -> dict:
    """``readout.FEATURES``' last@l and last+mean@l, for states laid out [n, 2, len(layers), d]."""
    out = {}
    for j, layer in enumerate(layers):
        out[f"last@{layer}"] = lambda s, j=j: s[:, 0, j]
        out[f"last+mean@{layer}"] = lambda s, j=j: s[:, :, j].flatten(1)
    return out


@dataclass
class GateRun:
    """A gate run read back: its config, splits, model and system (with the run's guard), test generations, training
    prompts (``prompts``: the split's ``own``, any rewordings, then the ``contextual`` ones) and dev prompts."""

    path: Path
    cfg: RunConfig
    splits: Splits
    system: SafeSystem
    rows: list[dict]
    own: list[Example]
    contextual: list[Example]
    prompts: list[str]
    dev: list[str]

    @classmethod
    def open(cls, run_dir: str) -> GateRun:
        run = Path(run_dir)
        cfg = load(run / "config.toml")
        splits = make_splits(cfg.seed)
        model, tokenizer = load_model(cfg.model.name)
        system = SafeSystem(model, tokenizer, EncoderGuard.from_pretrained(run / "guard"), tau=cfg.guard.tau)
        rows = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
        own = train_set(cfg, splits)
        contextual = contextual_prompts(own, cfg.data.contexts, cfg.seed)
        prompts = train_prompts(cfg, splits)
        assert prompts[: len(own)] == [e.text for e in own]
        assert prompts[len(prompts) - len(contextual) :] == [e.text for e in contextual]
        dev = [
            e.text
            for h in (True, False)
            for e in seeded_sample([e for e in splits.dev if e.harmful == h], cfg.data.n_dev, cfg.seed)
        ]
        return cls(run, cfg, splits, system, rows, own, contextual, prompts, dev)

    def states(self) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """(layers, states of the training prompts, of the dev prompts), both [n, len(layers), 2, d], read back
        from the run's own cache entries (``training.cached_prompt_states``, the keys ``select_gate`` used)."""
        model, tokenizer, cfg = self.system.model, self.system.tokenizer, self.cfg
        templated, dev = self.system.template(self.prompts), self.system.template(self.dev)
        head = shared_head([tokenizer(t, add_special_tokens=False)["input_ids"] for t in [*templated, *dev]])
        layers = cfg.adapter.gate.layers or default_layers(len(decoder_layers(model)))
        batch = cfg.train.batch_size
        x = cached_prompt_states(model, tokenizer, templated, layers, head, batch, "states")
        return layers, x, cached_prompt_states(model, tokenizer, dev, layers, head, batch, "dev states")


def main(run_dir: str) -> None:
    gate_run = GateRun.open(run_dir)
    run, cfg, splits, system, rows = gate_run.path, gate_run.cfg, gate_run.splits, gate_run.system, gate_run.rows
    own, contextual, prompts, dev = gate_run.own, gate_run.contextual, gate_run.prompts, gate_run.dev
    model, tokenizer = system.model, system.tokenizer
    n_own, n_ctx = len(own), len(contextual)
    layers, x, _ = gate_run.states()
    assert tuple(layers) == LAYERS, "readout.cached computes these layers for dev and test"
    u = system.guard.score(prompts)
    parts = {
        "split": slice(0, n_own),
        "reworded": slice(n_own, len(prompts) - n_ctx),
        "contextual": slice(-n_ctx, None),
    }
    part = {name: {"x": x[s].transpose(1, 2), "u": u[s]} for name, s in parts.items()}  # readout's [n, 2, L, d]
    flags = u >= cfg.guard.tau
    print(f"# The gate's training data, {run}\n")
    print("The guard's flags against the dataset's labels where they exist (in-sample: the guard trained on these):\n")
    for name, examples in (("split", own), ("contextual", contextual)):
        labels = torch.tensor([e.harmful for e in examples])
        print(f"- {name}: {len(examples)} prompts, {float((flags[parts[name]] == labels).float().mean()):.3f}")
    print(f"- reworded: {parts['reworded'].stop - n_own} prompts, {float(flags[parts['reworded']].float().mean()):.3f}")
    print("  flagged (no labels: the guard labels them)")
    guard_contextual = {e.text for e in contextual_prompts(splits.train, cfg.guard.contexts, cfg.seed)}
    shared = sum(e.text in guard_contextual for e in contextual)
    print(f"- the guard trained on {shared} of the {n_ctx} contextual prompts itself")
    dev_part = cached(run / "readout-dev.safetensors", dev, model, tokenizer, system)
    test_part = cached(run / "readout-test.safetensors", [r["prompt"] for r in rows], model, tokenizer, system)
    features = gate_features(layers)
    for title, names in (
        ("train split + contextual (fid-gate-all-readout's data)", ("split", "contextual")),
        ("rewordings alone", ("reworded",)),
        ("rewordings + contextual", ("reworded", "contextual")),
        ("all three (the run's data)", ("split", "reworded", "contextual")),
    ):
        train = {k: torch.cat([part[n][k] for n in names]) for k in ("x", "u")}
        table(title, train, dev_part, test_part, cfg.guard.tau, rows, features, soft_targets=False)


if __name__ == "__main__":
    main(sys.argv[1])
