"""Batched generation with an optional adapter: greedy (evaluation) or seeded sampling (teacher samples).

A plain decoding loop over the model's KV cache, so the soft prefix, left padding and position ids are handled
exactly as in training (see ``adapters.embed_inputs``). Prompts are sorted by length into batches to limit
padding and returned in the input order.

``PrefixCache`` holds a soft prompt's keys and values, computed once: every request then only prefills its own
tokens (DESIGN §7), with the same positions and attention pattern, so greedy outputs match the uncached path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import Progress
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from .adapters import Adapter, AdapterError, attached, embed_inputs
from .io import read_tensors, write_tensors
from .objectives import coarse_grain


@dataclass
class Generation:
    """One response: its text (special tokens removed) and token ids (ending with EOS when the model stopped), and,
    when ``generate`` was asked for its ``topk``, the distributions its n tokens were drawn from, coarse-grained
    (``objectives.coarse_grain``): their top-K token ids [n, K] (int32) and log-probabilities of those K plus the
    rest [n, K + 1], at temperature 1 whatever the sampling temperature."""

    text: str
    token_ids: list[int]
    topk_ids: torch.Tensor | None = field(default=None, repr=False, compare=False)
    topk_logp: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_ids(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        token_ids: list[int],
        topk: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Generation:
        """The response of ``token_ids``: its text decoded without special tokens and stripped (``topk``: its
        coarse-grained distributions, ids and log-probs)."""
        text = tokenizer.decode(token_ids, skip_special_tokens=True).strip()
        return cls(text, token_ids, *(topk or (None, None)))


def write_topk(path: str | Path, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Coarse-grained distributions, (ids [n, K], log-probs [n, K + 1]) per response, as one safetensors file:
    "ids" [sum n, K] and "logp" [sum n, K + 1], in order (``read_topk`` splits them back)."""
    write_tensors(path, {"ids": torch.cat([i for i, _ in parts]), "logp": torch.cat([lp for _, lp in parts])})


