"""Training of an adapter against the two-model system, top to bottom in one loop.

Three kinds of objective (DESIGN §4), chosen by ``TrainConfig.objective``:

- distillation (``tv``, ``kl``, ``rkl``, ``jsd``): the soft teacher's keep and refuse branches, below;
- ``sft``: cross-entropy on the deployed system's hard labels (``sft_examples``): r* when u >= tau, else the
  cached base response r_1;
- ``reinforce``: K samples from the student per prompt, online; reward 1 - u(x, r) from a response-level guard;
  leave-one-out baseline; optional KL(q || pi) penalty (``reinforce_terms``).

Each teacher item (prompt x, base samples r_k with guard scores u_k, rho) becomes up to K + 1 examples:
``(x, r_k, weight (1 - u_k)/K, soft targets from the frozen model)`` and ``(x, r* + EOS, weight rho, one-hot
targets)``; examples with weight below ``min_weight`` are dropped. A step:

1. left-pad a batch of ``prompt + target`` sequences;
2. student: decoder with the adapter, LM head applied only at the positions that predict target tokens. The
   tokens every row begins with (the chat template's system turn) and the soft prompt run once for the batch,
   each row's own tokens packed after them without padding (``shared_prefix``; exact, see
   ``adapters.shared_prefix_hidden``);
3. teacher (keep examples only): the frozen model's distributions along the base samples, computed once before
   training (``teacher_targets``: top-K tokens + the rest's mass, ``teacher_topk``), or, with ``teacher_topk``
   None, by the same decoder without the adapter at every step, under no_grad;
4. loss = (1/B) sum_i weight_i * sum_t w_t D_it / sum_t w_t, with D the objective and w_t the token weights;
5. AdamW step on the adapter's parameters only (the LLM is frozen), linear warmup + cosine decay.

Every ``eval_every`` steps: held-out loss and TV on dev examples, and greedy dev generation whose refusals are
compared with the system's decisions (agreement). The best-agreeing adapter is kept in ``best/``; ``last/`` holds
adapter + optimizer state for ``resume``. The batch at step s depends only on (seed, s), and the global RNG
(LoRA's dropout) is reseeded from (seed, s, rank) at every step, so a resumed run continues exactly where it
stopped.

Under ``accelerate launch`` (DDP) the same config trains the same adapter as one process: ``batch_size`` is the
global batch, each of the W processes takes rows ``rank::W`` of it, and each process's mean loss is weighted by its
share of the batch so that the gradients DDP averages are those of the global mean (``shard``); the logged loss is
summed over the processes. Dev evaluation and checkpoints run on the main process.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapters import (
    Adapter,
    AdapterError,
    attached,
    can_share_prefix,
    decoder_hidden,
    load_adapter,
    shared_prefix_hidden,
)
from .checks import require
from .generation import generate
from .guards import Guard
from .io import atomic_dir, read_json, write_json
from .objectives import (
    OBJECTIVES,
    Objective,
    coarse_grain,
    get_objective,
    reinforce_loss,
    reverse_kl,
    rloo_advantages,
    tv,
    tv_onehot,
)
from .refusal import is_refusal
from .system import SafeSystem, TeacherItem


@dataclass
class TrainConfig:
    """Training hyper-parameters (DESIGN §4 and §8)."""

    objective: str = "tv"  # tv | kl | rkl | jsd | sft | reinforce
    jsd_beta: float = 0.5
    steps: int = 60
    batch_size: int = 8  # examples (reinforce: prompts) per optimizer step, over all processes together
    lr: float = 1e-2
    weight_decay: float = 0.0
    warmup_steps: int = 5
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    first_tokens: int = 4  # the first response tokens decide refusal vs compliance ...
    first_token_weight: float = 4.0  # ... so they weigh this much more than later tokens
    min_weight: float = 1e-3
    eval_every: int = 15
    dev_max_new_tokens: int = 16
    seed: int = 0
    shared_prefix: bool = True  # run the rows' common beginning (soft prompt + template head) once per batch
    teacher_topk: int | None = 256  # keep-branch targets: the teacher's top-K + rest, once; None: exact, every step
    # reinforce only
    rl_samples: int = 2  # K samples per prompt (leave-one-out baseline needs K >= 2)
    rl_max_new_tokens: int = 24
    rl_temperature: float = 1.0
    kl_coef: float = 0.05  # weight of the per-token KL(q || pi) penalty

    def __post_init__(self) -> None:
        """Refuse a value that cannot train (the objective itself is checked by ``check_objective``)."""
        require(
            self,
            {
                "steps": ">= 1",
                "batch_size": ">= 1",
                "lr": "> 0",
                "weight_decay": ">= 0",
                "warmup_steps": ">= 0",
                "min_lr_ratio": "[0, 1]",
                "max_grad_norm": "> 0",
                "first_tokens": ">= 0",
                "first_token_weight": "> 0",
                "min_weight": "[0, 1)",
                "eval_every": ">= 1",
                "dev_max_new_tokens": ">= 1",
                "rl_samples": ">= 1",
                "rl_max_new_tokens": ">= 1",
                "rl_temperature": "> 0",
                "kl_coef": ">= 0",
            },
        )
        if self.teacher_topk is not None and self.teacher_topk < 1:
            raise ValueError(f"teacher_topk must be at least 1 (or None: the exact teacher), got {self.teacher_topk}")


#: Objectives that do not distil the teacher's distributions (DESIGN §4, direct optimization).
DIRECT_OBJECTIVES = ("sft", "reinforce")
TRAIN_OBJECTIVES = (*OBJECTIVES, *DIRECT_OBJECTIVES)


def check_objective(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` with the choices when ``cfg.objective`` (or its parameters) cannot train."""
    if cfg.objective not in TRAIN_OBJECTIVES:
        raise ValueError(f"unknown objective {cfg.objective!r}; choose one of: {', '.join(TRAIN_OBJECTIVES)}")
    if cfg.objective == "reinforce" and cfg.rl_samples < 2:
        raise ValueError(f"reinforce needs rl_samples >= 2 for its leave-one-out baseline, got {cfg.rl_samples}")
    if cfg.objective == "jsd" and not 0 < cfg.jsd_beta < 1:
        raise ValueError(f"jsd needs 0 < beta < 1, got {cfg.jsd_beta}")


