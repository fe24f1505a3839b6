"""Inference cost of a soft prompt against the base LLM and the two-model system, on the same prompts, in one run.

Rows: base LLM; soft prompt prepended to every request (uncached); soft prompt through ``PrefixCache``; PEFT's own
prompt-tuning ``generate``; the two-model system with a prompt-level guard (guard, then the LLM) and with a
response-level guard (the LLM, then the guard on the whole response: nothing can be shown before it).

Each request is one prompt (batch 1, the on-device case), greedy, exactly ``--new-tokens`` tokens (EOS ignored,
so every row decodes the same number of tokens). Per row: mean per-request latency, time to first token (TTFT),
tokens per second (new tokens / latency), and weight memory (LLM + adapter + prefix cache + guard), each also as
a ratio to the base LLM. A warm-up pass (two requests per row) is not timed; rows are interleaved prompt by
prompt. Writes BENCHMARKS.md (or --out).

    python bench/inference.py [--run runs/demo] [--prompts 16] [--new-tokens 32] [--num-tokens 100]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from softguard.adapters import SoftPrompt, load_adapter, resolve_adapter_dir
from softguard.data import make_splits
from softguard.export import export
from softguard.generation import PrefixCache, decode_steps, tokenize_prompts
from softguard.guards import EncoderGuard
from softguard.io import atomic_write_text
from softguard.models import chat_prompt, load_model


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def cache_bytes(prefix: PrefixCache) -> int:
    """Bytes of the cached keys and values (every layer's K and V for the k prefix positions)."""
    return sum(t.numel() * t.element_size() for layer in prefix.cache.layers for t in (layer.keys, layer.values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a softguard run dir: its soft prompt and guard (default: fresh ones)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--num-tokens", type=int, default=100, help="soft prompt length when no --run is given")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("smollm2-135m")
    if args.run:
        sp = load_adapter(resolve_adapter_dir(args.run), model)
        guard = EncoderGuard.from_pretrained(Path(args.run) / "guard")
    else:
        sp = SoftPrompt.for_model(model, tok, args.num_tokens)
        guard = EncoderGuard.from_backbone("minilm")  # untrained head: same cost as a trained one
    splits = make_splits(0)
    users = [e.text for e in (splits.test["benign"][: args.prompts // 2] + splits.test["harmbench"][:200])]
    users = [u for u in users if len(u) < 400][: args.prompts]  # short chat requests, as on a device
    prompts = [chat_prompt(tok, u) for u in users]
    n = args.new_tokens

    def run_llm(prompt: str, first: list[float], adapter=None, prefix=None) -> list[int]:
        out = []
        for step in decode_steps(model, tok, [prompt], adapter, prefix, n, stop_at_eos=False):
            if not out:
                first.append(time.perf_counter())
            out.append(int(step[0]))
        return out

    prefix = PrefixCache(model, sp)
    with tempfile.TemporaryDirectory() as tmp:
        sp.save_pretrained(Path(tmp) / "sp")
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(export(Path(tmp) / "sp", Path(tmp) / "peft")))

    def run_peft(prompt: str, first: list[float]) -> None:
        ids, mask = tokenize_prompts(tok, [prompt])
        t_start = time.perf_counter()
        with torch.no_grad():
            peft_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        # HF generate gives no first-token hook: TTFT is measured as one-token generate below
        first.append(t_start)

    def peft_ttft(prompt: str) -> float:
        ids, mask = tokenize_prompts(tok, [prompt])
        t0 = time.perf_counter()
        with torch.no_grad():
            peft_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, do_sample=False)
        return time.perf_counter() - t0

    def run_system_prompt(prompt: str, user: str, first: list[float]) -> None:
        guard.score([user])
        run_llm(prompt, first)

    def run_system_response(prompt: str, user: str, first: list[float]) -> None:
        ids = run_llm(prompt, [])
        guard.score([user], [tok.decode(ids, skip_special_tokens=True)])
        first.append(time.perf_counter())  # the first token can be shown only now

    llm_bytes = param_bytes(model)
    rows: dict[str, tuple[Callable[[str, str, list[float]], None], int]] = {
        "base LLM": (lambda p, u, f: run_llm(p, f), llm_bytes),
        f"soft prompt k={sp.num_tokens}, uncached": (
            lambda p, u, f: run_llm(p, f, adapter=sp),
            llm_bytes + sp.num_bytes(),
        ),
        f"soft prompt k={sp.num_tokens}, prefix cache": (
            lambda p, u, f: run_llm(p, f, prefix=prefix),
            llm_bytes + sp.num_bytes() + cache_bytes(prefix),
        ),
        "PEFT prompt tuning generate": (lambda p, u, f: run_peft(p, f), llm_bytes + sp.num_bytes()),
        "system, prompt-level guard": (run_system_prompt, llm_bytes + param_bytes(guard)),
        "system, response-level guard": (run_system_response, llm_bytes + param_bytes(guard)),
    }
    for fn, _ in rows.values():  # warm-up, not timed
        for p, u in zip(prompts[:2], users[:2], strict=True):
            fn(p, u, [])
    lat: dict[str, list[float]] = {name: [] for name in rows}
    ttft: dict[str, list[float]] = {name: [] for name in rows}
    for p, u in zip(prompts, users, strict=True):  # rows interleaved per prompt, so drift in load hits all alike
        for name, (fn, _) in rows.items():
            first: list[float] = []
            t0 = time.perf_counter()
            fn(p, u, first)
            lat[name].append(time.perf_counter() - t0)
            ttft[name].append(peft_ttft(p) if name.startswith("PEFT") else first[0] - t0)
    results = {
        name: {"latency": statistics.mean(lat[name]), "ttft": statistics.mean(ttft[name]), "memory": mem}
        for name, (_, mem) in rows.items()
    }
    base = results["base LLM"]
    lines = [
        "# Inference benchmark",
        "",
        f"SmolLM2-135M-Instruct, fp32, CPU ({platform.processor() or platform.machine()}, {args.threads} threads), "
        f"torch {torch.__version__}; {len(prompts)} prompts one at a time, greedy, {n} new tokens each "
        "(EOS ignored); soft prompt before everything. Memory = weights of the LLM, adapter, prefix cache and guard.",
        "",
        "| row | latency/request (ms) | x base | TTFT (ms) | x base | tokens/s | x base | weights (MB) | x base |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        tps, base_tps = n / r["latency"], n / base["latency"]
        cells = [
            f"{r['latency'] * 1000:.0f}",
            f"{r['latency'] / base['latency']:.3f}",
            f"{r['ttft'] * 1000:.0f}",
            f"{r['ttft'] / base['ttft']:.2f}",
            f"{tps:.1f}",
            f"{tps / base_tps:.3f}",
            f"{r['memory'] / 2**20:.1f}",
            f"{r['memory'] / base['memory']:.3f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cmd = "python bench/inference.py " + " ".join(sys.argv[1:])
    lines += ["", f"Command: `{cmd.strip()}`", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