def read_topk(path: str | Path, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """What ``write_topk`` wrote at ``path``, split per response of ``sizes`` tokens:
    (ids [n, K], log-probs [n, K + 1]) each; None when the file is missing, damaged or of other sizes (its caller
    then computes it again)."""
    tensors = read_tensors(path)
    if tensors is None:
        return None
    ids, logp = tensors.get("ids"), tensors.get("logp")
    n = sum(sizes)
    if ids is None or logp is None or len(ids) != n or len(logp) != n or logp.shape[-1] != ids.shape[-1] + 1:
        return None
    return list(zip(ids.split(sizes), logp.split(sizes), strict=True))


#: Version of how ``generate`` computes its tokens, in the keys of cached responses (``SafeSystem``): a change that
#: may move a sampled or near-tie token bumps it, so a cache never mixes responses of two ways. 2: the prompts' common
#: head runs once (``PrefixCache``); batches of at most BATCH_TOKENS padded prompt tokens also when sampling.
DECODING_VERSION = 2


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Already-templated prompts -> left-padded (input_ids, attention_mask), no extra special tokens."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def shared_head(prompts: list[list[int]]) -> int:
    """Length of the prompts' longest common prefix, capped so that every prompt keeps at least one token of its
    own: every loss position (from a prompt's last token on) then lies after it, and every prompt has a token to
    prefill after a ``PrefixCache`` of that head."""
    cap, first = min(map(len, prompts)) - 1, prompts[0]
    n = 0
    while n < cap and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


class PrefixCache:
    """The keys and values of what every request begins with, computed once per model: an input-side adapter's
    prefix (the soft prompt, P positions) followed by ``head``, token ids every prompt starts with (the chat
    template's fixed system turn: ``generate`` finds it with ``shared_head``).

    A batch then runs as ``[P + head | pad | rest]`` with the cached positions 0..L-1 (L = P + len(head)) and each
    prompt's remaining tokens at L, L+1, ...: the positions and visible tokens of the uncached layout
    ``[pad | P | head | rest]``, so the outputs are the uncached path's up to float rounding.
    """

    @torch.inference_mode()
    def __init__(self, model: PreTrainedModel, adapter: Adapter | None = None, head: list[int] | None = None):
        if adapter is not None and not adapter.prefix_cacheable:
            raise AdapterError(f"this {adapter.method!r} adapter has no fixed leading prefix to cache")
        self.head = list(head or [])
        ids = torch.tensor([self.head], dtype=torch.long, device=model.device)  # [1, len(head)]
        embeds, mask, pos = embed_inputs(model, adapter, ids, torch.ones_like(ids))
        self.length = embeds.shape[1]
        if not self.length:
            raise ValueError("nothing to cache: give a prefix adapter or head tokens")
        out = model.get_decoder()(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True)
        self.cache: Cache = out.past_key_values  # the decoder alone: no LM head on positions nothing reads

    def expand(self, batch_size: int) -> Cache:
        """A fresh copy of the cache for ``batch_size`` rows (decoding appends to it in place)."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(batch_size)
        return cache

    def tokenize(
        self, tokenizer: PreTrainedTokenizerBase, prompts: list[str], device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Templated prompts -> left-padded (input_ids, attention_mask) of the tokens after ``head``: each prompt
        tokenized whole, as ``tokenize_prompts`` does, then its first len(head) ids, which must be ``head``,
        dropped."""
        n = len(self.head)
        rows = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        if any(r[:n] != self.head or len(r) == n for r in rows):
            raise ValueError("a prompt does not begin with this PrefixCache's head tokens or has no token after them")
        enc = tokenizer.pad({"input_ids": [r[n:] for r in rows]}, padding_side="left", return_tensors="pt")
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)


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
    on_logits: Callable[[torch.Tensor], None] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, [B], one step at a time (pad once a row has ended) until all end.

    Sampling draws from ``generator``, or from ``generator[i]`` for row i when it is a list (one per row).
    ``stop_at_eos=False`` always runs ``max_new_tokens`` steps (fixed-length timing in ``bench/``). ``on_logits``
    sees each step's next-token logits [B, V] (float32) before the token is chosen."""
    with attached(model, adapter):  # model-side adapters stay hooked in for the whole decoding loop
        device = model.device
        ids, mask = (
            tokenize_prompts(tokenizer, prompts, device)
            if prefix is None
            else prefix.tokenize(tokenizer, prompts, device)
        )
        inputs = _prefill_inputs(model, adapter, prefix, ids, mask)
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        mask, next_pos = inputs["attention_mask"], inputs["position_ids"][:, -1:] + 1
        forced = adapter.forced_response(mask) if adapter is not None else None  # (rows, r*): the gate's refusals
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1, :].float()
            if on_logits is not None:
                on_logits(logits)
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
    topk: int | None = None,
) -> list[Generation]:
    """The responses to ``prompts``, their token ids cut after the first EOS; with ``topk``, also their
    coarse-grained distributions (``Generation``)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: top-K ids [B, K], coarse log-probs [B, K + 1]

    def keep_topk(logits: torch.Tensor) -> None:
        logp = torch.log_softmax(logits, -1)
        ids = logp.topk(min(topk, logp.shape[-1]), dim=-1).indices
        seen.append((ids.int().cpu(), coarse_grain(logp, ids).cpu()))

    hook = keep_topk if topk is not None else None
    steps = list(
        decode_steps(model, tokenizer, prompts, adapter, prefix, max_new_tokens, temperature, generator, on_logits=hook)
    )
    rows = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in prompts]
    eos = tokenizer.eos_token_id
    rows = [row[: row.index(eos) + 1] if eos in row else row for row in rows]
    if topk is None:
        return [Generation.from_ids(tokenizer, row) for row in rows]
    ids, logp = (torch.stack([s[j] for s in seen], dim=1) for j in (0, 1))  # [B, steps, K], [B, steps, K + 1]
    return [
        Generation.from_ids(tokenizer, row, (ids[b, : len(row)], logp[b, : len(row)])) for b, row in enumerate(rows)
    ]


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


#: ``generate``'s batches: at most BATCH_SIZE prompts and BATCH_TOKENS padded prompt tokens, so that one long prompt
#: does not pad many short ones to its length. Decoding a batch of 64 reads the weights once per step for 4x the
#: rows of 16: on the demo's 288 evaluation prompts greedy decoding is 1.30x as fast as in plain batches of 16, 1.40x
#: with the template head cached, with the same responses (BENCHMARKS.md: Batched generation).
BATCH_SIZE = 64
BATCH_TOKENS = 4096


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
    batch_size: int = BATCH_SIZE,
    max_batch_tokens: int | None = BATCH_TOKENS,
    temperature: float = 0.0,
    seed: int | list[int] = 0,
    desc: str = "generate",
    progress: bool = True,
    cache_prefix: bool = True,
    topk: int | None = None,
) -> list[Generation]:
    """Generate one response per templated prompt; ``temperature=0`` is greedy, otherwise seeded sampling. With
    ``topk``, each ``Generation`` also keeps the top-K of the distributions its tokens were drawn from, coarse-grained
    (the teacher targets of ``losses.teacher_targets``, without another forward pass).

    ``seed`` seeds one generator for the whole call, or, as a list, one generator per prompt: a prompt's sample
    then does not depend on the other prompts of the call, up to float rounding of the batch's padding (which can
    move a draw where two tokens' cumulative probabilities meet).

    Pass either ``adapter`` (applied to every batch) or ``prefix`` (its cached keys and values reused). Without a
    model-side adapter, what every request begins with, the prefix of a soft prompt before everything and the token
    ids all ``prompts`` start with (``shared_head``: the chat template's system turn), becomes a ``PrefixCache``
    once per call, so no batch recomputes those positions (the outputs are those of the uncached path up to float
    rounding; ``cache_prefix=False`` takes that path). Prompts are batched by length (characters): at most
    ``batch_size`` prompts and, unless ``max_batch_tokens`` is None, that many padded prompt tokens per batch
    (``length_batches``). Greedy responses do not depend on the batching (up to float rounding); samples drawn with
    one int seed do, as its random stream runs across the batches.
    Returns ``Generation`` objects in the order of ``prompts``.
    """
    if adapter is not None and prefix is not None:
        raise ValueError("pass the adapter or its PrefixCache, not both")
    if isinstance(seed, list) and len(seed) != len(prompts):
        raise ValueError(f"{len(seed)} seeds for {len(prompts)} prompts; give one seed per prompt, or one int")
    token_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    if cache_prefix and prefix is None and (adapter is None or adapter.prefix_cacheable) and prompts:
        head = token_ids[0][: shared_head(token_ids)]
        if head or adapter is not None:
            prefix, adapter = PrefixCache(model, adapter, head), None
    shared = None if isinstance(seed, list) else torch.Generator().manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    lengths = [len(ids) for ids in token_ids]  # prompt tokens, for the budget
    results: list[Generation | None] = [None] * len(prompts)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(desc, total=len(prompts))
        for idx in length_batches(lengths, order, batch_size, max_batch_tokens):
            gen = shared if shared is not None else [torch.Generator().manual_seed(seed[i]) for i in idx]
            batch = [prompts[i] for i in idx]
            rows = _generate_batch(model, tokenizer, batch, adapter, prefix, max_new_tokens, temperature, gen, topk)
            for i, row in zip(idx, rows, strict=True):
                results[i] = row
            bar.advance(task, len(idx))
    return results  # type: ignore[return-value]