@dataclass
class DistillExample:
    """One training sequence: templated prompt ids, target response ids, branch weight, target kind, and for a
    soft example the teacher's targets once computed (``teacher_targets``): the frozen model's top-K token ids
    [n, K] at its n target positions and its log-probabilities coarse-grained onto them plus the rest [n, K + 1]."""

    prompt_ids: list[int]
    target_ids: list[int]
    weight: float
    soft: bool  # True: teacher = frozen model's distributions; False: one-hot targets (r*)
    teacher_ids: torch.Tensor | None = field(default=None, repr=False, compare=False)
    teacher_logp: torch.Tensor | None = field(default=None, repr=False, compare=False)


@dataclass
class RLPrompt:
    """A ``reinforce`` training prompt: the raw user prompt (what the guard reads), templated, and its ids."""

    prompt: str
    templated: str
    prompt_ids: list[int]


@dataclass
class TrainState:
    step: int = 0
    best_step: int = -1
    best_score: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)


def build_examples(items: list[TeacherItem], system: SafeSystem, min_weight: float = 1e-3) -> list[DistillExample]:
    """Teacher items -> weighted examples of the keep branch ((1 - u_k)/K) and the refuse branch (rho)."""
    refusal = system.refusal_ids()
    out = []
    for it, prompt in zip(items, system.template([it.prompt for it in items]), strict=True):
        ids = system.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for r, u in zip(it.samples, it.sample_u, strict=True):
            w = (1.0 - u) / len(it.samples)
            if w >= min_weight and r:
                out.append(DistillExample(ids, r, w, soft=True))
        if it.rho >= min_weight:
            out.append(DistillExample(ids, refusal, it.rho, soft=False))
    return out


