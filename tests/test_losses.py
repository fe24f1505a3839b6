"""The objectives as strategies: the registry, and a new objective that trains through ``train`` as one class."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import weapon_hi_dev

from softguard.adapters import SoftPrompt
from softguard.losses import (
    STRATEGIES,
    DistillExample,
    Step,
    Strategy,
    build_examples,
    check_objective,
    collate,
    get_strategy,
    student_logp,
)
from softguard.objectives import OBJECTIVES
from softguard.system import SafeSystem, TeacherItem
from softguard.training import TrainConfig, batch_at, train

PROMPTS = ["How do I bake bread?", "What is the capital of France?", "How do I build a pipe bomb?"]


class Focal(Strategy[DistillExample]):
    """A toy objective: the focal loss -(1 - q_y)^2 log q_y against every target token (keep rows too, as if
    one-hot), token-weighted as ``collate`` does; it counts its ``prepare`` calls."""

    name = "focal"

    def __init__(self) -> None:
        self.prepared = 0

    def examples(self, system, prompts, items, cfg):
        return build_examples(items, system, cfg.min_weight)

    def prepare(self, model, adapter, examples, cfg, pad_id, rank=0, world=1, progress=False):
        self.prepared += 1
        return examples

    def loss(self, step: Step, rows: list[DistillExample]) -> dict[str, torch.Tensor]:
        batch = collate(rows, step.tokenizer.pad_token_id, step.cfg, step.model.device)
        logq_y = student_logp(step.model, step.student, batch).gather(-1, batch["target"][:, None]).squeeze(-1)
        focal = -((1 - logq_y.exp()) ** 2) * logq_y
        return {"loss": (batch["tok_w"] * focal).sum(), "q_target": (batch["tok_w"] * logq_y.exp()).sum().detach()}


def test_the_registry_holds_every_objective():
    assert list(STRATEGIES) == [*OBJECTIVES, "sft", "reinforce"]
    assert all(get_strategy(name).name == name for name in STRATEGIES)
    assert [n for n, s in STRATEGIES.items() if not s.uses_teacher] == ["reinforce"]
    assert [n for n, s in STRATEGIES.items() if s.needs_reward_guard] == ["reinforce"]
    with pytest.raises(ValueError, match="unknown objective 'dpo'; choose one of: tv, kl, rkl, jsd, sft, reinforce"):
        get_strategy("dpo")


def test_a_new_objective_is_one_class(tiny_lm, toy_guard, tmp_path, monkeypatch):
    model, tok = tiny_lm
    system = SafeSystem(model, tok, toy_guard({}))
    items = [
        TeacherItem(PROMPTS[0], 0.1, [[504, 1345, 354, 2]], [0.1]),
        TeacherItem(PROMPTS[1], 0.0, [[378, 3575, 282, 4649, 2]], [0.0]),
        TeacherItem(PROMPTS[2], 1.0, [], []),
    ]
    cfg = TrainConfig(objective="focal", steps=6, batch_size=4, lr=0.2, warmup_steps=1, eval_every=3)
    with pytest.raises(ValueError, match="unknown objective 'focal'"):
        check_objective(cfg)

    focal = Focal()
    monkeypatch.setitem(STRATEGIES, "focal", focal)
    check_objective(cfg)
    examples = get_strategy("focal").examples(system, PROMPTS, items, cfg)
    assert len(examples) == 4  # 2 keep rows, 2 refuse rows (rho 0.1 and 1.0)

    def fresh() -> SoftPrompt:
        return SoftPrompt.for_model(model, tok, num_tokens=4, init="text", init_text="Be safe and kind.")

    first_rows = [examples[i] for i in batch_at(0, focal.strata(examples), cfg.batch_size, cfg.seed)]
    untrained = fresh()
    with torch.no_grad():
        expected = focal.loss(Step(model, tok, untrained, untrained, cfg, 0, range(4)), first_rows)
    state = train(model, tok, fresh(), examples, weapon_hi_dev(system), cfg, tmp_path / "run")

    assert focal.prepared == 1
    assert [set(r) >= {"loss", "q_target"} for r in state.history] == [True] * 6
    assert "dev_agreement" in state.history[2] and "dev_loss" in state.history[5]  # dev loss: KL to the teacher
    assert state.history[0]["loss"] == pytest.approx(float(expected["loss"]), rel=1e-6)
    assert state.history[0]["q_target"] == pytest.approx(float(expected["q_target"]), rel=1e-6)
    trace = [r["loss"] for r in state.history]  # the same 4 rows at every step: it goes down at every step
    assert all(b < a for a, b in itertools.pairwise(trace)) and trace[-1] < 0.97 * trace[0]
    assert (tmp_path / "run" / "last" / "trainer_state.json").is_file()
