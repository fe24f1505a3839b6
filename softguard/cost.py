"""Inference cost of a report row (DESIGN §6), measured the same way for every row.

A row is the LLM alone, the LLM with an adapter, or the two-model system (``SafeSystem``: LLM + guard). Each
request is one templated prompt (batch 1, the on-device case), decoded greedily for exactly ``max_new_tokens``
tokens (EOS ignored, so every row decodes the same number of tokens), timed with ``time.perf_counter``:

- prefill: from the start of the LLM's part of the request to its first token (tokenization and prefill forward);
- per token: the mean time of one decode step (first to last token, over ``max_new_tokens - 1`` steps);
- time to first token (TTFT), the first token the user can see: the prefill for an LLM row; guard scoring +
  prefill for a prompt-level system; the whole generation + guard scoring of the response for a response-level
  system (its guard must see the whole response before anything can be shown);
- total: the whole request, guard included.

A soft prompt whose prefix is the same for every request goes through a ``PrefixCache`` built once per row: not
timed, but its bytes count as added bytes. Model-side adapters (LoRA, steering) are attached around every request,
outside the timer. Added parameters/bytes are the adapter's (+ the prefix cache's bytes) or the guard model's.

Peak memory needs a process of its own: ``measure_row_isolated`` runs ``python -m softguard.cost`` on one row: it
loads the model and the adapter or guard, resets the peak mark, measures, and records the peak, on CUDA
``torch.cuda.max_memory_allocated()``, on CPU the peak resident set size (Linux: VmHWM after a reset through
/proc/self/clear_refs; where that is unavailable, ``ru_maxrss``, which also covers the transient peak of model
loading, often the largest, and the result's note says so). Either way it includes everything resident (the weights,
and on CPU the Python/torch runtime), so compare a row against the base row measured the same way. In-process
``measure_row`` reports the CUDA peak of each row's requests (everything resident in the process counts) and NaN on
CPU.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapters import Adapter, attached, load_adapter, read_adapter_config, resolve_adapter_dir
from .config import GuardConfig
from .generation import PrefixCache, decode_steps
from .guards import Guard, GuardError, load_guard
from .models import check_model_name, load_model
from .system import SafeSystem

MiB = 2**20


class CostError(RuntimeError):
    """A cost measurement that could not run (e.g. its subprocess failed)."""


@dataclass
class CostResult:
    """One row's cost; times are means over the timed requests, in milliseconds."""

    added_parameters: int
    added_bytes: int
    prefill_ms: float
    per_token_ms: float  # NaN when max_new_tokens == 1
    ttft_ms: float
    total_ms: float
    guard_ms: float  # the guard's scoring per request (0 without a guard)
    peak_memory_mb: float  # MiB; NaN when not measured (see the module docstring)
    new_tokens: int  # decoded per request
    requests: int  # timed requests
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters in their stored dtype."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def prefix_cache_bytes(prefix: PrefixCache) -> int:
    """Bytes of the cached keys and values (every layer's K and V for the prefix positions)."""
    return sum(t.numel() * t.element_size() for layer in prefix.cache.layers for t in (layer.keys, layer.values))


def guard_size(guard: Guard) -> tuple[int, int, str]:
    """(parameters, bytes, note) of a guard: an ``nn.Module`` (``EncoderGuard``) or an object with a ``.model``
    module (the HF guards); any other guard counts 0, which the note says."""
    module = guard if isinstance(guard, nn.Module) else getattr(guard, "model", None)
    if isinstance(module, nn.Module):
        return sum(p.numel() for p in module.parameters()), param_bytes(module), ""
    return 0, 0, f"{type(guard).__name__} has no parameters to count: the guard's size is counted as 0"


@dataclass
class _Row:
    """A row ready to time: what decode_steps gets, the guard (if any) and the added size."""

    adapter: Adapter | None
    prefix: PrefixCache | None
    guard: Guard | None
    mode: str
    added_parameters: int
    added_bytes: int
    note: str


def _prepare(
    model: PreTrainedModel, adapter: Adapter | None = None, system: SafeSystem | None = None, prefix_cache: bool = True
) -> _Row:
    if adapter is not None and system is not None:
        raise ValueError("a row is the LLM with an adapter, or the two-model system, not both")
    if system is not None:
        if system.guard is None:
            raise ValueError("the system has no guard to measure")
        n, b, note = guard_size(system.guard)
        return _Row(None, None, system.guard, system.mode, n, b, note)
    if adapter is None:
        return _Row(None, None, None, "", 0, 0, "")
    n, b = adapter.num_parameters(), adapter.num_bytes()
    if prefix_cache and adapter.prefix_cacheable:
        prefix = PrefixCache(model, adapter)
        return _Row(None, prefix, None, "", n, b + prefix_cache_bytes(prefix), "")
    return _Row(adapter, None, None, "", n, b, "")


