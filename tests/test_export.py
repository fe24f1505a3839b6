"""Export: a PEFT prompt-tuning adapter that generates what softguard generates, and the bare tensor format."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from softguard.adapters import SoftPrompt
from softguard.export import export
from softguard.generation import generate, tokenize_prompts
from softguard.models import chat_prompt

USER = ["Hi", "What is the capital of France?", "Write a haiku about autumn leaves"]


@pytest.fixture
def saved(tiny_lm, tmp_path):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=4, init="normal", sigma=0.5)
    sp.save_pretrained(tmp_path / "run" / "student" / "best")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "tiny"}))
    return sp, tmp_path / "run"


def test_peft_export_generates_what_softguard_generates(tiny_lm, saved, tmp_path):
    model, tok = tiny_lm
    sp, run = saved
    out = export(run, tmp_path / "peft", "peft")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["num_virtual_tokens"], cfg["token_dim"]) == ("PROMPT_TUNING", 4, 32)
    assert cfg["base_model_name_or_path"] == "tiny"
    assert torch.equal(load_file(str(out / "adapter_model.safetensors"))["prompt_embeddings"], sp.prompt.detach())
    prompts = [chat_prompt(tok, u) for u in USER]
    ours = generate(model, tok, prompts, sp, max_new_tokens=6, batch_size=len(prompts), progress=False)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(out))  # keep the shared fixture untouched
    # PEFT ignores position ids, so with left padding its positions count the pads; compare one prompt at a time.
    theirs = []
    for prompt, g in zip(prompts, ours, strict=True):
        ids, mask = tokenize_prompts(tok, [prompt])
        with torch.no_grad():
            row = peft_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)[0]
        theirs.append(row[ids.shape[1] :].tolist()[: len(g.token_ids)])
    assert theirs == [g.token_ids for g in ours]


def test_safetensors_export_is_the_bare_tensor(saved, tmp_path):
    sp, run = saved
    out = export(run / "student" / "best", tmp_path / "bare", "safetensors")
    assert torch.equal(load_file(str(out / "soft_prompt.safetensors"))["soft_prompt"], sp.prompt.detach())
    meta = json.loads((out / "soft_prompt.json").read_text())
    assert (meta["num_tokens"], meta["hidden_size"]) == (4, 32)


def test_unknown_format_is_refused(saved, tmp_path):
    with pytest.raises(ValueError, match="peft, safetensors"):
        export(saved[1], tmp_path / "x", "onnx")


def test_lora_exports_to_a_peft_adapter_with_the_same_outputs(tiny_lm, tmp_path):
    from softguard.adapters import LoRA, attached

    model, tok = tiny_lm
    lora = LoRA.for_model(model, rank=4, alpha=8.0, dropout=0.1, target_modules=["q_proj", "v_proj"], seed=1)
    with torch.no_grad():  # B starts at zero (no change at all): give it values so the test can fail
        for _, b in lora.factors().values():
            b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(b.shape[0])) * 0.5)
    lora.save_pretrained(tmp_path / "run" / "student" / "best")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "tiny"}))
    out = export(tmp_path / "run", tmp_path / "peft-lora", "peft")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == ("LORA", 4, 8.0, 0.1)
    assert sorted(cfg["target_modules"]) == sorted(lora.targets) and cfg["base_model_name_or_path"] == "tiny"
    ids, mask = tokenize_prompts(tok, [chat_prompt(tok, u) for u in USER])
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
        with attached(model, lora.eval()):
            ours = model(input_ids=ids, attention_mask=mask).logits
        peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
        merged = peft_model.merge_and_unload()(input_ids=ids, attention_mask=mask).logits
    assert (ours - base).abs().max() > 1e-2  # the adapter does change the outputs
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(merged, ours, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="--format peft"):
        export(tmp_path / "run", tmp_path / "bare-lora", "safetensors")


def test_steering_vectors_do_not_export(tiny_lm, tmp_path):
    from softguard.adapters import SteeringVector

    model, _ = tiny_lm
    SteeringVector.for_model(model, layer=0).save_pretrained(tmp_path / "steer")
    with pytest.raises(ValueError, match="only soft prompts and LoRA export"):
        export(tmp_path / "steer", tmp_path / "x", "peft")
    assert not (tmp_path / "x").exists()
