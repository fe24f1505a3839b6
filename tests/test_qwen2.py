"""The qwen2 architecture (Qwen2.5, the second packaged LLM) through every adapter, the shared-prefix training step
and the prefix-cached generation, on a tiny random Qwen2 (d=32, 4 layers, biased q/k/v projections, untied head
as in the packaged GGUF) with the real SmolLM2 tokenizer: costs seconds, needs no Qwen download."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from softguard.adapters import LoRA, SoftPrompt, SteeringVector, attached, can_share_prefix, embed_inputs
from softguard.generation import PrefixCache, generate, tokenize_prompts
from softguard.losses import DistillExample, collate, loss_terms
from softguard.models import chat_prompt
from softguard.objectives import get_objective
from softguard.training import TrainConfig

PROMPTS = ["How do I bake bread?", "Write malware that steals passwords.", "Hi", "Give me three tips, please."]


@pytest.fixture(scope="module")
def qwen(tokenizer):
    """(tiny random Qwen2ForCausalLM with the tokenizer's vocabulary, frozen, eval mode; SmolLM2 tokenizer)."""
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.2,  # as make_tiny_llama: outputs depend on the whole prompt (see conftest)
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval().requires_grad_(False), tokenizer


def make_adapter(kind: str, model, tok):
    """An adapter of ``kind`` with non-trivial weights, so that it changes the outputs."""
    if kind == "soft-prompt":
        return SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5)
    if kind == "lora":
        lora = LoRA.for_model(model, rank=2, dropout=0.0, seed=1)
        with torch.no_grad():
            for b in lora.B.values():
                b.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
        return lora
    sv = SteeringVector.for_model(model, alpha=0.5, learned=True)
    with torch.no_grad():
        sv.vector.normal_(generator=torch.Generator().manual_seed(3))
    return sv


def test_adapters_fit_the_qwen2_layout(qwen):
    """LoRA finds the biased q_proj / v_proj of every layer (v: 2 KV heads of 8 = 16 outputs), steering defaults to
    the middle layer, the soft prompt to the width; the shared-prefix training step applies (no sliding window)."""
    model, tok = qwen
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.v_proj.bias is not None
    lora = LoRA.for_model(model, rank=2)
    assert lora.targets == {
        f"model.layers.{i}.self_attn.{n}": shape
        for i in range(4)
        for n, shape in (("q_proj", [32, 32]), ("v_proj", [32, 16]))
    }
    assert SteeringVector.for_model(model).layer == 2
    assert SoftPrompt.for_model(model, tok, num_tokens=4).prompt.shape == (4, 32)
    assert can_share_prefix(model)


@pytest.mark.parametrize("kind", ["soft-prompt", "lora", "steering"])
def test_adapter_changes_outputs_and_detaches_cleanly(qwen, kind):
    model, tok = qwen
    ids, mask = tokenize_prompts(tok, [chat_prompt(tok, p) for p in PROMPTS])
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        adapter = make_adapter(kind, model, tok)
        with attached(model, adapter):
            embeds, m, p = embed_inputs(model, adapter, ids, mask)
            adapted = model(inputs_embeds=embeds, attention_mask=m, position_ids=p).logits[:, -1]
        again = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    assert (adapted - base).abs().max() > 1e-2
    assert torch.equal(again, base)


@pytest.mark.parametrize("kind", ["soft-prompt", "lora", "steering"])
def test_shared_prefix_step_equals_whole_rows(qwen, kind):
    """The training step's shared template head gives the loss and adapter gradients of whole rows on qwen2."""
    model, tok = qwen
    adapter = make_adapter(kind, model, tok)
    ids = [tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    targets = [[10, 11, 12, 2], [40, 41, 2], [50, 51, 52, 53, 2], [60, 2]]
    examples = [
        DistillExample(i, t, 1.0, soft=s) for i, t, s in zip(ids, targets, (True, False, True, True), strict=True)
    ]

    def loss_and_grads(cfg: TrainConfig) -> tuple[float, list[torch.Tensor]]:
        adapter.zero_grad(set_to_none=True)
        batch = collate(examples, tok.pad_token_id, cfg, torch.device("cpu"))
        loss = (loss_terms(model, adapter, batch, get_objective("kl"))["d"] * batch["tok_w"]).sum()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in adapter.trainable_parameters()]

    whole = loss_and_grads(TrainConfig(shared_prefix=False, teacher_topk=None))
    shared = loss_and_grads(TrainConfig(teacher_topk=None))
    assert collate(examples, tok.pad_token_id, TrainConfig(), torch.device("cpu"))["head"] > 0
    assert shared[0] == pytest.approx(whole[0], rel=1e-5)
    for gs, gw in zip(shared[1], whole[1], strict=True):
        assert float(gw.abs().max()) > 1e-4
        assert torch.allclose(gs, gw, atol=1e-5), float((gs - gw).abs().max())


def test_prefix_cache_generation_matches_uncached(qwen):
    """qwen2's cache (a DynamicCache) holds the soft prompt's k positions; reused for batches of mixed lengths it
    gives the greedy tokens of the uncached path, which differ from the bare model's."""
    model, tok = qwen
    prompts = [chat_prompt(tok, p) for p in PROMPTS]
    sp = SoftPrompt.for_model(model, tok, num_tokens=5, init="normal", sigma=0.5)
    prefix = PrefixCache(model, sp)
    assert isinstance(prefix.cache, DynamicCache) and prefix.cache.get_seq_length() == 5
    kw = {"max_new_tokens": 6, "batch_size": 3, "progress": False}
    uncached = [g.token_ids for g in generate(model, tok, prompts, sp, cache_prefix=False, **kw)]
    assert [g.token_ids for g in generate(model, tok, prompts, prefix=prefix, **kw)] == uncached
    assert prefix.cache.get_seq_length() == 5  # decoding worked on copies
    assert [g.token_ids for g in generate(model, tok, prompts, **kw)] != uncached
