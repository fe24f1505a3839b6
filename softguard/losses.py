"""Training objectives as strategies: the examples each one trains on and the loss of a batch of them.

``train`` runs one path for every objective: ``STRATEGIES[cfg.objective]`` (``get_strategy``) builds the examples
(``Strategy.examples``, called by the pipeline), prepares them once before the first step (``Strategy.prepare``)
and gives the loss of a batch (``Strategy.loss``). A new objective is one ``Strategy`` subclass in the registry.

- ``Distillation`` (``tv``, ``kl``, ``rkl``, ``jsd``): the soft teacher p_sys = (1 - u) pi + u onehot(r*) split into
  its keep and refuse branches (docs/objectives.md §1-2). Each teacher item (prompt x, base samples r_k with guard
  scores u_k, rho) becomes up to K + 1 examples: ``(x, r_k, weight (1 - u_k)/K, soft targets from the frozen
  model)`` and ``(x, r* + EOS, weight rho, one-hot targets)``; examples below ``min_weight`` are dropped. The keep
  branch's targets are computed once before training, top-K + rest (``teacher_targets``, docs/objectives.md §5),
  or, with ``teacher_topk`` None, by the frozen model at every step.
- ``SFT``: cross-entropy on the deployed system's hard labels (``sft_examples``): r* when u >= tau, else the
  cached base response r_1 (docs/objectives.md §6).
- ``Reinforce``: K samples from the student per prompt, online; reward 1 - u(x, r) from a response-level guard;
  leave-one-out baseline; optional KL(q || pi) penalty (docs/reinforce.md).

A distillation or sft batch: ``collate`` left-pads ``prompt + target`` rows and lists the loss positions; the
student (decoder with the adapter, LM head only at those positions; the rows' common beginning runs once,
``loss_hidden``) gives log q [N, V]; ``loss_terms`` the per-token divergences D [N]; the loss is
(1/B) sum_i weight_i sum_t w_t D_it with w the token weights (``token_weights``, docs/objectives.md §3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from accelerate.utils import gather_object
from rich.progress import Progress
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import assets, fingerprint
from .adapters import Adapter, can_share_prefix, decoder_hidden, shared_prefix_hidden
from .generation import generate, read_topk, shared_head, write_topk
from .guards import Guard
from .objectives import (
    OBJECTIVES,
    Objective,
    coarse_grain,
    get_objective,
    kl_onehot,
    reinforce_loss,
    reverse_kl,
    rloo_advantages,
    tv,
    tv_onehot,
)
from .system import SafeSystem, TeacherItem
from .train_config import TrainConfig


@dataclass
class DistillExample:
    """One training sequence: templated prompt ids, target response ids, branch weight, target kind, whether its
    target is the refusal r* (the refuse branch, or a refusal label of ``sft``), and for a soft example the
    teacher's targets once computed (``teacher_targets``): the frozen model's top-K token ids [n, K] at its n
    target positions and its log-probabilities coarse-grained onto them plus the rest [n, K + 1]."""

    prompt_ids: list[int]
    target_ids: list[int]
    weight: float
    soft: bool  # True: teacher = frozen model's distributions; False: one-hot targets (r*, or sft's labels)
    refusal: bool = False  # the target is r*: ``Strategy.strata`` balances the batches on it
    teacher_ids: torch.Tensor | None = field(default=None, repr=False, compare=False)
    teacher_logp: torch.Tensor | None = field(default=None, repr=False, compare=False)


@dataclass
class RLPrompt:
    """A ``reinforce`` training prompt: the raw user prompt (what the guard reads), templated, and its ids."""

    prompt: str
    templated: str
    prompt_ids: list[int]


def build_examples(items: list[TeacherItem], system: SafeSystem, min_weight: float = 1e-3) -> list[DistillExample]:
    """Teacher items -> weighted examples of the keep branch ((1 - u_k)/K) and the refuse branch (rho)
    (docs/objectives.md §2)."""
    refusal = system.refusal_ids()
    out = []
    for it, prompt in zip(items, system.template([it.prompt for it in items]), strict=True):
        ids = system.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        targets = it.targets or [(None, None)] * len(it.samples)  # the sampling pass's top-K, when it kept them
        for r, u, t in zip(it.samples, it.sample_u, targets, strict=True):
            w = (1.0 - u) / len(it.samples)
            if w >= min_weight and r:
                out.append(DistillExample(ids, r, w, soft=True, teacher_ids=t[0], teacher_logp=t[1]))
        if it.rho >= min_weight:
            out.append(DistillExample(ids, refusal, it.rho, soft=False, refusal=True))
    return out


def sft_examples(items: list[TeacherItem], system: SafeSystem) -> list[DistillExample]:
    """Hard guard labels as targets: r* + EOS when the system flags x (u >= tau), else the base response r_1
    (docs/objectives.md §6).

    u is the first sample's score u(x, r_1) for a response-level guard, u(x) for a prompt-level one (an item
    without samples was skipped because u(x) was high, so it is flagged)."""
    refusal = system.refusal_ids()
    out = []
    for it, prompt in zip(items, system.template([it.prompt for it in items]), strict=True):
        ids = system.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        u = it.sample_u[0] if it.samples else max(it.rho, system.tau)
        refuses = u >= system.tau or not it.samples[0]
        out.append(DistillExample(ids, refusal if refuses else it.samples[0], 1.0, soft=False, refusal=refuses))
    return out


def rl_prompts(prompts: list[str], system: SafeSystem) -> list[RLPrompt]:
    """Raw prompts -> ``RLPrompt``s with their templated token ids."""
    return [
        RLPrompt(p, t, system.tokenizer(t, add_special_tokens=False)["input_ids"])
        for p, t in zip(prompts, system.template(prompts), strict=True)
    ]


def token_weights(length: int, first_tokens: int, first_token_weight: float) -> torch.Tensor:
    """w_t = first_token_weight for t < first_tokens, else 1; normalised to sum to 1 (docs/objectives.md §3).
    -> [length]"""
    w = torch.ones(length)
    w[:first_tokens] = first_token_weight
    return w / w.sum()


def collate(batch: list[DistillExample], pad_id: int, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Left-pad ``prompt + target`` and list the loss positions.

    Returns input_ids/attention_mask [B, T]; for the N loss terms of the batch: ``row`` [N], ``pos`` [N]
    (index of the position that predicts the token, in unprefixed coordinates), ``target`` [N], ``tok_w`` [N]
    (token weight times example weight / B, docs/objectives.md §3), ``soft`` [N] (bool) and ``decision`` [N]
    (bool): with ``cfg.decision_weight`` lambda > 0, every example's first target token is listed a second time,
    after all the others, as a decision term (cross-entropy in ``loss_terms``, tok_w = lambda * weight / B). With
    ``cfg.shared_prefix``: ``head`` (int), the number of leading tokens that every row shares (``shared_head``), for
    the forward to run once. When the soft examples carry their teacher targets: ``teacher_ids`` [M, K] and
    ``teacher_logp`` [M, K + 1], M = the number of soft positions, in the order of ``soft``.
    """
    seqs = [ex.prompt_ids + ex.target_ids for ex in batch]
    t_max = max(map(len, seqs))
    ids = torch.full((len(batch), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros(len(batch), t_max, dtype=torch.long)
    row, pos, target, tok_w, soft = [], [], [], [], []
    decision: list[tuple[int, int, int, float]] = []  # (row, pos, first target token, tok_w)
    for i, (ex, seq) in enumerate(zip(batch, seqs, strict=True)):
        ids[i, t_max - len(seq) :] = torch.tensor(seq)
        mask[i, t_max - len(seq) :] = 1
        n = len(ex.target_ids)
        start = t_max - n - 1  # position predicting the first target token
        row += [i] * n
        pos += range(start, start + n)
        target += ex.target_ids
        tok_w.append(token_weights(n, cfg.first_tokens, cfg.first_token_weight) * ex.weight / len(batch))
        soft += [ex.soft] * n
        if cfg.decision_weight > 0 and n:
            decision.append((i, start, ex.target_ids[0], cfg.decision_weight * ex.weight / len(batch)))
    n_tokens = len(row)
    for i, p, y, w in decision:
        row.append(i)
        pos.append(p)
        target.append(y)
        soft.append(False)
        tok_w.append(torch.tensor([w]))
    as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    out = {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "row": as_long(row),
        "pos": as_long(pos),
        "target": as_long(target),
        "tok_w": torch.cat(tok_w).to(device),
        "soft": torch.tensor(soft, device=device),
        "decision": torch.arange(len(row), device=device) >= n_tokens,
    }
    if cfg.shared_prefix:
        out["head"] = shared_head([ex.prompt_ids for ex in batch])
    cached = [ex for ex in batch if ex.soft and ex.teacher_ids is not None]
    if cached:
        if len(cached) < sum(ex.soft for ex in batch):
            raise ValueError("some soft examples of the batch have teacher targets and some not; compute them for all")
        out["teacher_ids"] = torch.cat([ex.teacher_ids for ex in cached]).long().to(device)
        out["teacher_logp"] = torch.cat([ex.teacher_logp for ex in cached]).to(device)
    return out


def loss_hidden(
    model: PreTrainedModel, adapter: nn.Module | None, batch: dict[str, Any], select: torch.Tensor | None = None
) -> torch.Tensor:
    """The decoder's final hidden states [M, d] at the batch's loss positions (all N, or where ``select`` [N] is
    True), running only the rows that own one.

    With ``head`` in the batch and ``can_share_prefix(model)``, the rows' common first ``head`` tokens and the
    adapter's inserted positions run once, the rows' own tokens packed after them (``shared_prefix_hidden``);
    otherwise every row runs whole, left padded (``decoder_hidden``, where a loss position p is at p + P, P the
    adapter's inserted positions, which all come before the loss positions)."""
    row, pos = batch["row"], batch["pos"]
    if select is not None:
        row, pos = row[select], pos[select]
    rows = torch.unique(row)  # sorted
    ids, mask, local = batch["input_ids"][rows], batch["attention_mask"][rows], torch.searchsorted(rows, row)
    head = batch.get("head")
    if head is None or not can_share_prefix(model):
        base = getattr(adapter, "module", adapter)  # DDP wraps the adapter as ``.module``
        hidden = decoder_hidden(model, adapter, ids, mask)  # [b, P + T, d]
        return hidden[local, pos + (base.prefix_length if base is not None else 0)]
    own = (mask == 0).sum(-1) + head  # [b]: index of each row's first token after the shared head
    start = int(own[0])
    tails = [r[s:] for r, s in zip(ids, own.tolist(), strict=True)]
    hidden = shared_prefix_hidden(model, adapter, ids[0, start - head : start], tails)  # [sum of lengths, d]
    lengths = ids.shape[1] - own
    return hidden[(torch.cumsum(lengths, 0) - lengths)[local] + pos - own[local]]


def head_logp(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """log_softmax of the LM head at ``hidden`` [M, d] -> [M, V] float32, outside any autocast: in bfloat16 (8
    significant bits) a logit near 20 would be rounded to a multiple of 1/8, and each probability by up to 6 %."""
    head = model.get_output_embeddings()
    with torch.autocast(hidden.device.type, enabled=False):
        return torch.log_softmax(head(hidden.to(head.weight.dtype)).float(), -1)


def student_logp(model: PreTrainedModel, adapter: nn.Module | None, batch: dict[str, Any]) -> torch.Tensor:
    """log q(. | x, r_<t) [N, V] at the batch's loss positions: decoder with the adapter, LM head only there (then
    the adapter's ``override_logp``: the gate's one-hot refusals)."""
    logp = head_logp(model, loss_hidden(model, adapter, batch))
    base = getattr(adapter, "module", adapter)  # DDP wraps the adapter as ``.module``
    return base.override_logp(model, batch, logp) if base is not None else logp


@torch.no_grad()
def base_logp(
    model: PreTrainedModel, adapter: nn.Module | None, batch: dict[str, Any], select: torch.Tensor
) -> torch.Tensor:
    """log pi(. | x, r_<t) [M, V] of the frozen model at the loss positions ``select`` (bool [N]): model-side
    adapters bypassed, input-side ones left out."""
    base = getattr(adapter, "module", adapter)  # DDP wraps the adapter as ``.module``
    with base.bypassed() if base is not None else nullcontext():
        hidden = loss_hidden(model, None, batch, select)
    return head_logp(model, hidden)


@torch.no_grad()
def teacher_targets(
    model: PreTrainedModel,
    adapter: Adapter | None,
    examples: list[DistillExample],
    cfg: TrainConfig,
    pad_id: int,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    cache_dir: str | Path | None = None,
) -> list[DistillExample]:
    """The keep branch's targets, computed once: ``examples`` with every soft one given the frozen model's top-K
    tokens (K = ``cfg.teacher_topk``) at its n target positions, ``teacher_ids`` [n, K] (int32), and its
    distributions coarse-grained onto those K tokens plus one bucket for the rest, ``teacher_logp`` [n, K + 1]
    (``objectives.coarse_grain``, docs/objectives.md §5), on the CPU. Batches of ``cfg.batch_size`` soft examples
    sorted by length; process ``rank`` of ``world`` (DDP) computes batches rank, rank + world, ... and gathers the
    others' (the same batches as in one process, so the same numbers). ``progress``: show a progress bar.

    A soft example that already carries targets of this K (those the teacher's sampling pass kept,
    ``SafeSystem.teacher`` with ``topk``) keeps them: they are the same distributions up to float rounding. The
    others' targets are cached under ``<cache>/targets/<key>.safetensors`` (``cache_dir``, else the default cache),
    keyed by what determines them (``_targets_key``), so a rerun on the same examples reads them back."""
    k = min(cfg.teacher_topk, model.get_output_embeddings().weight.shape[0])
    carried = lambda ex: ex.teacher_ids is not None and ex.teacher_ids.shape[-1] == k  # noqa: E731
    length = lambda i: len(examples[i].prompt_ids) + len(examples[i].target_ids)  # noqa: E731
    soft = sorted((i for i, ex in enumerate(examples) if ex.soft and not carried(ex)), key=length)
    if not soft:
        return examples
    key = _targets_key(model, examples, soft, cfg, cache_dir)
    path = assets.cache_root(cache_dir) / "targets" / f"{key}.safetensors"
    stored = read_topk(path, [len(examples[i].target_ids) for i in soft])
    if stored is not None:
        done = dict(zip(soft, stored, strict=True))
    else:
        done = _compute_targets(model, adapter, examples, soft, cfg, pad_id, rank, world, progress)
        if rank == 0 and len(done) == len(soft):
            write_topk(path, [done[i] for i in soft])
    return [
        replace(ex, teacher_ids=done[i][0], teacher_logp=done[i][1]) if i in done else ex
        for i, ex in enumerate(examples)
    ]


def _compute_targets(
    model: PreTrainedModel,
    adapter: Adapter | None,
    examples: list[DistillExample],
    soft: list[int],
    cfg: TrainConfig,
    pad_id: int,
    rank: int,
    world: int,
    progress: bool,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``teacher_targets``' (ids [n, K], coarse log-probs [n, K + 1]) of the examples ``soft`` (index -> targets):
    those of this process's batches, gathered from every process under DDP."""
    chunks = [soft[s : s + cfg.batch_size] for s in range(0, len(soft), cfg.batch_size)]
    done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with Progress(disable=not progress, transient=True) as bar:
        for chunk in bar.track(chunks[rank::world], description=f"teacher top-{cfg.teacher_topk}"):
            batch = collate([examples[i] for i in chunk], pad_id, cfg, model.device)
            logp = base_logp(model, adapter, batch, batch["soft"])  # [M, V]
            ids = logp.topk(min(cfg.teacher_topk, logp.shape[-1]), dim=-1).indices  # [M, K]
            coarse = coarse_grain(logp, ids)  # [M, K + 1]
            sizes = [len(examples[i].target_ids) for i in chunk]
            for i, k_ids, k_logp in zip(chunk, ids.split(sizes), coarse.split(sizes), strict=True):
                done[i] = (k_ids.int().cpu(), k_logp.cpu())
    if world > 1:
        done = {i: v for part in gather_object([done]) for i, v in part.items()}
    return done


def _targets_key(
    model: PreTrainedModel,
    examples: list[DistillExample],
    soft: list[int],
    cfg: TrainConfig,
    cache_dir: str | Path | None,
) -> str:
    """The cache key of ``teacher_targets``: the frozen model's weights (``fingerprint.model_sha256``), dtype and
    device type, K, the batch size and the shared-prefix setting (they group and lay out the batches, which moves
    the numbers by float rounding), and the token ids of the soft examples in the order they are batched."""
    settings = {"topk": cfg.teacher_topk, "batch_size": cfg.batch_size, "shared_prefix": cfg.shared_prefix}
    payload = ([examples[i].prompt_ids, examples[i].target_ids] for i in soft)
    return fingerprint.forward_key(model, settings, payload, cache_dir)


def loss_terms(
    model: PreTrainedModel, adapter: nn.Module | None, batch: dict[str, Any], obj: Objective
) -> dict[str, torch.Tensor]:
    """Per-token divergences D [N] of the student against the teacher targets, plus the TV for monitoring.

    One-hot rows (r*, or every row for ``sft``) use ``obj.onehot``; soft rows use ``obj.soft`` against the frozen
    model's own distributions (the keep branch): the cached ``teacher_logp`` over {its top-K tokens, the rest},
    against which the student is coarse-grained the same way (each divergence then a lower bound of the full one,
    see ``objectives.coarse_grain``), or else computed here over the whole vocabulary, without gradient
    (docs/objectives.md §2, §4-5). Decision terms (``collate``) are the cross-entropy -log q(y), whatever ``obj``,
    and count 0 in the TV: the monitored TV stays that of the responses (docs/objectives.md §3)."""
    student = student_logp(model, adapter, batch)
    d = obj.onehot(student, batch["target"])
    tvs = tv_onehot(student.detach(), batch["target"])
    soft = batch["soft"]
    if soft.any():
        if "teacher_logp" in batch:
            q, p = coarse_grain(student[soft], batch["teacher_ids"]), batch["teacher_logp"]
        else:
            q, p = student[soft], base_logp(model, adapter, batch, soft)
        d = d.clone()
        d[soft] = obj.soft(q, p)
        tvs = tvs.clone()
        tvs[soft] = tv(q.detach(), p)
    decision = batch["decision"]
    if decision.any():
        d, tvs = d.clone(), tvs.clone()
        d[decision] = kl_onehot(student[decision], batch["target"][decision])
        tvs[decision] = 0.0
    return {"d": d, "tv": tvs}


@dataclass(frozen=True)
class Step:
    """One optimizer step as a strategy's ``loss`` sees it, besides its rows."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: Adapter  # the adapter itself: it samples (``Reinforce``), in eval mode
    student: nn.Module  # the same adapter as it carries the gradient (DDP-wrapped under ``accelerate launch``)
    cfg: TrainConfig
    index: int  # the step number, from 0
    positions: Sequence[int]  # the rows' positions in the step's global batch
    reward_guard: Guard | None = None  # scores (prompt, response) pairs (``Reinforce``)


E = TypeVar("E")  # a strategy's example type


class Strategy(ABC, Generic[E]):
    """A training objective: the examples it trains on and the loss of a batch of them.

    ``train`` calls ``check`` and then ``prepare`` once, and ``loss`` at every step on this process's rows of the
    step's batch; the pipeline builds the examples with ``examples``. Register a new objective in ``STRATEGIES``
    under its name (``TrainConfig.objective``)."""

    name: str
    uses_teacher = True  # False: examples from the bare prompts, the teacher is not sampled
    uses_targets = False  # True: ``prepare`` gives soft examples top-K teacher targets (``TrainConfig.teacher_topk``)
    needs_reward_guard = False  # True: ``train`` needs a ``reward_guard`` (it is ``Step.reward_guard``)

    def check(self, cfg: TrainConfig) -> None:
        """Raise ``ValueError`` when ``cfg``'s parameters cannot train this objective (default: any can)."""

    @abstractmethod
    def examples(self, system: SafeSystem, prompts: list[str], items: list[TeacherItem], cfg: TrainConfig) -> list[E]:
        """The training examples for ``prompts`` and their teacher ``items`` (empty unless ``uses_teacher``)."""

    def prepare(
        self,
        model: PreTrainedModel,
        adapter: Adapter,
        examples: list[E],
        cfg: TrainConfig,
        pad_id: int,
        rank: int = 0,
        world: int = 1,
        progress: bool = False,
    ) -> list[E]:
        """``examples`` made ready to train on, once before the first step, on each of the ``world`` processes
        (default: as they are)."""
        return examples

    def strata(self, examples: list[E]) -> list[bool]:
        """The group of each example that every batch holds in its overall share (``training.batch_at``, with
        ``TrainConfig.stratify``); default: one group."""
        return [False] * len(examples)

    @abstractmethod
    def loss(self, step: Step, rows: list[E]) -> dict[str, torch.Tensor]:
        """Scalar means over ``rows``: "loss" (with gradient), then what the history logs beside it."""


class Distillation(Strategy[DistillExample]):
    """The soft teacher's keep and refuse branches, each token compared by the divergence ``divergence``
    (``objectives.OBJECTIVES``): loss = sum_i,t tok_w D_it, logged with the TV likewise (docs/objectives.md §2-3)."""

    uses_targets = True

    def __init__(self, divergence: str):
        self.name = self.divergence = divergence

    def check(self, cfg: TrainConfig) -> None:
        """jsd needs 0 < beta < 1."""
        if self.divergence == "jsd" and not 0 < cfg.jsd_beta < 1:
            raise ValueError(f"jsd needs 0 < beta < 1, got {cfg.jsd_beta}")

    def examples(
        self, system: SafeSystem, prompts: list[str], items: list[TeacherItem], cfg: TrainConfig
    ) -> list[DistillExample]:
        """The keep and refuse branches' weighted examples (``build_examples``)."""
        return build_examples(items, system, cfg.min_weight)

    def prepare(
        self,
        model: PreTrainedModel,
        adapter: Adapter,
        examples: list[DistillExample],
        cfg: TrainConfig,
        pad_id: int,
        rank: int = 0,
        world: int = 1,
        progress: bool = False,
    ) -> list[DistillExample]:
        """The keep branch's teacher targets, top-K + rest (``teacher_targets``), unless ``cfg.teacher_topk`` is
        None (then the frozen model runs at every step)."""
        if cfg.teacher_topk is None:
            return examples
        return teacher_targets(model, adapter, examples, cfg, pad_id, rank, world, progress)

    def strata(self, examples: list[DistillExample]) -> list[bool]:
        """The refuse branch (r*) and the keep branch."""
        return [ex.refusal for ex in examples]

    def loss(self, step: Step, rows: list[DistillExample]) -> dict[str, torch.Tensor]:
        """The loss sum_i,t tok_w D and the TV likewise, each a weighted mean over ``rows``."""
        batch = collate(rows, step.tokenizer.pad_token_id, step.cfg, step.model.device)
        terms = loss_terms(step.model, step.student, batch, get_objective(self.divergence, step.cfg.jsd_beta))
        return {"loss": (terms["d"] * batch["tok_w"]).sum(), "tv": (terms["tv"] * batch["tok_w"]).sum()}


class SFT(Distillation):
    """Fine-tuning on the deployed system's hard labels: every example one-hot, so the KL is the cross-entropy
    -log q(y_t) (docs/objectives.md §6)."""

    def __init__(self) -> None:
        self.name, self.divergence = "sft", "kl"

    def examples(
        self, system: SafeSystem, prompts: list[str], items: list[TeacherItem], cfg: TrainConfig
    ) -> list[DistillExample]:
        """r* + EOS where the system flags the prompt, else its base response (``sft_examples``)."""
        return sft_examples(items, system)


class Reinforce(Strategy[RLPrompt]):
    """REINFORCE on the guard's reward 1 - u(x, r) with a leave-one-out baseline and a KL(q || pi) penalty
    (docs/reinforce.md); samples from the student online, so it needs no teacher."""

    name = "reinforce"
    uses_teacher = False
    needs_reward_guard = True

    def check(self, cfg: TrainConfig) -> None:
        """The leave-one-out baseline needs K >= 2 samples per prompt."""
        if cfg.rl_samples < 2:
            raise ValueError(f"reinforce needs rl_samples >= 2 for its leave-one-out baseline, got {cfg.rl_samples}")

    def examples(
        self, system: SafeSystem, prompts: list[str], items: list[TeacherItem], cfg: TrainConfig
    ) -> list[RLPrompt]:
        """The bare prompts, templated (``rl_prompts``)."""
        return rl_prompts(prompts, system)

    def loss(self, step: Step, rows: list[RLPrompt]) -> dict[str, torch.Tensor]:
        """One REINFORCE-with-leave-one-out batch (docs/reinforce.md): K samples r_ik ~ q(.|x_i), rewards
        R_ik = 1 - u(x_i, r_ik), advantages A = rloo(R), and

            loss = -mean_ik A_ik * mean_t log q(r_ik,t | x_i, r_ik,<t) + kl_coef * mean_ik mean_t KL(q || pi)_t

        Sample k of the prompt at ``step.positions[i]`` in the step's global batch has its own seed, from (seed,
        step, position, k): a prompt's samples do not depend on the other prompts of the call, nor on which process
        draws them. ``step.adapter`` samples (eval mode, no gradient); ``step.student`` carries the gradient.
        Returns the loss, the mean reward and the mean KL."""
        model, tokenizer, cfg, k = step.model, step.tokenizer, step.cfg, step.cfg.rl_samples
        assert step.reward_guard is not None  # ``train`` checks ``needs_reward_guard``
        repeated = [p for p in rows for _ in range(k)]  # prompt i's K samples are rows i*K .. i*K + K-1
        base_seed = (cfg.seed * 1_000_003 + step.index) * 1_000_003
        was_training = step.adapter.training
        step.adapter.eval()
        with torch.autocast(model.device.type, enabled=False):  # sampling and reward in fp32 under any precision
            gens = generate(
                model,
                tokenizer,
                [p.templated for p in repeated],
                step.adapter,
                max_new_tokens=cfg.rl_max_new_tokens,
                temperature=cfg.rl_temperature,
                seed=[base_seed + j * k + s for j in step.positions for s in range(k)],
                progress=False,
            )
            u = step.reward_guard.score([p.prompt for p in repeated], [g.text for g in gens]).float()
        step.adapter.train(was_training)
        rewards = (1.0 - u).reshape(len(rows), k)
        adv = rloo_advantages(rewards).flatten()
        examples = [
            DistillExample(p.prompt_ids, g.token_ids or [tokenizer.eos_token_id], 1.0, soft=True)
            for p, g in zip(repeated, gens, strict=True)
        ]
        plain = replace(cfg, first_token_weight=1.0, decision_weight=0.0)  # per-sample means of log q, nothing else
        batch = collate(examples, tokenizer.pad_token_id, plain, model.device)
        logq = student_logp(model, step.student, batch)
        logq_y = logq.gather(-1, batch["target"][:, None]).squeeze(-1)
        w = batch["tok_w"] * len(examples)  # per-sample token weights, each row summing to 1
        seq_logp = torch.zeros(len(examples), device=logq.device).index_add(0, batch["row"], w * logq_y)
        loss = reinforce_loss(seq_logp, adv.to(logq.device))
        kl = torch.zeros((), device=logq.device)
        if cfg.kl_coef > 0:
            kl = (batch["tok_w"] * reverse_kl(logq, base_logp(model, step.student, batch, batch["soft"]))).sum()
            loss = loss + cfg.kl_coef * kl
        return {"loss": loss, "reward": rewards.mean(), "kl": kl.detach()}


#: The training objectives by name (``TrainConfig.objective``).
STRATEGIES: dict[str, Strategy[Any]] = {
    **{name: Distillation(name) for name in OBJECTIVES},
    "sft": SFT(),
    "reinforce": Reinforce(),
}
TRAIN_OBJECTIVES = tuple(STRATEGIES)


def get_strategy(name: str) -> Strategy[Any]:
    """The strategy registered as ``name``; ``ValueError`` with the choices when there is none."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def check_objective(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` with the choices when ``cfg.objective`` (or its parameters) cannot train."""
    get_strategy(cfg.objective).check(cfg)
