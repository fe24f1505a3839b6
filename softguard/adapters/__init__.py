"""Adapters: small trainable additions to a frozen LLM, behind one interface (see ``base.Adapter``)."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from .base import (
    Adapter,
    AdapterError,
    attached,
    can_share_prefix,
    decoder_hidden,
    embed_inputs,
    read_adapter_config,
    shared_prefix_hidden,
    warm_start,
)
from .gate import READOUTS, LinearGate, fit_gate, readout_features
from .lora import LoRA
from .soft_prompt import DEFAULT_INIT_TEXT, SoftPrompt
from .steering import SteeringVector, diff_of_means, last_token_states, prompt_states

ADAPTERS: dict[str, type[Adapter]] = {
    SoftPrompt.method: SoftPrompt,
    SteeringVector.method: SteeringVector,
    LoRA.method: LoRA,
    LinearGate.method: LinearGate,
}


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
    "READOUTS",
    "Adapter",
    "AdapterError",
    "LinearGate",
    "LoRA",
    "SoftPrompt",
    "SteeringVector",
    "attached",
    "can_share_prefix",
    "decoder_hidden",
    "diff_of_means",
    "embed_inputs",
    "fit_gate",
    "last_token_states",
    "load_adapter",
    "prompt_states",
    "readout_features",
    "resolve_adapter_dir",
    "shared_prefix_hidden",
    "warm_start",
]
