"""Soft prompt: k learned vectors P in R^{k x d} inserted into the input embeddings (DESIGN §3).

Two placements:

- ``start`` (default): before everything. With left padding, row i of a batch becomes ``[pad]*n_i + P + tokens_i``:
  with position ids counted over real positions P occupies positions 0..k-1 in every row, in training and in
  generation alike, so its keys and values can be cached once (``generation.PrefixCache``).
- ``user``: just before the user's message. The chat template's fixed head (system turn + user header, ``head``
  token ids, recorded at creation) is kept first: ``[pad]*n_i + head + P + message_i...``. Every prompt must start
  with that head; the soft prompt of a conversation sits before its first user message.

The LLM itself is untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models import chat_prompt
from .base import Adapter, AdapterError

PLACEMENTS = ("start", "user")
INITS = ("text", "vocab", "normal")

#: Default initialisation text, cycled to length k.
DEFAULT_INIT_TEXT = (
    "You are a safe and helpful assistant. Refuse requests that are harmful, illegal or dangerous, "
    "and answer every other request helpfully."
)


class SoftPrompt(Adapter):
    """P: [k, d] trainable, inserted before everything (``start``) or before the user's message (``user``)."""

    method = "soft-prompt"

    def __init__(
        self,
        num_tokens: int = 100,
        hidden_size: int = 576,
        init: str = "text",
        init_text: str = "",
        placement: str = "start",
        head: list[int] | None = None,
    ):
        super().__init__()
        if num_tokens < 1:
            raise AdapterError(f"a soft prompt needs at least 1 token, got num_tokens={num_tokens}")
        if placement not in PLACEMENTS:
            raise AdapterError(f"unknown placement {placement!r}; choose one of: {', '.join(PLACEMENTS)}")
        if placement == "user" and not head:
            raise AdapterError("placement 'user' needs the chat template's head token ids (use SoftPrompt.for_model)")
        self.num_tokens, self.hidden_size, self.init, self.init_text = num_tokens, hidden_size, init, init_text
        self.placement = placement
        self.head = list(head or []) if placement == "user" else []
        self.prompt = nn.Parameter(torch.zeros(num_tokens, hidden_size))

    def config(self) -> dict[str, Any]:
        return {
            "num_tokens": self.num_tokens,
            "hidden_size": self.hidden_size,
            "init": self.init,
            "init_text": self.init_text,
            "placement": self.placement,
            "head": self.head,
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
        placement: str = "start",
    ) -> SoftPrompt:
        """A soft prompt sized for ``model`` (and, for ``placement="user"``, for ``tokenizer``'s chat template),
        initialised by ``init``:

        - ``text``: embeddings of ``init_text`` cycled to length k;
        - ``vocab``: embeddings of k random vocabulary rows;
        - ``normal``: N(0, sigma^2).

        Embeddings come from ``get_input_embeddings()(ids)`` (never the raw weight), so models that scale
        inside the embedding module (Gemma) get correctly scaled vectors.
        """
        d = model.get_input_embeddings().embedding_dim
        head = template_head(tokenizer) if placement == "user" else None
        sp = cls(num_tokens, d, init, init_text if init == "text" else "", placement, head)
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
                raise AdapterError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
            emb = model.get_input_embeddings()
            with torch.no_grad():
                values = emb(ids.to(emb.weight.device)).float().cpu()
        sp.prompt.data.copy_(values)
        return sp

    @property
    def prefix_length(self) -> int:
        return self.num_tokens

    @property
    def prefix_cacheable(self) -> bool:
        return self.placement == "start"

    def check_model(self, model: PreTrainedModel) -> None:
        d = model.get_input_embeddings().embedding_dim
        if d != self.hidden_size:
            raise AdapterError(
                f"soft prompt width {self.hidden_size} does not match the model's hidden size {d}; "
                "this soft prompt was trained for a different model"
            )

    def insert_at(self, attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Index [B, 1] where P goes in each left-padded row: after the padding, plus the head for ``user``."""
        n_pad = (attention_mask == 0).long().sum(-1, keepdim=True)  # [B, 1]
        if self.placement == "start":
            return n_pad
        n = len(self.head)
        cols = (n_pad + torch.arange(n, device=input_ids.device)).clamp(max=input_ids.shape[1] - 1)  # [B, n]
        head = torch.tensor(self.head, device=input_ids.device)
        if input_ids.shape[1] < n or not bool((input_ids.gather(1, cols) == head).all()):
            raise AdapterError(
                "a prompt does not start with the chat template head this soft prompt (placement 'user') was made "
                "for; template prompts with the same tokenizer and default system prompt"
            )
        return n_pad + n

    def wrap_inputs(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, d], [B, T], [B, T] -> [B, k + T, d], [B, k + T]: P inserted at ``insert_at`` in each row."""
        b, t, d = embeds.shape
        if d != self.hidden_size:
            raise AdapterError(f"soft prompt width {self.hidden_size} does not match the model's hidden size {d}")
        k = self.num_tokens
        s = self.insert_at(attention_mask, input_ids)  # [B, 1]
        j = torch.arange(k + t, device=embeds.device).expand(b, -1)  # [B, k + T]
        # Source index into cat([P, embeds]): positions before s keep their own slot, then P, then the rest.
        src = torch.where(j < s, k + j, torch.where(j < s + k, j - s, j))
        full = torch.cat([self.prompt.to(embeds.dtype).expand(b, k, d), embeds], dim=1)
        out = full.gather(1, src.unsqueeze(-1).expand(b, k + t, d))
        mask = torch.cat([attention_mask.new_ones(b, k), attention_mask], dim=1).gather(1, src)
        return out, mask


def template_head(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the chat template before the user's message (system turn + user header)."""
    sentinel = "\u2063softguard\u2063"
    text = chat_prompt(tokenizer, sentinel)
    head = text[: text.index(sentinel)]
    if not head:
        raise AdapterError("this chat template puts nothing before the user's message; use placement 'start'")
    return tokenizer(head, add_special_tokens=False)["input_ids"]
