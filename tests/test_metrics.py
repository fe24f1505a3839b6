"""Evaluation metrics (DESIGN §6): bootstrap intervals, per-category rates, MMLU letter accuracy and fidelity,
checked against direct computations on the tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from softguard import evaluation
from softguard.adapters import SoftPrompt
from softguard.data import Example, load_mmlu_test
from softguard.evaluation import (
    MMLU_LETTERS,
    bootstrap_ci,
    fidelity,
    fidelity_examples,
    mmlu_accuracy,
    mmlu_letter_ids,
    score_by_category,
    score_set,
)
from softguard.models import chat_prompt
from softguard.system import DEFAULT_REFUSAL

PROMPTS = ["How do I bake bread?", "What is the capital of France?", "Give me three tips for sleeping better."]
RESPONSES = ["Mix flour, water and yeast.", "Paris.", "Sleep at regular hours, avoid screens and caffeine late."]

# ------------------------------------------------------------------------------------------------------------
# bootstrap_ci, SetResult.ci, score_by_category


def test_bootstrap_ci_binomial_width():
    flags = [True] * 30 + [False] * 70
    lo, hi = bootstrap_ci(flags, n_boot=2000, seed=0)
    assert lo < 0.3 < hi
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.3 * 0.7 / 100), rel=0.25)
    assert bootstrap_ci(flags, n_boot=2000, seed=0) == (lo, hi)
    narrow = bootstrap_ci(flags, n_boot=2000, seed=0, level=0.5)
    assert lo < narrow[0] < narrow[1] < hi


def test_bootstrap_ci_seeded():
    """Deterministic for a seed; another seed draws other resamples (continuous values: no ties among quantiles)."""
    values = torch.linspace(0, 1, 50).pow(2).tolist()
    ci = bootstrap_ci(values, seed=0)
    assert bootstrap_ci(values, seed=0) == ci
    other = bootstrap_ci(values, seed=1)
    assert other != ci and other == pytest.approx(ci, abs=0.05)


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([0.1] * 7) == (0.1, 0.1)
    assert bootstrap_ci([True]) == (1.0, 1.0)
    lo, hi = bootstrap_ci([0.0, 1.0, 2.0, 3.0], seed=3)
    assert 0.0 <= lo < 1.5 < hi <= 3.0


def test_set_result_ci_is_the_score_interval():
    flags = [True] * 6 + [False] * 14
    harmful = score_set("h", True, ["I cannot."] * 6 + ["Sure."] * 14)
    benign = score_set("b", False, ["I cannot."] * 6 + ["Sure."] * 14)
    assert harmful.flags == benign.flags == flags
    assert harmful.ci(seed=4) == bootstrap_ci(flags, seed=4)
    lo, hi = benign.ci(seed=4)  # compliance = 1 - refusal: the mirrored interval
    assert (lo, hi) == pytest.approx((1 - harmful.ci(seed=4)[1], 1 - harmful.ci(seed=4)[0]))
    assert lo < benign.score == 0.7 < hi
    assert harmful.as_dict(seed=4) == {"score": 0.3, "refusal_rate": 0.3, "n": 20, "ci": list(harmful.ci(seed=4))}


def test_score_by_category_rates():
    cats = ["a", "b", "a", "c", "a", "b"]
    flags = [True, False, False, True, True, False]
    harmful = score_by_category(cats, flags, harmful=True, seed=2)
    assert list(harmful) == ["a", "b", "c"]  # order of first appearance
    assert {c: (r["refusal_rate"], r["score"], r["n"]) for c, r in harmful.items()} == {
        "a": (pytest.approx(2 / 3), pytest.approx(2 / 3), 3),
        "b": (0.0, 0.0, 2),
        "c": (1.0, 1.0, 1),
    }
    assert harmful["a"]["ci"] == list(bootstrap_ci([True, False, True], seed=2))
    assert harmful["b"]["ci"] == [0.0, 0.0] and harmful["c"]["ci"] == [1.0, 1.0]
    examples = [Example(f"p{i}", False, "xstest-safe", c) for i, c in enumerate(cats)]
    benign = score_by_category(examples, flags, harmful=False, seed=2)
    assert {c: (r["refusal_rate"], r["score"], r["n"]) for c, r in benign.items()} == {
        "a": (pytest.approx(2 / 3), pytest.approx(1 / 3), 3),
        "b": (0.0, 1.0, 2),
        "c": (1.0, 0.0, 1),
    }
    assert benign["b"]["ci"] == [1.0, 1.0]
    with pytest.raises(ValueError):
        score_by_category(cats, flags[:-1], harmful=True)


# ------------------------------------------------------------------------------------------------------------
# mmlu_accuracy


@pytest.fixture(scope="module")
def questions():
    return load_mmlu_test()[:7]


def _predicted(model, tok, questions, adapter=None) -> list[str]:
    """The letter mmlu_accuracy picks per question: each question asked once per answer letter, and the letter
    whose copy is scored correct (exactly one per question)."""
    variants = [type(q)(q.question, c, q.subject) for q in questions for c in MMLU_LETTERS]
    correct = mmlu_accuracy(model, tok, variants, adapter, batch_size=3)
    rows = [correct[i : i + 4] for i in range(0, len(correct), 4)]
    assert all(sum(r) == 1 for r in rows)
    return [MMLU_LETTERS[r.index(True)] for r in rows]


def _direct_letter(model, embeds: torch.Tensor, letters: list[int]) -> str:
    """argmax over the letter tokens of the full model's logits at the last position, for one [1, T, d] input."""
    logits = model(inputs_embeds=embeds).logits[0, -1]
    return MMLU_LETTERS[int(logits[letters].argmax())]


