"""LoRA through PEFT's LoRA layers, on the tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from softguard.adapters import ADAPTERS, AdapterError, LoRA, decoder_hidden, load_adapter
from softguard.adapters.base import CONFIG_NAME
from softguard.generation import generate, tokenize_prompts
from softguard.models import chat_prompt

PROMPTS = ["How do I bake bread?", "Tell me a joke about cats.", "What is the capital of France?"]


def _expected_targets(cfg, names=("q_proj", "v_proj")) -> dict[str, list[int]]:
    """Target paths and [in, out] computed by hand from a Llama config."""
    d, kv = cfg.hidden_size, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    shapes = {"q_proj": [d, d], "k_proj": [d, kv], "v_proj": [d, kv], "o_proj": [d, d]}
    return {
        f"model.layers.{i}.self_attn.{n}": shapes[n] for i in range(cfg.num_hidden_layers) for n in shapes if n in names
    }


def _randomize_b(lora: LoRA, seed: int = 0, std: float = 1.0) -> None:
    """Non-zero B (a fresh LoRA is the identity), seeded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in lora.B.values():
            b.weight.copy_(torch.randn(b.weight.shape, generator=g) * std)


def _inputs(tok):
    return tokenize_prompts(tok, [chat_prompt(tok, p) for p in PROMPTS])


def _logits(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def _lora_layers(model) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def test_targets_config_and_sizes(tiny_lm):
    model, _ = tiny_lm
    lora = LoRA.for_model(model, rank=4, alpha=8.0, dropout=0.1)
    expected = _expected_targets(model.config)
    assert expected == {
        "model.layers.0.self_attn.q_proj": [32, 32],
        "model.layers.0.self_attn.v_proj": [32, 16],
        "model.layers.1.self_attn.q_proj": [32, 32],
        "model.layers.1.self_attn.v_proj": [32, 16],
    }
    assert lora.targets == expected
    assert lora.config() == {
        "targets": expected,
        "rank": 4,
        "alpha": 8.0,
        "dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
    }
    assert lora.scaling == 2.0
    n = sum(4 * (i + o) for i, o in expected.values())
    assert n == 4 * (32 + 32 + 32 + 16) * 2
    assert lora.num_parameters() == n
    assert lora.num_bytes() == 4 * n
    assert len(lora.trainable_parameters()) == 2 * len(expected)
    assert lora.prefix_length == 0
    assert ADAPTERS["lora"] is LoRA
    # the state dict holds A [r, in] and B [out, r] per target, keyed by the path with "." -> "-"
    sd = lora.state_dict()
    assert sd["A.model-layers-1-self_attn-v_proj.weight"].shape == (4, 32)
    assert sd["B.model-layers-1-self_attn-v_proj.weight"].shape == (16, 4)
    assert len(sd) == 2 * len(expected)


def test_all_linear_targets(tiny_lm):
    model, _ = tiny_lm
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora = LoRA.for_model(model, rank=2, target_modules=names)
    mlp = {"gate_proj": [32, 64], "up_proj": [32, 64], "down_proj": [64, 32]}
    expected = _expected_targets(model.config, names)
    expected.update({f"model.layers.{i}.mlp.{n}": s for i in range(2) for n, s in mlp.items()})
    assert lora.targets == expected
    assert lora.num_parameters() == sum(2 * (i + o) for i, o in expected.values())


def test_init_is_peft_like_and_seeded(tiny_lm):
    model, _ = tiny_lm
    torch.manual_seed(1)
    a = LoRA.for_model(model, seed=3)
    state = torch.random.get_rng_state()
    torch.manual_seed(2)  # the global RNG plays no part
    b = LoRA.for_model(model, seed=3)
    c = LoRA.for_model(model, seed=4)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.A["model-layers-0-self_attn-q_proj"].weight, c.A["model-layers-0-self_attn-q_proj"].weight)
    # the same draws as PEFT's kaiming_uniform_(a=sqrt(5)) from the seeded generator, in target order; B = 0
    g = torch.Generator().manual_seed(3)
    for key, (n_in, _) in zip(a.A, a.targets.values(), strict=True):
        expected = nn.init.kaiming_uniform_(torch.empty(8, n_in), a=math.sqrt(5), generator=g)
        assert torch.equal(a.A[key].weight.data, expected)
        assert float(a.A[key].weight.detach().abs().max()) <= 1 / math.sqrt(n_in)
        assert float(a.A[key].weight.detach().std()) > 0.3 / math.sqrt(n_in)
        assert not a.B[key].weight.any()
    torch.manual_seed(5)
    s = torch.random.get_rng_state()
    LoRA.for_model(model, seed=3)
    LoRA(a.targets)
    assert torch.equal(s, torch.random.get_rng_state())  # neither for_model nor the constructor draws from it
    assert not torch.equal(s, state)


