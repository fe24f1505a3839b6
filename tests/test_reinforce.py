"""``reinforce`` end to end on a tiny model: the policy gradient raises the reward a toy response-level guard gives."""

from __future__ import annotations

import torch

from softguard import losses
from softguard.adapters import LoRA, SoftPrompt
from softguard.evaluation import DevSet
from softguard.generation import generate
from softguard.losses import Step, get_strategy, rl_prompts
from softguard.models import chat_prompt
from softguard.system import SafeSystem
from softguard.training import TrainConfig, train


class FirstTokenGuard:
    """u(x, r) = 0 when r starts with ``text``, else 1: reward 1 - u is 1 exactly for responses opening with it."""

    def __init__(self, text: str):
        self.text = text

    def score(self, prompts: list[str], responses: list[str] | None = None) -> torch.Tensor:
        assert responses is not None, "reinforce must score (prompt, response) pairs"
        return torch.tensor([0.0 if r.startswith(self.text) else 1.0 for r in responses])


def _mean_reward(model, tok, adapter, prompts: list[str], guard: FirstTokenGuard, cfg: TrainConfig) -> float:
    """Mean reward over 8 fresh samples per prompt (a seed the training never uses)."""
    templated = [chat_prompt(tok, p) for p in prompts for _ in range(8)]
    gens = generate(
        model, tok, templated, adapter, max_new_tokens=2, temperature=cfg.rl_temperature, seed=999, progress=False
    )
    return float((1 - guard.score([p for p in prompts for _ in range(8)], [g.text for g in gens])).mean())


def test_reinforce_raises_the_mean_reward(tiny_lm, tmp_path):
    model, tok = tiny_lm
    prompts = [f"question {i}" for i in range(8)]
    # the token the tiny model opens with greedily; with the soft prompt's random init 3 % of samples start with it
    # before training and 81 % after (measured)
    first = generate(model, tok, [chat_prompt(tok, prompts[0])], max_new_tokens=1, progress=False)[0]
    guard = FirstTokenGuard(tok.decode(first.token_ids[:1]).strip())
    cfg = TrainConfig(
        objective="reinforce",
        steps=8,
        batch_size=4,
        lr=0.05,
        warmup_steps=1,
        eval_every=8,
        dev_max_new_tokens=2,
        rl_samples=4,
        rl_max_new_tokens=2,
        rl_temperature=0.2,
        kl_coef=0.0,
    )
    system = SafeSystem(model, tok, guard)
    sp = SoftPrompt.for_model(model, tok, num_tokens=4, init="vocab")
    before = _mean_reward(model, tok, sp, prompts, guard, cfg)
    dev = DevSet([chat_prompt(tok, p) for p in prompts[:2]], [False, False], [False, False], [])
    state = train(model, tok, sp, rl_prompts(prompts, system), dev, cfg, tmp_path, reward_guard=guard)
    after = _mean_reward(model, tok, sp, prompts, guard, cfg)
    assert before < 0.3
    assert after > before + 0.3, (before, after)
    assert [h["step"] for h in state.history] == list(range(1, 9))
    assert all(0.0 <= h["reward"] <= 1.0 for h in state.history)


def test_reinforce_kl_penalty_is_zero_at_the_base_model_and_positive_after(tiny_lm, tmp_path):
    """With a fresh LoRA (B = 0) the student is the base model, so the KL(q || pi) term starts at exactly 0."""
    model, tok = tiny_lm
    prompts = [f"question {i}" for i in range(4)]
    guard = FirstTokenGuard("x")
    cfg = TrainConfig(
        objective="reinforce", steps=3, batch_size=2, lr=0.05, warmup_steps=1, eval_every=3, dev_max_new_tokens=2,
        rl_samples=2, rl_max_new_tokens=3, rl_temperature=1.0, kl_coef=1.0,
    )  # fmt: skip
    lora = LoRA.for_model(model, rank=2)
    dev = DevSet([chat_prompt(tok, prompts[0])], [False], [False], [])
    state = train(
        model, tok, lora, rl_prompts(prompts, SafeSystem(model, tok, guard)), dev, cfg, tmp_path, reward_guard=guard
    )
    assert state.history[0]["kl"] == 0.0
    assert state.history[-1]["kl"] > 0.0


def test_reinforce_samples_and_scores_in_fp32_under_bf16_autocast(tiny_lm, monkeypatch):
    """Under a bf16 training step (``TrainConfig.precision``) the policy's samples and the guard's rewards are
    still computed in float32: autocast is off while they run, and on again for the loss."""
    model, tok = tiny_lm
    seen: list[tuple[str, bool]] = []

    class RecordingGuard(FirstTokenGuard):
        def score(self, prompts: list[str], responses: list[str] | None = None) -> torch.Tensor:
            seen.append(("reward", torch.is_autocast_enabled("cpu")))
            return super().score(prompts, responses)

    real = losses.generate
    monkeypatch.setattr(
        losses, "generate", lambda *a, **k: seen.append(("sample", torch.is_autocast_enabled("cpu"))) or real(*a, **k)
    )
    cfg = TrainConfig(objective="reinforce", rl_samples=2, rl_max_new_tokens=2)
    sp = SoftPrompt.for_model(model, tok, num_tokens=4, init="vocab")
    rows = rl_prompts(["question 0", "question 1"], SafeSystem(model, tok, None))
    step = Step(model, tok, sp, sp, cfg, 0, range(2), RecordingGuard("x"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = get_strategy("reinforce").loss(step, rows)
        assert torch.is_autocast_enabled("cpu")
    assert seen == [("sample", False), ("reward", False)]
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
