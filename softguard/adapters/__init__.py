"""Adapters: small trainable additions to a frozen LLM, behind one interface (see ``base.Adapter``)."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from .base import Adapter, AdapterError, attached, decoder_hidden, embed_inputs, read_adapter_config
from .soft_prompt import DEFAULT_INIT_TEXT, SoftPrompt

ADAPTERS: dict[str, type[Adapter]] = {SoftPrompt.method: SoftPrompt}


def resolve_adapter_dir(path: str | Path) -> Path:
    """A run directory resolves to its dev-selected student (``student/best``); an adapter dir is itself."""
    path = Path(path)
    return path / "student" / "best" if (path / "student" / "best").is_dir() else path


def load_adapter(in_dir: str | Path, model: PreTrainedModel | None = None) -> Adapter:
    """Load any saved adapter, dispatching on the ``method`` recorded in its config."""
    method = read_adapter_config(in_dir).get("method")
    if method not in ADAPTERS:
        raise AdapterError(f"{in_dir}: unknown adapter method {method!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[method].from_pretrained(in_dir, model)


__all__ = [
    "ADAPTERS",
    "DEFAULT_INIT_TEXT",
    "Adapter",
    "AdapterError",
    "SoftPrompt",
    "attached",
    "decoder_hidden",
    "embed_inputs",
    "load_adapter",
    "resolve_adapter_dir",
]