def test_fresh_lora_is_identity(tiny_lm):
    model, tok = tiny_lm
    ids, mask = _inputs(tok)
    base = _logits(model, ids, mask)
    lora = LoRA.for_model(model)
    lora.eval()
    lora.attach(model)
    try:
        assert len(_lora_layers(model)) == 4
        assert torch.equal(_logits(model, ids, mask), base)  # B = 0: W x + B A x == W x
    finally:
        lora.detach()


def test_only_lora_parameters_get_gradients(tiny_lm):
    model, tok = tiny_lm
    ids, mask = _inputs(tok)
    base_params = list(model.parameters())
    lora = LoRA.for_model(model)
    _randomize_b(lora, std=0.1)  # so that A gets a gradient too
    lora.attach(model)
    try:
        # while attached A and B are submodules of the model; the model's own parameters stay frozen
        assert {id(p) for p in model.parameters()} == {id(p) for p in base_params} | {id(p) for p in lora.parameters()}
        hidden = decoder_hidden(model, lora, ids, mask)
        hidden.pow(2).mean().backward()
    finally:
        lora.detach()
    for name, p in lora.named_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in base_params)
    assert list(model.parameters()) == base_params


def test_teacher_in_bypassed_block_after_student_forward(tiny_lm):
    """As in ``losses.loss_terms``: student forward, teacher inside ``bypassed()``, then backward."""
    model, tok = tiny_lm
    ids, mask = _inputs(tok)
    with torch.no_grad():
        base_hidden = decoder_hidden(model, None, ids, mask)
    lora = LoRA.for_model(model, dropout=0.0)
    _randomize_b(lora, std=0.1)
    lora.attach(model)
    try:
        student = decoder_hidden(model, lora, ids, mask)
        with torch.no_grad(), lora.bypassed():
            teacher = decoder_hidden(model, None, ids, mask)
            assert all(p.requires_grad for p in lora.parameters())  # bypassing leaves requires_grad alone
        (student - teacher).pow(2).sum().backward()
    finally:
        lora.detach()
    assert torch.equal(teacher, base_hidden)
    assert not torch.allclose(student, teacher)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.parameters())


def test_attached_bypassed_detached_outputs(tiny_lm):
    model, tok = tiny_lm
    ids, mask = _inputs(tok)
    originals = {name: m for name, m in model.named_modules()}
    types = {name: type(m) for name, m in originals.items()}
    base = _logits(model, ids, mask)
    lora = LoRA.for_model(model)
    _randomize_b(lora)
    lora.eval()
    lora.attach(model)
    try:
        layers = _lora_layers(model)
        assert len(layers) == 4
        assert all(layer.lora_A["default"] is lora.A[k] for layer, k in zip(layers, lora.A, strict=True))
        adapted = _logits(model, ids, mask)
        assert not torch.allclose(adapted, base, atol=1e-3)
        with lora.bypassed():
            assert torch.equal(_logits(model, ids, mask), base)
            assert all(p.requires_grad for p in lora.parameters())
        assert torch.equal(_logits(model, ids, mask), adapted)  # restored on exit
        with pytest.raises(KeyError), lora.bypassed():
            raise KeyError("boom")
        assert torch.equal(_logits(model, ids, mask), adapted)  # restored on exceptions too
    finally:
        lora.detach()
    assert torch.equal(_logits(model, ids, mask), base)
    assert not _lora_layers(model)
    assert {name: type(m) for name, m in model.named_modules()} == types
    assert all(model.get_submodule(name) is m for name, m in originals.items())  # the same objects
    assert not hasattr(model, "peft_config")
    # attach again: the same adapted outputs
    lora.attach(model)
    try:
        assert torch.equal(_logits(model, ids, mask), adapted)
    finally:
        lora.detach()


def test_dropout_follows_adapter_mode(tiny_lm):
    model, tok = tiny_lm
    ids, mask = _inputs(tok)
    lora = LoRA.for_model(model, dropout=0.5)
    _randomize_b(lora)
    lora.attach(model)
    try:
        lora.train()
        assert not model.training
        torch.manual_seed(0)
        first, second = _logits(model, ids, mask), _logits(model, ids, mask)
        assert not torch.allclose(first, second, atol=1e-3)  # dropout active in train mode
        lora.eval()
        first, second = _logits(model, ids, mask), _logits(model, ids, mask)
        assert torch.equal(first, second)
        no_dropout = LoRA(**{**lora.config(), "dropout": 0.0})
        no_dropout.load_state_dict(lora.state_dict())
    finally:
        lora.detach()
    with torch.no_grad():
        assert torch.equal(decoder_hidden(model, no_dropout, ids, mask), decoder_hidden(model, lora, ids, mask))


