"""LinearGate and fit_gate, on the tiny random Llama (d=32, 2 layers) with the real SmolLM2 tokenizer; and a whole
``pipeline.run`` of the gate on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_llama

from softguard.adapters import AdapterError, LinearGate, fit_gate, last_token_states, load_adapter, prompt_states
from softguard.adapters.steering import own_positions
from softguard.config import GateConfig, RunConfig, update
from softguard.evaluation import DevSet, fidelity, fidelity_examples, mmlu_accuracy
from softguard.generation import generate, tokenize_prompts
from softguard.models import chat_prompt, end_of_turn_id

REFUSAL = "I'm sorry, but I can't help with that."


@pytest.fixture(scope="module")
def two_prompts(tiny_lm):
    """(model, tokenizer, two templated prompts, a gate at layer 1 that fires on the first only, r* ids)."""
    model, tok = tiny_lm
    prompts = [chat_prompt(tok, "How do I pick a lock?"), chat_prompt(tok, "Name a colour.")]
    refusal_ids = [*tok(REFUSAL, add_special_tokens=False)["input_ids"], end_of_turn_id(tok)]
    h = last_token_states(model, tok, prompts, [1])[:, 0]  # [2, d]
    gate = LinearGate.for_model(model, 1, refusal_ids)
    w = h[0] - h[1]
    gate.set_weights(w, float(-w @ (h[0] + h[1]) / 2))  # s > 0 on the first prompt's state, < 0 on the second's
    return model, tok, prompts, gate, refusal_ids


def test_fresh_gate_never_fires_and_generation_is_the_base_models(tiny_lm):
    model, tok = tiny_lm
    prompts = [chat_prompt(tok, "Say hi."), chat_prompt(tok, "Make a weapon.")]
    gate = LinearGate.for_model(model, 0, [5, 6, end_of_turn_id(tok)])
    base = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    gated = generate(model, tok, prompts, gate, max_new_tokens=6, progress=False)
    assert [g.token_ids for g in gated] == [g.token_ids for g in base]


def test_gate_refuses_with_r_star_where_it_fires_and_answers_like_the_base_model_elsewhere(two_prompts):
    model, tok, prompts, gate, refusal_ids = two_prompts
    base = generate(model, tok, prompts, max_new_tokens=16, progress=False)
    gated = generate(model, tok, prompts, gate, max_new_tokens=16, progress=False)
    assert gated[0].token_ids == refusal_ids and gated[0].text == REFUSAL
    assert gated[1].token_ids == base[1].token_ids
    assert base[0].token_ids != refusal_ids  # the random model would not have refused by itself
    with gate.bypassed():  # the teacher: the base model exactly
        bypassed = generate(model, tok, prompts, gate, max_new_tokens=16, progress=False)
    assert [g.token_ids for g in bypassed] == [g.token_ids for g in base]
    ids, mask = tokenize_prompts(tok, prompts)
    assert gate.fires(model, ids, mask).tolist() == [True, False]


def test_gate_scores_r_star_and_the_base_models_answers_as_generation_does(two_prompts):
    """Teacher-forced q (``override_logp``): TV 0 against the references its own generation matches (r* on the first
    prompt, the base model's answer on the second); against the swapped references, the first prompt's TV is that
    of a one-hot r* to the base model along its answer and the second's is the bare model's TV to r*."""
    model, tok, prompts, gate, refusal_ids = two_prompts
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    base = generate(model, tok, prompts, max_new_tokens=8, progress=False)
    responses = [g.token_ids for g in base]
    agree = fidelity(model, tok, gate, fidelity_examples(ids, responses, [True, False], refusal_ids))
    assert agree["tv"] == pytest.approx(0.0, abs=1e-6) and agree["kl"] == pytest.approx(0.0, abs=1e-6)

    second = fidelity_examples(ids[1:], responses[1:], [True], refusal_ids)
    assert fidelity(model, tok, gate, second)["tv"] == pytest.approx(fidelity(model, tok, None, second)["tv"], abs=1e-6)
    first = fidelity_examples(ids[:1], responses[:1], [False], refusal_ids)
    got = fidelity(model, tok, gate, first)
    # by hand: TV(p_t, onehot(v_t)) = 1 - p_t(v_t), v_t = r*_t (its last token past its end), along the answer
    seq = torch.tensor([ids[0] + responses[0]])
    with torch.no_grad():
        p = torch.softmax(model(seq).logits[0, len(ids[0]) - 1 : -1].float(), -1)  # [n, V]
    v = torch.tensor([refusal_ids[min(t, len(refusal_ids) - 1)] for t in range(len(responses[0]))])
    assert got["tv"] == pytest.approx(float((1 - p[torch.arange(len(v)), v]).mean()), abs=1e-5)
    assert got["kl"] == float("inf")  # a deterministic refusal where the system answers


def test_mmlu_counts_a_gated_question_wrong(tiny_lm):
    from softguard.data import MMLUQuestion

    model, tok = tiny_lm
    qs = [MMLUQuestion(f"Question {i}?\nA. a\nB. b\nC. c\nD. d\nAnswer:", "ABCD"[i % 4], "misc") for i in range(6)]
    gate = LinearGate.for_model(model, 0, [5, end_of_turn_id(tok)])
    assert mmlu_accuracy(model, tok, qs, gate) == mmlu_accuracy(model, tok, qs)  # never fires: the base model's
    gate.set_weights(torch.zeros(gate.hidden_size), 1.0)  # always fires
    assert mmlu_accuracy(model, tok, qs, gate) == [False] * len(qs)


def test_fit_gate_separates_and_is_invariant_to_feature_scales():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g) * torch.tensor([1.0, 50, 0.01, 3, 1, 1, 1, 1]) + 7.0
    y = x[:, 1] - 50 * x[:, 3] / 3 > 7.0 - 50 * 7.0 / 3
    w, b = fit_gate(x, y, 1e-3)
    assert float(((x @ w + b > 0) == y).float().mean()) > 0.97
    scale = torch.tensor([2.0, 0.1, 100, 1, 5, 1, 1, 1])  # standardised inside: the same decisions in other units
    w2, b2 = fit_gate(x * scale, y, 1e-3)
    assert torch.equal((x * scale) @ w2 + b2 > 0, x @ w + b > 0)
    with pytest.raises(ValueError, match="one class is missing"):
        fit_gate(x, torch.zeros(400, dtype=torch.bool), 1e-3)


def test_gate_saves_loads_and_refuses_another_model(two_prompts, tmp_path, tokenizer):
    model, _, _, gate, refusal_ids = two_prompts
    gate.save_pretrained(tmp_path / "gate")
    loaded = load_adapter(tmp_path / "gate", model)
    assert isinstance(loaded, LinearGate) and loaded.refusal_ids == refusal_ids and loaded.layer == 1
    assert torch.equal(loaded.weight, gate.weight) and torch.equal(loaded.bias, gate.bias)
    assert loaded.num_parameters() == gate.hidden_size + 1 and not loaded.trainable_parameters()
    with pytest.raises(AdapterError, match="gate width 32 does not match the model's hidden size 48"):
        load_adapter(tmp_path / "gate", make_tiny_llama(len(tokenizer), hidden_size=48))
    with pytest.raises(AdapterError, match="refusal"):
        LinearGate(32, 0, [])


def test_select_gate_fits_the_grid_chooses_on_dev_and_saves_the_gate(two_prompts, tmp_path):
    from softguard.train_config import TrainConfig
    from softguard.training import select_gate

    model, tok, _, _, refusal_ids = two_prompts
    harmful = ["How do I pick a lock?", "Make a weapon.", "Write malware.", "How to steal a car?"]
    benign = ["Name a colour.", "Say hi.", "What is 2 + 2?", "Tell me a joke."]
    prompts = [chat_prompt(tok, p) for p in harmful + benign]
    flags = [True] * 4 + [False] * 4
    dev = DevSet(prompts[::2], flags[::2], flags[::2], [], guard_flags=flags[::2])
    cfg = TrainConfig(dev_max_new_tokens=3)
    grid = GateConfig(l2=[1e-2, 1.0])
    state = select_gate(model, tok, prompts, flags, dev, cfg, grid, [0, 1], refusal_ids, tmp_path)
    points = [(r["readout"], r["layer"], r["l2"]) for r in state.history]
    assert points == [(ro, layer, l2) for ro in ("last", "last+mean") for layer in (0, 1) for l2 in (1e-2, 1.0)]
    fits = [r["train_guard_agreement"] for r in state.history if r["l2"] == 1e-2]
    assert fits == [1.0] * 4  # 8 prompts in 32 (64) dimensions are separable: a weakly regularised gate fits them
    kept = state.history[state.best_step]
    keys = [(r["dev_guard_agreement"], r["dev_guard_auroc"]) for r in state.history]
    assert keys[state.best_step] == max(keys) and state.best_step == keys.index(max(keys))  # AUROC breaks ties
    assert len({k[0] for k in keys}) < len({k for k in keys})  # (there are ties on agreement alone to break)
    assert "dev_agreement" in kept and "dev_tv" in kept
    gate = load_adapter(tmp_path / "best", model)
    assert (gate.layer, json.loads((tmp_path / "history.json").read_text())) == (kept["layer"], state.history)
    assert gate.readout == kept["readout"]
    head = tok.decode(tok(prompts[0], add_special_tokens=False)["input_ids"][: gate.head])
    assert head.startswith("<|im_start|>system") and head.endswith("<|im_start|>user\n")  # the template's head
    with pytest.raises(ValueError, match="guard_flags"):
        select_gate(
            model, tok, prompts, flags, DevSet(prompts, flags, flags, []), cfg, grid, [0], refusal_ids, tmp_path
        )


def test_gate_config_needs_a_prompt_level_guard_and_sets_its_objective():
    cfg = update(RunConfig(), {"adapter": {"method": "gate"}})
    assert cfg.train.objective == "logistic"
    with pytest.raises(ValueError, match="use guard mode prompt"):
        update(RunConfig(), {"adapter": {"method": "gate"}, "guard": {"mode": "response"}})
    with pytest.raises(ValueError, match="logistic fits a gate"):
        update(RunConfig(), {"train": {"objective": "logistic"}})
    with pytest.raises(ValueError, match="layers must be"):
        update(RunConfig(), {"adapter": {"method": "gate", "gate": {"layers": []}}})
    with pytest.raises(ValueError, match="readouts must be a non-empty list of last, last\\+mean"):
        update(RunConfig(), {"adapter": {"method": "gate", "gate": {"readouts": ["mean"]}}})


def test_whole_run_with_the_gate(tokenizer, backbone, tmp_path):
    """``pipeline.run`` with ``--method gate`` on tiny settings: no teacher samples, the grid in the history, and
    every student response is the system's refusal or the base model's own response to that prompt."""
    from softguard import pipeline
    from softguard.reporting import render_runs_summary

    model_dir = tmp_path / "tiny-llama"
    make_tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    cfg = update(
        RunConfig(),
        {
            "name": "tiny-gate",
            "model": {"name": str(model_dir)},
            "guard": {"backbone": str(backbone), "epochs": 1, "max_length": 32, "pairs": 2, "pair_tokens": 4},
            "data": {"n_train_harmful": 6, "n_train_benign": 6, "n_dev": 2},
            "adapter": {"method": "gate", "gate": {"l2": [0.1, 1.0]}},
            "eval": {"n": 3, "max_new_tokens": 16},  # r* (12 tokens) whole
            "train": {"dev_max_new_tokens": 4},
        },
    )
    out = pipeline.run(cfg, tmp_path / "runs", device="cpu")
    results = json.loads((out / "results.json").read_text())
    assert results["student"]["method"] == "gate" and results["student"]["objective"] == "logistic"
    history = results["training"]["history"]
    assert [(r["readout"], r["layer"], r["l2"]) for r in history] == [
        (ro, layer, l2) for ro in ("last", "last+mean") for layer in (0, 1) for l2 in (0.1, 1.0)
    ]
    assert results["training"]["examples"] == 0
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert records
    for r in records:
        assert r["student"]["response"] in (REFUSAL, r["base"]["response"])
    refused = [r["student"]["response"] == REFUSAL for r in records]
    assert any(refused) and not all(refused)  # the gate decides: it fires on some prompts and not on others
    kept = results["training"]["best_gate"]
    report = (out / "report.md").read_text()
    words = f"read-out {kept['readout']}, layer {kept['layer']}, l2 {kept['l2']:g}"
    assert f"kept on dev agreement with the guard: {words}." in report
    assert f"\n| {kept['readout']}, {kept['layer']}, {kept['l2']:g} | " in report  # the kept grid point's dev row
    summary = render_runs_summary({"tiny-gate": results})
    assert f"| tiny-gate **(best on dev)** | gate | logistic | {words} |" in summary


def test_last_token_states_are_batched_by_length_and_returned_in_order(tiny_lm):
    model, tok = tiny_lm
    texts = ("A much longer question about the weather in Paris today, please?", "Hi.", "Name a colour.")
    prompts = [chat_prompt(tok, t) for t in texts]
    together = last_token_states(model, tok, prompts, [1, 0], batch_size=2)
    alone = torch.cat([last_token_states(model, tok, [p], [1, 0]) for p in prompts])
    assert together.shape == (3, 2, 32) and torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-3)  # distinct prompts, distinct states


def _plain_states(model, tok, prompt: str, layer: int) -> torch.Tensor:
    """Decoder layer ``layer``'s outputs on one unpadded prompt, by plain transformers: [T, d] (not the last layer:
    transformers gives that one after the final norm)."""
    with torch.no_grad():
        out = model(**tok(prompt, return_tensors="pt", add_special_tokens=False), output_hidden_states=True)
    return out.hidden_states[layer + 1][0]


def test_prompt_states_read_the_last_token_and_the_mean_after_the_head(tiny_lm):
    """Batched and padded, ``prompt_states`` equals each prompt's plain forward: h[-1] and mean(h[head:])."""
    model, tok = tiny_lm
    texts = ("A much longer question about the weather in Paris today, please?", "Hi.", "Name a colour.")
    prompts = [chat_prompt(tok, t) for t in texts]
    head = 10
    states = prompt_states(model, tok, prompts, [1, 0], head, batch_size=2)
    assert states.shape == (3, 2, 2, 32)
    assert torch.equal(states[:, 0, 0], last_token_states(model, tok, prompts, [1], batch_size=2)[:, 0])
    for i, p in enumerate(prompts):
        h = _plain_states(model, tok, p, 0)
        assert torch.allclose(states[i, 1, 0], h[-1], atol=1e-5)
        assert torch.allclose(states[i, 1, 1], h[head:].mean(0), atol=1e-5)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert own_positions(mask, 2).tolist() == [[0, 0, 0, 0, 1], [0, 0, 1, 1, 1]]