def _request(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, row: _Row, prompt: str, user: str, n: int
) -> dict[str, float]:
    """One timed request (seconds): prefill, per_token, ttft, total, guard; and steps (tokens decoded)."""
    with attached(model, row.adapter), torch.inference_mode():  # attaching a model-side adapter is not timed
        t0 = t_llm = time.perf_counter()
        if row.mode == "prompt":
            row.guard.score([user])
            t_llm = time.perf_counter()
        ids, times = [], []
        steps = decode_steps(model, tokenizer, [prompt], row.adapter, row.prefix, n, stop_at_eos=False)
        with closing(steps):  # stop after the n-th token: no forward pass for a token never used
            for step in steps:
                ids.append(int(step[0]))  # also waits for the device
                times.append(time.perf_counter())
                if len(ids) == n:
                    break
        if row.mode == "response":
            row.guard.score([user], [tokenizer.decode(ids, skip_special_tokens=True)])
        t_end = time.perf_counter()
    return {
        "prefill": times[0] - t_llm,
        "per_token": (times[-1] - times[0]) / (n - 1) if n > 1 else math.nan,
        "ttft": (t_end if row.mode == "response" else times[0]) - t0,
        "total": t_end - t0,
        "guard": (t_llm - t0) + (t_end - times[-1] if row.mode == "response" else 0.0),
        "steps": len(ids),
    }


def measure_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    rows: dict[str, dict[str, Any]],
    *,
    users: list[str] | None = None,
    max_new_tokens: int = 32,
    repeats: int = 1,
) -> dict[str, CostResult]:
    """Several rows on the same prompts, interleaved request by request so a drift in machine load hits all alike.

    ``rows`` maps a name to ``measure_row``'s row arguments (``adapter``, ``system``, ``prefix_cache``). One untimed
    warm-up request per row first. ``users``: the user messages behind ``prompts``, which a guard reads (as in
    ``SafeSystem.respond``); default: the prompts themselves.
    """
    if not prompts or max_new_tokens < 1 or repeats < 1:
        raise ValueError("need at least one prompt, max_new_tokens >= 1 and repeats >= 1")
    users = users if users is not None else prompts
    if len(users) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(users)} user messages")
    ready = {name: _prepare(model, **spec) for name, spec in rows.items()}
    for row in ready.values():
        _request(model, tokenizer, row, prompts[0], users[0], max_new_tokens)
    cuda = model.device.type == "cuda"
    timed: dict[str, list[dict[str, float]]] = {name: [] for name in ready}
    peak = {name: 0 for name in ready}
    for _ in range(repeats):
        for prompt, user in zip(prompts, users, strict=True):
            for name, row in ready.items():
                if cuda:
                    torch.cuda.reset_peak_memory_stats(model.device)
                timed[name].append(_request(model, tokenizer, row, prompt, user, max_new_tokens))
                if cuda:
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated(model.device))
    results = {}
    for name, row in ready.items():
        ms = {k: 1000 * statistics.mean(r[k] for r in timed[name]) for k in timed[name][0] if k != "steps"}
        results[name] = CostResult(
            added_parameters=row.added_parameters,
            added_bytes=row.added_bytes,
            prefill_ms=ms["prefill"],
            per_token_ms=ms["per_token"],
            ttft_ms=ms["ttft"],
            total_ms=ms["total"],
            guard_ms=ms["guard"],
            peak_memory_mb=peak[name] / MiB if cuda else math.nan,
            new_tokens=min(r["steps"] for r in timed[name]),
            requests=len(timed[name]),
            note=row.note,
        )
    return results


def measure_row(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    adapter: Adapter | None = None,
    system: SafeSystem | None = None,
    prefix_cache: bool = True,
    users: list[str] | None = None,
    max_new_tokens: int = 32,
    repeats: int = 1,
) -> CostResult:
    """The cost of one row over templated ``prompts`` (each ``repeats`` times): the LLM, the LLM + ``adapter``,
    or ``system`` (its guard and mode; the LLM is ``model``). ``prefix_cache=False`` prefills a cacheable soft
    prompt with every request instead. See ``measure_rows`` for ``users``."""
    spec = {"adapter": adapter, "system": system, "prefix_cache": prefix_cache}
    return measure_rows(
        model, tokenizer, prompts, {"row": spec}, users=users, max_new_tokens=max_new_tokens, repeats=repeats
    )["row"]


