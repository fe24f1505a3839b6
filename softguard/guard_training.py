"""softguard's default guard of a run: its training data, its metrics, and the cache of trained guards.

The guard (``guards.EncoderGuard`` on a MiniLM-style backbone) is fine-tuned on the train split's prompts (harmful
= 1) and, with ``guard.pairs`` > 0, on (prompt, response) pairs built from the run's LLM (``guard_pairs``: DESIGN
§2, response-level guard); it is calibrated on the dev split (``calibrate_on_dev``) and measured on dev, test and
held-out pairs (``guard_metrics``, saved as ``guard_eval.json`` beside it).

A trained guard is an artifact of the cache, ``<cache>/guards/<guard_key>``, keyed by everything it is trained,
calibrated and measured on: ``train_or_reuse`` copies it into a run when the cache holds it, and trains it there
first otherwise. ``softguard guard train`` / ``guard eval`` use the same functions.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from . import assets, fingerprint
from .config import RunConfig
from .data import Splits, contextual_prompts, seeded_sample
from .guards import (
    EncoderGuard,
    Guard,
    GuardConfig,
    GuardTrainConfig,
    binary_metrics,
    evaluate_guard,
    fit_calibration,
    train_guard,
)
from .io import atomic_dir, write_json
from .refusal import is_refusal
from .system import DEFAULT_REFUSAL, SafeSystem

console = Console(stderr=True)

#: Version of what ``train_or_reuse`` trains and caches: bump it when the guard's training recipe changes in code.
GUARD_CACHE_FORMAT = 3  # 2: the guard reads the max_length it trained on (was 256), and truncation; 3: fused AdamW
#: Refusals paired with harmful prompts as "safe" (prompt, response) examples for the guard, cycled.
GUARD_REFUSALS = (
    DEFAULT_REFUSAL,
    "I can't help with that request.",
    "I'm sorry, but I cannot assist with that.",
    "I won't help with this because it could cause harm.",
    "As an AI, I can't provide that information.",
)


@dataclass
class GuardPairs:
    """(prompt, response) -> label (1 = unsafe) examples for the response-level side of the guard."""

    prompts: list[str]
    responses: list[str]
    labels: list[int]

    def subset(self, keep: list[int]) -> GuardPairs:
        return GuardPairs(*([xs[i] for i in keep] for xs in (self.prompts, self.responses, self.labels)))


def guard_pairs(cfg: RunConfig, splits: Splits, system: SafeSystem) -> GuardPairs:
    """Pairs built from ``cfg.guard.pairs`` train prompts per class (DESIGN §2, response-level guard):

    harmful prompt + the base model's response -> unsafe (safe when that response is a refusal);
    harmful prompt + a refusal (``GUARD_REFUSALS``, cycled) -> safe; benign prompt + base response -> safe;
    benign prompt + a refusal (over-refusal: unhelpful, not unsafe) -> safe. The four kinds teach a guard reading
    (prompt, response) to judge the response: a refusal is safe whatever was asked, an answer is unsafe only when the
    request was harmful.
    Base responses are one seeded sample per prompt at temperature 1 (whatever the teacher's), cached like the
    teacher's."""
    harm = seeded_sample([e for e in splits.train if e.harmful], cfg.guard.pairs, cfg.seed)
    benign = seeded_sample([e for e in splits.train if not e.harmful], cfg.guard.pairs, cfg.seed)
    prompts = [e.text for e in harm + benign]
    samples = system.base_samples(
        prompts,
        num_samples=1,
        max_new_tokens=cfg.guard.pair_tokens,
        temperature=1.0,  # the guard's own, like pair_tokens: a teacher setting never changes the system
        seed=cfg.seed,
        batch_size=cfg.gen_batch_size,
    )
    text = {p: samples[p][0].text for p in prompts}
    pairs = GuardPairs([], [], [])
    for i, e in enumerate(harm):
        pairs.prompts += [e.text, e.text]
        pairs.responses += [text[e.text], GUARD_REFUSALS[i % len(GUARD_REFUSALS)]]
        pairs.labels += [int(not is_refusal(text[e.text])), 0]
    for i, e in enumerate(benign):
        pairs.prompts += [e.text, e.text]
        pairs.responses += [text[e.text], GUARD_REFUSALS[i % len(GUARD_REFUSALS)]]
        pairs.labels += [0, 0]
    return pairs


def split_pairs(pairs: GuardPairs, seed: int, held_out: float = 0.2) -> tuple[GuardPairs, GuardPairs]:
    """Split by prompt (all pairs of a prompt on one side): (train, held-out) for the guard's pair metrics."""
    unique = sorted(set(pairs.prompts))
    random.Random(seed).shuffle(unique)
    test = set(unique[: round(held_out * len(unique))])
    idx = range(len(pairs.prompts))
    return (
        pairs.subset([i for i in idx if pairs.prompts[i] not in test]),
        pairs.subset([i for i in idx if pairs.prompts[i] in test]),
    )


def guard_metrics(guard: Guard, splits: Splits, tau: float, pairs: GuardPairs | None = None) -> dict[str, Any]:
    """AUROC / precision / recall / F1 at tau on the dev split, on all test sets together, and on held-out
    (prompt, response) pairs when given. The test entry also holds ``flagged``: per test set, the share of its
    prompts the guard flags (u >= tau), i.e. the prompt-level system's refusal rate before the LLM's own refusals."""
    test = [e for exs in splits.test.values() for e in exs]
    out = {"dev": evaluate_guard(guard, [e.text for e in splits.dev], [int(e.harmful) for e in splits.dev], tau)}
    u = guard.score([e.text for e in test])
    out["test"] = binary_metrics(u, torch.tensor([int(e.harmful) for e in test]), tau)
    flags, start = (u >= tau).tolist(), 0
    out["test"]["flagged"] = {}
    for name, exs in splits.test.items():
        out["test"]["flagged"][name] = sum(flags[start : start + len(exs)]) / max(1, len(exs))
        start += len(exs)
    if pairs is not None and pairs.prompts:
        u = guard.score(pairs.prompts, pairs.responses)
        out["pairs (held out)"] = binary_metrics(u, torch.tensor(pairs.labels), tau) | refusal_preference(pairs, u)
    return out


def refusal_preference(pairs: GuardPairs, u: torch.Tensor) -> dict[str, float | int]:
    """Given the guard's scores ``u`` [N] of ``pairs``: over the harmful prompts the base model answered (an unsafe
    pair and a refusal pair), the share where the refusal scores safer, u(x, refusal) < u(x, answer). A guard used
    as a reward (``reinforce``, R = 1 - u) teaches refusing only where this holds."""
    by_prompt: dict[str, dict[int, float]] = {}
    for prompt, label, score in zip(pairs.prompts, pairs.labels, u.tolist(), strict=True):
        by_prompt.setdefault(prompt, {})[label] = score
    both = [s for s in by_prompt.values() if set(s) == {0, 1}]
    preferred = sum(s[0] < s[1] for s in both) / len(both) if both else float("nan")
    return {"refusal_preferred": preferred, "n_refusal_pairs": len(both)}


def train_split_guard(
    splits: Splits,
    out_dir: str | Path,
    guard_cfg: GuardConfig,
    gcfg: GuardTrainConfig,
    pairs: GuardPairs | None = None,
    device: str | torch.device = "cpu",
) -> EncoderGuard:
    """Fine-tune ``guard_cfg.backbone`` on ``device`` on the train split's prompts (harmful = 1), on
    ``guard_cfg.contexts`` of them per class under a passage (``contextual_prompts``) and, when given, on 80 % of
    ``pairs`` (the other 20 % measure it); calibrate it on the dev split (``calibrate_on_dev``); save the guard and
    its ``guard_eval.json`` (at ``guard_cfg.tau``) in ``out_dir``. The guard pools and truncates as ``guard_cfg``
    says and reads the ``gcfg.max_length`` tokens it was trained on."""
    train = splits.train + contextual_prompts(splits.train, guard_cfg.contexts, gcfg.seed)
    texts, responses = [e.text for e in train], [None] * len(train)
    labels = [int(e.harmful) for e in train]
    held_out = None
    if pairs is not None:
        train_pairs, held_out = split_pairs(pairs, gcfg.seed)
        texts, responses = texts + train_pairs.prompts, responses + train_pairs.responses
        labels = labels + train_pairs.labels
    guard = EncoderGuard.from_backbone(
        guard_cfg.backbone,
        max_length=gcfg.max_length,
        seed=gcfg.seed,
        pooling=guard_cfg.pooling,
        truncation=guard_cfg.truncation,
    ).to(device)
    history = train_guard(guard, texts, labels, gcfg, pairs=responses if pairs is not None else None)
    guard.calibration = calibrate_on_dev(guard, splits)
    with atomic_dir(out_dir) as tmp:  # the guard and its guard_eval.json appear together (a kill leaves neither)
        guard.save_pretrained(tmp, metadata={"history": history, "pairs": 0 if pairs is None else len(pairs.labels)})
        write_json(tmp / "guard_eval.json", guard_metrics(guard, splits, guard_cfg.tau, held_out))
    return guard


def calibrate_on_dev(guard: EncoderGuard, splits: Splits) -> tuple[float, float]:
    """Platt scaling of the guard's logits on the dev split's prompts (``guards.fit_calibration``): tau = 0.5 on
    the calibrated u is then the threshold chosen on dev. The dev split's threshold metrics in guard_eval.json are
    therefore in-sample; its AUROC and the test and held-out-pair metrics are not."""
    guard.calibration = (1.0, 0.0)
    u = guard.score([e.text for e in splits.dev]).clamp(1e-7, 1 - 1e-7)
    return fit_calibration(torch.logit(u.double()), torch.tensor([float(e.harmful) for e in splits.dev]))


def guard_key(cfg: RunConfig, splits: Splits, pairs: GuardPairs | None, gcfg: GuardTrainConfig) -> str:
    """The content key of the guard a run would train: sha256 of its backbone's files, the training config,
    pooling, tau, and every text and label it trains, calibrates and is measured on (the pairs include the LLM's
    responses, so a different LLM gives a different key)."""
    backbone = assets.path("minilm") if cfg.guard.backbone == "minilm" else Path(cfg.guard.backbone)
    texts = {
        split: [(e.text, e.harmful) for e in exs]
        for split, exs in (("train", splits.train), ("dev", splits.dev), *sorted(splits.test.items()))
    }
    parts = {
        "backbone": fingerprint.dir_sha256(backbone) if backbone.is_dir() else str(backbone),
        "train": asdict(gcfg),
        "pooling": cfg.guard.pooling,
        "truncation": cfg.guard.truncation,
        "contexts": cfg.guard.contexts,
        "tau": cfg.guard.tau,
        "splits": texts,
        "pairs": None if pairs is None else asdict(pairs),
        "format": GUARD_CACHE_FORMAT,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def train_or_reuse(cfg: RunConfig, splits: Splits, system: SafeSystem, out_dir: Path) -> EncoderGuard:
    """softguard's guard of ``cfg`` (``cfg.guard``'s training fields) in ``out_dir``, on the system's LLM's device:
    the one already there, else a copy of ``<cache>/guards/<guard_key>``, trained there first (on
    ``splits.train``'s prompts and, with ``cfg.guard.pairs`` > 0, the system's LLM's pairs) when the cache lacks it.
    A run (or test) with the same guard inputs thus trains it once."""
    device = system.model.device
    if (out_dir / "guard_config.json").is_file():
        return EncoderGuard.from_pretrained(out_dir).to(device)
    g = cfg.guard
    gcfg = GuardTrainConfig(epochs=g.epochs, lr=g.lr, max_length=g.max_length, seed=cfg.seed, precision=g.precision)
    pairs = guard_pairs(cfg, splits, system) if cfg.guard.pairs > 0 else None
    cached = assets.cache_root() / "guards" / guard_key(cfg, splits, pairs, gcfg)
    if (cached / "guard_config.json").is_file():
        console.print(f"guard: reusing {cached}")
    else:
        train_split_guard(splits, cached, cfg.guard, gcfg, pairs, device)
    with atomic_dir(out_dir) as tmp:  # the run keeps its own copy: chat --system, export and reports read RUN/guard
        shutil.copytree(cached, tmp, dirs_exist_ok=True)
    return EncoderGuard.from_pretrained(out_dir).to(device)
