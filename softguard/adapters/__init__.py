"""Adapters: small trainable additions to a frozen LLM, behind one interface (see ``base.Adapter``)."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from ..io import read_json
from .base import CONFIG_NAME, Adapter, AdapterError, decoder_hidden, embed_inputs
from .soft_prompt import DEFAULT_INIT_TEXT, SoftPrompt

ADAPTERS: dict[str, type[Adapter]] = {SoftPrompt.method: SoftPrompt}


def load_adapter(in_dir: str | Path, model: PreTrainedModel | None = None) -> Adapter:
    """Load any saved adapter, dispatching on the ``method`` recorded in its config."""
    try:
        method = read_json(Path(in_dir) / CONFIG_NAME).get("method")
    except (OSError, ValueError) as e:
        raise AdapterError(f"cannot read {Path(in_dir) / CONFIG_NAME} ({e}); is {in_dir} a softguard adapter?") from e
    if method not in ADAPTERS:
        raise AdapterError(f"{in_dir}: unknown adapter method {method!r}; known: {', '.join(ADAPTERS)}")
    return ADAPTERS[method].from_pretrained(in_dir, model)


__all__ = [
    "ADAPTERS",
    "DEFAULT_INIT_TEXT",
    "Adapter",
    "AdapterError",
    "SoftPrompt",
    "decoder_hidden",
    "embed_inputs",
    "load_adapter",
]
