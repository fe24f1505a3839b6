"""Distillation training of an adapter against the two-model system, top to bottom in one loop.

Each teacher item (prompt x, base samples r_k with guard scores u_k, rho) becomes up to K + 1 examples:
``(x, r_k, weight (1 - u_k)/K, soft targets from the frozen model)`` and ``(x, r* + EOS, weight rho, one-hot
targets)``; examples with weight below ``min_weight`` are dropped. A step:

1. left-pad a batch of ``prompt + target`` sequences;
2. student: decoder with the adapter, LM head applied only at the positions that predict target tokens;
3. teacher (keep examples only): the same decoder without the adapter, under no_grad;
4. loss = (1/B) sum_i weight_i * sum_t w_t D_it / sum_t w_t, with D the objective and w_t the token weights;
5. AdamW step on the adapter's parameters only (the LLM is frozen), linear warmup + cosine decay.

Every ``eval_every`` steps: held-out loss and TV on dev examples, and greedy dev generation whose refusals are
compared with the system's decisions (agreement). The best-agreeing adapter is kept in ``best/``; ``last/`` holds
adapter + optimizer state for ``resume``. The batch at step s depends only on (seed, s), so a resumed run
continues exactly where it stopped. Runs unchanged under ``accelerate launch`` (each process takes a slice of
every batch; gradients are averaged by DDP).
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapters import Adapter, AdapterError, attached, decoder_hidden, load_adapter
from .evaluation import is_refusal
from .generation import generate
from .io import atomic_dir, read_json, write_json
from .objectives import get_objective, tv, tv_onehot
from .system import SafeSystem, TeacherItem


@dataclass
class TrainConfig:
    """Training hyper-parameters (DESIGN §4 and §8)."""

    objective: str = "tv"
    steps: int = 60
    batch_size: int = 8
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


@dataclass
class DistillExample:
    """One training sequence: templated prompt ids, target response ids, branch weight, target kind."""

    prompt_ids: list[int]
    target_ids: list[int]
    weight: float
    soft: bool  # True: teacher = frozen model's distributions; False: one-hot targets (r*)


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


def token_weights(length: int, first_tokens: int, first_token_weight: float) -> torch.Tensor:
    """w_t = first_token_weight for t < first_tokens, else 1; normalised to sum to 1.  -> [length]"""
    w = torch.ones(length)
    w[:first_tokens] = first_token_weight
    return w / w.sum()


def collate(
    batch: list[DistillExample], pad_id: int, cfg: TrainConfig, device: torch.device
) -> dict[str, torch.Tensor]:
    """Left-pad ``prompt + target`` and list the loss positions.

    Returns input_ids/attention_mask [B, T]; for the N target tokens of the batch: ``row`` [N], ``pos`` [N]
    (index of the position that predicts the token, in unprefixed coordinates), ``target`` [N], ``tok_w`` [N]
    (token weight times example weight / B) and ``soft`` [N] (bool).
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
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "row": as_long(row),
        "pos": as_long(pos),
        "target": as_long(target),
        "tok_w": torch.cat(tok_w).to(device),
        "soft": torch.tensor(soft, device=device),
    }


