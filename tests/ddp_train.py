"""Trains small adapters on a saved tiny Llama; run by tests/test_distributed.py under ``accelerate launch``.

    ddp_train.py MODEL_DIR GUARD_BACKBONE_DIR OUT_DIR

Writes ``OUT_DIR/<run>/`` (``training.train``'s ``last/``, ``best/``, ``history.json``) and ``OUT_DIR/<run>/init``
(the untrained adapter) for each run, ``OUT_DIR/tv-resumed/``: the ``tv`` run interrupted after its step-2
checkpoint and resumed, and ``OUT_DIR/runs/tiny``: a whole ``pipeline.run`` (guard, teacher, train, evaluate) on
tiny settings, with ``OUT_DIR/calls/<stage>-rank<r>`` marking which processes trained the guard, sampled base
responses and evaluated. The same command with 1 and with N processes must train the same adapters: every run has
a fixed global batch (``TrainConfig.batch_size``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from conftest import weapon_hi_dev  # tests/ is sys.path[0] when this file runs as a script

import softguard.system as system_module
from softguard import guard_training, pipeline, training
from softguard.adapters import LoRA, SoftPrompt
from softguard.config import RunConfig, update
from softguard.losses import build_examples, rl_prompts
from softguard.models import load_model
from softguard.system import SafeSystem, TeacherItem
from softguard.training import TrainConfig, train

PROMPTS = ["How do I bake bread?", "What is the capital of France?", "Give me three tips for sleeping better."]
HARMFUL = ["How do I build a pipe bomb?", "Write malware that steals passwords."]


class LengthGuard:
    """u(x, r) = min(1, len(r) / 60): a response-level reward 1 - u that depends on the sampled response."""

    def score(self, prompts: list[str], responses: list[str] | None = None) -> torch.Tensor:
        assert responses is not None
        return torch.tensor([min(1.0, len(r) / 60) for r in responses])


def mark_calls(module: object, name: str, marker: Path) -> None:
    """Wrap ``module.name`` so that calling it creates the file ``marker``."""
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return real(*args, **kwargs)

    setattr(module, name, wrapped)


def train_runs(model_dir: str, out: Path) -> None:
    """``training.train`` on three runs (``OUT_DIR/<run>``), and the tv run stopped and resumed."""
    model, tok = load_model(model_dir)
    system = SafeSystem(model, tok, None)
    items = [
        TeacherItem(PROMPTS[0], 0.1, [[504, 1345, 354, 2], [28, 2]], [0.1, 0.1]),
        TeacherItem(PROMPTS[1], 0.0, [[378, 3575, 282, 4649, 2]], [0.0]),
        TeacherItem(PROMPTS[2], 0.3, [[1580, 30, 2]], [0.3]),
        TeacherItem(HARMFUL[0], 1.0, [], []),
        TeacherItem(HARMFUL[1], 0.8, [[19842, 17, 2]], [0.8]),
    ]
    examples = build_examples(items, system)  # 8 examples
    dev = weapon_hi_dev(system)
    common = dict(steps=3, warmup_steps=1, eval_every=2, dev_max_new_tokens=4, max_grad_norm=1.0)
    sp = lambda: SoftPrompt.for_model(model, tok, num_tokens=4, init="text", init_text="Be safe.")  # noqa: E731
    lora = LoRA.for_model(model, rank=2, dropout=0.0, seed=1)  # dropout masks come from each process's own RNG
    with torch.no_grad():
        for key in lora.B:
            lora.B[key].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    rl = dict(objective="reinforce", rl_samples=2, rl_max_new_tokens=4, kl_coef=0.1)
    runs = {
        # global batch 4 over 2 processes: 2 + 2
        "tv": (sp(), examples, TrainConfig(objective="tv", batch_size=4, lr=0.05, **common), None),
        # global batch 3: 2 + 1 rows, an uneven split; the gradient norm clip (1.0) acts at step 3
        "lora-kl": (lora, examples, TrainConfig(objective="kl", batch_size=3, lr=0.02, **common), None),
        # 4 prompts x K = 2 samples per step, sampled online from the student
        "reinforce": (
            sp(),
            rl_prompts(PROMPTS + HARMFUL, system),
            TrainConfig(batch_size=4, lr=0.05, **rl, **common),
            LengthGuard(),
        ),
    }
    for name, (adapter, data, cfg, guard) in runs.items():
        if os.environ.get("RANK", "0") == "0":
            adapter.save_pretrained(out / name / "init")
        train(model, tok, adapter, data, dev, cfg, out / name, reward_guard=guard)
    # resume: stop the tv run when step 3 starts (every process at once), then resume it from its step-2 checkpoint
    _, data, cfg, _ = runs["tv"]
    real_batch_at = training.batch_at

    def stop_at_step_2(step: int, *args) -> list[int]:
        if step == 2:
            raise KeyboardInterrupt("simulated stop")
        return real_batch_at(step, *args)

    training.batch_at = stop_at_step_2
    try:
        train(model, tok, sp(), data, dev, cfg, out / "tv-resumed")
        raise AssertionError("the simulated stop did not happen")
    except KeyboardInterrupt:
        pass
    training.batch_at = real_batch_at
    train(model, tok, sp(), data, dev, cfg, out / "tv-resumed", resume=True)


def whole_run(model_dir: str, backbone_dir: str, out: Path) -> None:
    """``pipeline.run`` on tiny settings into ``OUT_DIR/runs/tiny``, marking which processes ran which stages."""
    tiny = update(
        RunConfig(),
        {
            "name": "tiny",
            "model": {"name": model_dir},
            "guard": {"backbone": backbone_dir, "epochs": 1, "max_length": 32, "pairs": 2, "pair_tokens": 4},
            "data": {"n_train_harmful": 4, "n_train_benign": 4, "n_dev": 2},
            "teacher": {"samples": 1, "max_new_tokens": 4},
            "adapter": {"soft_prompt": {"num_tokens": 2}},
            "eval": {"n": 2, "max_new_tokens": 4},
            "train": {"steps": 2, "batch_size": 4, "eval_every": 2, "dev_max_new_tokens": 4},
        },
    )
    rank = os.environ.get("RANK", "0")
    for module, name, stage in (
        (guard_training, "train_split_guard", "guard"),
        (system_module, "generate", "sample"),  # base samples: the guard's pairs and the teacher's (cached on disk)
        (pipeline, "evaluate_stage", "evaluate"),
    ):
        mark_calls(module, name, out / "calls" / f"{stage}-rank{rank}")
    pipeline.run(tiny, out / "runs", device="cpu")


def main(model_dir: str, backbone_dir: str, out: Path) -> None:
    torch.set_num_threads(1)
    train_runs(model_dir, out)
    whole_run(model_dir, backbone_dir, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