def sft_examples(items: list[TeacherItem], system: SafeSystem) -> list[DistillExample]:
    """Hard guard labels as targets: r* + EOS when the system flags x (u >= tau), else the base response r_1.

    u is the first sample's score u(x, r_1) for a response-level guard, u(x) for a prompt-level one (an item
    without samples was skipped because u(x) was high, so it is flagged)."""
    refusal = system.refusal_ids()
    out = []
    for it, prompt in zip(items, system.template([it.prompt for it in items]), strict=True):
        ids = system.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        u = it.sample_u[0] if it.samples else max(it.rho, system.tau)
        target = refusal if u >= system.tau or not it.samples[0] else it.samples[0]
        out.append(DistillExample(ids, target, 1.0, soft=False))
    return out


def rl_prompts(prompts: list[str], system: SafeSystem) -> list[RLPrompt]:
    """Raw prompts -> ``RLPrompt``s with their templated token ids."""
    return [
        RLPrompt(p, t, system.tokenizer(t, add_special_tokens=False)["input_ids"])
        for p, t in zip(prompts, system.template(prompts), strict=True)
    ]


def token_weights(length: int, first_tokens: int, first_token_weight: float) -> torch.Tensor:
    """w_t = first_token_weight for t < first_tokens, else 1; normalised to sum to 1.  -> [length]"""
    w = torch.ones(length)
    w[:first_tokens] = first_token_weight
    return w / w.sum()


def shared_head(prompts: list[list[int]]) -> int:
    """Length of the prompts' longest common prefix, capped so that every prompt keeps at least one token of its
    own: every loss position (from a prompt's last token on) then lies after it."""
    cap, first = min(map(len, prompts)) - 1, prompts[0]
    n = 0
    while n < cap and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def collate(batch: list[DistillExample], pad_id: int, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Left-pad ``prompt + target`` and list the loss positions.

    Returns input_ids/attention_mask [B, T]; for the N target tokens of the batch: ``row`` [N], ``pos`` [N]
    (index of the position that predicts the token, in unprefixed coordinates), ``target`` [N], ``tok_w`` [N]
    (token weight times example weight / B) and ``soft`` [N] (bool). With ``cfg.shared_prefix``: ``head`` (int),
    the number of leading tokens that every row shares (``shared_head``), for the forward to run once. When the
    soft examples carry their teacher targets: ``teacher_ids`` [M, K] and ``teacher_logp`` [M, K + 1], M = the
    number of soft positions, in the order of ``soft``.
    """
    seqs = [ex.prompt_ids + ex.target_ids for ex in batch]
    t_max = max(map(len, seqs))
    ids = torch.full((len(batch), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros(len(batch), t_max, dtype=torch.long)
    row, pos, target, tok_w, soft = [], [], [], [], []
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
    as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    out = {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "row": as_long(row),
        "pos": as_long(pos),
        "target": as_long(target),
        "tok_w": torch.cat(tok_w).to(device),
        "soft": torch.tensor(soft, device=device),
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


def student_logp(model: PreTrainedModel, adapter: nn.Module | None, batch: dict[str, Any]) -> torch.Tensor:
    """log q(. | x, r_<t) [N, V] at the batch's loss positions: decoder with the adapter, LM head only there."""
    return torch.log_softmax(model.get_output_embeddings()(loss_hidden(model, adapter, batch)).float(), -1)


@torch.no_grad()
def base_logp(
    model: PreTrainedModel, adapter: nn.Module | None, batch: dict[str, Any], select: torch.Tensor
) -> torch.Tensor:
    """log pi(. | x, r_<t) [M, V] of the frozen model at the loss positions ``select`` (bool [N]): model-side
    adapters bypassed, input-side ones left out."""
    base = getattr(adapter, "module", adapter)  # DDP wraps the adapter as ``.module``
    with base.bypassed() if base is not None else nullcontext():
        hidden = loss_hidden(model, None, batch, select)
    return torch.log_softmax(model.get_output_embeddings()(hidden).float(), -1)


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
) -> list[DistillExample]:
    """The keep branch's targets, computed once: ``examples`` with every soft one given the frozen model's top-K
    tokens (K = ``cfg.teacher_topk``) at its n target positions, ``teacher_ids`` [n, K] (int32), and its
    distributions coarse-grained onto those K tokens plus one bucket for the rest, ``teacher_logp`` [n, K + 1]
    (``objectives.coarse_grain``), on the CPU. Batches of ``cfg.batch_size`` soft examples sorted by length;
    process ``rank`` of ``world`` (DDP) computes batches rank, rank + world, ... and gathers the others' (the
    same batches as in one process, so the same numbers). ``progress``: show a progress bar."""
    length = lambda i: len(examples[i].prompt_ids) + len(examples[i].target_ids)  # noqa: E731
    soft = sorted((i for i, ex in enumerate(examples) if ex.soft), key=length)
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
    return [
        replace(ex, teacher_ids=done[i][0], teacher_logp=done[i][1]) if i in done else ex
        for i, ex in enumerate(examples)
    ]


