"""Loading the chat LLM, and the one chat-templating helper used everywhere.

``load_model(name)`` accepts a packaged model name (``smollm2-135m``, ``qwen2.5-coder-0.5b``), a Hugging Face id, or
a local directory, and returns a frozen causal LM in eval mode plus its tokenizer (left padding, pad token set).
The packaged models ship as 4/5-bit GGUFs; transformers dequantizes them to fp32 on load (SmolLM2 ~35 s, Qwen ~60 s),
so the first load saves the result as an HF directory under ``<cache>/models/<name>`` (atomically) and later loads
read that (about a second for SmolLM2).

A Hugging Face id already in the local Hugging Face cache loads from its snapshot directory, without the network
(transformers would otherwise ask the hub first, and on a machine without it retry for minutes). An id that is not
cached is refused at once under ``HF_HUB_OFFLINE=1``; otherwise the hub is asked once, and an unreachable hub or an
unknown id is an error naming it, before any download.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from . import assets
from .io import atomic_dir

#: Packaged models: name -> (asset name, GGUF file inside the asset directory).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "qwen2.5-coder-0.5b": ("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"),
}


class ModelError(RuntimeError):
    """A model name or directory that cannot be loaded."""


def _convert_gguf(name: str, cache_dir: str | Path | None) -> Path:
    """Dequantize a packaged GGUF once into an fp32 HF directory in the cache; return that directory."""
    asset, gguf = PACKAGED_MODELS[name]
    out = assets.cache_root(cache_dir) / "models" / name
    if (out / "config.json").is_file():
        return out
    src = assets.path(asset, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    # Loaded weights are plain fp32 tensors; drop the GGUF quantizer so save_pretrained writes a normal model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


#: A Hugging Face model id: ``owner/name`` (a path such as ``./x``, ``a/b/c`` or ``/x`` is a local directory).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot directory of ``repo_id`` (its config.json's), or None."""
    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def check_model_name(name_or_path: str) -> None:
    """Raise ``ModelError`` unless ``name_or_path`` is a packaged model, a local directory, or a Hugging Face id that
    is in the local HF cache or that the hub knows (asked once, never when ``HF_HUB_OFFLINE`` is set)."""
    if name_or_path in PACKAGED_MODELS or Path(name_or_path).expanduser().is_dir():
        return
    if not HUB_ID.fullmatch(name_or_path):
        where = "no such directory" if "/" in name_or_path or name_or_path.startswith((".", "~")) else "unknown model"
        raise ModelError(
            f"{where} {name_or_path!r}: not a packaged model ({', '.join(PACKAGED_MODELS)}), "
            "a local directory, or a Hugging Face id (owner/name)"
        )
    if _hub_snapshot(name_or_path) is not None:
        return
    missing = (
        f"{name_or_path!r} is not a local directory and not in the Hugging Face cache ({hub_constants.HF_HUB_CACHE})"
    )
    if hub_constants.is_offline_mode():
        raise ModelError(
            f"{missing}, and HF_HUB_OFFLINE is set: download it where the hub is reachable, or pass a local directory"
        )
    try:  # one request, no retries: transformers would retry an unreachable hub for minutes
        get_hf_file_metadata(hf_hub_url(name_or_path, "config.json"))
    except RepositoryNotFoundError as e:
        raise ModelError(
            f"{missing}, and the hub has no such model (or it is private or gated: log in with `hf auth login`)"
        ) from e
    except RemoteEntryNotFoundError as e:
        raise ModelError(f"{name_or_path!r} on the hub has no config.json: not a transformers model") from e
    except Exception as e:  # network errors differ between huggingface_hub versions (requests, httpx, httpx2)
        raise ModelError(
            f"{missing}, and the hub is unreachable ({e}): pass a local directory, or set HF_HUB_OFFLINE=1 to "
            "fail at once without trying the network"
        ) from e


def resolve_model(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """A packaged name becomes its cached HF directory, a hub id in the HF cache its snapshot directory; a local dir
    or an uncached hub id (to download) is returned unchanged."""
    check_model_name(name_or_path)
    if name_or_path in PACKAGED_MODELS:
        return str(_convert_gguf(name_or_path, cache_dir))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    return str(_hub_snapshot(name_or_path) or name_or_path)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: this process's CUDA device (``$LOCAL_RANK`` under torchrun / accelerate launch, else 0) when
    torch sees one, else the CPU; otherwise ``name`` as given."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ModelError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {name!r} asked for, but this torch sees no CUDA device; use --device cpu")
    return device


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matmuls in hardware: a CUDA device with bf16 support, or a CPU with AMX-BF16
    or AVX512-BF16. Elsewhere bf16 is emulated, and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities() if device.type == "cpu" else {}
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """A training precision (``train_config.PRECISIONS``) for ``device``: ``"auto"`` is ``"bf16"`` where
    ``bf16_native(device)``, else ``"fp32"``; ``"fp32"`` and ``"bf16"`` are kept."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_native(device) else "fp32"


def load_model(
    name_or_path: str = "smollm2-135m",
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return a frozen causal LM (eval mode, no grad) and its tokenizer (left padding, pad token set)."""
    src = resolve_model(name_or_path, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model {name_or_path!r} from {src}: {e}") from e
    if not tokenizer.chat_template:
        raise ModelError(
            f"the tokenizer of {name_or_path!r} has no chat template: softguard trains and talks to chat models "
            "through their template; use an instruct/chat model, or add a chat_template to its tokenizer_config.json"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device).eval().requires_grad_(False)
    return model, tokenizer


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user: str, system: str | None = None) -> str:
    """The model's chat template applied to one user turn, ending with the assistant header.

    ``system=None`` keeps the template's own default (SmolLM2 inserts a default system turn).
    """
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that ends an assistant turn (the tokenizer's EOS for chat models such as SmolLM2 and Qwen2.5, both
    ``<|im_end|>``)."""
    return int(tokenizer.eos_token_id)
