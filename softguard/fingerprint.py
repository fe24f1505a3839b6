"""Content fingerprints (sha256) of models, tokenizers and directories, the keys of every softguard cache.

A cache keyed by a name or a path goes stale when the files behind it change (a model retrained into the same
directory); these keys change with the content instead:

- ``file_sha256``: a file's sha256, itself cached under ``<cache>/fingerprints/`` by (path, size, mtime, ctime,
  inode), so a 500 MB model is hashed once, not on every run;
- ``dir_sha256``: sha256 over the (relative path, file sha256) of every file in a directory;
- ``model_sha256``: a model loaded from a local directory -> its ``*.safetensors`` files and ``config.json``; any
  other model (in memory, from the hub's cache) -> its config and every state-dict tensor's name, dtype, shape and
  bytes;
- ``tokenizer_sha256``: the tokenizer's full definition (vocabulary, merges, normalizer, ...), its chat template
  and special tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import assets
from .io import read_json, write_json


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def file_sha256(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """sha256 of a file's bytes, reused while its (path, size, mtime_ns, ctime_ns, inode) stay the same."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = {
        "path": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
    }
    entry = assets.cache_root(cache_dir) / "fingerprints" / f"{_digest([str(path)])[:32]}.json"
    if entry.is_file():
        saved = read_json(entry)
        if saved.get("stamp") == stamp:
            return saved["sha256"]
    sha = assets.sha256_file(path)
    write_json(entry, {"stamp": stamp, "sha256": sha})
    return sha


def dir_sha256(path: str | Path, skip: Iterable[str] = (), cache_dir: str | Path | None = None) -> str:
    """sha256 over every file under ``path`` (sorted relative paths and their sha256). Hidden files (the
    temporary files of an interrupted atomic write) and files named in ``skip`` (bare names, e.g. a guard's
    re-writable ``guard_eval.json``) do not count."""
    root, skip = Path(path), set(skip)
    rels = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name not in skip)
    rels = [r for r in rels if not any(part.startswith(".") for part in r.parts)]
    return _digest(part for r in rels for part in (r.as_posix(), file_sha256(root / r, cache_dir)))


def forward_key(
    model: PreTrainedModel, settings: dict[str, Any], payload: Iterable[Any], cache_dir: str | Path | None = None
) -> str:
    """The key (32 hex digits) of a cached result of ``model``'s forward passes: sha256 over the model's weights
    (``model_sha256``), dtype and device type with ``settings`` (one sorted JSON object), then every item of
    ``payload`` as JSON (the inputs, in the order they are batched)."""
    head = {"model": model_sha256(model, cache_dir), "dtype": str(model.dtype), "device": model.device.type}
    h = hashlib.sha256(json.dumps({**head, **settings}, sort_keys=True).encode())
    for item in payload:
        h.update(json.dumps(item).encode())
    return h.hexdigest()[:32]


def model_sha256(model: PreTrainedModel, cache_dir: str | Path | None = None) -> str:
    """The weights and config of ``model``: from its local directory's files when it was loaded from one (the
    ``*.safetensors`` files and ``config.json``), else from its tensors in memory."""
    src = Path(model.name_or_path) if model.name_or_path else None
    if src is not None and src.is_dir() and any(src.glob("*.safetensors")):
        files = sorted([*src.glob("*.safetensors"), *src.glob("config.json")])
        return _digest(part for p in files for part in (p.name, file_sha256(p, cache_dir)))
    config = {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's definition (a fast tokenizer's full JSON without its call-time padding / truncation
    settings, else its vocabulary), chat template and special tokens. (Generation always pads on the left.)"""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    return _digest(
        [
            type(tokenizer).__name__,
            json.dumps(spec, sort_keys=True),
            str(tokenizer.chat_template),
            json.dumps({k: str(v) for k, v in tokenizer.special_tokens_map.items()}, sort_keys=True),
        ]
    )