def test_save_load_round_trip_generations(tiny_lm, tmp_path):
    model, tok = tiny_lm
    prompts = [chat_prompt(tok, p) for p in PROMPTS]
    lora = LoRA.for_model(model, rank=4, seed=1)
    _randomize_b(lora, seed=0, std=1.0)
    lora.eval()
    lora.save_pretrained(tmp_path / "lora", step=3)
    cfg = json.loads((tmp_path / "lora" / CONFIG_NAME).read_text())
    assert cfg["method"] == "lora" and cfg["config"] == lora.config() and cfg["step"] == 3
    loaded = load_adapter(tmp_path / "lora", model)
    assert isinstance(loaded, LoRA) and loaded.config() == lora.config()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in lora.state_dict().items())
    assert LoRA.from_pretrained(tmp_path / "lora").targets == lora.targets  # no model needed
    loaded.eval()
    base = generate(model, tok, prompts, None, max_new_tokens=8, progress=False)
    ours = generate(model, tok, prompts, lora, max_new_tokens=8, progress=False)
    again = generate(model, tok, prompts, loaded, max_new_tokens=8, progress=False)
    assert [g.token_ids for g in again] == [g.token_ids for g in ours]
    assert all(len(g.token_ids) > 0 for g in ours)
    assert all(o.token_ids != b.token_ids for o, b in zip(ours, base, strict=True))  # seed 0, std 1: all differ
    assert lora.attached_to is None and loaded.attached_to is None and not _lora_layers(model)
    assert [g.token_ids for g in generate(model, tok, prompts, None, max_new_tokens=8, progress=False)] == [
        g.token_ids for g in base
    ]


def test_other_model_is_refused(tiny_lm, make_lm, tmp_path):
    model, tok = tiny_lm
    lora = LoRA.for_model(model)
    lora.save_pretrained(tmp_path / "lora")
    wider = make_lm(len(tok), hidden_size=64)
    with pytest.raises(AdapterError, match=r"different model.*q_proj maps 64 -> 64 features, the LoRA 32 -> 32"):
        lora.check_model(wider)
    with pytest.raises(AdapterError, match="different model"):
        load_adapter(tmp_path / "lora", wider)
    with pytest.raises(AdapterError, match="different model"):
        lora.attach(wider)
    assert lora.attached_to is None and not _lora_layers(wider)
    deeper = LoRA({**lora.targets, "model.layers.5.self_attn.q_proj": [32, 32]})
    with pytest.raises(AdapterError, match=r"model\.layers\.5\.self_attn\.q_proj is missing"):
        deeper.check_model(model)
    not_linear = LoRA({"model.layers.0.self_attn": [32, 32]})
    with pytest.raises(AdapterError, match=r"not an nn\.Linear"):
        not_linear.check_model(model)


def test_bad_arguments(tiny_lm):
    model, _ = tiny_lm
    with pytest.raises(AdapterError, match=r"named c_attn; choose target_modules among .*q_proj, up_proj, v_proj"):
        LoRA.for_model(model, target_modules=("c_attn",))
    with pytest.raises(AdapterError, match="rank must be at least 1"):
        LoRA({"model.layers.0.self_attn.q_proj": [32, 32]}, rank=0)
    with pytest.raises(AdapterError, match="dropout"):
        LoRA({"model.layers.0.self_attn.q_proj": [32, 32]}, dropout=1.0)
    with pytest.raises(AdapterError, match="at least one target"):
        LoRA({})


def test_one_lora_per_layer(tiny_lm):
    model, _ = tiny_lm
    first, second = LoRA.for_model(model), LoRA.for_model(model)
    first.attach(model)
    try:
        with pytest.raises(AdapterError, match="already has a LoRA layer"):
            second.attach(model)
        with pytest.raises(AdapterError, match="detach it first"):
            LoRA.for_model(model)
        assert len(_lora_layers(model)) == 4
    finally:
        first.detach()
    assert second.attached_to is None and not _lora_layers(model)


def test_device_mismatch_is_refused(tiny_lm):
    model, _ = tiny_lm
    lora = LoRA.for_model(model).to("meta")
    with pytest.raises(AdapterError, match=r"on meta but .* \(adapter\.to\(model\.device\)\)"):
        lora.attach(model)
    assert lora.attached_to is None and not _lora_layers(model)


def test_loaded_adapter_is_in_eval_mode_so_generation_has_no_dropout(tiny_lm, tmp_path):
    """A saved LoRA with dropout comes back in eval mode: two generations are identical (dropout would differ)."""
    model, tok = tiny_lm
    lora = LoRA.for_model(model, rank=2, dropout=0.5)
    with torch.no_grad():
        for b in lora.B.values():
            b.weight.normal_(0, 1.0)
    lora.save_pretrained(tmp_path / "lora")
    loaded = load_adapter(tmp_path / "lora", model)
    assert not loaded.training
    prompts = [chat_prompt(tok, "hello"), chat_prompt(tok, "how are you")]
    first = [g.token_ids for g in generate(model, tok, prompts, loaded, max_new_tokens=6, progress=False)]
    assert first == [g.token_ids for g in generate(model, tok, prompts, loaded, max_new_tokens=6, progress=False)]
