"""Steering vector: h_l <- h_l + alpha * v, added to the residual stream after decoder layer l at every position.

Two ways to get v in R^d:

- ``diff_of_means``: mean last-prompt-token activation at layer l over prompts the guard flags minus the mean over
  prompts it passes (activation addition / refusal-direction style); fixed (``learned=False``), with alpha chosen
  on the dev split;
- learned (``learned=True``): v trained with the same objectives as the other adapters (starts at zero).

The LLM itself is untouched: a forward hook on layer l adds alpha * v to that layer's output, and ``bypassed()``
switches the addition off (the teacher), so the model computes the base outputs exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .base import Adapter, AdapterError


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder's layer stack (``model.get_decoder().layers``)."""
    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise AdapterError(f"{type(model).__name__}'s decoder has no `layers` list; steering cannot hook into it")
    return layers


def _hidden_of(output: Any) -> torch.Tensor:
    """A decoder layer's output hidden states [B, T, d]: the output itself or its first element."""
    hidden = output[0] if isinstance(output, tuple) else output
    if not isinstance(hidden, torch.Tensor):
        raise AdapterError(f"unexpected decoder layer output {type(output).__name__}; expected a tensor or tuple")
    return hidden


class SteeringVector(Adapter):
    """v: [d], added as alpha * v to the output of decoder layer ``layer`` (0-based) at every position.

    ``learned=False``: v is fixed (e.g. from ``diff_of_means``) and not trained; ``learned=True``: v trains.
    ``num_layers`` (the model's layer count, recorded by ``for_model``) lets ``check_model`` refuse a model of
    the same width but another depth. ``alpha`` is a plain attribute: set it after choosing it on dev.
    """

    method = "steering"

    def __init__(
        self,
        hidden_size: int,
        layer: int,
        alpha: float = 1.0,
        learned: bool = False,
        num_layers: int | None = None,
    ):
        super().__init__()
        if hidden_size < 1:
            raise AdapterError(f"a steering vector needs hidden_size >= 1, got {hidden_size}")
        if layer < 0 or (num_layers is not None and layer >= num_layers):
            raise AdapterError(f"layer {layer} is out of range; choose 0 <= layer < {num_layers or 'num_layers'}")
        self.hidden_size, self.layer, self.alpha = hidden_size, layer, float(alpha)
        self.learned, self.num_layers = learned, num_layers
        self.vector = nn.Parameter(torch.zeros(hidden_size), requires_grad=learned)
        self._handle: RemovableHandle | None = None
        self._bypassed = False

    def config(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "layer": self.layer,
            "alpha": self.alpha,
            "learned": self.learned,
            "num_layers": self.num_layers,
        }

    @classmethod
    def for_model(
        cls, model: PreTrainedModel, layer: int | None = None, alpha: float = 1.0, learned: bool = False
    ) -> SteeringVector:
        """A zero steering vector sized for ``model``, at ``layer`` (default: the middle, num_layers // 2)."""
        n = len(decoder_layers(model))
        d = model.get_input_embeddings().embedding_dim
        return cls(d, n // 2 if layer is None else layer, alpha, learned, n)

    def check_model(self, model: PreTrainedModel) -> None:
        d = model.get_input_embeddings().embedding_dim
        if d != self.hidden_size:
            raise AdapterError(
                f"steering vector width {self.hidden_size} does not match the model's hidden size {d}; "
                "this steering vector was made for a different model"
            )
        n = len(decoder_layers(model))
        if self.num_layers is not None and self.num_layers != n:
            raise AdapterError(
                f"this steering vector was made for a model with {self.num_layers} layers, this one has {n}; "
                "recompute or retrain it for this model"
            )
        if not 0 <= self.layer < n:
            raise AdapterError(f"steering layer {self.layer} is out of range for a model with {n} layers (0..{n - 1})")

    def _steer(self, module: nn.Module, args: tuple, output: Any) -> Any:
        """Forward hook on layer l: its hidden states [B, T, d] + alpha * v (nothing while bypassed)."""
        if self._bypassed:
            return None
        hidden = _hidden_of(output)
        shift = (self.alpha * self.vector).to(device=hidden.device, dtype=hidden.dtype)
        steered = hidden + shift
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    def _hook(self, model: PreTrainedModel) -> None:
        # prepend: run before hooks already on the layer (transformers' output_hidden_states capture), so they
        # see the steered hidden states
        self._handle = decoder_layers(model)[self.layer].register_forward_hook(self._steer, prepend=True)

    def _unhook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @contextmanager
    def bypassed(self) -> Iterator[None]:
        """A block in which the hook adds nothing: the base model's outputs exactly (restored on exit)."""
        previous, self._bypassed = self._bypassed, True
        try:
            yield
        finally:
            self._bypassed = previous


def diff_of_means(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    flagged: list[str],
    passed: list[str],
    layer: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """v = mean_{p in flagged} h_l(p) - mean_{p in passed} h_l(p): [d] float32 on the CPU.

    h_l(p) is the output of decoder layer ``layer`` (0-based) at the last token of the already-templated prompt p
    (left padded, position ids counted over real tokens as in training and generation), accumulated in float32.
    The difference is not normalised: with alpha = 1 a steering vector moves the mean passed activation onto the
    mean flagged one.
    """
    if not flagged or not passed:
        raise ValueError(
            f"diff_of_means needs at least one flagged and one passed prompt, got {len(flagged)} and {len(passed)}"
        )
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} is out of range for a model with {len(layers)} layers")
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple, output: Any) -> None:
        captured.append(_hidden_of(output)[:, -1].float())  # [B, d]; left padding: -1 is each prompt's last token

    def mean_last(prompts: list[str]) -> torch.Tensor:
        total = torch.zeros(model.get_input_embeddings().embedding_dim, dtype=torch.float32, device=model.device)
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(
                prompts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,
            )
            ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
            captured.clear()
            model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
            total += captured[0].to(total.device).sum(0)
        return total / len(prompts)

    handle = layers[layer].register_forward_hook(capture)
    try:
        with torch.inference_mode():
            v = mean_last(flagged) - mean_last(passed)
    finally:
        handle.remove()
    return v.cpu().clone()  # cloned outside inference mode: an ordinary tensor
