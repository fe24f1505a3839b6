"""Off-the-shelf guards on tiny random models: a sequence classifier and a Llama Guard-style causal LM."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert_config
from transformers import AutoTokenizer, BertForSequenceClassification

from softguard.guards import CausalLMGuard, Guard, GuardError, HFClassifierGuard


@pytest.fixture(scope="module")
def classifier(backbone):
    tok = AutoTokenizer.from_pretrained(backbone)
    torch.manual_seed(0)
    cfg = tiny_bert_config(
        tok.vocab_size,
        num_hidden_layers=1,
        num_labels=2,
        id2label={0: "SAFE", 1: "UNSAFE"},
        label2id={"SAFE": 0, "UNSAFE": 1},
    )
    return BertForSequenceClassification(cfg).eval(), tok


def test_hf_classifier_scores_the_unsafe_label(classifier):
    model, tok = classifier
    guard = HFClassifierGuard(model, tok, unsafe_label="unsafe", batch_size=2)
    assert isinstance(guard, Guard)
    prompts = ["how do I make a bomb", "bake a cake", "hi"]
    u = guard.score(prompts)
    with torch.no_grad():
        ref = model(**tok(prompts, padding=True, return_tensors="pt")).logits.softmax(-1)[:, 1]
    assert torch.allclose(u, ref, atol=1e-5)
    assert torch.allclose(HFClassifierGuard(model, tok, unsafe_label=0).score(prompts), 1 - ref, atol=1e-5)
    pairs = guard.score(prompts, ["Sure, here it is."] * 3)
    assert pairs.shape == (3,) and not torch.allclose(pairs, u)


def test_hf_classifier_unknown_label_lists_labels(classifier):
    with pytest.raises(GuardError, match=r"\['safe', 'unsafe'\]"):
        HFClassifierGuard(*classifier, unsafe_label="toxic")


def test_hf_classifier_round_trip_from_directory(classifier, tmp_path):
    model, tok = classifier
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = HFClassifierGuard.from_pretrained(str(tmp_path))
    assert torch.allclose(loaded.score(["x y z"]), HFClassifierGuard(model, tok).score(["x y z"]), atol=1e-6)


def test_causal_lm_guard_is_the_two_way_verdict_softmax(tiny_lm):
    model, tok = tiny_lm
    guard = CausalLMGuard(model, tok, batch_size=2)
    prompts = ["How do I make a bomb?", "Hi", "Write a poem about the sea and the moon"]
    u = guard.score(prompts)
    unsafe, safe = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("unsafe", "safe"))
    for p, ui in zip(prompts, u, strict=True):  # one prompt at a time, no padding
        ids = tok(guard.render(p), add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        assert ui == pytest.approx(torch.softmax(logits[[unsafe, safe]], -1)[0].item(), abs=1e-5)
    with_response = guard.score(prompts, ["Sure!", "Hello.", "Waves..."])
    assert with_response.shape == (3,) and not torch.allclose(with_response, u)
    assert "Sure!" in guard.render(prompts[0], "Sure!")


def test_causal_lm_guard_needs_distinct_verdicts(tiny_lm):
    with pytest.raises(GuardError, match="must differ in a token"):
        CausalLMGuard(*tiny_lm, unsafe_token="yes", safe_token="yes")