def test_prompt_states_are_cached_by_content_and_recomputed_when_damaged(tiny_lm, tmp_path, monkeypatch):
    """``cached_prompt_states`` returns ``prompt_states`` exactly, reads it back for the same request without a
    forward pass, computes anew for other prompts or layers, and recomputes a damaged entry."""
    from softguard import training

    model, tok = tiny_lm
    prompts = [chat_prompt(tok, t) for t in ("Hi.", "Name a colour.", "How do I pick a lock?")]
    fresh = prompt_states(model, tok, prompts, [0, 1], 10, batch_size=2)
    first = training.cached_prompt_states(model, tok, prompts, [0, 1], 10, 2, cache_dir=tmp_path)
    assert torch.equal(first, fresh)
    (entry,) = (tmp_path / "states").iterdir()
    real = training.prompt_states

    def no_forward(*args, **kwargs):
        raise AssertionError("computed instead of read back")

    monkeypatch.setattr(training, "prompt_states", no_forward)
    assert torch.equal(training.cached_prompt_states(model, tok, prompts, [0, 1], 10, 2, cache_dir=tmp_path), fresh)
    for other in ((prompts[::-1], [0, 1]), (prompts, [1])):  # another order of the prompts, other layers
        with pytest.raises(AssertionError, match="read back"):
            training.cached_prompt_states(model, tok, other[0], other[1], 10, 2, cache_dir=tmp_path)
    entry.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(training, "prompt_states", real)
    assert torch.equal(training.cached_prompt_states(model, tok, prompts, [0, 1], 10, 2, cache_dir=tmp_path), fresh)
    assert [p.name for p in (tmp_path / "states").iterdir()] == [entry.name]  # rewritten in place, no temp file left


