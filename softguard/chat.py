"""``softguard chat``: talk to the LLM with a trained soft prompt, or to the two-model system for comparison.

One user turn per input line (interactive on a terminal, or piped through stdin); each response is streamed
as it is decoded and ends with a newline. The conversation history is kept in the chat template unless
``history=False``. The soft prompt runs through a ``PrefixCache`` built once at start-up. The system mode runs the
prompt-level guard first: a flagged turn gets r* at once, any other turn streams the base model's answer (a
response-level guard must read the whole response, so nothing is shown before it has been generated).

The conversation must fit the model's context (``max_position_embeddings``, 8,192 tokens for SmolLM2) with room
for the soft prompt and ``max_new_tokens``: the oldest turns are dropped first; a single message that is too long
on its own is not answered, and its output line says so (every input line still gets exactly one line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapters import Adapter
from .generation import PrefixCache, stream
from .system import SafeSystem


def chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lines: Iterable[str],
    write: Callable[[str], None],
    *,
    adapter: Adapter | None = None,
    system: SafeSystem | None = None,
    max_new_tokens: int = 256,
    history: bool = True,
) -> list[dict[str, str]]:
    """Answer every non-empty line of ``lines`` through ``write``; return the conversation as chat messages."""
    prefix = PrefixCache(model, adapter) if adapter is not None and adapter.prefix_cacheable else None
    budget = prompt_budget(model, adapter, max_new_tokens)
    messages: list[dict[str, str]] = []
    for line in lines:
        user = line.strip()
        if not user:
            continue
        turn = [*messages, {"role": "user", "content": user}] if history else [{"role": "user", "content": user}]
        turn, prompt, n = _fit(tokenizer, turn, budget)
        if budget is not None and n > budget:
            write(
                f"error: this message is {n} tokens with the chat template; at most {budget} fit in the model's "
                f"context with {max_new_tokens} new tokens: shorten it\n"
            )
            continue
        use_adapter = adapter if prefix is None else None
        pieces: Iterable[str] = stream(
            model, tokenizer, prompt, use_adapter, prefix=prefix, max_new_tokens=max_new_tokens
        )
        if system is not None and system.mode == "prompt" and system.guard.score([user]).item() >= system.tau:
            pieces = [system.refusal]
        elif system is not None and system.mode == "response":  # the guard needs the whole response first
            full = "".join(pieces)
            pieces = [system.refusal if system.guard.score([user], [full]).item() >= system.tau else full]
        answer = ""
        for piece in pieces:
            write(piece)
            answer += piece
        write("\n")
        messages = [*turn, {"role": "assistant", "content": answer.strip()}]
    return messages


def prompt_budget(model: PreTrainedModel, adapter: Adapter | None, max_new_tokens: int) -> int | None:
    """Tokens a templated conversation may take: the model's context (``max_position_embeddings``) less the
    adapter's prefix and ``max_new_tokens``; None when the model states no context length."""
    context = getattr(model.config, "max_position_embeddings", None)
    if context is None:
        return None
    budget = context - max_new_tokens - (adapter.prefix_length if adapter is not None else 0)
    if budget < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a message in the context of {context}")
    return budget


def _fit(
    tokenizer: PreTrainedTokenizerBase, turn: list[dict[str, str]], budget: int | None
) -> tuple[list[dict[str, str]], str, int]:
    """``turn`` without its oldest (user, assistant) pairs until its templated prompt fits ``budget`` tokens, that
    prompt, and its length; the last message is always kept (the length then tells whether it fits alone)."""
    while True:
        prompt = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if budget is None or n <= budget or len(turn) == 1:
            return turn, prompt, n
        turn = turn[2:]
