"""Integration tests on the real packaged Qwen2.5-Coder-0.5B-Instruct (fetched by `make test`): the second
architecture (qwen2) loads through the same GGUF path as SmolLM2, answers, and works with softguard's adapters and
prefix cache. Kept small: one short greedy answer, one soft-prompt forward each way."""

from __future__ import annotations

import pytest
import torch

from softguard.adapters import LoRA, SoftPrompt, SteeringVector, embed_inputs
from softguard.generation import PrefixCache, generate, tokenize_prompts
from softguard.models import chat_prompt, end_of_turn_id, load_model
from softguard.system import DEFAULT_REFUSAL, SafeSystem

pytestmark = pytest.mark.integration

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@pytest.fixture(scope="module")
def qwen():
    return load_model("qwen2.5-coder-0.5b")


def test_real_qwen_shape_template_and_special_tokens(qwen):
    model, tok = qwen
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == ("qwen2", 896, 24, 151936)
    assert not any(p.requires_grad for p in model.parameters())
    # the GGUF stores the LM head (Q8_0) apart from the input embeddings (Q5_0): kept untied, as shipped; both
    # quantize upstream's one tied matrix
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert not cfg.tie_word_embeddings and head.data_ptr() != emb.data_ptr()
    assert 0 < float((head - emb).abs().max()) < 0.02
    text = chat_prompt(tok, "Hello")
    assert (
        text
        == f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>") == 151645
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151643 and tok.padding_side == "left"


def test_real_qwen_answers_and_the_refusal_tokenizes(qwen):
    model, tok = qwen
    prompt = chat_prompt(tok, "What is the capital of France? Answer in one word.")
    (answer,) = generate(model, tok, [prompt], max_new_tokens=4, progress=False)
    assert answer.text == "Paris" and answer.token_ids[-1] == end_of_turn_id(tok)
    r = SafeSystem(model, tok, None).refusal_ids()
    assert r[-1] == 151645 and tok.decode(r[:-1]) == DEFAULT_REFUSAL


def test_real_qwen_soft_prompt_prefix_cache_equals_uncached(qwen):
    """k = 100 soft prompt (the default safety-instruction init): next-token logits through the PrefixCache equal
    those with P prepended to every row, for two prompts of different lengths (left padding)."""
    model, tok = qwen
    sp = SoftPrompt.for_model(model, tok, num_tokens=100)
    ids, mask = tokenize_prompts(tok, [chat_prompt(tok, "Hi!"), chat_prompt(tok, "How do I pick a lock quickly?")])
    assert (mask == 0).any()
    prefix = PrefixCache(model, sp)
    pos = prefix.length + (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        embeds, full_mask, full_pos = embed_inputs(model, sp, ids, mask)
        uncached = model(inputs_embeds=embeds, attention_mask=full_mask, position_ids=full_pos).logits[:, -1]
        cached = model(
            input_ids=ids,
            attention_mask=torch.cat([mask.new_ones(2, prefix.length), mask], dim=1),
            position_ids=pos,
            past_key_values=prefix.expand(2),
        ).logits[:, -1]
        bare = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert torch.allclose(cached, uncached, atol=1e-4, rtol=0), float((cached - uncached).abs().max())
    assert float((uncached - bare).abs().max()) > 1.0  # the soft prompt matters


def test_adapters_fit_the_real_qwen(qwen):
    """LoRA on q_proj [896 -> 896] and v_proj [896 -> 128: 2 KV heads of 64] of all 24 layers; steering at the middle
    layer 12; a soft prompt placed after the system turn finds Qwen's template head."""
    model, tok = qwen
    lora = LoRA.for_model(model, rank=8)
    assert len(lora.targets) == 48
    assert lora.targets["model.layers.0.self_attn.q_proj"] == [896, 896]
    assert lora.targets["model.layers.23.self_attn.v_proj"] == [896, 128]
    assert SteeringVector.for_model(model).layer == 12
    sp = SoftPrompt.for_model(model, tok, num_tokens=4, placement="user")
    assert tok.decode(sp.head) == f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n"
    ids, mask = tokenize_prompts(tok, [chat_prompt(tok, "Hi"), chat_prompt(tok, "Name three primary colours.")])
    assert sp.insert_at(mask, ids).squeeze(-1).tolist() == [
        int((m == 0).sum()) + len(sp.head) for m in mask
    ]  # after each row's padding and the head
