"""SteeringVector and diff_of_means, on the tiny random Llama (d=32, 2 layers) with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from softguard.adapters import (
    ADAPTERS,
    AdapterError,
    SteeringVector,
    attached,
    decoder_hidden,
    diff_of_means,
    load_adapter,
)
from softguard.adapters.base import CONFIG_NAME
from softguard.generation import generate, tokenize_prompts
from softguard.models import chat_prompt

USERS = ["Hi", "How do I bake bread at home?", "Tell me a joke about cats and dogs, please.", "Why?"]


def _prompts(tok, users=USERS) -> list[str]:
    return [chat_prompt(tok, u) for u in users]


def _inputs(model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)}


def _random_sv(d: int = 32, layer: int = 0, alpha: float = 1.5, seed: int = 0, **kw) -> SteeringVector:
    sv = SteeringVector(d, layer, alpha=alpha, num_layers=2, **kw)
    sv.vector.data.copy_(torch.randn(d, generator=torch.Generator().manual_seed(seed)))
    return sv


def test_registered_and_config(tiny_lm):
    model, _ = tiny_lm
    assert ADAPTERS["steering"] is SteeringVector
    sv = SteeringVector.for_model(model)
    assert sv.config() == {"hidden_size": 32, "layer": 1, "alpha": 1.0, "learned": False, "num_layers": 2}
    assert json.loads(json.dumps(sv.config())) == sv.config()
    assert torch.equal(sv.vector, torch.zeros(32))
    assert SteeringVector.for_model(model, layer=0, alpha=3, learned=True).config()["alpha"] == 3.0


def test_hook_adds_alpha_v_at_layer(tiny_lm):
    """hidden_states[l + 1] (the output of layer l, l < last) moves by exactly alpha * v at every real position."""
    model, tok = tiny_lm
    ids, mask = tokenize_prompts(tok, _prompts(tok))
    assert (mask == 0).any()  # left padding present
    sv = _random_sv(layer=0, alpha=1.5)
    with torch.no_grad():
        base = model(**_inputs(model, ids, mask), output_hidden_states=True).hidden_states
        with attached(model, sv):
            steered = model(**_inputs(model, ids, mask), output_hidden_states=True).hidden_states
    real = mask.bool()
    diff = steered[1][real] - base[1][real]  # [N, d]
    assert torch.allclose(diff, (1.5 * sv.vector).expand_as(diff), atol=1e-5, rtol=0)
    assert torch.equal(steered[0], base[0])  # the embeddings are untouched
    assert not torch.allclose(steered[2], base[2], atol=1e-3)  # and the change propagates


def test_bypassed_and_detach_restore_base_exactly(tiny_lm):
    model, tok = tiny_lm
    ids, mask = tokenize_prompts(tok, _prompts(tok))
    inputs = _inputs(model, ids, mask)
    layer = model.get_decoder().layers[0]
    # transformers installs output-capturing hooks on the layers (permanently) on the first output_hidden_states call
    hooks_before = [dict(m._forward_hooks) for m in model.get_decoder().layers]
    sv = _random_sv(layer=0, alpha=2.0)
    with torch.no_grad():
        base = model(**inputs).logits
        sv.attach(model)
        try:
            assert len(layer._forward_hooks) == len(hooks_before[0]) + 1
            steered = model(**inputs).logits
            assert not torch.allclose(steered, base, atol=1e-3)
            with sv.bypassed():
                assert torch.equal(model(**inputs).logits, base)
                with sv.bypassed():  # nested: still bypassed after the inner block
                    pass
                assert torch.equal(model(**inputs).logits, base)
            assert torch.equal(model(**inputs).logits, steered)
            with pytest.raises(KeyError), sv.bypassed():
                raise KeyError("boom")
            assert torch.equal(model(**inputs).logits, steered)  # restored after an exception
        finally:
            sv.detach()
        assert [dict(m._forward_hooks) for m in model.get_decoder().layers] == hooks_before
        assert torch.equal(model(**inputs).logits, base)
        assert sv.attached_to is None


def test_learned_trains_only_the_vector_and_fixed_does_not(tiny_lm):
    model, tok = tiny_lm
    ids, mask = tokenize_prompts(tok, _prompts(tok))
    learned = SteeringVector.for_model(model, layer=0, alpha=0.5, learned=True)
    assert learned.vector.requires_grad and learned.trainable_parameters() == [learned.vector]
    hidden = decoder_hidden(model, learned, ids, mask)
    assert learned.attached_to is None  # decoder_hidden attaches only for its own forward
    hidden[mask.bool()].pow(2).sum().backward()
    assert learned.vector.grad is not None and learned.vector.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())

    fixed = SteeringVector.for_model(model, layer=0)
    assert not fixed.vector.requires_grad and fixed.trainable_parameters() == []
    for sv in (learned, fixed):
        assert sv.num_parameters() == 32 and sv.num_bytes() == 4 * 32


def _last_token_hidden(model, tok, prompt: str, layer: int) -> torch.Tensor:
    """The output of decoder layer ``layer`` at the last token of one unpadded prompt, computed directly."""
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        if layer + 1 < len(model.get_decoder().layers):
            return model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0, -1]
        out: list[torch.Tensor] = []  # the last entry of hidden_states is after the final norm: hook the layer
        handle = model.get_decoder().layers[layer].register_forward_hook(lambda m, a, o: out.append(o))
        try:
            model(input_ids=ids)
        finally:
            handle.remove()
        return out[0][0, -1]


@pytest.mark.parametrize("layer", [0, 1])
def test_diff_of_means_matches_direct_computation(tiny_lm, layer):
    model, tok = tiny_lm
    flagged = _prompts(tok, ["How do I make a weapon at home quickly?", "Hack it"])
    passed = _prompts(tok, ["Hi", "What is the capital of France?", "Write a short poem about the sea."])
    lengths = {len(tok(p, add_special_tokens=False)["input_ids"]) for p in flagged + passed}
    assert len(lengths) == 5  # all different: left padding is exercised
    direct = torch.stack([_last_token_hidden(model, tok, p, layer) for p in flagged]).mean(0) - torch.stack(
        [_last_token_hidden(model, tok, p, layer) for p in passed]
    ).mean(0)
    v = diff_of_means(model, tok, flagged, passed, layer)
    assert v.shape == (32,) and v.dtype == torch.float32 and v.device.type == "cpu"
    assert direct.abs().max() > 1e-2  # not trivially zero
    assert torch.allclose(v, direct, atol=1e-5, rtol=0)
    assert torch.allclose(diff_of_means(model, tok, flagged, passed, layer, batch_size=1), v, atol=1e-5, rtol=0)
    assert not torch.is_inference(v)  # an ordinary tensor, usable outside inference mode
    sv = SteeringVector.for_model(model, layer=layer)
    sv.vector.data.copy_(v)
    assert torch.equal(sv.vector.data, v)


def test_diff_of_means_refuses_empty_lists_and_bad_layer(tiny_lm):
    model, tok = tiny_lm
    p = _prompts(tok, ["Hi"])
    with pytest.raises(ValueError, match="at least one flagged"):
        diff_of_means(model, tok, [], p, 0)
    with pytest.raises(ValueError, match="at least one flagged"):
        diff_of_means(model, tok, p, [], 0)
    with pytest.raises(ValueError, match="out of range"):
        diff_of_means(model, tok, p, p, 2)


def test_save_load_round_trip_same_generations(tiny_lm, tmp_path):
    model, tok = tiny_lm
    prompts = _prompts(tok)
    sv = SteeringVector.for_model(model, layer=0, alpha=1.0, learned=True)
    v = diff_of_means(model, tok, prompts[:2], prompts[2:], 0)
    sv.vector.data.copy_(v / v.norm())
    sv.alpha = 6.0  # chosen "on dev"
    sv.save_pretrained(tmp_path / "sv")
    assert json.loads((tmp_path / "sv" / CONFIG_NAME).read_text())["config"]["alpha"] == 6.0
    loaded = load_adapter(tmp_path / "sv", model)
    assert isinstance(loaded, SteeringVector)
    assert (loaded.alpha, loaded.layer, loaded.learned, loaded.num_layers) == (6.0, 0, True, 2)
    assert loaded.vector.requires_grad and torch.equal(loaded.vector, sv.vector)
    base = generate(model, tok, prompts, None, max_new_tokens=8, progress=False)
    ours = generate(model, tok, prompts, sv, max_new_tokens=8, progress=False)
    theirs = generate(model, tok, prompts, loaded, max_new_tokens=8, progress=False)
    assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]
    assert any(a.token_ids != b.token_ids for a, b in zip(base, ours, strict=True))
    assert sv.attached_to is None and loaded.attached_to is None


def test_check_model_refuses_other_width_and_bad_layer(tiny_lm, make_lm, tmp_path):
    model, tok = tiny_lm
    wide = make_lm(len(tok), hidden_size=64)
    sv = SteeringVector.for_model(model, layer=0)
    with pytest.raises(AdapterError, match="hidden size 64"):
        sv.attach(wide)
    assert sv.attached_to is None and not any(m._forward_hooks for m in wide.get_decoder().layers)
    sv.save_pretrained(tmp_path / "sv")
    with pytest.raises(AdapterError, match="different model"):
        load_adapter(tmp_path / "sv", wide)
    with pytest.raises(AdapterError, match="out of range for a model with 2 layers"):
        SteeringVector(32, layer=2).attach(model)
    with pytest.raises(AdapterError, match="made for a model with 3 layers"):
        SteeringVector(32, layer=1, num_layers=3).attach(model)
    with pytest.raises(AdapterError, match="out of range"):
        SteeringVector(32, layer=-1)
    with pytest.raises(AdapterError, match="out of range"):
        SteeringVector.for_model(model, layer=2)


def test_hook_handles_tuple_layer_outputs_and_casts_dtype():
    """Older transformers versions return (hidden_states, ...) from a decoder layer; half-precision models too."""
    sv = _random_sv(alpha=-0.5)
    h = torch.randn(2, 3, 32)
    out = sv._on_output(torch.nn.Identity(), (h,), (h, "cache"))
    assert isinstance(out, tuple) and out[1] == "cache"
    assert torch.allclose(out[0], h - 0.5 * sv.vector, atol=1e-6, rtol=0)
    half = sv._on_output(torch.nn.Identity(), (h,), h.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), h - 0.5 * sv.vector, atol=0.1)
    with sv.bypassed():
        assert sv._on_output(torch.nn.Identity(), (h,), h) is None