def loss_terms(
    model: PreTrainedModel,
    adapter: Adapter | None,
    prefix: int,
    batch: dict[str, torch.Tensor],
    objective: str,
) -> dict[str, torch.Tensor]:
    """Per-token divergences D [N] of the student against the teacher targets, plus the TV for monitoring."""
    head = model.get_output_embeddings()
    hidden = decoder_hidden(model, adapter, batch["input_ids"], batch["attention_mask"])
    student = torch.log_softmax(head(hidden[batch["row"], batch["pos"] + prefix]).float(), -1)  # [N, V]
    obj = get_objective(objective)
    d = obj.onehot(student, batch["target"])
    tvs = tv_onehot(student.detach(), batch["target"])
    soft = batch["soft"]
    if soft.any():
        rows = torch.unique(batch["row"][soft])
        base = getattr(adapter, "module", adapter)  # DDP wraps the adapter as ``.module``
        # frozen model without the adapter (model-side adapters bypassed), only the rows that need soft targets
        with torch.no_grad(), base.bypassed() if base is not None else nullcontext():
            sub = {k: batch[k][rows] for k in ("input_ids", "attention_mask")}
            t_hidden = decoder_hidden(model, None, sub["input_ids"], sub["attention_mask"])
            remap = torch.full((int(batch["row"].max()) + 1,), -1, device=rows.device)
            remap[rows] = torch.arange(len(rows), device=rows.device)
            teacher = torch.log_softmax(head(t_hidden[remap[batch["row"][soft]], batch["pos"][soft]]).float(), -1)
        d = d.clone()
        d[soft] = obj.soft(student[soft], teacher)
        tvs = tvs.clone()
        tvs[soft] = tv(student[soft].detach(), teacher)
    return {"d": d, "tv": tvs}


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
    """Held-out loss / TV and greedy-refusal agreement with the system on the dev prompts."""
    was_training = adapter.training
    adapter.eval()
    loss_sum = tv_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(dev.examples), cfg.batch_size):
            chunk = dev.examples[start : start + cfg.batch_size]
            batch = collate(chunk, tokenizer.pad_token_id, cfg, model.device)
            terms = loss_terms(model, adapter, adapter.prefix_length, batch, cfg.objective)
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
    examples: list[DistillExample],
    dev: DevSet,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
) -> TrainState:
    """Train ``adapter`` on ``examples``; write ``out_dir/{last,best}`` and ``history.json``. Returns the state."""
    out = Path(out_dir)
    accelerator = Accelerator()
    model.to(accelerator.device)
    adapter.to(accelerator.device).train()
    optimizer = torch.optim.AdamW(adapter.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState()
    if resume and (out / "last").is_dir():
        state = _load_checkpoint(out, adapter, optimizer, model, cfg)
        accelerator.print(f"resuming from {out / 'last'} at step {state.step}")
    student, optimizer = accelerator.prepare(adapter, optimizer)
    prefix = adapter.prefix_length
    rank, world = accelerator.process_index, accelerator.num_processes
    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    with (
        attached(model, adapter),
        Progress(*columns, TimeRemainingColumn(), disable=not accelerator.is_main_process) as bar,
    ):
        task = bar.add_task("train", total=cfg.steps, completed=state.step, info="")
        while state.step < cfg.steps:
            t0 = time.perf_counter()
            idx = batch_at(state.step, len(examples), cfg.batch_size * world, cfg.seed)[rank::world]
            batch = collate([examples[i] for i in idx], tokenizer.pad_token_id, cfg, accelerator.device)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(state.step, cfg)
            with accelerator.autocast():
                terms = loss_terms(model, student, prefix, batch, cfg.objective)
            loss = (terms["d"] * batch["tok_w"]).sum() * world  # tok_w carries 1/(B * world) per example
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(adapter.trainable_parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            record = {
                "step": state.step,
                "loss": loss.item(),
                "tv": float((terms["tv"] * batch["tok_w"]).sum() * world),
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(grad_norm),
                "seconds": time.perf_counter() - t0,
            }
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                record.update(evaluate_dev(model, tokenizer, adapter, dev, cfg))
                score = record["dev_agreement"] - 1e-3 * record["dev_tv"]  # ties go to the lower held-out TV
                if score > state.best_score and accelerator.is_main_process:
                    state.best_score, state.best_step = score, state.step
                    adapter.save_pretrained(out / "best", training=record)
                state.history.append(record)
                if accelerator.is_main_process:
                    _save_checkpoint(out, adapter, optimizer, state, cfg)
                    write_json(out / "history.json", state.history)
                accelerator.wait_for_everyone()
            else:
                state.history.append(record)
            info = f"loss {record['loss']:.3f} tv {record['tv']:.3f}"
            if "dev_agreement" in record:
                info += f" | dev agree {record['dev_agreement']:.2f}"
            bar.update(task, advance=1, info=info)
    return state
