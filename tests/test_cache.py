"""Caches keyed by content: the teacher-sample cache (and the greedy responses kept in it) and a run directory's
inputs follow the model's weights, the tokenizer and the guard's files, not their names or paths."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_llama
from transformers import AutoTokenizer

from softguard import fingerprint
from softguard.models import load_model, resolve_model
from softguard.pipeline import check_inputs
from softguard.system import SafeSystem

PROMPTS = ["How do I bake bread?", "Name three rivers.", "Write a haiku about rain."]
SAMPLING = {"num_samples": 1, "max_new_tokens": 6, "temperature": 1.0, "seed": 0}


def test_teacher_cache_misses_when_the_model_directory_is_retrained(tokenizer, tmp_path, monkeypatch):
    """The same directory, overwritten with other weights of the same size: the cache misses and the samples are
    drawn again (and differ); an unchanged directory hits, without hashing its files again."""
    import softguard.system

    d, cache, calls = tmp_path / "model", tmp_path / "cache", []
    tokenizer.save_pretrained(d)
    real_generate = softguard.system.generate

    def counting_generate(*args, **kwargs):
        calls.append(1)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(softguard.system, "generate", counting_generate)

    def samples() -> dict[str, list[list[int]]]:
        model, tok = load_model(str(d))
        return SafeSystem(model, tok, None).base_samples(PROMPTS, cache_dir=cache, **SAMPLING)

    make_tiny_llama(len(tokenizer), seed=0).save_pretrained(d)
    size = (d / "model.safetensors").stat().st_size
    first = samples()
    assert len(calls) == 1
    assert samples() == first and len(calls) == 1  # unchanged: a hit

    make_tiny_llama(len(tokenizer), seed=1).save_pretrained(d)  # "retrained" into the same directory
    assert (d / "model.safetensors").stat().st_size == size  # same path, name and size: only the bytes differ
    second = samples()
    assert len(calls) == 2 and second != first
    assert len(list((cache / "teacher").glob("*.json"))) == 2

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed again although unchanged")

    monkeypatch.setattr(fingerprint.assets, "sha256_file", no_hashing)  # the files' sha256 come from their stat
    assert samples() == second and len(calls) == 2


def test_in_memory_models_are_keyed_by_their_tensors(tiny_lm, tmp_path):
    """Two random models with the same (empty) name and parameter count used to share cache entries."""
    model, tok = tiny_lm
    same = make_tiny_llama(len(tok), seed=0)
    other = make_tiny_llama(len(tok), seed=1)
    nudged = copy.deepcopy(model)
    with torch.no_grad():
        nudged.lm_head.weight[0, 0] += 1e-3
    key = fingerprint.model_sha256(model)
    assert fingerprint.model_sha256(same) == key
    assert len({key, fingerprint.model_sha256(other), fingerprint.model_sha256(nudged)}) == 3
    a = SafeSystem(model, tok, None).base_samples(PROMPTS, cache_dir=tmp_path, **SAMPLING)
    b = SafeSystem(other, tok, None).base_samples(PROMPTS, cache_dir=tmp_path, **SAMPLING)
    assert a != b and len(list((tmp_path / "teacher").glob("*.json"))) == 2
    # the sampler's random stream runs across batches: another batch size is another entry
    SafeSystem(model, tok, None).base_samples(PROMPTS, cache_dir=tmp_path, batch_size=1, **SAMPLING)
    assert len(list((tmp_path / "teacher").glob("*.json"))) == 3


def test_greedy_responses_are_generated_once(tiny_lm, tmp_path, monkeypatch):
    """The base model's greedy responses (evaluation and dev sets): exactly ``generate``'s, read back from the cache
    on the second call; other settings are another entry."""
    import softguard.system
    from softguard.generation import generate

    model, tok = tiny_lm
    system = SafeSystem(model, tok, None)
    expected = generate(model, tok, system.template(PROMPTS), max_new_tokens=6, batch_size=2, progress=False)
    first = system.greedy(PROMPTS, max_new_tokens=6, batch_size=2, cache_dir=tmp_path)
    assert first == expected

    def no_generate(*args, **kwargs):
        raise AssertionError("generated again although cached")

    monkeypatch.setattr(softguard.system, "generate", no_generate)
    assert system.greedy(PROMPTS, max_new_tokens=6, batch_size=2, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="generated again"):
        system.greedy(PROMPTS, max_new_tokens=5, batch_size=2, cache_dir=tmp_path)


def test_tokenizer_key_follows_its_definition_and_chat_template(tokenizer):
    fresh = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    key = fingerprint.tokenizer_sha256(fresh)
    assert fingerprint.tokenizer_sha256(tokenizer) == key  # the padding side is not part of it
    fresh(["a", "bb cc dd"], padding=True, truncation=True, max_length=3)  # call-time settings are not either
    assert fingerprint.tokenizer_sha256(fresh) == key
    fresh.chat_template = fresh.chat_template.replace("assistant", "bot")
    assert fingerprint.tokenizer_sha256(fresh) != key


def test_guard_directory_key_ignores_its_evaluation_and_temporary_files(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "tok" / "vocab.txt").write_text("a\nb\n")
    key = fingerprint.dir_sha256(tmp_path, skip=("guard_eval.json",))
    (tmp_path / "guard_eval.json").write_text("{}")
    (tmp_path / ".model.safetensors.tmp-1").write_bytes(b"half")
    assert fingerprint.dir_sha256(tmp_path, skip=("guard_eval.json",)) == key
    (tmp_path / "tok" / "vocab.txt").write_text("a\nc\n")
    assert fingerprint.dir_sha256(tmp_path, skip=("guard_eval.json",)) != key


def test_a_run_refuses_to_resume_on_changed_inputs(tmp_path):
    inputs = {"model": "a" * 64, "tokenizer": "b" * 64, "guard_backbone": "c" * 64}
    check_inputs(tmp_path, inputs)
    check_inputs(tmp_path, dict(inputs))  # the same contents resume
    with pytest.raises(ValueError, match=r"other contents of: guard_backbone, model .*delete"):
        check_inputs(tmp_path, inputs | {"model": "d" * 64, "guard_backbone": "e" * 64})
