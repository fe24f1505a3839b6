"""Batched generation on the demo's evaluation prompts: how the batching and the cached template head move its
time, and that they leave the responses as they are.

The prompts: the quick preset's evaluation sets (``pipeline.eval_sets``: 48 prompts from each of HarmBench,
StrongREJECT, XSTest-safe, held-out benign and the two robustness halves, 33-662 tokens with SmolLM2's chat
template), as ``make demo`` generates them for its base and student rows. Each row generates ``--new-tokens`` new
tokens per prompt with ``generation.generate`` (stopping at EOS), in one process after an untimed warm-up, rows
one after the other:

- batches of 16, no token bound, every prompt whole (the base row's path before 2026-12-07);
- batches of 16 / 2,048 padded prompt tokens, every prompt whole (the student's path before);
- batches of 64 / 4,096, every prompt whole;
- batches of 64 / 4,096, the template head every prompt begins with cached once (``PrefixCache``): the default.

Each row reports the number of prompts whose response equals the first row's. Writes its section of BENCHMARKS.md
(or --out).

    python bench/generation.py [--new-tokens 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
from report import update_section  # bench/ is sys.path[0] when this file runs as a script
from train_step import MODEL

from softguard.config import preset
from softguard.data import make_splits
from softguard.generation import generate
from softguard.models import chat_prompt, load_model
from softguard.pipeline import eval_sets

#: (label, batch_size, max_batch_tokens, cache the template head)
ROWS = [
    ("batches of 16, prompts whole", 16, None, False),
    ("batches of 16 / 2,048 tokens, prompts whole", 16, 2048, False),
    ("batches of 64 / 4,096 tokens, prompts whole", 64, 4096, False),
    ("batches of 64 / 4,096 tokens, template head cached (default)", 64, 4096, True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(MODEL)
    cfg = preset("quick")
    users = [e.text for exs in eval_sets(cfg, make_splits(cfg.seed)).values() for e in exs]
    prompts = [chat_prompt(tok, u) for u in users]
    lengths = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
    generate(model, tok, prompts[:16], max_new_tokens=4, progress=False)  # warm-up: no row pays for first-call costs
    table, first = [], None
    for label, batch_size, max_tokens, head in ROWS:
        t0 = time.perf_counter()
        gens = generate(
            model,
            tok,
            prompts,
            max_new_tokens=args.new_tokens,
            batch_size=batch_size,
            max_batch_tokens=max_tokens,
            cache_prefix=head,
            progress=False,
        )
        seconds = time.perf_counter() - t0
        ids = [g.token_ids for g in gens]
        first = first or (seconds, ids)
        same = sum(a == b for a, b in zip(ids, first[1], strict=True))
        table.append(f"| {label} | {seconds:.1f} | {first[0] / seconds:.2f}x | {same} / {len(prompts)} |")
        print(table[-1], file=sys.stderr, flush=True)
    section = "\n".join(
        [
            "# Batched generation",
            "",
            f"{MODEL}, fp32, {platform.machine()} CPU, {args.threads} threads, torch {torch.__version__}; the quick "
            f"preset's {len(prompts)} evaluation prompts ({min(lengths)}-{max(lengths)} tokens with the chat "
            f"template), greedy, {args.new_tokens} new tokens at most, `generation.generate`, rows one after the "
            f"other in one process (load average {os.getloadavg()[0]:.1f} at the end).",
            "",
            "| row | seconds | x first row | same responses as the first row |",
            "|---|---|---|---|",
            *table,
            "",
            "Command: `python bench/generation.py`",
        ]
    )
    update_section(args.out, section)
    print(section)


if __name__ == "__main__":
    main()
