"""Batched generation with an optional adapter: greedy (evaluation) or seeded sampling (teacher samples).

A plain decoding loop over the model's KV cache, so the soft prefix, left padding and position ids are handled
exactly as in training (see ``adapters.embed_inputs``). Prompts are sorted by length into batches to limit
padding and returned in the input order.

``PrefixCache`` holds a soft prompt's keys and values, computed once: every request then only prefills its own
tokens (DESIGN §7), with the same positions and attention pattern, so greedy outputs match the uncached path.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from rich.progress import Progress
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from .adapters import Adapter, AdapterError, attached, embed_inputs


@dataclass
class Generation:
    """One response: its text (special tokens removed) and token ids (ending with EOS when the model stopped)."""

    text: str
    token_ids: list[int]

    @classmethod
    def from_ids(cls, tokenizer: PreTrainedTokenizerBase, token_ids: list[int]) -> Generation:
        """The response of ``token_ids``: its text decoded without special tokens and stripped."""
        return cls(tokenizer.decode(token_ids, skip_special_tokens=True).strip(), token_ids)


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Already-templated prompts -> left-padded (input_ids, attention_mask), no extra special tokens."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


class PrefixCache:
    """The keys and values of an input-side adapter's prefix (the soft prompt), computed once per model.

    A batch then runs as ``[P | pad | prompt]`` with P from the cache at positions 0..k-1 and the prompt at
    k, k+1, ...: the positions and visible tokens of the uncached layout ``[pad | P | prompt]``.
    """

    @torch.inference_mode()
    def __init__(self, model: PreTrainedModel, adapter: Adapter):
        self.length = adapter.prefix_length
        if not adapter.prefix_cacheable:
            raise AdapterError(f"this {adapter.method!r} adapter has no fixed leading prefix to cache")
        d = model.get_input_embeddings().embedding_dim
        empty = torch.zeros(1, 0, d, device=model.device, dtype=model.dtype)
        no_ids = torch.zeros(1, 0, dtype=torch.long, device=model.device)
        embeds, mask = adapter(empty, no_ids, no_ids)
        pos = torch.arange(self.length, device=model.device)[None]
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        self.cache: Cache = out.past_key_values

    def expand(self, batch_size: int) -> Cache:
        """A fresh copy of the cache for ``batch_size`` rows (decoding appends to it in place)."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(batch_size)
        return cache


def _prefill_inputs(
    model: PreTrainedModel, adapter: Adapter | None, prefix: PrefixCache | None, ids: torch.Tensor, mask: torch.Tensor
) -> dict:
    """Model inputs for the prompt tokens: through the adapter, or after the cached prefix."""
    if prefix is None:
        embeds, mask, pos = embed_inputs(model, adapter, ids, mask)
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos}
    pos = prefix.length + (mask.long().cumsum(-1) - 1).clamp(min=0)
    return {
        "inputs_embeds": model.get_input_embeddings()(ids),
        "attention_mask": torch.cat([mask.new_ones(len(ids), prefix.length), mask], dim=1),
        "position_ids": pos,
        "past_key_values": prefix.expand(len(ids)),
    }


