"""Export a trained soft prompt or LoRA for inference without softguard.

- ``peft`` (soft prompt): a PEFT prompt-tuning adapter directory (``adapter_config.json`` +
  ``adapter_model.safetensors`` holding ``prompt_embeddings`` [k, d]); ``PeftModel.from_pretrained(base, OUT)``
  loads it and prepends the same vectors.
- ``peft`` (LoRA): a PEFT LoRA adapter directory (``LoraConfig`` with the exact target module paths, r, alpha and
  dropout; ``base_model.model.<path>.lora_A.weight`` [r, in] / ``lora_B.weight`` [out, r] per target);
  ``PeftModel.from_pretrained(base, OUT)`` computes the same W x + (alpha / r) B A x, and ``merge_and_unload()``
  folds it into the weights for an inference runtime that knows no adapters.
- ``safetensors`` (soft prompt only): ``soft_prompt.safetensors`` (one tensor ``soft_prompt`` [k, d]) and
  ``soft_prompt.json`` (k, d, base model), for plain transformers: prepend it to ``get_input_embeddings()(ids)``.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from .adapters import LoRA, SoftPrompt, load_adapter, resolve_adapter_dir
from .io import atomic_dir, read_json

FORMATS = ("peft", "safetensors")


def export(src: str | Path, out: str | Path, fmt: str = "peft") -> Path:
    """Write the soft prompt or LoRA found at ``src`` (run or adapter directory) to ``out`` in format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    adapter_dir = resolve_adapter_dir(src)
    adapter = load_adapter(adapter_dir)
    run_cfg = adapter_dir.parent.parent / "config.json"
    base = read_json(run_cfg)["model"] if run_cfg.is_file() else None
    if isinstance(adapter, LoRA):
        if fmt != "peft":
            raise ValueError(f"{adapter_dir} holds a LoRA; it exports in PEFT's format (--format peft)")
        return _export_lora(adapter, out, base)
    if not isinstance(adapter, SoftPrompt):
        raise ValueError(f"{adapter_dir} holds a {adapter.method!r} adapter; only soft prompts and LoRA export")
    if adapter.placement != "start":
        raise ValueError(
            f"{adapter_dir} holds a soft prompt placed before the user's message; PEFT prompt tuning and the bare "
            "format only prepend, so only placement 'start' exports (use it through softguard instead)"
        )
    prompt = adapter.prompt.detach().cpu().contiguous()
    k, d = prompt.shape
    with atomic_dir(out) as tmp:
        if fmt == "peft":
            from peft import PromptTuningConfig

            cfg = PromptTuningConfig(
                task_type="CAUSAL_LM", num_virtual_tokens=k, token_dim=d, base_model_name_or_path=base
            )
            cfg.save_pretrained(str(tmp))
            save_file({"prompt_embeddings": prompt}, str(tmp / "adapter_model.safetensors"))
        else:
            save_file({"soft_prompt": prompt}, str(tmp / "soft_prompt.safetensors"))
            meta = {"num_tokens": k, "hidden_size": d, "base_model": base, "placement": "before everything"}
            (tmp / "soft_prompt.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def _export_lora(lora: LoRA, out: str | Path, base: str | None) -> Path:
    """PEFT LoRA directory; ``target_modules`` lists the full paths, so PEFT wraps exactly the layers we trained."""
    from peft import LoraConfig

    cfg = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=sorted(lora.targets),
        base_model_name_or_path=base,
    )
    state = {}
    for path, (a, b) in lora.factors().items():
        state[f"base_model.model.{path}.lora_A.weight"] = a.detach().cpu().contiguous()
        state[f"base_model.model.{path}.lora_B.weight"] = b.detach().cpu().contiguous()
    with atomic_dir(out) as tmp:
        cfg.save_pretrained(str(tmp))
        save_file(state, str(tmp / "adapter_model.safetensors"))
    return Path(out)
