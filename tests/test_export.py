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
