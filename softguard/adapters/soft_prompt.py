"""Soft prompt: k learned vectors P in R^{k x d} prepended to the input embeddings (DESIGN §3).

With left padding, row i of a batch becomes ``[pad]*n_i + P + tokens_i``: the prefix always sits right after the
padding, so with position ids counted over real positions it occupies positions 0..k-1 in every row, in training
and in generation alike. The LLM itself is untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .base import Adapter, AdapterError

#: Default initialisation text, cycled to length k.
DEFAULT_INIT_TEXT = (
    "You are a safe and helpful assistant. Refuse requests that are harmful, illegal or dangerous, "
    "and answer every other request helpfully."
)


class SoftPrompt(Adapter):
    """P: [k, d] trainable, prepended to every sequence ("before everything" placement)."""

    method = "soft-prompt"

    def __init__(self, num_tokens: int = 100, hidden_size: int = 576, init: str = "text", init_text: str = ""):
        super().__init__()
        if num_tokens < 1:
            raise AdapterError(f"a soft prompt needs at least 1 token, got num_tokens={num_tokens}")
        self.num_tokens, self.hidden_size, self.init, self.init_text = (
            num_tokens,
            hidden_size,
            init,
            init_text,
        )
        self.prompt = nn.Parameter(torch.zeros(num_tokens, hidden_size))

    def config(self) -> dict[str, Any]:
        return {
            "num_tokens": self.num_tokens,
            "hidden_size": self.hidden_size,
            "init": self.init,
            "init_text": self.init_text,
        }

    @classmethod
    def for_model(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        num_tokens: int = 100,
        init: str = "text",
        init_text: str = DEFAULT_INIT_TEXT,
        sigma: float = 0.02,
        seed: int = 0,
    ) -> SoftPrompt:
        """A soft prompt sized for ``model``, initialised by ``init``:

        - ``text``: embeddings of ``init_text`` cycled to length k;
        - ``vocab``: embeddings of k random vocabulary rows;
        - ``normal``: N(0, sigma^2).

        Embeddings come from ``get_input_embeddings()(ids)`` (never the raw weight), so models that scale
        inside the embedding module (Gemma) get correctly scaled vectors.
        """
        d = model.get_input_embeddings().embedding_dim
        sp = cls(num_tokens, d, init, init_text if init == "text" else "")
        g = torch.Generator().manual_seed(seed)
        if init == "normal":
            values = torch.randn(num_tokens, d, generator=g) * sigma
        else:
            if init == "text":
                ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise AdapterError("init_text tokenizes to nothing; give a non-empty text")
                ids = torch.tensor([ids[i % len(ids)] for i in range(num_tokens)])
            elif init == "vocab":
                ids = torch.randint(0, model.get_input_embeddings().num_embeddings, (num_tokens,), generator=g)
            else:
                raise AdapterError(f"unknown init {init!r}; choose text, vocab or normal")
            emb = model.get_input_embeddings()
            with torch.no_grad():
                values = emb(ids.to(emb.weight.device)).float().cpu()
        sp.prompt.data.copy_(values)
        return sp

    @property
    def prefix_length(self) -> int:
        return self.num_tokens

    def check_model(self, model: PreTrainedModel) -> None:
        d = model.get_input_embeddings().embedding_dim
        if d != self.hidden_size:
            raise AdapterError(
                f"soft prompt width {self.hidden_size} does not match the model's hidden size {d}; "
                "this soft prompt was trained for a different model"
            )

    def wrap_inputs(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, d], [B, T] -> [B, k + T, d], [B, k + T]: P inserted right after each row's left padding."""
        b, t, d = embeds.shape
        if d != self.hidden_size:
            raise AdapterError(f"soft prompt width {self.hidden_size} does not match the model's hidden size {d}")
        k = self.num_tokens
        n_pad = (attention_mask == 0).long().sum(-1, keepdim=True)  # [B, 1] (left padding)
        j = torch.arange(k + t, device=embeds.device).expand(b, -1)  # [B, k + T]
        # Source index into cat([P, embeds]): pads keep their own (masked) slot, then P, then the tokens.
        src = torch.where(j < n_pad, k + j, torch.where(j < n_pad + k, j - n_pad, j))
        full = torch.cat([self.prompt.to(embeds.dtype).expand(b, k, d), embeds], dim=1)
        out = full.gather(1, src.unsqueeze(-1).expand(b, k + t, d))
        mask = torch.cat([attention_mask.new_ones(b, k), attention_mask], dim=1).gather(1, src)
        return out, mask