def measure_row_isolated(
    model_name: str,
    prompts: list[str],
    *,
    adapter_dir: str | Path | None = None,
    guard_dir: str | Path | GuardConfig | None = None,
    guard_mode: str = "prompt",
    prefix_cache: bool = True,
    users: list[str] | None = None,
    max_new_tokens: int = 32,
    repeats: int = 1,
    device: str | None = None,
) -> CostResult:
    """``measure_row`` in a fresh ``python -m softguard.cost`` process, with the process's peak memory.

    The process loads ``model_name`` (``load_model``: a packaged name, a local directory or an HF id), then the
    adapter in ``adapter_dir`` (an adapter or a run directory) or the guard ``guard_dir`` (a guard directory of a kind
    ``guards.guard_kind`` detects, or a ``GuardConfig``; loaded by ``guards.load_guard``) as a ``SafeSystem`` in
    ``guard_mode``, with the caller's torch thread count. ``device``: default CUDA when available.
    """
    if adapter_dir is not None and guard_dir is not None:
        raise ValueError("a row is the LLM with an adapter, or the two-model system, not both")
    check_model_name(model_name)
    if adapter_dir is not None:  # fail fast, before starting a process
        adapter_dir = resolve_adapter_dir(adapter_dir)
        read_adapter_config(adapter_dir)
    guard = guard_dir if isinstance(guard_dir, GuardConfig | None) else GuardConfig(path=str(guard_dir))
    if guard is not None and guard.kind is None and not Path(guard.path).is_dir():
        raise GuardError(f"guard directory {guard.path} does not exist")
    spec = {
        "model": model_name,
        "prompts": prompts,
        "users": users,
        "adapter_dir": None if adapter_dir is None else str(adapter_dir),
        "guard": None if guard is None else asdict(guard),
        "guard_mode": guard_mode,
        "prefix_cache": prefix_cache,
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory(prefix="softguard-cost-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run(
            [sys.executable, "-m", "softguard.cost", str(spec_path), str(out_path)], capture_output=True, text=True
        )
        if proc.returncode != 0 or not out_path.is_file():
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise CostError(f"measuring {model_name} in a subprocess failed (exit {proc.returncode}):\n{tail}")
        return CostResult(**json.loads(out_path.read_text()))


def _reset_peak_memory(device: torch.device) -> bool:
    """Start the peak-memory mark at the current usage; on CPU (Linux >= 4.0) reset the peak RSS (VmHWM) through
    /proc/self/clear_refs. False where that is not possible (the peak then includes model loading)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_memory_mb(device: torch.device, since_reset: bool) -> float:
    """The peak since ``_reset_peak_memory``: CUDA memory allocated by torch, or VmHWM; without a reset the
    process's ``ru_maxrss`` (Linux: KiB, macOS: bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MiB
    if since_reset:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MiB if sys.platform == "darwin" else rss / 1024


def main(argv: list[str] | None = None) -> int:
    """``python -m softguard.cost SPEC.json RESULT.json``: one row as ``measure_row_isolated`` describes."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m softguard.cost SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(spec["threads"])
    model, tokenizer = load_model(spec["model"], device=spec["device"])
    adapter = system = None
    if spec["adapter_dir"]:
        adapter = load_adapter(spec["adapter_dir"], model).to(model.device)
    elif spec["guard"]:
        guard = load_guard(GuardConfig(**spec["guard"]), model.device)
        system = SafeSystem(model, tokenizer, guard, mode=spec["guard_mode"])
    since_reset = _reset_peak_memory(model.device)
    result = measure_row(
        model,
        tokenizer,
        spec["prompts"],
        adapter=adapter,
        system=system,
        prefix_cache=spec["prefix_cache"],
        users=spec["users"],
        max_new_tokens=spec["max_new_tokens"],
        repeats=spec["repeats"],
    )
    result.peak_memory_mb = _peak_memory_mb(model.device, since_reset)
    if not since_reset:
        result.note = "; ".join(filter(None, [result.note, "peak memory: the process's peak RSS, loading included"]))
    Path(argv[1]).write_text(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