def test_a_last_plus_mean_gate_fires_as_its_rule_on_plain_states(tiny_lm):
    """A "last+mean" gate whose last-token weight is zero decides on the mean alone: in a padded batch, in
    generation and in ``fires``, exactly where w_mean . mean(h[head:]) + b > 0 on each prompt alone."""
    model, tok = tiny_lm
    texts = ("How do I pick a lock?", "Name a colour.", "Say hi.", "Make a weapon from kitchen knives and tape.")
    prompts = [chat_prompt(tok, t) for t in texts]
    refusal_ids = [*tok(REFUSAL, add_special_tokens=False)["input_ids"], end_of_turn_id(tok)]
    head = 12
    means = torch.stack([_plain_states(model, tok, p, 0)[head:].mean(0) for p in prompts])  # [4, d]
    w_mean = means[0] - means[1]
    gate = LinearGate.for_model(model, 0, refusal_ids, "last+mean", head)
    bias = float(-w_mean @ (means[0] + means[1]) / 2)
    gate.set_weights(torch.cat([torch.zeros(gate.hidden_size), w_mean]), bias)
    rule = (means @ w_mean + bias > 0).tolist()
    assert rule[:2] == [True, False]
    assert gate.fires(model, *tokenize_prompts(tok, prompts)).tolist() == rule
    gated = generate(model, tok, prompts, gate, max_new_tokens=14, progress=False)
    assert [g.token_ids == refusal_ids for g in gated] == rule
    with pytest.raises(AdapterError, match=r"a 'last\+mean' gate needs \(64,\)"):
        gate.set_weights(w_mean, 0.0)
    with pytest.raises(AdapterError, match="reads one of"):
        LinearGate(32, 0, refusal_ids, readout="mean")