def loss_terms(
    model: PreTrainedModel, adapter: nn.Module | None, batch: dict[str, Any], obj: Objective
) -> dict[str, torch.Tensor]:
    """Per-token divergences D [N] of the student against the teacher targets, plus the TV for monitoring.

    One-hot rows (r*, or every row for ``sft``) use ``obj.onehot``; soft rows use ``obj.soft`` against the frozen
    model's own distributions (the keep branch): the cached ``teacher_logp`` over {its top-K tokens, the rest},
    against which the student is coarse-grained the same way (each divergence then a lower bound of the full one,
    see ``objectives.coarse_grain``), or else computed here over the whole vocabulary, without gradient."""
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
    return {"d": d, "tv": tvs}


def distill_means(
    model: PreTrainedModel, student: nn.Module, rows: list[DistillExample], pad_id: int, cfg: TrainConfig
) -> dict[str, torch.Tensor]:
    """One distillation (or sft) batch: the loss sum_i,t tok_w D and the TV likewise, each a weighted mean over
    ``rows`` (scalar tensors; the loss with gradient)."""
    batch = collate(rows, pad_id, cfg, model.device)
    terms = loss_terms(model, student, batch, train_objective(cfg))
    return {"loss": (terms["d"] * batch["tok_w"]).sum(), "tv": (terms["tv"] * batch["tok_w"]).sum()}


def train_objective(cfg: TrainConfig) -> Objective:
    """The divergence applied per token: the configured distillation one, else cross-entropy (KL to one-hot) for
    ``sft`` and ``reinforce`` and KL for diff-of-means steering (whose dev loss is then a held-out KL to the
    teacher)."""
    return get_objective(cfg.objective if cfg.objective in OBJECTIVES else "kl", cfg.jsd_beta)


