"""Inference cost of a soft prompt and a gate against the base LLM and the two-model system, on the same prompts, in
one run.

Rows: base LLM; soft prompt prepended to every request (uncached); soft prompt through ``PrefixCache``; PEFT's own
prompt-tuning ``generate``; a linear gate with the "last+mean" read-out at the middle layer (docs/gate.md; a fresh
one, which never fires: a fitted gate does the same work per token, and where it fires it still decodes here, since
EOS is ignored); the two-model system with a prompt-level guard (guard, then the LLM) and with a
response-level guard (the LLM, then the guard on the whole response: nothing can be shown before it).

Every row but PEFT's is measured by ``softguard.cost`` (the cost used in reports): one prompt per request (batch 1,
the on-device case), greedy, exactly ``--new-tokens`` tokens (EOS ignored, so every row decodes the same number of
tokens), one untimed warm-up request per row, rows interleaved prompt by prompt (``measure_rows``); then each row
again alone in a fresh process for its peak memory while it runs (``measure_row_isolated``; on CPU the peak RSS,
which includes the weights and the Python/torch runtime, so read it against the base row). PEFT's ``generate`` has
no first-token hook: its row is timed after the others, its TTFT (= prefill) as a 1-token ``generate``, and it has
no per-token time. Each figure is also given as a ratio to the base LLM. Writes its section of BENCHMARKS.md (or
--out).

    python bench/inference.py [--run runs/demo] [--prompts 16] [--new-tokens 32] [--num-tokens 100]
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from report import update_section  # bench/ is sys.path[0] when this file runs as a script

from softguard.adapters import LinearGate, SoftPrompt, load_adapter, resolve_adapter_dir
from softguard.adapters.steering import decoder_layers
from softguard.config import load
from softguard.cost import CostResult, measure_row_isolated, measure_rows, param_bytes
from softguard.data import make_splits
from softguard.export import export
from softguard.generation import tokenize_prompts
from softguard.guards import EncoderGuard, load_guard
from softguard.models import chat_prompt, load_model
from softguard.pipeline import system_guard
from softguard.system import SafeSystem

MODEL = "smollm2-135m"


def peft_cost(peft_model, tok, prompts: list[str], n: int, sp: SoftPrompt) -> CostResult:
    """PEFT's prompt-tuning ``generate`` at batch 1, ``n`` tokens (and a 1-token generate for TTFT) per prompt."""

    def generate(prompt: str, new_tokens: int) -> float:
        ids, mask = tokenize_prompts(tok, [prompt])
        t0 = time.perf_counter()
        with torch.inference_mode():
            peft_model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )
        return 1000 * (time.perf_counter() - t0)

    generate(prompts[0], n), generate(prompts[0], 1)  # warm-up, not timed
    total = statistics.mean(generate(p, n) for p in prompts)
    ttft = statistics.mean(generate(p, 1) for p in prompts)
    return CostResult(
        added_parameters=sp.num_parameters(),
        added_bytes=sp.num_bytes(),
        prefill_ms=ttft,
        per_token_ms=math.nan,  # no hook between tokens
        ttft_ms=ttft,
        total_ms=total,
        guard_ms=0.0,
        peak_memory_mb=math.nan,
        new_tokens=n,
        requests=len(prompts),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a run dir: its model, soft prompt and guard (any kind); default: fresh ones")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--num-tokens", type=int, default=100, help="soft prompt length when no --run is given")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run_cfg = load(Path(args.run) / "config.toml") if args.run else None
    model_name = run_cfg.model.name if run_cfg else MODEL
    model, tok = load_model(model_name)
    splits = make_splits(0)
    users = [e.text for e in (splits.test["benign"][: args.prompts // 2] + splits.test["harmbench"][:200])]
    users = [u for u in users if len(u) < 400][: args.prompts]  # short chat requests, as on a device
    prompts = [chat_prompt(tok, u) for u in users]
    n = args.new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            # the run's own system: its trained guard (RUN/guard) or the guard it was given, of any kind
            sp_dir, guard_dir = resolve_adapter_dir(args.run), system_guard(run_cfg.guard, Path(args.run))
            sp, guard = load_adapter(sp_dir, model), load_guard(guard_dir)
            if not isinstance(sp, SoftPrompt):
                ap.error(f"{sp_dir} holds a {sp.method!r} adapter; this benchmark compares soft prompts")
        else:
            sp, sp_dir = SoftPrompt.for_model(model, tok, args.num_tokens), Path(tmp) / "sp"
            sp.save_pretrained(sp_dir)
            guard = EncoderGuard.from_backbone("minilm")  # untrained head: same cost as a trained one
            guard_dir = guard.save_pretrained(Path(tmp) / "guard")
        refusal_ids = SafeSystem(model, tok, guard).refusal_ids()
        gate = LinearGate.for_model(model, len(decoder_layers(model)) // 2, refusal_ids, "last+mean")
        gate_dir = Path(tmp) / "gate"
        gate.save_pretrained(gate_dir)
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(export(sp_dir, Path(tmp) / "peft")))
        # name -> (measure_rows arguments, measure_row_isolated arguments)
        rows = {
            "base LLM": ({}, {}),
            f"soft prompt k={sp.num_tokens}, uncached": (
                {"adapter": sp, "prefix_cache": False},
                {"adapter_dir": sp_dir, "prefix_cache": False},
            ),
            f"soft prompt k={sp.num_tokens}, prefix cache": ({"adapter": sp}, {"adapter_dir": sp_dir}),
            f"gate, last+mean at layer {gate.layer}": ({"adapter": gate}, {"adapter_dir": gate_dir}),
            "system, prompt-level guard": (
                {"system": SafeSystem(model, tok, guard, mode="prompt")},
                {"guard_dir": guard_dir, "guard_mode": "prompt"},
            ),
            "system, response-level guard": (
                {"system": SafeSystem(model, tok, guard, mode="response")},
                {"guard_dir": guard_dir, "guard_mode": "response"},
            ),
        }
        results = measure_rows(model, tok, prompts, {k: v[0] for k, v in rows.items()}, users=users, max_new_tokens=n)
        results["PEFT prompt tuning generate"] = peft_cost(peft_model, tok, prompts, n, sp)
        for name, (_, isolated) in rows.items():
            alone = measure_row_isolated(model_name, prompts, users=users, max_new_tokens=n, **isolated)
            results[name].peak_memory_mb = alone.peak_memory_mb
    order = [*list(rows)[:3], "PEFT prompt tuning generate", *list(rows)[3:]]  # PEFT beside the soft prompts
    llm_bytes, base = param_bytes(model), results["base LLM"]

    def cell(value: float, fmt: str) -> str:
        return "-" if math.isnan(value) else format(value, fmt)

    title = "SmolLM2-135M-Instruct" if model_name == MODEL else model_name
    lines = [
        "# Inference benchmark",
        "",
        f"{title}, fp32, CPU ({platform.processor() or platform.machine()}, {args.threads} threads), "
        f"torch {torch.__version__}; {len(prompts)} prompts one at a time, greedy, {n} new tokens each "
        "(EOS ignored); soft prompt before everything; measured with `softguard.cost`. Weights = the LLM, adapter, "
        "prefix cache and guard. Peak memory = the peak RSS of a fresh process while it runs that row alone (weights "
        "and the Python/torch runtime included: read it against the base row).",
        "",
        "| row | latency/request (ms) | x base | prefill (ms) | per token (ms) | TTFT (ms) | x base | tokens/s "
        "| x base | added params | weights (MB) | x base | peak memory (MB) | x base |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        r = results[name]
        weights = llm_bytes + r.added_bytes
        cells = [
            f"{r.total_ms:.0f}",
            f"{r.total_ms / base.total_ms:.3f}",
            f"{r.prefill_ms:.0f}",
            cell(r.per_token_ms, ".1f"),
            f"{r.ttft_ms:.0f}",
            f"{r.ttft_ms / base.ttft_ms:.2f}",
            f"{1000 * n / r.total_ms:.1f}",
            f"{base.total_ms / r.total_ms:.3f}",
            f"{r.added_parameters:,}",
            f"{weights / 2**20:.1f}",
            f"{weights / llm_bytes:.3f}",
            cell(r.peak_memory_mb, ".0f"),
            cell(r.peak_memory_mb / base.peak_memory_mb, ".3f"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cmd = "python bench/inference.py " + " ".join(sys.argv[1:])
    lines += ["", f"Command: `{cmd.strip()}`", ""]
    update_section(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