@torch.inference_mode()
def decode_steps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    adapter: Adapter | None = None,
    prefix: PrefixCache | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    stop_at_eos: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, [B], one step at a time (pad once a row has ended) until all end.

    Sampling draws from ``generator``, or from ``generator[i]`` for row i when it is a list (one per row).
    ``stop_at_eos=False`` always runs ``max_new_tokens`` steps (fixed-length timing in ``bench/``)."""
    with attached(model, adapter):  # model-side adapters stay hooked in for the whole decoding loop
        device = model.device
        ids, mask = tokenize_prompts(tokenizer, prompts, device)
        inputs = _prefill_inputs(model, adapter, prefix, ids, mask)
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        mask, next_pos = inputs["attention_mask"], inputs["position_ids"][:, -1:] + 1
        forced = adapter.forced_response(mask) if adapter is not None else None  # (rows, r*): the gate's refusals
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1, :].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                if isinstance(generator, list):
                    draws = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generator, strict=True)]
                    nxt = torch.cat(draws).to(device)
                else:
                    nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(device)
            else:
                nxt = logits.argmax(-1)
            if forced is not None and step < len(forced[1]):
                nxt = torch.where(forced[0], forced[1][step], nxt)
            nxt = torch.where(done, torch.full_like(nxt, tokenizer.pad_token_id), nxt)
            yield nxt
            if stop_at_eos:
                done |= nxt == tokenizer.eos_token_id
                if forced is not None and step == len(forced[1]) - 1:
                    done |= forced[0]  # r* ends with the end-of-turn token, which need not be EOS
            if bool(done.all()):
                return
            mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
            out = model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            next_pos = next_pos + 1


def _generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    adapter: Adapter | None,
    prefix: PrefixCache | None,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator | list[torch.Generator] | None,
) -> list[list[int]]:
    """Token ids per prompt, cut after the first EOS."""
    steps = list(decode_steps(model, tokenizer, prompts, adapter, prefix, max_new_tokens, temperature, generator))
    rows = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in prompts]
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def stream(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    adapter: Adapter | None = None,
    *,
    prefix: PrefixCache | None = None,
    max_new_tokens: int = 256,
) -> Iterator[str]:
    """Greedy response to one templated prompt, yielded as text pieces as soon as each token is decoded."""
    ids: list[int] = []
    shown = ""
    for nxt in decode_steps(model, tokenizer, [prompt], adapter, prefix, max_new_tokens):
        if int(nxt[0]) == tokenizer.eos_token_id:
            return
        ids.append(int(nxt[0]))
        text = tokenizer.decode(ids, skip_special_tokens=True)
        yield text[len(shown) :]
        shown = text


#: Padded prompt tokens per batch of greedy decoding (``generate``'s ``max_batch_tokens``): a batch of long prompts is
#: split so that one long prompt does not pad 15 short ones to its length. On the quick preset's dev prompts (35-719
#: tokens), prefill + 10 tokens took 27 s instead of 42 s, the same responses (README: Measured).
GREEDY_BATCH_TOKENS = 2048


def length_batches(lengths: list[int], order: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """``order`` (indices into ``lengths``, shortest first) cut into consecutive batches of at most ``batch_size``
    and, with ``max_tokens``, at most ``max_tokens`` padded tokens (batch size x its longest length; a prompt longer
    than that alone)."""
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else None
        full = last is None or len(last) == batch_size
        if not full and max_tokens is not None:
            full = max(lengths[i], *(lengths[j] for j in last)) * (len(last) + 1) > max_tokens
        if full:
            batches.append([i])
        else:
            last.append(i)
    return batches


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    adapter: Adapter | None = None,
    *,
    prefix: PrefixCache | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    max_batch_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int | list[int] = 0,
    desc: str = "generate",
    progress: bool = True,
    cache_prefix: bool = True,
) -> list[Generation]:
    """Generate one response per templated prompt; ``temperature=0`` is greedy, otherwise seeded sampling.

    ``seed`` seeds one generator for the whole call, or, as a list, one generator per prompt: a prompt's sample
    then does not depend on the other prompts of the call (up to float rounding of the batch's padding).

    Pass either ``adapter`` (applied to every batch) or ``prefix`` (its cached keys and values reused). An adapter
    whose prefix is the same for every request (a soft prompt before everything) is turned into a ``PrefixCache``
    once per call, so no batch recomputes its k positions (the outputs are those of the uncached path, which
    ``cache_prefix=False`` takes). Prompts are batched by length (characters), ``batch_size`` at a time and, with
    ``max_batch_tokens``, at most that many padded prompt tokens per batch (``length_batches``; greedy callers pass
    ``GREEDY_BATCH_TOKENS``; sampling keeps plain batches, whose random stream the teacher cache is keyed on).
    Returns ``Generation`` objects in the order of ``prompts``.
    """
    if adapter is not None and prefix is not None:
        raise ValueError("pass the adapter or its PrefixCache, not both")
    if cache_prefix and adapter is not None and adapter.prefix_cacheable and prompts:
        prefix, adapter = PrefixCache(model, adapter), None
    if isinstance(seed, list) and len(seed) != len(prompts):
        raise ValueError(f"{len(seed)} seeds for {len(prompts)} prompts; give one seed per prompt, or one int")
    shared = None if isinstance(seed, list) else torch.Generator().manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    lengths = [0] * len(prompts)  # prompt tokens, needed for the budget only
    if max_batch_tokens is not None and prompts:
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    results: list[Generation | None] = [None] * len(prompts)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(desc, total=len(prompts))
        for idx in length_batches(lengths, order, batch_size, max_batch_tokens):
            gen = shared if shared is not None else [torch.Generator().manual_seed(seed[i]) for i in idx]
            rows = _generate_batch(
                model, tokenizer, [prompts[i] for i in idx], adapter, prefix, max_new_tokens, temperature, gen
            )
            for i, row in zip(idx, rows, strict=True):
                results[i] = Generation.from_ids(tokenizer, row)
            bar.advance(task, len(idx))
    return results  # type: ignore[return-value]
