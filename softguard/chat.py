"""``softguard chat``: talk to the LLM with a trained soft prompt, or to the two-model system for comparison.

One user turn per input line (interactive on a terminal, or piped through stdin); each response is streamed
as it is decoded and ends with a newline. The conversation history is kept in the chat template unless
``history=False``. The soft prompt runs through a ``PrefixCache`` built once at start-up. The system mode runs the
prompt-level guard first: a flagged turn gets r* at once, any other turn streams the base model's answer (a
response-level guard must read the whole response, so nothing is shown before it has been generated).
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
    messages: list[dict[str, str]] = []
    for line in lines:
        user = line.strip()
        if not user:
            continue
        turn = [*messages, {"role": "user", "content": user}] if history else [{"role": "user", "content": user}]
        prompt = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
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
