"""The two-model system (chat LLM + guard) that softguard distills, and the teacher quantities it supplies.

Notation (DESIGN §2): x a prompt, r a response, pi the frozen LLM, u the guard's P(unsafe), r* the refusal.

- prompt-level guard:   p_sys(r|x) = (1 - u(x)) pi(r|x) + u(x) 1[r = r*]
- response-level guard: p_sys(r|x) = (1 - u(x, r)) pi(r|x) + rho(x) 1[r = r*],  rho(x) = E_{r'~pi} u(x, r')

The deployed system replaces u by 1[u >= tau] (``respond``); training uses the soft u by default (``teacher``).
Base samples r_k ~ pi(.|x), and the base model's greedy responses, are generated once per (model weights, tokenizer,
prompts, settings) and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import assets, fingerprint
from .generation import BATCH_SIZE, DECODING_VERSION, Generation, generate, read_topk, write_topk
from .guards import Guard
from .io import read_json, write_json
from .models import chat_prompt, end_of_turn_id

DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."


@dataclass
class SystemResponse:
    """What the deployed system shows: the base response, or r* when the guard flags (u >= tau)."""

    text: str
    u: float
    flagged: bool


@dataclass
class TeacherItem:
    """Teacher quantities for one prompt: base samples r_k with guard scores u_k, and rho = mean_k u_k.

    For a prompt-level guard every u_k equals u(x). ``samples`` is empty when rho is ~1 (no keep branch).
    """

    prompt: str
    rho: float
    samples: list[list[int]] = field(default_factory=list)
    sample_u: list[float] = field(default_factory=list)
    #: per sample, when ``teacher`` was given ``topk``: the coarse-grained distributions it was drawn from, (ids
    #: [n, K], log-probs [n, K + 1]) (``Generation``), the keep branch's teacher targets without another forward
    targets: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False, compare=False)


class SafeSystem:
    """Chat LLM + guard + refusal: ``respond`` runs the deployed (hard) system, ``teacher`` supplies the soft one.

    ``guard`` may be None until it is trained: ``base_samples`` needs only the LLM (the guard's (prompt, response)
    training pairs come from it)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        guard: Guard | None,
        refusal: str = DEFAULT_REFUSAL,
        tau: float = 0.5,
        mode: str = "prompt",
    ):
        if mode not in ("prompt", "response"):
            raise ValueError(f"guard mode must be 'prompt' or 'response', got {mode!r}")
        self.model, self.tokenizer, self.guard = model, tokenizer, guard
        self.refusal, self.tau, self.mode = refusal, tau, mode

    def template(self, prompts: list[str]) -> list[str]:
        return [chat_prompt(self.tokenizer, p) for p in prompts]

    def refusal_ids(self) -> list[int]:
        """r* as response tokens, ending with the end-of-turn token so the student learns to stop."""
        ids = self.tokenizer(self.refusal, add_special_tokens=False)["input_ids"]
        return [*ids, end_of_turn_id(self.tokenizer)]

    def respond(
        self,
        prompts: list[str],
        base: list[Generation] | None = None,
        *,
        max_new_tokens: int = 64,
        batch_size: int = BATCH_SIZE,
    ) -> list[SystemResponse]:
        """Deployed system on user prompts. ``base`` (greedy base responses to the same prompts) is reused when
        given; otherwise the LLM runs where needed (prompt-level: only on prompts the guard passes)."""
        if self.mode == "prompt":
            u = self.guard.score(prompts).tolist()
            need = [i for i, ui in enumerate(u) if ui < self.tau]
        else:
            need = list(range(len(prompts)))
        if base is None:
            gen = generate(
                self.model,
                self.tokenizer,
                self.template([prompts[i] for i in need]),
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                desc="system",
            )
            texts = dict(zip(need, [g.text for g in gen], strict=True))
        else:
            texts = {i: base[i].text for i in need}
        if self.mode == "response":
            u = self.guard.score(prompts, [texts[i] for i in range(len(prompts))]).tolist()
        return [
            SystemResponse(self.refusal if ui >= self.tau else texts[i], ui, ui >= self.tau) for i, ui in enumerate(u)
        ]

    def teacher(
        self,
        prompts: list[str],
        *,
        num_samples: int = 1,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        seed: int = 0,
        batch_size: int = BATCH_SIZE,
        skip_above: float = 0.99,
        cache_dir: str | Path | None = None,
        topk: int | None = None,
    ) -> list[TeacherItem]:
        """Soft teacher quantities for training prompts (DESIGN §4).

        Prompt-level: rho = u(x), base samples only for prompts with u(x) < ``skip_above``.
        Response-level: K samples for every prompt, u_k = u(x, r_k), rho = mean_k u_k.
        ``topk``: each sample also keeps the top-K of the distributions it was drawn from (``TeacherItem.targets``).
        """
        u = self.guard.score(prompts).tolist() if self.mode == "prompt" else [0.0] * len(prompts)
        need = [p for p, ui in zip(prompts, u, strict=True) if ui < skip_above]
        settings = {"num_samples": num_samples, "max_new_tokens": max_new_tokens, "temperature": temperature}
        samples = self.base_samples(need, seed=seed, batch_size=batch_size, cache_dir=cache_dir, topk=topk, **settings)
        items = []
        for p, ui in zip(prompts, u, strict=True):
            gens = samples.get(p, [])
            rs = [g.token_ids for g in gens]
            targets = [(g.topk_ids, g.topk_logp) for g in gens] if topk is not None else []
            if self.mode == "prompt":
                items.append(TeacherItem(p, ui, rs, [ui] * len(rs), targets))
            else:
                uk = self.guard.score([p] * len(rs), [self.tokenizer.decode(r, skip_special_tokens=True) for r in rs])
                items.append(TeacherItem(p, float(uk.mean()), rs, uk.tolist(), targets))
        return items

    def greedy(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        batch_size: int = BATCH_SIZE,
        cache_dir: str | Path | None = None,
        desc: str = "base",
    ) -> list[Generation]:
        """The base model's greedy responses to (untemplated) ``prompts``, generated once and cached like the
        samples (``base_samples``: a pass at temperature 0), so evaluation and dev sets cost their generation once
        per model, prompts and settings."""
        return self._sample_pass(
            prompts, self._fingerprints(cache_dir), max_new_tokens, 0.0, 0, batch_size, cache_dir, desc
        )

    def base_samples(
        self,
        prompts: list[str],
        *,
        num_samples: int,
        max_new_tokens: int,
        temperature: float,
        seed: int,
        batch_size: int = BATCH_SIZE,
        cache_dir: str | Path | None = None,
        topk: int | None = None,
    ) -> dict[str, list[Generation]]:
        """K samples r_k ~ pi(.|x) per prompt; sample k is drawn with seed + k. With ``topk``, each keeps the
        top-K of the distributions its tokens were drawn from (``Generation``), cached beside the samples.

        Each pass over the prompts is cached on its own under ``<cache>/teacher/<key>.json``, so an interrupted
        stage keeps its finished passes and a run with K = 2 reuses the pass of a run with K = 1. The key hashes
        what determines the samples, by content (``fingerprint``): the model's weights and dtype, the tokenizer
        and chat template, the templated prompts, max_new_tokens, temperature, the pass's seed, the batch size
        (the sampler's random stream runs across batches, so batches of another size draw other samples) and
        ``generation.DECODING_VERSION``.
        """
        content = self._fingerprints(cache_dir)
        out: dict[str, list[Generation]] = {p: [] for p in prompts}
        for k in range(num_samples):
            desc = f"base samples {k + 1}/{num_samples}"
            gens = self._sample_pass(
                prompts, content, max_new_tokens, temperature, seed + k, batch_size, cache_dir, desc, topk
            )
            for p, g in zip(prompts, gens, strict=True):
                out[p].append(g)
        return out

    def _fingerprints(self, cache_dir: str | Path | None) -> dict[str, str]:
        """What the base model's responses depend on besides the prompts and settings, by content: its weights,
        dtype, tokenizer and chat template."""
        return {
            "model": fingerprint.model_sha256(self.model, cache_dir),
            "dtype": str(self.model.dtype),
            "tokenizer": fingerprint.tokenizer_sha256(self.tokenizer),
        }

    def _sample_pass(
        self,
        prompts: list[str],
        content: dict[str, str],
        max_new_tokens: int,
        temperature: float,
        seed: int,
        batch_size: int,
        cache_dir: str | Path | None,
        desc: str,
        topk: int | None = None,
    ) -> list[Generation]:
        """One response per prompt (sampled; greedy at temperature 0), read from or written to the teacher cache;
        ``content``: the model's, dtype's and tokenizer's fingerprints. With ``topk``, their coarse-grained
        distributions too, cached beside them (``<key>.top<K>.safetensors``); a pass cached without them runs again
        (the same responses: its key fixes them) to keep them, so they always come from the pass that drew the
        responses."""
        if not prompts:
            return []
        templated = self.template(prompts)
        key = {
            **content,
            "prompts": hashlib.sha256(json.dumps(templated).encode()).hexdigest(),
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
            "batch_size": batch_size,
            "decoding": DECODING_VERSION,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        cache = assets.cache_root(cache_dir) / "teacher" / f"{digest}.json"
        kept = cache.with_name(f"{digest}.top{topk}.safetensors")
        if cache.is_file():
            samples = read_json(cache)["samples"]
            stored = None if topk is None else read_topk(kept, [len(r) for r in samples])
            if topk is None or stored is not None:
                return [
                    Generation.from_ids(self.tokenizer, r, t)
                    for r, t in zip(samples, stored or [None] * len(samples), strict=True)
                ]
        gens = generate(
            self.model,
            self.tokenizer,
            templated,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            temperature=temperature,
            seed=seed,
            desc=desc,
            topk=topk,
        )
        if topk is not None:  # first: the samples' file is what marks the pass as done
            write_topk(kept, [(g.topk_ids, g.topk_logp) for g in gens])
        write_json(cache, {"key": {**key, "n_prompts": len(prompts)}, "samples": [g.token_ids for g in gens]})
        return gens


def hard_labels(items: list[TeacherItem], tau: float) -> list[TeacherItem]:
    """The deployed system's labels as a teacher: u_k -> 1[u_k >= tau], rho -> mean_k 1[u_k >= tau]
    (for a prompt without samples, 1[rho >= tau])."""
    out = []
    for it in items:
        hard = [float(x >= tau) for x in it.sample_u]
        rho = sum(hard) / len(hard) if hard else float(it.rho >= tau)
        out.append(TeacherItem(it.prompt, rho, it.samples, hard, it.targets))
    return out
