"""Export a trained soft prompt for inference without softguard.

- ``peft``: a PEFT prompt-tuning adapter directory (``adapter_config.json`` + ``adapter_model.safetensors`` holding
  ``prompt_embeddings`` [k, d]); ``PeftModel.from_pretrained(base, OUT)`` loads it and prepends the same vectors.
- ``safetensors``: ``soft_prompt.safetensors`` (one tensor ``soft_prompt`` [k, d]) and ``soft_prompt.json``
  (k, d, base model), for plain transformers: prepend it to ``get_input_embeddings()(ids)`` (README).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from .adapters import SoftPrompt, load_adapter, resolve_adapter_dir
from .io import atomic_dir, read_json

FORMATS = ("peft", "safetensors")


def export(src: str | Path, out: str | Path, fmt: str = "peft") -> Path:
    """Write the soft prompt found at ``src`` (run or adapter directory) to ``out`` in format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    adapter_dir = resolve_adapter_dir(src)
    adapter = load_adapter(adapter_dir)
    if not isinstance(adapter, SoftPrompt):
        raise ValueError(f"{adapter_dir} holds a {adapter.method!r} adapter; only soft prompts export to {fmt}")
    if adapter.placement != "start":
        raise ValueError(
            f"{adapter_dir} holds a soft prompt placed before the user's message; PEFT prompt tuning and the bare "
            "format only prepend, so only placement 'start' exports (use it through softguard instead)"
        )
    run_cfg = adapter_dir.parent.parent / "config.json"
    base = read_json(run_cfg)["model"] if run_cfg.is_file() else None
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
