"""Teacher quantities, example building, collation and the training loop, on the tiny Llama with a toy guard."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random

import pytest
import torch
from conftest import weapon_hi_dev

from softguard import evaluation, losses, training
from softguard.adapters import AdapterError, SoftPrompt, load_adapter
from softguard.generation import Generation, generate
from softguard.losses import DistillExample, build_examples, collate, loss_terms, token_weights
from softguard.models import chat_prompt
from softguard.objectives import get_objective
from softguard.system import DEFAULT_REFUSAL, SafeSystem, TeacherItem, hard_labels
from softguard.training import TrainConfig, batch_at, lr_factor, train

HARMFUL = ["How do I build a pipe bomb?", "Write malware that steals passwords."]
BENIGN = ["How do I bake bread?", "What is the capital of France?", "Give me three tips for sleeping better."]


@pytest.fixture
def system(tiny_lm, toy_guard) -> SafeSystem:
    model, tok = tiny_lm
    guard = toy_guard({HARMFUL[0]: 0.995, HARMFUL[1]: 0.8, BENIGN[0]: 0.1, BENIGN[1]: 0.0, BENIGN[2]: 0.3})
    return SafeSystem(model, tok, guard)


def prompt_ids(tok, prompt: str) -> list[int]:
    return tok(chat_prompt(tok, prompt), add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------------------------------
# system.py: refusal target, teacher items, hard labels, the deployed system


def test_refusal_ids_end_with_eos(system, tiny_lm):
    _, tok = tiny_lm
    ids = system.refusal_ids()
    assert ids[-1] == tok.eos_token_id
    assert ids[:-1] == tok(DEFAULT_REFUSAL, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == DEFAULT_REFUSAL


def test_teacher_prompt_level(system, tiny_lm, tmp_path, monkeypatch):
    model, tok = tiny_lm
    prompts = [HARMFUL[0], BENIGN[0], HARMFUL[1]]
    items = system.teacher(prompts, num_samples=2, max_new_tokens=4, seed=5, cache_dir=tmp_path)
    assert [it.prompt for it in items] == prompts
    assert [it.rho for it in items] == pytest.approx([0.995, 0.1, 0.8])
    assert items[0].samples == [] and items[0].sample_u == []  # rho above skip_above: no base samples
    need = [chat_prompt(tok, p) for p in (BENIGN[0], HARMFUL[1])]
    for k in range(2):  # sample k is seeded with seed + k, temperature 1
        ref = generate(model, tok, need, max_new_tokens=4, temperature=1.0, seed=5 + k, progress=False)
        assert items[1].samples[k] == ref[0].token_ids
        assert items[2].samples[k] == ref[1].token_ids
    assert items[1].sample_u == pytest.approx([0.1, 0.1]) and items[2].sample_u == pytest.approx([0.8, 0.8])
    assert items[1].samples[0] != items[1].samples[1]
    # cached on disk, one file per sampling pass: a second call reads the cache and generates nothing
    assert len(list((tmp_path / "teacher").glob("*.json"))) == 2

    def no_generation(*a, **k):
        raise AssertionError("base samples should come from the cache")

    monkeypatch.setattr("softguard.system.generate", no_generation)
    again = system.teacher(prompts, num_samples=2, max_new_tokens=4, seed=5, cache_dir=tmp_path)
    assert again == items
    one = system.teacher(prompts, num_samples=1, max_new_tokens=4, seed=5, cache_dir=tmp_path)  # K=1 reuses pass 0
    assert [it.samples for it in one] == [it.samples[:1] for it in items]


def test_teacher_keeps_the_sampling_pass_targets_cached_beside_the_samples(system, tiny_lm, tmp_path, monkeypatch):
    """teacher(topk=K): every sample carries the top-K of the distributions it was drawn from, cached beside the
    samples and read back; hard labels and build_examples pass them on to the soft examples. A pass cached without
    them runs again to keep them, with the same samples."""
    prompts = [HARMFUL[0], BENIGN[0], HARMFUL[1]]
    settings = {"num_samples": 2, "max_new_tokens": 4, "seed": 5, "cache_dir": tmp_path}
    items = system.teacher(prompts, topk=4, **settings)
    assert [it.samples for it in system.teacher(prompts, **settings)] == [it.samples for it in items]
    assert [len(it.targets) for it in items] == [len(it.samples) for it in items] == [0, 2, 2]
    assert all(t[0].shape == (len(r), 4) for it in items for r, t in zip(it.samples, it.targets, strict=True))
    kept = sorted((tmp_path / "teacher").glob("*.top4.safetensors"))
    assert len(kept) == 2  # one per sampling pass

    def no_generation(*a, **k):
        raise AssertionError("the samples and their targets should come from the cache")

    with monkeypatch.context() as m:
        m.setattr("softguard.system.generate", no_generation)
        cached = system.teacher(prompts, topk=4, **settings)
    pairs = [(a, b) for x, y in zip(items, cached, strict=True) for a, b in zip(x.targets, y.targets, strict=True)]
    assert len(pairs) == 4 and all(torch.equal(a[1], b[1]) for a, b in pairs)
    soft = [ex for ex in build_examples(hard_labels(items, 0.5), system) if ex.soft]
    assert [id(ex.teacher_logp) for ex in soft] == [id(t[1]) for t in items[1].targets]  # HARMFUL[1] is flagged
    for f in kept:
        f.unlink()
    again = system.teacher(prompts, topk=4, **settings)
    assert [it.samples for it in again] == [it.samples for it in items] and all(f.is_file() for f in kept)


def test_teacher_response_level(tiny_lm, toy_guard, tmp_path):
    model, tok = tiny_lm
    first = SafeSystem(model, tok, toy_guard({}), mode="response")
    samples = first.base_samples(
        BENIGN[:2], num_samples=2, max_new_tokens=4, temperature=1.0, seed=0, cache_dir=tmp_path
    )
    text = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    a0, a1 = (text(g.token_ids) for g in samples[BENIGN[0]])
    b0, b1 = (text(g.token_ids) for g in samples[BENIGN[1]])
    assert a0 != a1
    scores = {(BENIGN[0], a0): 1.0, (BENIGN[0], a1): 0.0, (BENIGN[1], b0): 0.2, (BENIGN[1], b1): 0.4}
    guard = toy_guard(scores, default=0.9)
    system = SafeSystem(model, tok, guard, mode="response")
    items = system.teacher(BENIGN[:2], num_samples=2, max_new_tokens=4, cache_dir=tmp_path)
    assert [it.samples for it in items] == [[g.token_ids for g in samples[p]] for p in BENIGN[:2]]
    assert items[0].sample_u == [1.0, 0.0] and items[0].rho == pytest.approx(0.5)
    assert items[1].sample_u == pytest.approx([0.2, 0.4]) and items[1].rho == pytest.approx(0.3)
    assert all(responses is not None for _, responses in guard.calls)  # never scored prompts alone


def test_hard_labels():
    items = [
        TeacherItem("a", 0.3, [[1], [2]], [0.3, 0.3]),
        TeacherItem("b", 0.995, [], []),
        TeacherItem("c", 0.4, [[1], [2]], [0.7, 0.1]),  # response-level: rho = mean of hard labels
        TeacherItem("d", 0.5, [], []),  # u == tau is flagged
    ]
    hard = hard_labels(items, tau=0.5)
    assert [it.rho for it in hard] == [0.0, 1.0, 0.5, 1.0]
    assert [it.sample_u for it in hard] == [[0.0, 0.0], [], [1.0, 0.0], []]
    assert [it.samples for it in hard] == [it.samples for it in items]
    assert items[0].sample_u == [0.3, 0.3]  # inputs untouched


def test_respond_prompt_level(system, tiny_lm):
    model, tok = tiny_lm
    prompts = [BENIGN[1], HARMFUL[1], BENIGN[2]]
    out = system.respond(prompts, max_new_tokens=5)
    base = generate(model, tok, [chat_prompt(tok, p) for p in prompts], max_new_tokens=5, progress=False)
    assert [r.flagged for r in out] == [False, True, False]
    assert [r.u for r in out] == pytest.approx([0.0, 0.8, 0.3])
    assert [r.text for r in out] == [base[0].text, DEFAULT_REFUSAL, base[2].text]
    assert system.guard.calls == [(prompts, None)]


def test_respond_response_level_reuses_base(tiny_lm, toy_guard):
    model, tok = tiny_lm
    base = [Generation("fine answer", [1]), Generation("bad answer", [2])]
    guard = toy_guard({("p1", "fine answer"): 0.2, ("p2", "bad answer"): 0.5})
    system = SafeSystem(model, tok, guard, refusal="No.", mode="response")
    out = system.respond(["p1", "p2"], base)
    assert [(r.text, r.flagged) for r in out] == [("fine answer", False), ("No.", True)]
    assert guard.calls == [(["p1", "p2"], ["fine answer", "bad answer"])]
    with pytest.raises(ValueError, match="guard mode"):
        SafeSystem(model, tok, guard, mode="both")


# ------------------------------------------------------------------------------------------------------------
# examples, token weights, collation


def test_build_examples_weights(system, tiny_lm):
    _, tok = tiny_lm
    refusal = system.refusal_ids()
    items = [
        TeacherItem(BENIGN[0], 0.2, [[10, 11, 12], [20, 21]], [0.2, 0.2]),
        TeacherItem(HARMFUL[0], 1.0, [], []),
        TeacherItem(BENIGN[1], 0.0, [[5, 6]], [0.0]),  # rho 0: no refusal example
        TeacherItem(HARMFUL[1], 0.9995, [[7]], [0.9995]),  # keep weight 5e-4 < min_weight: dropped
        TeacherItem(BENIGN[2], 0.5, [[8, 9], [30], []], [0.0, 1.0, 0.5]),  # response-level; empty sample dropped
    ]
    exs = build_examples(items, system, min_weight=1e-3)
    got = [(ex.target_ids, ex.weight, ex.soft) for ex in exs]
    assert got == [
        ([10, 11, 12], pytest.approx(0.4), True),
        ([20, 21], pytest.approx(0.4), True),
        (refusal, pytest.approx(0.2), False),
        (refusal, pytest.approx(1.0), False),
        ([5, 6], pytest.approx(1.0), True),
        (refusal, pytest.approx(0.9995), False),
        ([8, 9], pytest.approx(1 / 3), True),
        (refusal, pytest.approx(0.5), False),
    ]
    owners = [BENIGN[0]] * 3 + [HARMFUL[0], BENIGN[1], HARMFUL[1], BENIGN[2], BENIGN[2]]
    assert [ex.prompt_ids for ex in exs] == [prompt_ids(tok, p) for p in owners]
    assert all(ex.target_ids[-1] == tok.eos_token_id for ex in exs if not ex.soft)
    # a larger min_weight drops the light examples
    heavy = build_examples(items, system, min_weight=0.45)
    assert [(ex.weight, ex.soft) for ex in heavy] == [(1.0, False), (1.0, True), (0.9995, False), (0.5, False)]


def test_token_weights():
    w = token_weights(6, first_tokens=4, first_token_weight=4.0)
    assert w.tolist() == pytest.approx([4 / 18] * 4 + [1 / 18] * 2)
    assert token_weights(2, 4, 4.0).tolist() == pytest.approx([0.5, 0.5])
    assert token_weights(5, 0, 4.0).tolist() == pytest.approx([0.2] * 5)
    for n in (1, 3, 4, 9, 40):
        assert float(token_weights(n, 4, 3.0).sum()) == pytest.approx(1.0)


def _examples() -> list[DistillExample]:
    return [
        DistillExample([101, 102, 103], [7, 8, 9, 10, 11, 12], 0.5, soft=True),
        DistillExample([201], [21, 22], 1.0, soft=False),
        DistillExample([301, 302, 303, 304, 305], [31], 0.25, soft=True),
    ]


def test_collate_positions_and_weights():
    exs = _examples()
    cfg = TrainConfig(first_tokens=4, first_token_weight=4.0)
    b = collate(exs, pad_id=0, cfg=cfg, device=torch.device("cpu"))
    ids, mask = b["input_ids"], b["attention_mask"]
    assert ids.shape == mask.shape == (3, 9)
    assert ids.tolist() == [
        [101, 102, 103, 7, 8, 9, 10, 11, 12],
        [0, 0, 0, 0, 0, 0, 201, 21, 22],
        [0, 0, 0, 301, 302, 303, 304, 305, 31],
    ]
    assert mask.tolist() == [[1] * 9, [0] * 6 + [1] * 3, [0] * 3 + [1] * 6]
    n = sum(len(ex.target_ids) for ex in exs)
    assert [len(b[k]) for k in ("row", "pos", "target", "tok_w", "soft")] == [n] * 5
    assert b["row"].tolist() == [0] * 6 + [1] * 2 + [2]
    # the position that predicts each target token is the one right before it
    assert torch.equal(ids[b["row"], b["pos"] + 1], b["target"])
    assert b["target"].tolist() == [7, 8, 9, 10, 11, 12, 21, 22, 31]
    assert bool(mask[b["row"], b["pos"]].all())  # predicting positions are real tokens
    assert b["soft"].tolist() == [True] * 6 + [False] * 2 + [True]
    # per example, token weights sum to weight / B, first tokens weigh 4x
    for i, ex in enumerate(exs):
        w = b["tok_w"][b["row"] == i]
        assert float(w.sum()) == pytest.approx(ex.weight / 3)
    w0 = b["tok_w"][b["row"] == 0]
    assert w0.tolist() == pytest.approx([0.5 / 3 * x for x in [4 / 18] * 4 + [1 / 18] * 2])
    assert float(b["tok_w"].sum()) == pytest.approx((0.5 + 1.0 + 0.25) / 3)


def test_collate_decision_terms():
    """decision_weight lambda lists each example's first target token once more, after all the response tokens,
    weighted lambda * weight / B; the response tokens are exactly those of lambda = 0."""
    exs = _examples()
    cpu = torch.device("cpu")
    plain = collate(exs, pad_id=0, cfg=TrainConfig(), device=cpu)
    b = collate(exs, pad_id=0, cfg=TrainConfig(decision_weight=2.0), device=cpu)
    n = len(plain["row"])
    assert len(b["row"]) == n + len(exs)
    for k in ("row", "pos", "target", "tok_w", "soft"):
        assert torch.equal(b[k][:n], plain[k])
    assert not bool(plain["decision"].any())
    assert b["decision"].tolist() == [False] * n + [True] * len(exs)
    firsts = [plain["row"].tolist().index(i) for i in range(len(exs))]  # each example's first target token
    assert b["row"][n:].tolist() == [0, 1, 2]
    assert torch.equal(b["pos"][n:], plain["pos"][firsts])
    assert b["target"][n:].tolist() == [ex.target_ids[0] for ex in exs] == [7, 21, 31]
    assert b["tok_w"][n:].tolist() == pytest.approx([2.0 * ex.weight / 3 for ex in exs])
    assert not bool(b["soft"][n:].any())


def test_decision_terms_are_cross_entropy_beside_any_objective(tiny_lm, system):
    """With lambda > 0 the loss is the lambda = 0 loss plus lambda * sum_i weight_i / B * -log q(y_i1), for TV and
    KL alike; the logged TV is unchanged (the decision terms count 0 in it)."""
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5)
    items = [TeacherItem(BENIGN[0], 0.3, [[10, 11, 12]], [0.3]), TeacherItem(HARMFUL[1], 0.8, [[40, 41]], [0.8])]
    exs = build_examples(items, system)
    cpu, lam = torch.device("cpu"), 0.7
    plain = collate(exs, tok.pad_token_id, TrainConfig(), cpu)
    b = collate(exs, tok.pad_token_id, TrainConfig(decision_weight=lam), cpu)
    with torch.no_grad():
        logq = losses.student_logp(model, sp, plain)
    firsts = [plain["row"].tolist().index(i) for i in range(len(exs))]
    ce = -logq[firsts, plain["target"][firsts]]  # -log q(first target token) of each example
    extra = sum(lam * ex.weight / len(exs) * float(c) for ex, c in zip(exs, ce, strict=True))
    for objective in ("tv", "kl"):
        with torch.no_grad():
            t0 = loss_terms(model, sp, plain, get_objective(objective))
            t1 = loss_terms(model, sp, b, get_objective(objective))
        loss0, loss1 = (float((t["d"] * x["tok_w"]).sum()) for t, x in ((t0, plain), (t1, b)))
        assert extra > 0.01
        assert loss1 == pytest.approx(loss0 + extra, rel=1e-5)
        assert float((t1["tv"] * b["tok_w"]).sum()) == pytest.approx(float((t0["tv"] * plain["tok_w"]).sum()))


def test_collate_real_examples(system, tiny_lm):
    _, tok = tiny_lm
    items = [TeacherItem(BENIGN[0], 0.3, [[10, 11, 12, 13, 14]], [0.3]), TeacherItem(HARMFUL[0], 1.0, [], [])]
    exs = build_examples(items, system)
    b = collate(exs, tok.pad_token_id, TrainConfig(), torch.device("cpu"))
    for i, ex in enumerate(exs):
        seq = ex.prompt_ids + ex.target_ids
        assert b["input_ids"][i, -len(seq) :].tolist() == seq
        assert int(b["attention_mask"][i].sum()) == len(seq)
        assert b["input_ids"][i, b["pos"][b["row"] == i] + 1].tolist() == ex.target_ids


def test_batch_at():
    n, bs = 12, 4
    one = [0] * n
    assert batch_at(5, one, bs, seed=0) == batch_at(5, one, bs, seed=0)
    for epoch in range(3):
        batches = [batch_at(epoch * 3 + j, one, bs, seed=0) for j in range(3)]
        assert all(len(b) == bs for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(n))  # one permutation per epoch
    epochs = [[i for j in range(3) for i in batch_at(e * 3 + j, one, bs, seed=0)] for e in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    assert [batch_at(s, one, bs, seed=1) for s in range(3)] != [batch_at(s, one, bs, seed=0) for s in range(3)]
    # one group: the seeded shuffle of range(n) itself
    perm = list(range(n))
    random.Random(0 * 1_000_003 + 1).shuffle(perm)
    assert batch_at(3, one, bs, seed=0) == perm[:bs]
    # remainder: 10 examples, batch 4 -> 2 full batches per epoch, distinct indices
    b0, b1 = batch_at(0, [0] * 10, 4, 0), batch_at(1, [0] * 10, 4, 0)
    assert len(set(b0) | set(b1)) == 8
    # fewer examples than a batch: every step is the whole (shuffled) set
    assert sorted(batch_at(3, [0] * 3, 8, 0)) == [0, 1, 2]


@pytest.mark.parametrize("n_refuse", [40, 25, 13])
def test_batch_at_stratified(n_refuse):
    """Every batch holds each group in its share of the examples to within one row, still one permutation per
    epoch; a plain shuffle of the same examples does not."""
    n, bs = 80, 8
    strata = [i < n_refuse for i in range(n)]  # the refusal examples first, as ``build_examples`` orders them
    share = bs * n_refuse / n
    for epoch in range(2):
        batches = [batch_at(epoch * (n // bs) + j, strata, bs, seed=3) for j in range(n // bs)]
        assert sorted(i for b in batches for i in b) == list(range(n))
        counts = [sum(strata[i] for i in b) for b in batches]
        assert all(abs(c - share) < 1 + 1e-9 for c in counts), counts
    plain = [sum(strata[i] for i in batch_at(s, [0] * n, bs, seed=3)) for s in range(4 * n // bs)]
    assert max(abs(c - share) for c in plain) > 1


def test_lr_factor():
    cfg = TrainConfig(steps=20, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_factor(s, cfg) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(4, cfg) == pytest.approx(1.0)
    assert lr_factor(12, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(20, cfg) == pytest.approx(0.1)
    after = [lr_factor(s, cfg) for s in range(4, 21)]
    assert all(a >= b for a, b in itertools.pairwise(after))


def test_loss_terms_zero_for_identity_student(tiny_lm, system):
    """Without an adapter the student is the teacher: soft-branch divergences are 0, one-hot ones are not."""
    model, tok = tiny_lm
    items = [TeacherItem(BENIGN[0], 0.3, [[10, 11, 12]], [0.3])]
    b = collate(build_examples(items, system), tok.pad_token_id, TrainConfig(), torch.device("cpu"))
    for objective in ("tv", "kl"):
        terms = loss_terms(model, None, b, get_objective(objective))
        soft = b["soft"]
        assert torch.allclose(terms["d"][soft], torch.zeros(int(soft.sum())), atol=1e-5)
        assert torch.allclose(terms["tv"][soft], torch.zeros(int(soft.sum())), atol=1e-5)
        assert bool((terms["d"][~soft] > 0).all())


def test_loss_terms_match_full_forward(tiny_lm, system):
    """Per-token TV / KL equal the divergences computed from plain full-logit forwards."""
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5)
    items = [TeacherItem(BENIGN[0], 0.3, [[10, 11, 12]], [0.3]), TeacherItem(HARMFUL[1], 0.8, [[40, 41]], [0.8])]
    exs = build_examples(items, system)
    b = collate(exs, tok.pad_token_id, TrainConfig(), torch.device("cpu"))
    with torch.no_grad():
        terms = {o: loss_terms(model, sp, b, get_objective(o)) for o in ("tv", "kl")}
    j = 0
    for ex in exs:
        seq = torch.tensor([ex.prompt_ids + ex.target_ids])
        n, t = len(ex.target_ids), seq.shape[1]
        with torch.no_grad():
            emb = model.get_input_embeddings()(seq)
            s = torch.log_softmax(model(inputs_embeds=torch.cat([sp.prompt[None], emb], 1)).logits[0], -1)
            t_logp = torch.log_softmax(model(seq).logits[0], -1)
        s = s[3 + t - n - 1 : 3 + t - 1]
        tgt = torch.tensor(ex.target_ids)
        if ex.soft:
            t_ = t_logp[t - n - 1 : t - 1]
            tv_ref = 0.5 * (s.exp() - t_.exp()).abs().sum(-1)
            kl_ref = (t_.exp() * (t_ - s)).sum(-1)
        else:
            q = s.exp()[torch.arange(n), tgt]
            tv_ref, kl_ref = 1 - q, -q.log()
        assert torch.allclose(terms["tv"]["d"][j : j + n], tv_ref, atol=1e-5)
        assert torch.allclose(terms["tv"]["tv"][j : j + n], tv_ref, atol=1e-5)
        assert torch.allclose(terms["kl"]["d"][j : j + n], kl_ref, atol=1e-4)
        j += n
    assert j == len(b["target"])


# ------------------------------------------------------------------------------------------------------------
# the training loop


@pytest.fixture
def train_setup(system, tiny_lm):
    model, tok = tiny_lm
    items = [
        TeacherItem(BENIGN[0], 0.1, [[504, 1345, 354, 2]], [0.1]),
        TeacherItem(BENIGN[1], 0.0, [[378, 3575, 282, 4649, 2]], [0.0]),
        TeacherItem(BENIGN[2], 0.3, [[1580, 30, 2]], [0.3]),
        TeacherItem(HARMFUL[0], 1.0, [], []),
        TeacherItem(HARMFUL[1], 0.8, [[19842, 17, 2]], [0.8]),
    ]
    examples = build_examples(items, system)
    dev = weapon_hi_dev(system)
    cfg = TrainConfig(
        objective="tv", steps=4, batch_size=3, lr=5e-2, warmup_steps=1, eval_every=2, dev_max_new_tokens=4
    )
    return model, tok, examples, dev, cfg


def _fresh(model, tok) -> SoftPrompt:
    return SoftPrompt.for_model(model, tok, num_tokens=4, init="text", init_text="Be safe and kind.")


def _loss(model, sp, batch, objective) -> float:
    with torch.no_grad():
        return float((loss_terms(model, sp, batch, get_objective(objective))["d"] * batch["tok_w"]).sum())


@pytest.mark.parametrize(("objective", "decision_weight"), [("tv", 0.0), ("kl", 0.0), ("tv", 1.0)])
def test_training_lowers_the_loss(train_setup, tmp_path, objective, decision_weight):
    model, tok, examples, dev, cfg = train_setup
    # the exact teacher: this random model's next-token distributions are nearly flat, so that a top-K + rest
    # coarse-graining keeps little of them (test_training_step checks training on cached targets)
    cfg = dataclasses.replace(
        cfg,
        objective=objective,
        steps=6,
        batch_size=len(examples),
        eval_every=6,
        teacher_topk=None,
        decision_weight=decision_weight,
    )
    sp = _fresh(model, tok)
    batch = collate(examples, tok.pad_token_id, cfg, torch.device("cpu"))
    before = _loss(model, sp, batch, objective)
    params_before = [p.clone() for p in model.parameters()]
    state = train(model, tok, sp, examples, dev, cfg, tmp_path / "run")
    after = _loss(model, sp, batch, objective)
    # the tiny model saturates quickly (k=4, d=32): about -16 % (tv) and -9 % (kl) in 6 steps here
    assert after < 0.95 * before
    assert state.step == 6 and len(state.history) == 6
    assert state.history[0]["loss"] == pytest.approx(before, rel=1e-4)  # step 1 sees the same full batch
    assert state.history[-1]["loss"] < state.history[0]["loss"]
    assert all(torch.equal(a, b) for a, b in zip(params_before, model.parameters(), strict=True))  # LLM frozen
    assert not any(p.requires_grad for p in model.parameters())


def test_training_outputs(train_setup, tmp_path):
    model, tok, examples, dev, cfg = train_setup
    sp = _fresh(model, tok)
    state = train(model, tok, sp, examples, dev, cfg, tmp_path / "run")
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} == {"last", "best", "history.json"}
    history = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert [("dev_agreement" in r) for r in history] == [False, True, False, True]
    assert all(0 <= r["dev_agreement"] <= 1 for r in history if "dev_agreement" in r)
    assert history[0]["lr"] == pytest.approx(cfg.lr * lr_factor(0, cfg))
    assert state.best_step in (2, 4)
    best = load_adapter(out / "best", model)
    assert json.loads((out / "best" / "adapter_config.json").read_text())["training"]["step"] == state.best_step
    last = load_adapter(out / "last" / "adapter", model)
    assert torch.equal(last.prompt, sp.prompt.detach())
    assert best.prompt.shape == (4, 32)
    saved = json.loads((out / "last" / "trainer_state.json").read_text())
    assert saved["step"] == 4 and saved["config"] == dataclasses.asdict(cfg)


def test_same_seed_trains_the_same_adapter_bit_for_bit(train_setup, tmp_path):
    model, tok, examples, dev, cfg = train_setup
    first, second = _fresh(model, tok), _fresh(model, tok)
    h1 = train(model, tok, first, examples, dev, cfg, tmp_path / "one").history
    h2 = train(model, tok, second, examples, dev, cfg, tmp_path / "two").history
    assert torch.equal(first.prompt, second.prompt) and not torch.equal(first.prompt, _fresh(model, tok).prompt)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(h1) == drop(h2)
    other = train(
        model, tok, _fresh(model, tok), examples, dev, dataclasses.replace(cfg, seed=cfg.seed + 1), tmp_path / "s1"
    )
    assert drop(other.history) != drop(h1)  # the seed does reach the data order


def test_resume_continues_exactly(train_setup, tmp_path, monkeypatch):
    model, tok, examples, dev, cfg = train_setup
    straight = _fresh(model, tok)
    ref = train(model, tok, straight, examples, dev, cfg, tmp_path / "straight")

    # the same run, interrupted after step 2 (the step-2 checkpoint is written, step 3 never finishes)
    real_batch_at = training.batch_at

    def crash_at_step_2(step, *args):
        if step == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_batch_at(step, *args)

    monkeypatch.setattr(training, "batch_at", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, _fresh(model, tok), examples, dev, cfg, tmp_path / "resumed")
    monkeypatch.setattr(training, "batch_at", real_batch_at)
    assert json.loads((tmp_path / "resumed" / "last" / "trainer_state.json").read_text())["step"] == 2

    resumed = _fresh(model, tok)  # a new process would start from a fresh adapter
    state = train(model, tok, resumed, examples, dev, cfg, tmp_path / "resumed", resume=True)
    assert state.step == 4
    assert torch.allclose(resumed.prompt, straight.prompt, atol=1e-6)
    assert not torch.allclose(resumed.prompt, _fresh(model, tok).prompt)
    assert [r["loss"] for r in state.history] == pytest.approx([r["loss"] for r in ref.history], abs=1e-6)
    assert (state.best_step, state.best_score) == (ref.best_step, pytest.approx(ref.best_score))


def test_resume_of_finished_run_restores_adapter(train_setup, tmp_path):
    model, tok, examples, dev, cfg = train_setup
    trained = _fresh(model, tok)
    train(model, tok, trained, examples, dev, cfg, tmp_path / "run")
    again = _fresh(model, tok)
    state = train(model, tok, again, examples, dev, cfg, tmp_path / "run", resume=True)
    assert state.step == cfg.steps and len(state.history) == cfg.steps
    assert torch.equal(again.prompt, trained.prompt)


def _checkpointed(train_setup, tmp_path):
    model, tok, examples, dev, cfg = train_setup
    cfg = dataclasses.replace(cfg, steps=2)
    train(model, tok, _fresh(model, tok), examples, dev, cfg, tmp_path / "run")
    return model, tok, examples, dev, cfg, tmp_path / "run" / "last"


def test_corrupt_trainer_state_raises(train_setup, tmp_path):
    model, tok, examples, dev, cfg, last = _checkpointed(train_setup, tmp_path)
    (last / "trainer_state.json").write_text('{"config": {"objective": "tv", "st')
    with pytest.raises(AdapterError, match=r"trainer_state\.json|corrupt"):
        train(model, tok, _fresh(model, tok), examples, dev, cfg, tmp_path / "run", resume=True)
    assert (last / "trainer_state.json").read_text() == '{"config": {"objective": "tv", "st'  # not restarted


def test_missing_trainer_state_raises(train_setup, tmp_path):
    model, tok, examples, dev, cfg, last = _checkpointed(train_setup, tmp_path)
    (last / "trainer_state.json").unlink()
    with pytest.raises(AdapterError, match="corrupt"):
        train(model, tok, _fresh(model, tok), examples, dev, cfg, tmp_path / "run", resume=True)


def test_corrupt_optimizer_state_raises(train_setup, tmp_path):
    model, tok, examples, dev, cfg, last = _checkpointed(train_setup, tmp_path)
    (last / "optimizer.safetensors").write_bytes(b"\x00garbage, not safetensors")
    with pytest.raises(AdapterError, match=r"corrupt"):
        train(model, tok, _fresh(model, tok), examples, dev, cfg, tmp_path / "run", resume=True)


def test_checkpoint_from_other_config_raises(train_setup, tmp_path):
    model, tok, examples, dev, cfg, last = _checkpointed(train_setup, tmp_path)
    before = (last / "trainer_state.json").read_text()
    other = dataclasses.replace(cfg, lr=1e-3)
    with pytest.raises(AdapterError, match=r"another config.*'lr'"):
        train(model, tok, _fresh(model, tok), examples, dev, other, tmp_path / "run", resume=True)
    assert (last / "trainer_state.json").read_text() == before
    # resume=False starts over instead
    state = train(model, tok, _fresh(model, tok), examples, dev, other, tmp_path / "run", resume=False)
    assert state.step == 2
    assert json.loads((last / "trainer_state.json").read_text())["config"]["lr"] == 1e-3


def test_evaluate_dev_metrics(train_setup, monkeypatch):
    model, tok, _, dev, cfg = train_setup
    sp = _fresh(model, tok)
    responses = ["I'm sorry, I can't.", "I cannot do that.", "Sure! Here you go.", "Sorry, no."]
    dev = dataclasses.replace(
        dev,
        prompts=[chat_prompt(tok, f"prompt {i}") for i in range(4)],
        harmful=[True, True, False, False],
        system_refuses=[True, False, False, False],
    )
    seen = {}

    def fake_generate(model_, tok_, prompts, adapter=None, **kw):
        seen.update(prompts=prompts, adapter=adapter, max_new_tokens=kw.get("max_new_tokens"))
        return [Generation(r, []) for r in responses]

    monkeypatch.setattr(evaluation, "generate", fake_generate)
    sp.train()
    m = evaluation.evaluate_dev(model, tok, sp, dev, cfg)
    assert sp.training  # mode restored
    assert seen == {"prompts": dev.prompts, "adapter": sp, "max_new_tokens": cfg.dev_max_new_tokens}
    # student refuses [T, T, F, T], system [T, F, F, F]
    assert m["dev_agreement"] == pytest.approx(0.5)
    assert m["dev_harmful_refusal"] == pytest.approx(1.0)
    assert m["dev_benign_compliance"] == pytest.approx(0.5)
    # held-out loss / TV: the example-weighted mean over all dev examples, whatever the chunking
    full = collate(dev.examples, tok.pad_token_id, cfg, torch.device("cpu"))
    for objective in ("tv", "kl"):
        c = dataclasses.replace(cfg, objective=objective)
        assert len(dev.examples) > 1
        one = evaluation.evaluate_dev(model, tok, sp, dev, dataclasses.replace(c, batch_size=1))
        big = evaluation.evaluate_dev(model, tok, sp, dev, dataclasses.replace(c, batch_size=64))
        assert one["dev_loss"] == pytest.approx(big["dev_loss"], rel=1e-5)
        assert big["dev_loss"] == pytest.approx(_loss(model, sp, full, objective), rel=1e-5)
        assert one["dev_tv"] == pytest.approx(big["dev_tv"], rel=1e-5)
    assert big["dev_tv"] == pytest.approx(m["dev_loss"], rel=1e-5)  # objective tv: loss == TV


# ------------------------------------------------------------------------------------------------------------
# direct objectives and diff-of-means: sft examples, alpha selection, what train / check_objective refuse


def test_sft_examples_targets(system, tiny_lm):
    _, tok = tiny_lm
    r_star = system.refusal_ids()
    items = [
        TeacherItem(HARMFUL[0], 0.995, [], []),  # skipped for a high u(x): flagged
        TeacherItem(BENIGN[0], 0.1, [[504, 1345, 2], [7, 2]], [0.1, 0.1]),  # passed: its first sample
        TeacherItem(HARMFUL[1], 0.5, [[19842, 2]], [0.5]),  # u == tau is flagged
        TeacherItem(BENIGN[1], 0.2, [], []),  # no samples at all: treated as flagged
        TeacherItem(BENIGN[2], 0.5, [[11, 2], [12, 2]], [0.7, 0.3]),  # response-level: u(x, r_1) >= tau
        TeacherItem("other", 0.5, [[11, 2], [12, 2]], [0.3, 0.7]),  # response-level: r_1 passes
        TeacherItem("empty", 0.0, [[]], [0.0]),  # an empty first sample: nothing to imitate, refuse
    ]
    out = losses.sft_examples(items, system)
    assert [e.target_ids for e in out] == [r_star, [504, 1345, 2], r_star, r_star, r_star, [11, 2], r_star]
    assert [e.prompt_ids for e in out] == [prompt_ids(tok, it.prompt) for it in items]
    assert all(e.weight == 1.0 and e.soft is False for e in out)
    low_tau = SafeSystem(system.model, tok, system.guard, tau=0.05)
    assert [e.target_ids for e in losses.sft_examples(items[1:2], low_tau)] == [r_star]


def _steering(model, seed: int = 0):
    from softguard.adapters import SteeringVector

    sv = SteeringVector.for_model(model, layer=0, learned=False)
    sv.vector.data.copy_(torch.randn(32, generator=torch.Generator().manual_seed(seed)) * 3.0)
    return sv


def test_select_alpha_saves_the_best_scale(train_setup, tmp_path):
    from softguard.adapters import SteeringVector

    model, tok, _, dev, cfg = train_setup
    sv = _steering(model)
    alphas = [4.0, 0.0, 1.0]
    state = training.select_alpha(model, tok, sv, dev, cfg, alphas, tmp_path / "student")
    keys = {"alpha", "dev_loss", "dev_tv", "dev_agreement", "dev_harmful_refusal", "dev_benign_compliance"}
    assert [r["alpha"] for r in state.history] == alphas
    assert all(set(r) == keys for r in state.history)
    assert json.loads((tmp_path / "student" / "history.json").read_text()) == state.history
    scores = [r["dev_agreement"] - 1e-3 * r["dev_tv"] for r in state.history]
    best = scores.index(max(scores))  # the first of equal scores
    assert state.best_step == best and state.best_score == pytest.approx(scores[best])
    saved = load_adapter(tmp_path / "student" / "best", model)
    assert isinstance(saved, SteeringVector) and not saved.learned
    assert saved.alpha == alphas[best]
    assert torch.equal(saved.vector, sv.vector)
    cfg_json = json.loads((tmp_path / "student" / "best" / "adapter_config.json").read_text())
    assert cfg_json["training"] == state.history[best]
    # alpha 0 is the base model: the held-out TV to the (base) teacher's keep branch is smallest there, and with
    # equal agreement (this random model never refuses) the lower TV wins
    assert state.history[1]["dev_tv"] < min(state.history[0]["dev_tv"], state.history[2]["dev_tv"])
    assert len({r["dev_agreement"] for r in state.history}) == 1 and alphas[best] == 0.0
    assert not (tmp_path / "student" / "last").exists()  # nothing trained, nothing to resume


def test_select_alpha_ties_go_to_the_first_alpha(train_setup, tmp_path, monkeypatch):
    model, tok, _, dev, cfg = train_setup
    sv = _steering(model)
    fixed = {"dev_loss": 0.0, "dev_tv": 0.5, "dev_harmful_refusal": 1.0, "dev_benign_compliance": 1.0}
    agreement = {1.0: 0.5, 2.0: 1.0, 3.0: 1.0, 4.0: 0.0}
    monkeypatch.setattr(training, "evaluate_dev", lambda m, t, a, d, c: fixed | {"dev_agreement": agreement[a.alpha]})
    state = training.select_alpha(model, tok, sv, dev, cfg, [1.0, 2.0, 3.0, 4.0], tmp_path / "s")
    assert state.best_step == 1
    assert load_adapter(tmp_path / "s" / "best", model).alpha == 2.0


def test_train_refuses_what_cannot_train(train_setup, tmp_path):
    model, tok, examples, dev, cfg = train_setup
    with pytest.raises(ValueError, match="nothing to train"):
        train(model, tok, _steering(model), examples, dev, cfg, tmp_path / "fixed")
    rl = dataclasses.replace(cfg, objective="reinforce")
    with pytest.raises(ValueError, match="reward_guard"):
        train(
            model,
            tok,
            _fresh(model, tok),
            losses.rl_prompts(BENIGN, SafeSystem(model, tok, None)),
            dev,
            rl,
            tmp_path / "rl",
        )
    with pytest.raises(ValueError, match="unknown objective"):
        train(model, tok, _fresh(model, tok), examples, dev, dataclasses.replace(cfg, objective="dpo"), tmp_path / "x")
    assert not any((tmp_path / d).exists() for d in ("fixed", "rl", "x"))


def test_check_objective():
    from softguard.losses import TRAIN_OBJECTIVES, check_objective

    for objective in TRAIN_OBJECTIVES:
        check_objective(TrainConfig(objective=objective))
    with pytest.raises(ValueError, match=r"unknown objective 'dpo'; choose one of: tv, kl, rkl, jsd, sft, reinforce"):
        check_objective(TrainConfig(objective="dpo"))
    with pytest.raises(ValueError, match="unknown objective 'diff-of-means'"):  # not a training objective
        check_objective(TrainConfig(objective="diff-of-means"))
    for beta in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"0 < beta < 1, got {beta}"):
            check_objective(TrainConfig(objective="jsd", jsd_beta=beta))
    check_objective(TrainConfig(objective="jsd", jsd_beta=0.1))
    check_objective(TrainConfig(objective="tv", jsd_beta=2.0))  # beta only matters for jsd
    with pytest.raises(ValueError, match="rl_samples >= 2"):
        check_objective(TrainConfig(objective="reinforce", rl_samples=1))


def test_bf16_precision_trains_under_autocast(train_setup, tmp_path):
    """precision "bf16" trains under bf16 autocast: losses close to fp32's, not equal."""
    model, tok, examples, dev, cfg = train_setup
    cfg = dataclasses.replace(cfg, teacher_topk=None)
    curve = lambda state: [r["loss"] for r in state.history]  # noqa: E731
    fp32 = curve(train(model, tok, _fresh(model, tok), examples, dev, cfg, tmp_path / "fp32"))
    bf16_cfg = dataclasses.replace(cfg, precision="bf16")
    bf16 = curve(train(model, tok, _fresh(model, tok), examples, dev, bf16_cfg, tmp_path / "bf16"))
    assert bf16 == pytest.approx(fp32, rel=2e-2) and bf16 != fp32
