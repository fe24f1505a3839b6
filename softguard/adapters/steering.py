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

import abc
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
from rich.progress import Progress
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


def check_layer(model: PreTrainedModel, hidden_size: int, layer: int, num_layers: int | None, what: str) -> None:
    """``AdapterError`` unless ``model`` has width ``hidden_size``, ``num_layers`` layers (when recorded) and a layer
    ``layer``: the checks of an adapter hooked into one decoder layer (a steering vector, a gate)."""
    d = model.get_input_embeddings().embedding_dim
    if d != hidden_size:
        raise AdapterError(
            f"{what} width {hidden_size} does not match the model's hidden size {d}; "
            f"this {what} was made for a different model"
        )
    n = len(decoder_layers(model))
    if num_layers is not None and num_layers != n:
        raise AdapterError(
            f"this {what} was made for a model with {num_layers} layers, this one has {n}; "
            "recompute or retrain it for this model"
        )
    if not 0 <= layer < n:
        raise AdapterError(f"{what} layer {layer} is out of range for a model with {n} layers (0..{n - 1})")


class LayerHooked(Adapter):
    """Base of the adapters hooked into the output of one decoder layer (``self.layer``): ``_on_output`` is the
    forward hook (run before hooks already on the layer, e.g. transformers' ``output_hidden_states`` capture, so
    they see its effect); ``bypassed`` sets ``_bypassed``, during which the hook must leave the model as it is."""

    layer: int

    def __init__(self) -> None:
        super().__init__()
        self._handle: RemovableHandle | None = None
        self._bypassed = False

    @abc.abstractmethod
    def _on_output(self, module: nn.Module, args: tuple, output: Any) -> Any:
        """The forward hook on the layer: a replacement output, or None to keep it."""

    def _hook(self, model: PreTrainedModel) -> None:
        self._handle = decoder_layers(model)[self.layer].register_forward_hook(self._on_output, prepend=True)

    def _unhook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @contextmanager
    def bypassed(self) -> Iterator[None]:
        """A block in which the hook changes nothing: the base model's outputs exactly (restored on exit)."""
        previous, self._bypassed = self._bypassed, True
        try:
            yield
        finally:
            self._bypassed = previous


class SteeringVector(LayerHooked):
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
        check_layer(model, self.hidden_size, self.layer, self.num_layers, "steering vector")

    def _on_output(self, module: nn.Module, args: tuple, output: Any) -> Any:
        """Forward hook on layer l: its hidden states [B, T, d] + alpha * v (nothing while bypassed)."""
        if self._bypassed:
            return None
        hidden = _hidden_of(output)
        shift = (self.alpha * self.vector).to(device=hidden.device, dtype=hidden.dtype)
        steered = hidden + shift
        return (steered, *output[1:]) if isinstance(output, tuple) else steered


def own_positions(attention_mask: torch.Tensor, head: int) -> torch.Tensor:
    """[B, T] float: 1 at a prompt's real tokens after its first ``head`` ones (left or right padding), else 0."""
    real = attention_mask.float()
    return real * (real.cumsum(-1) > head).float()


@torch.inference_mode()
def prompt_states(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    layers: list[int],
    head: int = 0,
    batch_size: int = 16,
    desc: str | None = None,
) -> torch.Tensor:
    """Two read-outs of decoder layer l's outputs h_l(p)_t for every already-templated prompt p and layer l of
    ``layers``: [n, len(layers), 2, d] float32 on the CPU.

    [:, j, 0] is h_l(p) at the last token of p (left padded, position ids counted over real tokens as in training
    and generation); [:, j, 1] the mean of h_l(p)_t over p's own positions, its tokens after the first ``head``
    (``own_positions``; 0 for a prompt with none). Prompts are batched by length (less padding) and returned in
    their order; only the layers up to the deepest one asked for run. ``desc``: show a progress bar with that
    label."""
    stack = decoder_layers(model)
    if not layers or not all(0 <= layer < len(stack) for layer in layers):
        raise ValueError(f"layers {layers} must be a non-empty list within 0..{len(stack) - 1}")
    captured: dict[int, torch.Tensor] = {}

    class _Done(Exception):
        """Raised after the deepest layer asked for: the layers above it need not run."""

    def capture(layer: int) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            captured[layer] = _hidden_of(output).float()  # [B, T, d]
            if layer == max(layers):
                raise _Done

        return hook

    handles = [stack[layer].register_forward_hook(capture(layer)) for layer in sorted(set(layers))]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = []
    with Progress(disable=desc is None, transient=True) as bar:
        task = bar.add_task(desc or "", total=len(prompts))
        try:
            for start in range(0, len(prompts), batch_size):
                enc = tokenizer(
                    [prompts[i] for i in order[start : start + batch_size]],
                    return_tensors="pt",
                    padding=True,
                    padding_side="left",
                    add_special_tokens=False,
                )
                ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
                pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
                with suppress(_Done):
                    model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                own = own_positions(mask, head)
                own = own / own.sum(-1, keepdim=True).clamp(min=1)  # [B, T]: the mean's weights
                read = [
                    torch.stack([h[:, -1], torch.einsum("bt,btd->bd", own, h)], 1) for h in map(captured.get, layers)
                ]
                out.append(torch.stack(read, 1).cpu())  # [B, L, 2, d]; left padding: -1 is the last token
                bar.advance(task, len(ids))
        finally:
            for handle in handles:
                handle.remove()
    if not out:
        return torch.zeros(0, len(layers), 2, model.get_input_embeddings().embedding_dim)
    states = torch.empty_like(torch.cat(out))
    states[torch.tensor(order)] = torch.cat(out)  # back to the prompts' order
    return states


def last_token_states(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    layers: list[int],
    batch_size: int = 16,
    desc: str | None = None,
) -> torch.Tensor:
    """h_l(p) at the last token of every already-templated prompt p, for each layer l of ``layers``:
    [n, len(layers), d] float32 on the CPU (``prompt_states``' first read-out)."""
    return prompt_states(model, tokenizer, prompts, layers, 0, batch_size, desc)[:, :, 0]


def diff_of_means(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    flagged: list[str],
    passed: list[str],
    layer: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """v = mean_{p in flagged} h_l(p) - mean_{p in passed} h_l(p): [d] float32 on the CPU (h_l: ``last_token_states``).

    The difference is not normalised: with alpha = 1 a steering vector moves the mean passed activation onto the
    mean flagged one.
    """
    if not flagged or not passed:
        raise ValueError(
            f"diff_of_means needs at least one flagged and one passed prompt, got {len(flagged)} and {len(passed)}"
        )
    if not 0 <= layer < len(decoder_layers(model)):
        raise ValueError(f"layer {layer} is out of range for a model with {len(decoder_layers(model))} layers")

    def mean(prompts: list[str]) -> torch.Tensor:
        return last_token_states(model, tokenizer, prompts, [layer], batch_size)[:, 0].mean(0)

    return (mean(flagged) - mean(passed)).clone()  # cloned outside inference mode: an ordinary tensor
