"""Inference cost of report rows (softguard.cost) on the tiny random Llama and a tiny BERT guard."""

from __future__ import annotations

import math
import subprocess

import pytest

from softguard import cost
from softguard.adapters import AdapterError, LoRA, SoftPrompt
from softguard.cost import CostError, CostResult, measure_row, measure_row_isolated, measure_rows
from softguard.guards import EncoderGuard
from softguard.models import ModelError, chat_prompt
from softguard.system import SafeSystem

USER = ["Hi", "Write a haiku about autumn"]
N_NEW = 4
D, LAYERS, KV_HEADS, HEAD_DIM = 32, 2, 2, 8  # make_tiny_llama's shapes


@pytest.fixture(scope="module")
def prompts(tiny_lm) -> list[str]:
    return [chat_prompt(tiny_lm[1], u) for u in USER]


@pytest.fixture(scope="module")
def guard(backbone) -> EncoderGuard:
    return EncoderGuard.from_backbone(backbone)


@pytest.fixture(scope="module")
def soft_prompt(tiny_lm) -> SoftPrompt:
    return SoftPrompt.for_model(*tiny_lm, num_tokens=5, init="normal", sigma=0.5)


@pytest.fixture(scope="module")
def measured(tiny_lm, prompts, guard, soft_prompt) -> tuple[dict[str, CostResult], list[int]]:
    """Every kind of row, measured once with ``decode_steps`` wrapped to count the tokens each request decodes."""
    model, tok = tiny_lm
    counts: list[int] = []

    def counting(*args, **kw):
        assert kw.get("stop_at_eos") is False
        for step in real(*args, **kw):
            counts[-1] += 1
            yield step

    real = cost.decode_steps
    rows = {
        "base": {},
        "soft prompt": {"adapter": soft_prompt},
        "soft prompt, uncached": {"adapter": soft_prompt, "prefix_cache": False},
        "lora": {"adapter": LoRA.for_model(model, rank=2)},
        "prompt-level": {"system": SafeSystem(model, tok, guard, mode="prompt")},
        "response-level": {"system": SafeSystem(model, tok, guard, mode="response")},
    }
    mp = pytest.MonkeyPatch()
    mp.setattr(cost, "decode_steps", lambda *a, **kw: counts.append(0) or counting(*a, **kw))
    try:
        results = measure_rows(model, tok, prompts, rows, users=USER, max_new_tokens=N_NEW)
    finally:
        mp.undo()
    return results, counts


def test_added_size_of_soft_prompt_lora_and_guard(measured, guard):
    r, _ = measured
    assert (r["base"].added_parameters, r["base"].added_bytes) == (0, 0)
    cache = LAYERS * 2 * KV_HEADS * 5 * HEAD_DIM * 4  # K and V per layer for 5 prefix positions, fp32
    assert r["soft prompt"].added_parameters == r["soft prompt, uncached"].added_parameters == 5 * D
    assert r["soft prompt"].added_bytes == 5 * D * 4 + cache
    assert r["soft prompt, uncached"].added_bytes == 5 * D * 4
    lora = LAYERS * 2 * ((D + D) + (D + KV_HEADS * HEAD_DIM))  # rank 2: A [2, in] + B [out, 2] on q_proj, v_proj
    assert (r["lora"].added_parameters, r["lora"].added_bytes) == (lora, 4 * lora)
    guard_params = sum(p.numel() for p in guard.encoder.parameters()) + D + 1  # encoder + Linear(32, 1)
    for name in ("prompt-level", "response-level"):
        assert (r[name].added_parameters, r[name].added_bytes) == (guard_params, 4 * guard_params)
        assert r[name].note == ""


def test_timings_are_positive_and_finite(measured):
    for name, r in measured[0].items():
        times = [r.prefill_ms, r.per_token_ms, r.ttft_ms, r.total_ms]
        assert all(math.isfinite(t) and t > 0 for t in times), name
        assert r.requests == len(USER) and math.isnan(r.peak_memory_mb)  # CPU: peak memory only when isolated
        assert (r.guard_ms > 0) == name.endswith("-level")


def test_ttft_includes_what_the_user_waits_for(measured):
    r = measured[0]
    for name in ("base", "soft prompt", "lora"):
        assert r[name].ttft_ms == pytest.approx(r[name].prefill_ms)
    prompt_level, response_level = r["prompt-level"], r["response-level"]
    assert prompt_level.ttft_ms == pytest.approx(prompt_level.guard_ms + prompt_level.prefill_ms)
    generation = response_level.prefill_ms + (N_NEW - 1) * response_level.per_token_ms
    assert response_level.ttft_ms == pytest.approx(response_level.total_ms)
    assert response_level.ttft_ms == pytest.approx(generation + response_level.guard_ms)
    assert response_level.ttft_ms > generation


def test_every_request_decodes_exactly_max_new_tokens(measured):
    results, counts = measured
    assert len(counts) == len(results) * (1 + len(USER))  # one warm-up request per row, then every prompt
    assert counts == [N_NEW] * len(counts)
    assert {r.new_tokens for r in results.values()} == {N_NEW}


def test_measure_row_single_row_and_parameterless_guard(tiny_lm, prompts, toy_guard, soft_prompt):
    model, tok = tiny_lm
    r = measure_row(model, tok, prompts[:1], system=SafeSystem(model, tok, toy_guard({})), max_new_tokens=1)
    assert (r.added_parameters, r.added_bytes, r.new_tokens) == (0, 0, 1)
    assert "ToyGuard" in r.note and math.isnan(r.per_token_ms)
    with pytest.raises(ValueError, match="not both"):
        measure_row(model, tok, prompts, adapter=soft_prompt, system=SafeSystem(model, tok, toy_guard({})))


def test_measure_row_isolated_in_a_subprocess(tiny_lm, prompts, soft_prompt, tmp_path):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    soft_prompt.save_pretrained(tmp_path / "sp")
    r = measure_row_isolated(str(tmp_path / "lm"), prompts, adapter_dir=tmp_path / "sp", max_new_tokens=2)
    assert r.peak_memory_mb > 0 and math.isfinite(r.peak_memory_mb)
    assert r.added_bytes == 5 * D * 4 + LAYERS * 2 * KV_HEADS * 5 * HEAD_DIM * 4
    assert (r.new_tokens, r.requests) == (2, len(prompts)) and r.total_ms > 0


def test_measure_row_isolated_errors(tmp_path, monkeypatch):
    with pytest.raises(AdapterError, match=r"adapter_config\.json is missing"):
        measure_row_isolated("smollm2-135m", ["x"], adapter_dir=tmp_path / "no-such-adapter")
    with pytest.raises(ModelError, match="unknown model"):
        measure_row_isolated("no-such-model", ["x"])
    failed = subprocess.CompletedProcess([], 1, "", "Traceback ...\nAdapterError: unknown adapter method 'nope'\n")
    monkeypatch.setattr(cost.subprocess, "run", lambda *a, **kw: failed)
    with pytest.raises(CostError, match=r"failed \(exit 1\):\n.*\nAdapterError: unknown adapter method 'nope'"):
        measure_row_isolated("smollm2-135m", ["x"])