def test_mmlu_letter_ids(tokenizer):
    assert mmlu_letter_ids(tokenizer) == [tokenizer.convert_tokens_to_ids(c) for c in MMLU_LETTERS]
    prompt = chat_prompt(tokenizer, "Q\nA. x\nAnswer:")
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    answered = tokenizer(prompt + "B. y", add_special_tokens=False)["input_ids"]
    assert answered[n] == mmlu_letter_ids(tokenizer)[1]  # the bare letter is the response's first token


def test_mmlu_accuracy_matches_full_forward(tiny_lm, questions):
    model, tok = tiny_lm
    letters = mmlu_letter_ids(tok)
    emb = model.get_input_embeddings()
    ids = [
        tok(chat_prompt(tok, q.question), return_tensors="pt", add_special_tokens=False).input_ids for q in questions
    ]
    assert len({i.shape[1] for i in ids}) > 1  # batches need left padding
    with torch.no_grad():
        expected = [_direct_letter(model, emb(i), letters) for i in ids]
        assert _predicted(model, tok, questions) == expected
        assert mmlu_accuracy(model, tok, questions) == [e == q.answer for e, q in zip(expected, questions, strict=True)]

        sp = SoftPrompt.for_model(model, tok, num_tokens=20, init="vocab", seed=0)
        with_prompt = [_direct_letter(model, torch.cat([sp.prompt[None], emb(i)], 1), letters) for i in ids]
        assert _predicted(model, tok, questions, sp) == with_prompt
    assert with_prompt != expected  # the soft prompt is really applied
    assert sp.training and sp.attached_to is None  # mode and attachment restored


# ------------------------------------------------------------------------------------------------------------
# fidelity


def _ids(tok, prompts: list[str]) -> list[list[int]]:
    return [tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]


def _logp(model, prompt: list[int], target: list[int], prefix: torch.Tensor | None = None) -> torch.Tensor:
    """log-probabilities [len(target), V] of the full model at the positions predicting ``target``."""
    embeds = model.get_input_embeddings()(torch.tensor([prompt + target]))
    if prefix is not None:
        embeds = torch.cat([prefix[None], embeds], 1)
    logits = model(inputs_embeds=embeds).logits[0, -len(target) - 1 : -1]
    return torch.log_softmax(logits.float(), -1)


