"""Batched generation (greedy and seeded sampling) on the tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import copy

import pytest
import torch

from softguard.adapters import SoftPrompt
from softguard.generation import Generation, PrefixCache, generate, length_batches, shared_head, tokenize_prompts
from softguard.models import chat_prompt

USER = ["Hi", "What is the capital of France?", "Write a haiku about autumn leaves falling on a quiet pond"]


@pytest.fixture(scope="module")
def prompts(tiny_lm) -> list[str]:
    _, tok = tiny_lm
    return [chat_prompt(tok, u) for u in USER]


def test_tokenize_prompts_left_pads(tiny_lm, prompts):
    _, tok = tiny_lm
    ids, mask = tokenize_prompts(tok, prompts)
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert mask.sum(-1).tolist() == lengths
    assert ids.shape == (3, max(lengths))
    for i, n in enumerate(lengths):
        assert mask[i].tolist() == [0] * (ids.shape[1] - n) + [1] * n
        assert ids[i, -n:].tolist() == tok(prompts[i], add_special_tokens=False)["input_ids"]


def test_greedy_matches_hf_generate(tiny_lm, prompts):
    model, tok = tiny_lm
    n_new = 8
    gens = generate(model, tok, prompts, max_new_tokens=n_new, progress=False)
    ids, mask = tokenize_prompts(tok, prompts)
    with torch.no_grad():
        ref = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=n_new,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )[:, ids.shape[1] :]
    assert all(isinstance(g, Generation) for g in gens)
    for g, row in zip(gens, ref.tolist(), strict=True):
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id) + 1]
        assert g.token_ids == row
        assert g.text == tok.decode(row, skip_special_tokens=True).strip()
    assert len({tuple(g.token_ids) for g in gens}) > 1  # not a degenerate model that ignores its input


def test_greedy_is_independent_of_batching(tiny_lm, prompts):
    model, tok = tiny_lm
    together = generate(model, tok, prompts, max_new_tokens=6, batch_size=16, progress=False)
    pairs = generate(model, tok, prompts, max_new_tokens=6, batch_size=2, progress=False)
    alone = [generate(model, tok, [p], max_new_tokens=6, progress=False)[0] for p in prompts]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone] == [g.token_ids for g in pairs]
    lengths = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
    budget = generate(model, tok, prompts, max_new_tokens=6, max_batch_tokens=2 * max(lengths) - 1, progress=False)
    assert [g.token_ids for g in budget] == [g.token_ids for g in together]


def test_length_batches_cap_size_and_padded_tokens():
    lengths = [5, 50, 7, 6, 40, 300]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)  # 0, 3, 2, 4, 1, 5
    assert length_batches(lengths, order, 4, None) == [[0, 3, 2, 4], [1, 5]]
    assert length_batches(lengths, order, 4, 100) == [[0, 3, 2], [4, 1], [5]]  # 4 x 40 > 100; 300 alone
    assert length_batches(lengths, order, 2, 10_000) == [[0, 3], [2, 4], [1, 5]]
    assert length_batches([], [], 4, 100) == []


def test_batched_soft_prompt_equals_one_at_a_time(tiny_lm, prompts):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=5, init="normal", sigma=0.5)
    batched = generate(model, tok, prompts, sp, max_new_tokens=6, progress=False)
    alone = [generate(model, tok, [p], sp, max_new_tokens=6, progress=False)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert all(len(g.token_ids) == 6 for g in batched)
    base = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    assert [g.token_ids for g in batched] != [g.token_ids for g in base]  # the soft prompt is actually used


def test_soft_prompt_generation_matches_manual_prefix_greedy(tiny_lm, prompts):
    """Reference: full (no-cache) forward passes over [P; prompt; generated] for a single prompt."""
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=4, init="normal", sigma=0.5, seed=2)
    got = generate(model, tok, prompts[1:2], sp, max_new_tokens=5, progress=False)[0].token_ids
    ids = tok(prompts[1], add_special_tokens=False)["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(5):
            emb = model.get_input_embeddings()(torch.tensor([ids + out]))
            emb = torch.cat([sp.prompt[None], emb], dim=1)
            out.append(int(model(inputs_embeds=emb).logits[0, -1].argmax()))
    assert got == out


def test_sampling_is_seeded(tiny_lm, prompts):
    model, tok = tiny_lm
    kw = {"max_new_tokens": 6, "temperature": 1.0, "progress": False}
    a = generate(model, tok, prompts, seed=1, **kw)
    b = generate(model, tok, prompts, seed=1, **kw)
    c = generate(model, tok, prompts, seed=2, **kw)
    greedy = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    assert [g.token_ids for g in a] != [g.token_ids for g in greedy]


class _ForceEos:
    """Forward hook on the LM head: batch row ``row`` gets EOS as its ``at``-th new token (1-based)."""

    def __init__(self, row: int, at: int, eos: int):
        self.row, self.at, self.eos, self.calls = row, at, eos, 0

    def __call__(self, module, inputs, output):
        self.calls += 1
        if self.calls == self.at:
            output = output.clone()
            output[self.row, -1, self.eos] = 1e4
        return output


def test_eos_stops_a_row(tiny_lm, prompts):
    model, tok = tiny_lm
    eos = tok.eos_token_id
    free = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    assert all(eos not in g.token_ids for g in free)
    hook = _ForceEos(row=0, at=3, eos=eos)  # row 0 of the batch is the shortest prompt ("Hi")
    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        gens = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    finally:
        handle.remove()
    assert gens[0].token_ids == [*free[0].token_ids[:2], eos]
    assert gens[0].text == tok.decode(free[0].token_ids[:2], skip_special_tokens=True).strip()
    assert "<|im_end|>" not in gens[0].text
    # the other rows are unaffected and run to max_new_tokens
    assert [g.token_ids for g in gens[1:]] == [g.token_ids for g in free[1:]]
    assert all(len(g.token_ids) == 6 for g in gens[1:])


def test_all_rows_stop_early(tiny_lm, prompts):
    model, tok = tiny_lm
    eos = tok.eos_token_id

    def hook(module, inputs, output):
        hook.calls += 1
        out = output.clone()
        out[:, -1, eos] = 1e4
        return out

    hook.calls = 0
    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        gens = generate(model, tok, prompts, max_new_tokens=10, progress=False)
    finally:
        handle.remove()
    assert [g.token_ids for g in gens] == [[eos]] * 3
    assert [g.text for g in gens] == [""] * 3
    assert hook.calls == 1  # no decoding steps after every row stopped


def test_empty_prompt_list(tiny_lm):
    model, tok = tiny_lm
    assert generate(model, tok, [], progress=False) == []


def test_left_padding_regardless_of_tokenizer_setting(tiny_lm, prompts):
    """``tokenize_prompts`` promises left padding; a tokenizer configured for right padding must not silently put
    the soft prompt (inserted after the padding) inside the text and read the logits off a pad position."""
    model, tok = tiny_lm
    right = copy.deepcopy(tok)
    right.padding_side = "right"
    ids, mask = tokenize_prompts(right, prompts)
    ref_ids, ref_mask = tokenize_prompts(tok, prompts)
    assert torch.equal(mask, ref_mask) and torch.equal(ids, ref_ids)
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5)
    got = generate(model, right, prompts, sp, max_new_tokens=4, progress=False)
    ref = generate(model, tok, prompts, sp, max_new_tokens=4, progress=False)
    assert [g.token_ids for g in got] == [g.token_ids for g in ref]


def test_template_head_is_cached_once(tiny_lm, prompts):
    """The chat template's system turn, which every prompt begins with, runs once per call: greedy and sampled
    tokens equal the uncached path's, without and with a soft prompt before it; a prompt that does not begin with
    a cache's head is refused."""
    model, tok = tiny_lm
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    head = ids[0][: shared_head(ids)]
    assert len(head) >= 10  # SmolLM2's template: "<|im_start|>system\n...<|im_end|>\n<|im_start|>user\n"
    sp = SoftPrompt.for_model(model, tok, num_tokens=5, init="normal", sigma=0.5)
    for adapter in (None, sp):
        for kw in ({}, {"temperature": 1.0, "seed": 3}):
            args = {"max_new_tokens": 8, "batch_size": 2, "progress": False} | kw
            uncached = generate(model, tok, prompts, adapter, cache_prefix=False, **args)
            cached = generate(model, tok, prompts, adapter, **args)
            assert [g.token_ids for g in cached] == [g.token_ids for g in uncached]
    prefix = PrefixCache(model, sp, head)
    assert prefix.length == 5 + len(head) and prefix.cache.get_seq_length() == prefix.length
    by_hand = generate(model, tok, prompts, prefix=prefix, max_new_tokens=8, progress=False)
    assert [g.token_ids for g in by_hand] == [
        g.token_ids for g in generate(model, tok, prompts, sp, max_new_tokens=8, progress=False, cache_prefix=False)
    ]
    with pytest.raises(ValueError, match="head tokens"):
        generate(model, tok, ["no template here"], prefix=prefix, progress=False)
    with pytest.raises(ValueError, match="nothing to cache"):
        PrefixCache(model)


def test_prefix_cache_matches_uncached_generation(tiny_lm, prompts):
    """The cached prefix gives the same greedy tokens as prepending P to every batch, in batches of mixed
    lengths, and the shared cache is not modified by decoding (a second call gives the same result)."""
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=5, init="normal", sigma=0.5)
    uncached = generate(model, tok, prompts, sp, max_new_tokens=8, batch_size=2, progress=False, cache_prefix=False)
    assert [g.token_ids for g in generate(model, tok, prompts, sp, max_new_tokens=8, batch_size=2, progress=False)] == [
        g.token_ids for g in uncached
    ]  # generate caches a cacheable adapter's prefix itself
    prefix = PrefixCache(model, sp)
    assert prefix.length == 5 and prefix.cache.get_seq_length() == 5
    for _ in range(2):
        cached = generate(model, tok, prompts, prefix=prefix, max_new_tokens=8, batch_size=2, progress=False)
        assert [g.token_ids for g in cached] == [g.token_ids for g in uncached]
    assert prefix.cache.get_seq_length() == 5
    with pytest.raises(ValueError, match="not both"):
        generate(model, tok, prompts, sp, prefix=prefix, progress=False)
