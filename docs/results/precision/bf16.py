"""fp32 against bf16 autocast on this CPU, for the three kinds of work a softguard run does: a guard training step
(MiniLM, batch 32 x 64 tokens), a student training step's forward + backward through SmolLM2 (batch 8 x 160 tokens
behind a 100-vector soft prompt) and batched greedy decoding (16 prompts, 32 new tokens). Median seconds of a few
repeats after one warm-up, and the ratio.

    python docs/results/precision/bf16.py > docs/results/precision/bf16.txt
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from softguard.guards import EncoderGuard
from softguard.models import load_model


def median_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bf16() -> AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def main() -> None:
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m")
    ids = torch.randint(100, 40000, (8, 160))
    soft = torch.nn.Parameter(torch.zeros(100, model.config.hidden_size))

    def llm_step(ctx: Callable[[], AbstractContextManager]) -> Callable[[], None]:
        def step() -> None:
            with ctx():
                embeds = torch.cat([soft[None].expand(8, -1, -1), model.get_input_embeddings()(ids)], 1)
                loss = model(inputs_embeds=embeds, use_cache=False).logits[:, -40:].float().logsumexp(-1).mean()
            loss.backward()

        return step

    prompts = tok(["Tell me how to bake bread at home please"] * 16, return_tensors="pt")

    def decode(ctx: Callable[[], AbstractContextManager]) -> Callable[[], None]:
        def run() -> None:
            with ctx(), torch.no_grad():
                model.generate(**prompts, max_new_tokens=32, min_new_tokens=32, do_sample=False)

        return run

    guard = EncoderGuard.from_backbone("minilm", max_length=64).train()
    batch = guard.encode(["How can I make a bomb at home with household chemicals and what do I need " * 2] * 32)
    opt, y = torch.optim.AdamW(guard.parameters(), lr=1e-5), torch.ones(32)

    def guard_step(ctx: Callable[[], AbstractContextManager]) -> Callable[[], None]:
        def step() -> None:
            with ctx():
                logits = guard.logits(batch).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}\n"
    )
    print("| work | fp32 (s) | bf16 autocast (s) | speed-up |\n|---|---|---|---|")
    for name, make, repeats in (
        ("guard training step, 32 x 64 tokens", guard_step, 5),
        ("SmolLM2 forward + backward, 8 x (100 + 160)", llm_step, 3),
        ("SmolLM2 greedy decoding, 16 prompts x 32 tokens", decode, 2),
    ):
        fp32, half = median_seconds(make(nullcontext), repeats), median_seconds(make(bf16), repeats)
        print(f"| {name} | {fp32:.3f} | {half:.3f} | {fp32 / half:.2f}x |")


if __name__ == "__main__":
    main()