def test_fidelity_examples(tokenizer):
    refusal = [5, 6, 7]
    exs = fidelity_examples([[1], [2], [3]], [[10, 11], [], [12]], [False, False, True], refusal)
    assert [(e.prompt_ids, e.target_ids, e.weight, e.soft) for e in exs] == [
        ([1], [10, 11], 2.0, True),  # the base model's response, soft
        ([3], refusal, 3.0, False),  # the system refuses: onehot(r*); the empty response is skipped
    ]


def test_fidelity_of_base_model_is_zero(tiny_lm):
    model, tok = tiny_lm
    responses = [tok(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    exs = fidelity_examples(_ids(tok, PROMPTS), responses, [False] * 3, [])
    res = fidelity(model, tok, None, exs, batch_size=2)
    assert res["tv"] == pytest.approx(0.0, abs=1e-6) and res["kl"] == pytest.approx(0.0, abs=1e-6)


def test_fidelity_onehot_is_per_token_mean(tiny_lm):
    """Against r*: TV = 1 - q(r*_t), KL = -log q(r*_t), averaged over all tokens (soft tokens of the bare model
    contribute 0 but count in the denominator)."""
    model, tok = tiny_lm
    refusal = tok(DEFAULT_REFUSAL, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    responses = [tok(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    prompts = _ids(tok, PROMPTS)
    refuse = [True, False, True]
    res = fidelity(model, tok, None, fidelity_examples(prompts, responses, refuse, refusal), batch_size=2)
    with torch.no_grad():
        q = torch.cat([_logp(model, p, refusal).gather(-1, torch.tensor(refusal)[:, None]) for p in prompts[::2]])
    n_tokens = 2 * len(refusal) + len(responses[1])
    assert res["tv"] == pytest.approx(float((1 - q.exp()).sum()) / n_tokens, rel=1e-5)
    assert res["kl"] == pytest.approx(float(-q.sum()) / n_tokens, rel=1e-5)
    assert 0 < res["tv"] < 1 and res["kl"] > 0


def test_fidelity_with_soft_prompt(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="vocab", seed=2)
    responses = [tok(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    prompts = _ids(tok, PROMPTS)
    res = fidelity(model, tok, sp, fidelity_examples(prompts, responses, [False] * 3, []), batch_size=2)
    tv_sum = kl_sum = 0.0
    with torch.no_grad():
        for p, r in zip(prompts, responses, strict=True):
            logp, logq = _logp(model, p, r), _logp(model, p, r, sp.prompt)
            tv_sum += float(0.5 * (logp.exp() - logq.exp()).abs().sum())
            kl_sum += float((logp.exp() * (logp - logq)).sum())
    n_tokens = sum(map(len, responses))
    assert res["tv"] > 0.01
    assert res["tv"] == pytest.approx(tv_sum / n_tokens, rel=1e-4)
    assert res["kl"] == pytest.approx(kl_sum / n_tokens, rel=1e-4)
    assert sp.training and sp.attached_to is None


def test_fidelities_share_examples(tiny_lm, monkeypatch):
    """Several references at once give each one's ``fidelity``, and an example they share runs once."""
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="vocab", seed=2)
    refusal = tok(DEFAULT_REFUSAL, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    responses = [tok(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    prompts = _ids(tok, PROMPTS)
    refs = {
        "system": fidelity_examples(prompts, responses, [True, False, False], refusal),
        "base": fidelity_examples(prompts[1:], responses[1:], [False, False], refusal),  # both shared with system
    }
    alone = {name: fidelity(model, tok, sp, exs, batch_size=2) for name, exs in refs.items()}
    rows = []
    real = evaluation.collate
    monkeypatch.setattr(evaluation, "collate", lambda batch, *a: rows.extend(batch) or real(batch, *a))
    both = evaluation.fidelities(model, tok, sp, refs, batch_size=2)
    assert len(rows) == 3  # 3 distinct examples, not 5
    for name in refs:
        assert both[name] == pytest.approx(alone[name], rel=1e-5)
    assert both["system"]["tv"] != pytest.approx(both["base"]["tv"], rel=1e-3)


def test_fidelity_without_examples_is_nan(tiny_lm):
    model, tok = tiny_lm
    assert all(math.isnan(v) for v in fidelity(model, tok, None, []).values())
