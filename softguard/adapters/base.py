"""The interface every adapter implements, and the student forward pass built on it.

An adapter is a small trainable module beside a frozen causal LM. It may change the input embeddings (input-side:
the soft prompt) and/or hook into the model (model-side: LoRA, steering). Training and generation only ever call
``embed_inputs``/``decoder_hidden``/``shared_prefix_hidden`` below inside ``attached(model, adapter)``, so every
adapter trains and generates through the same path. The teacher's forward pass runs inside ``adapter.bypassed()``:
the same network, with the base model's outputs exactly.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_causal_mask

from ..io import atomic_dir, changed_file, file_hashes, read_json

WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"


class AdapterError(RuntimeError):
    """An adapter that does not fit its model, or a checkpoint that cannot be read."""


class Adapter(nn.Module, abc.ABC):
    """Base class: a trainable addition to a frozen causal LM.

    Subclasses set ``method``, implement ``config()`` (JSON-able constructor kwargs) and, as needed,
    ``prefix_length``/``wrap_inputs`` (input-side adapters) or ``_hook``/``_unhook``/``bypassed`` (model-side).
    """

    method: ClassVar[str] = ""
    _model: PreTrainedModel | None = None  # the model the adapter is attached to (kept out of the module tree)

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this adapter (without its weights)."""

    @property
    def prefix_length(self) -> int:
        """Number of positions the adapter inserts before the response (input-side adapters)."""
        return 0

    @property
    def prefix_cacheable(self) -> bool:
        """True when the inserted positions come first and are the same for every request (a KV prefix cache)."""
        return False

    def wrap_inputs(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, d], [B, T], [B, T] -> [B, T + prefix_length, d], [B, T + prefix_length]; identity by default."""
        return embeds, attention_mask

    def forward(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Calls ``wrap_inputs``; going through ``__call__`` keeps DDP's gradient hooks working."""
        return self.wrap_inputs(embeds, attention_mask, input_ids)

    @property
    def attached_to(self) -> PreTrainedModel | None:
        return self._model

    def attach(self, model: PreTrainedModel) -> None:
        """Hook into ``model`` (``_hook``); an adapter is attached to at most one model at a time."""
        if self._model is model:
            return
        if self._model is not None:
            raise AdapterError("this adapter is attached to another model; detach it first")
        self.check_model(model)
        self._hook(model)
        object.__setattr__(self, "_model", model)  # a plain attribute: the LLM must not become a submodule

    def detach(self) -> None:
        """Undo ``attach``; the model's outputs are then exactly the base model's."""
        if self._model is not None:
            self._unhook()
            object.__setattr__(self, "_model", None)

    def _hook(self, model: PreTrainedModel) -> None:
        """Install the adapter into ``model`` (model-side adapters); nothing for input-side ones."""

    def _unhook(self) -> None:
        """Remove what ``_hook`` installed."""

    def bypassed(self) -> AbstractContextManager:
        """While attached: a block in which the model computes the base model's outputs (the teacher)."""
        return nullcontext()

    def forced_response(self, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """After a forward of left-padded prompts with the adapter attached (``attention_mask`` [B, T]: that
        forward's): (rows [B] bool, token ids [R]) when the adapter fixes those rows' response to those tokens (the
        gate's r*), else None (the default)."""
        return None

    def override_logp(self, model: PreTrainedModel, batch: dict[str, Any], logp: torch.Tensor) -> torch.Tensor:
        """The adapter's log q [N, V] at a teacher-forced batch's loss positions (``losses.collate``), given ``logp``
        computed through the model with the adapter; unchanged by default (the gate overrides it)."""
        return logp

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_parameters(self) -> int:
        """Numbers the adapter adds to the model at inference (trainable or fixed, e.g. a diff-of-means vector)."""
        return sum(p.numel() for p in self.parameters())

    def num_bytes(self) -> int:
        """Bytes of those numbers in their stored dtype."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def save_pretrained(self, out_dir: str | Path, **metadata: Any) -> None:
        """Write ``adapter.safetensors`` and ``adapter_config.json`` (method, config, the sha256 of every other file,
        metadata) atomically."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_dir(out_dir) as tmp:
            save_file(state, str(tmp / WEIGHTS_NAME))
            cfg = {
                "method": self.method,
                "config": self.config(),
                "files": file_hashes(tmp),
                **metadata,
            }
            (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, in_dir: str | Path, model: PreTrainedModel | None = None) -> Adapter:
        """Rebuild the adapter saved in ``in_dir`` in eval mode; ``model`` (when given) is checked for compatibility
        and the adapter moved to its device."""
        cfg, state = read_adapter_files(in_dir)
        if cfg.get("method") != cls.method:
            raise AdapterError(f"{in_dir} holds a {cfg.get('method')!r} adapter, not {cls.method!r}")
        adapter = cls(**cfg["config"])
        if model is not None:
            adapter.check_model(model)
        try:
            adapter.load_state_dict(state)
        except RuntimeError as e:
            raise AdapterError(f"{in_dir}/{WEIGHTS_NAME} does not match its config: {e}") from e
        if model is not None:
            adapter.to(model.device)
        return adapter.eval()  # like a loaded HF model: inference mode (no LoRA dropout) until training asks

    def check_model(self, model: PreTrainedModel) -> None:
        """Raise ``AdapterError`` when the adapter cannot be used with ``model``."""


#: ``config()`` keys that say how an adapter was initialised or regularised, not what its weights mean.
_INIT_KEYS = frozenset({"init", "init_text", "dropout"})


def warm_start(adapter: Adapter, saved: Adapter) -> None:
    """Copy ``saved``'s weights into ``adapter`` (a fresh adapter of the run's config). Both must be the same method
    and shape: their ``config()`` may differ only in how they were initialised (and LoRA's dropout)."""
    mine = {k: v for k, v in adapter.config().items() if k not in _INIT_KEYS}
    theirs = {k: v for k, v in saved.config().items() if k not in _INIT_KEYS}
    if saved.method != adapter.method or mine != theirs:
        diff = {k: (theirs.get(k), mine.get(k)) for k in mine.keys() | theirs.keys() if theirs.get(k) != mine.get(k)}
        raise AdapterError(
            f"cannot start this {adapter.method} adapter from a saved {saved.method} one: they differ in "
            f"(saved, this run) {diff or 'method'}; give the run the saved adapter's options"
        )
    adapter.load_state_dict(saved.state_dict())


def read_adapter_config(in_dir: str | Path) -> dict[str, Any]:
    """An adapter directory's ``adapter_config.json``, reporting a missing or corrupt file by name."""
    path = Path(in_dir) / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{path} is missing; is {in_dir} an adapter saved by softguard?")
    try:
        return read_json(path)
    except ValueError as e:
        raise AdapterError(f"{path} is corrupt ({e}); retrain or restore the adapter") from e


def read_adapter_files(in_dir: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an adapter directory's config and tensors, checking every file against the sha256 its config records
    (adapters saved before per-file hashes record ``weights_sha256``, their only other file's)."""
    in_dir = Path(in_dir)
    cfg = read_adapter_config(in_dir)
    if not (in_dir / WEIGHTS_NAME).is_file():
        raise AdapterError(f"{in_dir / WEIGHTS_NAME} is missing; is {in_dir} an adapter saved by softguard?")
    problem = changed_file(in_dir, cfg.get("files") or {WEIGHTS_NAME: cfg.get("weights_sha256")})
    if problem:
        raise AdapterError(f"{problem}; retrain or restore the adapter")
    try:
        state = load_file(str(in_dir / WEIGHTS_NAME))
    except (SafetensorError, OSError) as e:
        raise AdapterError(f"{in_dir / WEIGHTS_NAME} is corrupt ({e}); retrain or restore the adapter") from e
    return cfg, state


@contextmanager
def attached(model: PreTrainedModel, adapter: Adapter | None) -> Iterator[None]:
    """``adapter`` hooked into ``model`` for the block; the model is left as it was found (already attached: no-op)."""
    if adapter is None or adapter.attached_to is model:
        yield
        return
    adapter.attach(model)
    try:
        yield
    finally:
        adapter.detach()


def embed_inputs(
    model: PreTrainedModel, adapter: nn.Module | None, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (left padded) -> (inputs_embeds, attention_mask, position_ids) with the adapter applied.

    Position ids count real positions only (cumsum of the mask - 1), so with left padding the first real
    position (the soft prefix, when there is one) is always position 0, as in training.
    """
    embeds = model.get_input_embeddings()(input_ids)
    if adapter is not None:
        embeds, attention_mask = adapter(embeds, attention_mask, input_ids)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return embeds, attention_mask, position_ids


def decoder_hidden(
    model: PreTrainedModel, adapter: nn.Module | None, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Final hidden states [B, P + T, d] of the decoder (no LM head), P = adapter.prefix_length.

    Applying ``model.get_output_embeddings()`` only to the positions that carry a loss saves the
    [B, T, vocab] logits tensor (DESIGN §7).
    """
    with attached(model, getattr(adapter, "module", adapter)):  # DDP wraps the adapter as ``.module``
        embeds, mask, pos = embed_inputs(model, adapter, input_ids, attention_mask)
        out = model.get_decoder()(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False)
    return out.last_hidden_state


def can_share_prefix(model: PreTrainedModel) -> bool:
    """True when ``shared_prefix_hidden`` computes exactly what whole rows would on ``model``: every layer attends to
    all earlier positions (no sliding window), through an attention implementation that applies any mask it is
    given (sdpa, eager; flash attention's masks are padding only)."""
    cfg = model.get_decoder().config
    return getattr(cfg, "sliding_window", None) is None and cfg._attn_implementation in ("sdpa", "eager")


def shared_prefix_hidden(
    model: PreTrainedModel, adapter: nn.Module | None, shared_ids: torch.Tensor, rows: list[torch.Tensor]
) -> torch.Tensor:
    """Final hidden states of B sequences ``shared_ids + rows[i]`` that all begin with the same S tokens
    ``shared_ids`` [S], with that beginning run once: the states of the rows' own tokens, concatenated, [R, d]
    (R = sum_i len(rows[i])).

    One forward of the packed sequence ``[prefix | row_1 | ... | row_B]``, batch 1, no padding: the prefix is
    ``embed_inputs(shared_ids)``, i.e. the adapter's inserted positions P and the S tokens (L = S + P positions
    0..L-1; calling the adapter module itself, so that DDP sees its parameters used), row i's tokens take positions
    L, L+1, ..., and the attention mask lets every token see the prefix and the earlier tokens of its own row only.
    Each row token thus has the position and the visible tokens of the unshared layout ``[pad | prefix | row_i]``,
    and the result equals ``decoder_hidden`` on whole rows (to float rounding) when ``can_share_prefix(model)``,
    while the prefix runs once, with gradient flowing into it from every row. Model-side adapters act everywhere
    (they are hooked into the model)."""
    decoder = model.get_decoder()
    with attached(model, getattr(adapter, "module", adapter)):  # DDP wraps the adapter as ``.module``
        ids = shared_ids[None]
        prefix, _, _ = embed_inputs(model, adapter, ids, torch.ones_like(ids))  # [1, L, d]
        dev, n = shared_ids.device, prefix.shape[1]
        lengths = torch.tensor([len(r) for r in rows], device=dev)
        embeds = torch.cat([prefix, model.get_input_embeddings()(torch.cat(rows))[None]], dim=1)  # [1, L + R, d]
        # each position's segment (-1: the prefix, i: row i) and position id (restarting at L in every row)
        seg = torch.cat([lengths.new_full((n,), -1), torch.arange(len(rows), device=dev).repeat_interleave(lengths)])
        first = (torch.cumsum(lengths, 0) - lengths).repeat_interleave(lengths)  # [R]: where each token's row starts
        pos = torch.cat([torch.arange(n, device=dev), n + torch.arange(len(first), device=dev) - first])
        mask = create_causal_mask(  # causal, and within the own row or the prefix; in the implementation's format
            decoder.config,
            embeds,
            attention_mask=None,
            past_key_values=None,
            and_mask_function=lambda b, h, q, kv: (seg[kv] == seg[q]) | (seg[kv] < 0),
        )
        out = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=pos[None], use_cache=False)
    return out.last_hidden_state[0, n:]
