"""Training of an adapter against the two-model system, top to bottom in one loop.

The objective is a strategy (``losses.STRATEGIES``, by ``TrainConfig.objective``: a distillation divergence,
``sft`` or ``reinforce``; docs/objectives.md, docs/reinforce.md). ``train`` has one path for all of them:

1. once: ``strategy.prepare`` the examples (the distillations' teacher targets, top-K + rest);
2. at step s: the rows ``batch_at(s)`` of the examples (stratified: each batch holds the refuse and keep branches
   in their overall shares), this process's share of them (``shard``);
3. ``strategy.loss`` on those rows: the loss and what is logged, each a mean over the rows;
4. backward, gradient-norm clip, AdamW step on the adapter's parameters only (the LLM is frozen), the learning
   rate by linear warmup + cosine decay (``lr_factor``).

Every ``eval_every`` steps: held-out loss and TV on dev examples, and greedy dev generation whose refusals are
compared with the system's decisions (agreement; ``evaluation.evaluate_dev``). The best-agreeing adapter is kept
in ``best/``; ``last/`` holds adapter + optimizer state for ``resume``. The batch at step s depends only on (seed,
s), and the global RNG (LoRA's dropout) is reseeded from (seed, s, rank) at every step, so a resumed run continues
exactly where it stopped.

Under ``accelerate launch`` (DDP) the same config trains the same adapter as one process: ``batch_size`` is the
global batch, each of the W processes takes rows ``rank::W`` of it, and each process's mean loss is weighted by its
share of the batch so that the gradients DDP averages are those of the global mean (``shard``,
docs/objectives.md §3); the logged loss is summed over the processes. Dev evaluation and checkpoints run on the
main process.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import assets, fingerprint
from .adapters import (
    Adapter,
    AdapterError,
    LinearGate,
    attached,
    fit_gate,
    load_adapter,
    prompt_states,
    readout_features,
)
from .config import GateConfig
from .evaluation import DevSet, dev_score, evaluate_dev
from .generation import shared_head
from .guards import Guard, auroc
from .io import atomic_dir, read_json, read_tensors, write_json, write_tensors
from .losses import Step, get_strategy
from .models import resolve_precision
from .train_config import TrainConfig


@dataclass
class TrainState:
    step: int = 0
    best_step: int = -1
    best_score: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_at(step: int, strata: Sequence[Hashable], batch_size: int, seed: int) -> list[int]:
    """Indices of the batch at ``step`` among ``len(strata)`` examples: epochs of seeded permutations, a pure
    function of (strata, seed, step).

    Stratified: each group of examples with equal ``strata`` (the refuse and the keep branch,
    ``Strategy.strata``) is shuffled on its own and the groups are interleaved evenly (member k of a group of n_g
    at (k + offset_g) / n_g, offset_g ~ U[0, 1)), so every batch holds each group in its share of all examples,
    to within one row. One group: a plain shuffle. Without it a batch of 8 drawn from two equal groups has 6 or
    more of one group 29 % of the time (docs/objectives.md §3: the expectation is the same, the variance lower)."""
    n = len(strata)
    per_epoch = max(1, n // batch_size)
    epoch, j = divmod(step, per_epoch)
    rng = random.Random(seed * 1_000_003 + epoch)
    groups: dict[Hashable, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    keyed = []
    for members in groups.values():
        rng.shuffle(members)
        offset = rng.random()
        keyed += [((k + offset) / len(members), i) for k, i in enumerate(members)]
    perm = [i for _, i in sorted(keyed)]
    return perm[j * batch_size : (j + 1) * batch_size]


def shard(n: int, rank: int, world: int) -> tuple[range, float]:
    """Process ``rank``'s positions rank, rank + world, ... in a global batch of n rows, and its share n_r / n.

    Weighted by their shares, the processes' mean losses sum to the mean over the global batch:
    sum_r (n_r / n) mean_r = (1/n) sum_i loss_i, for any split (n need not be a multiple of ``world``;
    docs/objectives.md §3)."""
    positions = range(rank, n, world)
    return positions, len(positions) / n


def global_means(accelerator: Accelerator, means: dict[str, torch.Tensor], share: float) -> dict[str, float]:
    """Per-process means (scalar tensors) -> the means over the global batch, sum_r share_r * mean_r, all-reduced."""
    local = torch.stack([v.detach().float().to(accelerator.device) for v in means.values()]) * share
    return dict(zip(means, accelerator.reduce(local, reduction="sum").tolist(), strict=True))


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


def select_gate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    flags: list[bool],
    dev: DevSet,
    cfg: TrainConfig,
    grid: GateConfig,
    layers: list[int],
    refusal_ids: list[int],
    out_dir: str | Path,
) -> TrainState:
    """Fit a ``LinearGate`` for every (read-out, layer, l2) of the grid (``grid.readouts``, ``layers``, ``grid.l2``)
    on the templated training ``prompts`` and the guard's ``flags`` (``fit_gate``), keep the one whose gate agrees
    with the guard on the most dev prompts (on a tie, the one whose score s ranks the dev prompts' flags best, AUROC;
    then the first of the grid), then evaluate it on dev like a trained adapter (``evaluate_dev``: greedy dev
    agreement with the system, held-out TV). The mean read-out skips the leading tokens that all training and dev
    prompts share (``shared_head``: the chat template's head). Writes ``out_dir/best`` and ``history.json`` (one
    record per grid point, the kept one with the dev evaluation; docs/gate.md)."""
    if len(dev.guard_flags) != len(dev.prompts) or not dev.prompts:
        raise ValueError("choosing a gate needs dev prompts with the guard's flags (DevSet.guard_flags)")
    if all(flags) or not any(flags):
        raise ValueError(
            f"the guard {'flags' if any(flags) else 'passes'} all {len(flags)} training prompts; a gate learns the "
            "line between the two: train on prompts of both kinds (--train-prompts) or check the guard's tau"
        )
    out, state = Path(out_dir), TrainState()
    head = shared_head([tokenizer(p, add_special_tokens=False)["input_ids"] for p in [*prompts, *dev.prompts]])
    train_x = cached_prompt_states(model, tokenizer, prompts, layers, head, cfg.batch_size, "gate: train states")
    dev_x = cached_prompt_states(model, tokenizer, dev.prompts, layers, head, cfg.batch_size, "gate: dev states")
    y, dev_y = torch.tensor(flags, dtype=torch.bool), torch.tensor(dev.guard_flags, dtype=torch.bool)
    best: tuple[tuple[float, float], str, int, torch.Tensor, float] | None = None
    for readout, (j, layer), l2 in itertools.product(grid.readouts, enumerate(layers), grid.l2):
        x, dx = readout_features(train_x[:, j], readout), readout_features(dev_x[:, j], readout)
        w, b = fit_gate(x, y, l2)
        record = {
            "readout": readout,
            "layer": layer,
            "l2": l2,
            "train_guard_agreement": float(((x @ w + b > 0) == y).float().mean()),
            "dev_guard_agreement": float(((dx @ w + b > 0) == dev_y).float().mean()),
            "dev_guard_auroc": auroc(dx @ w + b, dev_y),  # NaN when dev has one class only
        }
        state.history.append(record)
        dev_auroc = record["dev_guard_auroc"]
        key = (record["dev_guard_agreement"], -1.0 if math.isnan(dev_auroc) else dev_auroc)
        if best is None or key > best[0]:
            best, state.best_step = (key, readout, layer, w, b), len(state.history) - 1
    assert best is not None  # read-outs, layers and l2s are non-empty (GateConfig)
    _, readout, layer, w, b = best
    gate = LinearGate.for_model(model, layer, refusal_ids, readout, head)
    gate.set_weights(w, b)
    record = {**state.history[state.best_step], **evaluate_dev(model, tokenizer, gate, dev, cfg)}
    state.history[state.best_step] = record
    state.best_score = dev_score(record)
    gate.save_pretrained(out / "best", training=record)
    write_json(out / "history.json", state.history)
    return state


#: Bumped whenever ``prompt_states`` changes what it returns, so that older cached states are not read back.
STATES_FORMAT = 1


def cached_prompt_states(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    layers: list[int],
    head: int,
    batch_size: int,
    desc: str | None = None,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """``prompt_states`` [n, len(layers), 2, d], cached under ``<cache>/states/<key>.safetensors`` (``cache_dir``,
    else the default cache) and read back when a run asks for the same states again: a gate refitted with another
    grid, dev set or evaluation, or resumed after an interruption, skips the forward passes. The key holds what
    determines the numbers: the model's weights (``fingerprint.model_sha256``), dtype and device type, the layers,
    ``head``, the batch size (it groups the prompts, which moves the numbers by float rounding), ``STATES_FORMAT``
    and the prompts in order. A damaged or mismatched entry is recomputed and overwritten."""
    settings = {"format": STATES_FORMAT, "layers": layers, "head": head, "batch_size": batch_size}
    key = fingerprint.forward_key(model, settings, [prompts], cache_dir)
    path = assets.cache_root(cache_dir) / "states" / f"{key}.safetensors"
    states = (read_tensors(path) or {}).get("states")
    if states is not None and states.shape[:3] == (len(prompts), len(layers), 2):
        return states
    states = prompt_states(model, tokenizer, prompts, layers, head, batch_size, desc)
    write_tensors(path, {"states": states})
    return states


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
    examples: list[Any],
    dev: DevSet,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    reward_guard: Guard | None = None,
) -> TrainState:
    """Train ``adapter`` on ``examples`` (those of the objective's strategy, ``Strategy.examples``; ``reinforce``
    also needs a response-level ``reward_guard``); write ``out_dir/{last,best}`` and ``history.json``. Returns the
    state (the same on every process)."""
    strategy = get_strategy(cfg.objective)
    strategy.check(cfg)
    if strategy.needs_reward_guard and reward_guard is None:
        raise ValueError(f"{cfg.objective} needs a reward_guard that scores (prompt, response) pairs")
    if not adapter.trainable_parameters():
        raise ValueError(f"this {adapter.method!r} adapter has nothing to train (a fixed diff-of-means vector?)")
    if not examples:
        raise ValueError("no examples to train on")
    out = Path(out_dir)
    accelerator = Accelerator(cpu=model.device.type == "cpu")  # train where the model was loaded
    # the step's own autocast (Accelerate's mixed precision is fixed once per process; compare trains many rows)
    bf16 = resolve_precision(cfg.precision, model.device) == "bf16"
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
    examples = strategy.prepare(
        model, adapter, examples, cfg, tokenizer.pad_token_id, rank, world, accelerator.is_main_process
    )
    strata = strategy.strata(examples) if cfg.stratify else [False] * len(examples)
    student, optimizer = accelerator.prepare(adapter, optimizer)
    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    with (
        attached(model, adapter),
        Progress(*columns, TimeRemainingColumn(), disable=not accelerator.is_main_process) as bar,
    ):
        task = bar.add_task("train", total=cfg.steps, completed=state.step, info="")
        while state.step < cfg.steps:
            t0 = time.perf_counter()
            batch_idx = batch_at(state.step, strata, cfg.batch_size, cfg.seed)
            positions, share = shard(len(batch_idx), rank, world)
            rows = [examples[batch_idx[j]] for j in positions]
            torch.manual_seed((cfg.seed * 1_000_003 + state.step) * world + rank)  # LoRA dropout, as resumable
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(state.step, cfg)
            step = Step(model, tokenizer, adapter, student, cfg, state.step, positions, reward_guard)
            # ``means``: the loss and what is logged, each a mean over this process's rows
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
                means = strategy.loss(step, rows)
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