def reinforce_terms(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    adapter: Adapter,
    student: torch.nn.Module,
    prompts: list[RLPrompt],
    guard: Guard,
    cfg: TrainConfig,
    step: int,
    positions: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """One REINFORCE-with-leave-one-out batch (DESIGN §4): K samples r_ik ~ q(.|x_i), rewards
    R_ik = 1 - u(x_i, r_ik), advantages A = rloo(R), and

        loss = -mean_ik A_ik * mean_t log q(r_ik,t | x_i, r_ik,<t) + kl_coef * mean_ik mean_t KL(q || pi)_t

    Sample k of the prompt at ``positions[i]`` in the step's global batch (default: i) has its own seed, from
    (seed, step, position, k): a prompt's samples do not depend on the other prompts of the call, nor on which
    process draws them. ``adapter`` samples (eval mode, no gradient); ``student`` (the same adapter, maybe
    DDP-wrapped) carries the gradient. Returns the loss, the mean reward and the mean KL."""
    k = cfg.rl_samples
    repeated = [p for p in prompts for _ in range(k)]  # prompt i's K samples are rows i*K .. i*K + K-1
    positions = range(len(prompts)) if positions is None else positions
    base_seed = (cfg.seed * 1_000_003 + step) * 1_000_003
    was_training = adapter.training
    adapter.eval()
    gens = generate(
        model,
        tokenizer,
        [p.templated for p in repeated],
        adapter,
        max_new_tokens=cfg.rl_max_new_tokens,
        temperature=cfg.rl_temperature,
        seed=[base_seed + j * k + s for j in positions for s in range(k)],
        progress=False,
    )
    adapter.train(was_training)
    u = guard.score([p.prompt for p in repeated], [g.text for g in gens]).float()
    rewards = (1.0 - u).reshape(len(prompts), k)
    adv = rloo_advantages(rewards).flatten()
    examples = [
        DistillExample(p.prompt_ids, g.token_ids or [tokenizer.eos_token_id], 1.0, soft=True)
        for p, g in zip(repeated, gens, strict=True)
    ]
    batch = collate(examples, tokenizer.pad_token_id, replace(cfg, first_token_weight=1.0), model.device)
    logq = student_logp(model, student, batch)
    logq_y = logq.gather(-1, batch["target"][:, None]).squeeze(-1)
    w = batch["tok_w"] * len(examples)  # per-sample token weights, each row summing to 1
    seq_logp = torch.zeros(len(examples), device=logq.device).index_add(0, batch["row"], w * logq_y)
    loss = reinforce_loss(seq_logp, adv.to(logq.device))
    kl = torch.zeros((), device=logq.device)
    if cfg.kl_coef > 0:
        kl = (batch["tok_w"] * reverse_kl(logq, base_logp(model, student, batch, batch["soft"]))).sum()
        loss = loss + cfg.kl_coef * kl
    return {"loss": loss, "reward": rewards.mean(), "kl": kl.detach()}


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_at(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the batch at ``step``: epochs of seeded permutations, a pure function of (seed, step)."""
    per_epoch = max(1, n // batch_size)
    epoch, j = divmod(step, per_epoch)
    perm = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(perm)
    return perm[j * batch_size : (j + 1) * batch_size]


def shard(n: int, rank: int, world: int) -> tuple[range, float]:
    """Process ``rank``'s positions rank, rank + world, ... in a global batch of n rows, and its share n_r / n.

    Weighted by their shares, the processes' mean losses sum to the mean over the global batch:
    sum_r (n_r / n) mean_r = (1/n) sum_i loss_i, for any split (n need not be a multiple of ``world``)."""
    positions = range(rank, n, world)
    return positions, len(positions) / n


def global_means(accelerator: Accelerator, means: dict[str, torch.Tensor], share: float) -> dict[str, float]:
    """Per-process means (scalar tensors) -> the means over the global batch, sum_r share_r * mean_r, all-reduced."""
    local = torch.stack([v.detach().float().to(accelerator.device) for v in means.values()]) * share
    return dict(zip(means, accelerator.reduce(local, reduction="sum").tolist(), strict=True))


@dataclass
class DevSet:
    """Held-out prompts with the system's refuse/answer decisions, and held-out distillation examples."""

    prompts: list[str]  # templated
    harmful: list[bool]
    system_refuses: list[bool]
    examples: list[DistillExample]


def evaluate_dev(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    adapter: Adapter,
    dev: DevSet,
    cfg: TrainConfig,
) -> dict[str, float]:
    """Held-out loss / TV and greedy-refusal agreement with the system on the dev prompts. The loss and TV use the
    exact teacher over the whole vocabulary (dev examples carry no cached targets), whatever ``teacher_topk``."""
    was_training = adapter.training
    adapter.eval()
    loss_sum = tv_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(dev.examples), cfg.batch_size):
            chunk = dev.examples[start : start + cfg.batch_size]
            batch = collate(chunk, tokenizer.pad_token_id, cfg, model.device)
            terms = loss_terms(model, adapter, batch, train_objective(cfg))
            scale = len(chunk) / len(dev.examples)
            loss_sum += float((terms["d"] * batch["tok_w"]).sum()) * scale
            tv_sum += float((terms["tv"] * batch["tok_w"]).sum()) * scale
    gens = generate(
        model,
        tokenizer,
        dev.prompts,
        adapter,
        max_new_tokens=cfg.dev_max_new_tokens,
        desc="dev",
        progress=False,
    )
    refuses = [is_refusal(g.text) for g in gens]
    agree = [a == b for a, b in zip(refuses, dev.system_refuses, strict=True)]
    harm = [r for r, h in zip(refuses, dev.harmful, strict=True) if h]
    benign = [r for r, h in zip(refuses, dev.harmful, strict=True) if not h]
    adapter.train(was_training)
    return {
        "dev_loss": loss_sum,
        "dev_tv": tv_sum,
        "dev_agreement": sum(agree) / len(agree),
        "dev_harmful_refusal": sum(harm) / max(1, len(harm)),
        "dev_benign_compliance": 1 - sum(benign) / max(1, len(benign)),
    }


def dev_score(record: dict[str, Any]) -> float:
    """The model-selection criterion (checkpoints, alphas, and objectives in ``softguard summarize``):
    dev agreement with the system's decisions, ties to the lower held-out TV."""
    return record["dev_agreement"] - 1e-3 * record["dev_tv"]


def select_alpha(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    adapter: Adapter,
    dev: DevSet,
    cfg: TrainConfig,
    alphas: list[float],
    out_dir: str | Path,
) -> TrainState:
    """Choose the scale ``adapter.alpha`` of a fixed (untrained) adapter on dev, by the training's own criterion:
    dev agreement with the system, ties to the lower held-out TV. Writes ``out_dir/best`` and ``history.json``."""
    out, state = Path(out_dir), TrainState()
    columns = [TextColumn("alpha"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    with attached(model, adapter), Progress(*columns, TimeRemainingColumn()) as bar:
        task = bar.add_task("alpha", total=len(alphas), info="")
        for alpha in alphas:
            adapter.alpha = alpha
            record = {"alpha": alpha, **evaluate_dev(model, tokenizer, adapter, dev, cfg)}
            score = dev_score(record)
            if score > state.best_score:
                state.best_score, state.best_step = score, len(state.history)
                adapter.save_pretrained(out / "best", training=record)
            state.history.append(record)
            bar.update(task, advance=1, info=f"alpha {alpha}: dev agree {record['dev_agreement']:.2f}")
    write_json(out / "history.json", state.history)
    return state


def _save_checkpoint(
    out: Path, adapter: Adapter, optimizer: torch.optim.Optimizer, state: TrainState, cfg: TrainConfig
) -> None:
    """``out/last``: adapter + AdamW moments (safetensors) + trainer state (JSON), replaced atomically."""
    with atomic_dir(out / "last") as tmp:
        adapter.save_pretrained(tmp / "adapter")
        tensors = {}
        for i, p in enumerate(adapter.trainable_parameters()):
            st = optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    tensors[f"{i}.{key}"] = st[key].detach().cpu().contiguous()
            if "step" in st:
                tensors[f"{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "trainer_state.json", {"config": asdict(cfg), **asdict(state)})


def _load_checkpoint(
    out: Path, adapter: Adapter, optimizer: torch.optim.Optimizer, model: PreTrainedModel, cfg: TrainConfig
) -> TrainState:
    """Restore ``out/last``; a checkpoint from a different config or a corrupt file is an error, not a restart."""
    last = out / "last"
    try:
        saved = read_json(last / "trainer_state.json")
        tensors = load_file(str(last / "optimizer.safetensors"))
    except (OSError, ValueError, SafetensorError) as e:
        raise AdapterError(f"checkpoint {last} is corrupt ({e}); delete it to restart from scratch") from e
    if saved["config"] != asdict(cfg):
        diff = {k: (saved["config"].get(k), v) for k, v in asdict(cfg).items() if saved["config"].get(k) != v}
        raise AdapterError(f"checkpoint {last} was made with another config (saved, now): {diff}")
    loaded = load_adapter(last / "adapter", model)
    adapter.load_state_dict(loaded.state_dict())
    for i, p in enumerate(adapter.trainable_parameters()):
        if f"{i}.exp_avg" in tensors:
            optimizer.state[p] = {
                "exp_avg": tensors[f"{i}.exp_avg"].to(p.device),
                "exp_avg_sq": tensors[f"{i}.exp_avg_sq"].to(p.device),
                "step": tensors[f"{i}.step"].reshape(()),
            }
    return TrainState(saved["step"], saved["best_step"], saved["best_score"], saved["history"])


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    adapter: Adapter,
    examples: list[DistillExample] | list[RLPrompt],
    dev: DevSet,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    reward_guard: Guard | None = None,
) -> TrainState:
    """Train ``adapter`` on ``examples`` (``RLPrompt``s and a response-level ``reward_guard`` for ``reinforce``);
    write ``out_dir/{last,best}`` and ``history.json``. Returns the state (the same on every process)."""
    check_objective(cfg)
    if cfg.objective == "reinforce" and reward_guard is None:
        raise ValueError("reinforce needs a reward_guard that scores (prompt, response) pairs")
    if not adapter.trainable_parameters():
        raise ValueError(f"this {adapter.method!r} adapter has nothing to train (a fixed diff-of-means vector?)")
    if not examples:
        raise ValueError("no examples to train on")
    out = Path(out_dir)
    accelerator = Accelerator(cpu=model.device.type == "cpu")  # train where the model was loaded
    rank, world = accelerator.process_index, accelerator.num_processes
    per_step = min(cfg.batch_size, len(examples))  # batch_at's global batch
    if per_step < world:
        raise ValueError(
            f"each of the {world} processes needs at least one example per step, but a step has {per_step} "
            f"(batch_size {cfg.batch_size}, {len(examples)} examples); raise batch_size or launch fewer processes"
        )
    model.to(accelerator.device)
    adapter.to(accelerator.device).train()
    optimizer = torch.optim.AdamW(adapter.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState()
    if resume and (out / "last").is_dir():
        state = _load_checkpoint(out, adapter, optimizer, model, cfg)
        accelerator.print(f"resuming from {out / 'last'} at step {state.step}")
    if cfg.teacher_topk is not None and cfg.objective != "reinforce":
        examples = teacher_targets(
            model, adapter, examples, cfg, tokenizer.pad_token_id, rank, world, accelerator.is_main_process
        )
    student, optimizer = accelerator.prepare(adapter, optimizer)
    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    with (
        attached(model, adapter),
        Progress(*columns, TimeRemainingColumn(), disable=not accelerator.is_main_process) as bar,
    ):
        task = bar.add_task("train", total=cfg.steps, completed=state.step, info="")
        while state.step < cfg.steps:
            t0 = time.perf_counter()
            batch_idx = batch_at(state.step, len(examples), cfg.batch_size, cfg.seed)
            positions, share = shard(len(batch_idx), rank, world)
            rows = [examples[batch_idx[j]] for j in positions]
            torch.manual_seed((cfg.seed * 1_000_003 + state.step) * world + rank)  # LoRA dropout, as resumable
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(state.step, cfg)
            with accelerator.autocast():  # ``means``: the loss and what is logged, each a mean over this process's rows
                if cfg.objective == "reinforce":
                    means = reinforce_terms(
                        model, tokenizer, adapter, student, rows, reward_guard, cfg, state.step, positions
                    )
                else:
                    means = distill_means(model, student, rows, tokenizer.pad_token_id, cfg)
            # DDP averages the processes' gradients (sums them / world), so the gradient is the global mean's
            accelerator.backward(means["loss"] * share * world)
            grad_norm = accelerator.clip_grad_norm_(adapter.trainable_parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            record = {
                "step": state.step,
                **global_means(accelerator, means, share),  # loss, and tv or reward and kl
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(grad_norm),
                "seconds": time.perf_counter() - t0,
            }
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                # the main process evaluates (the adapter is the same on every process) and sends the others its
                # metrics, so that every process keeps the same history and best step
                metrics = [evaluate_dev(model, tokenizer, adapter, dev, cfg) if accelerator.is_main_process else None]
                record.update(broadcast_object_list(metrics)[0])
                score = dev_score(record)
                if score > state.best_score:
                    state.best_score, state.best_step = score, state.step
                    if accelerator.is_main_process:
                        adapter.save_pretrained(out / "best", training=record)
                state.history.append(record)
                if accelerator.is_main_process:
                    _save_checkpoint(out, adapter, optimizer, state, cfg)
                    write_json(out / "history.json", state.history)
                accelerator.wait_for_everyone()
            else:
                state.history.append(record)
            info = " ".join(f"{k} {record[k]:.3f}" for k in means)
            if "dev_agreement" in record:
                info += f" | dev agree {record['dev_agreement']:.2f}"
            bar.update(task, advance=1, info=info)
    return state
