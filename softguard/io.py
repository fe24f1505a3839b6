"""Files on disk: atomic writes (every artifact and cache entry appears complete or not at all: temp + rename),
per-file sha256 records of saved directories, and exclusive locks between processes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class LockedError(RuntimeError):
    """Another process holds the lock on a directory or cache entry."""


def _with_path(e: OSError, path: Path) -> OSError:
    """``e`` again with ``path`` as its filename (a failed write names no file), so the user sees which path
    could not be written; the errno, and so the subclass (PermissionError, ...), is kept."""
    return OSError(e.errno, e.strerror or str(e), str(path))


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final``; on success it replaces ``final`` in one rename.

    On an exception the temporary directory is removed and ``final`` is left as it was; a failed write (an OSError
    naming no file, or safetensors' own error for one) is raised as an OSError naming ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        try:
            yield tmp
        except OSError as e:
            if e.filename:
                raise
            raise _with_path(e, final) from e
        except SafetensorError as e:  # safetensors reports a failed write as "... (os error 28)"
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(final)) from e
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)  # put the previous version back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory to write; on success it replaces ``path`` in one rename. On an
    exception the temporary file is removed, and a failed write that names no file is raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            raise _with_path(e, path) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_file``)."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically write ``tensors`` as one safetensors file (``atomic_file``)."""
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)


def read_tensors(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The tensors of the safetensors file ``path`` (a cache entry ``write_tensors`` wrote), or None when it is
    missing or unreadable: a damaged entry is then recomputed and overwritten by its caller."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError):
        return None


def sha256_file(p: str | Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(d: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under ``d`` except the names in ``exclude``, sorted by path."""
    d = Path(d)
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.name not in exclude)
    return {p.relative_to(d).as_posix(): sha256_file(p) for p in files}


def changed_file(d: str | Path, hashes: dict[str, str]) -> str | None:
    """The first problem with the files ``hashes`` records under ``d`` ("PATH is missing" or "PATH was changed
    (its sha256 differs from the one recorded at save time)"), or None when every file is there unchanged."""
    for name, sha in hashes.items():
        p = Path(d) / name
        if not p.is_file():
            return f"{p} is missing"
        if sha256_file(p) != sha:
            return f"{p} was changed or is corrupt (its sha256 differs from the one recorded at save time)"
    return None


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: str, on_busy: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its parents) for the block; the file then holds this
    process's id. When another process holds it, ``busy`` with ``{pid}`` replaced by the holder's id is raised as
    ``LockedError``, or, given ``on_busy``, passed to it before waiting for the lock. The kernel releases the lock
    when its holder dies, so a killed process never leaves a stale lock (the file stays: only a flock locks)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            message = busy.format(pid=f.read().strip() or "?")
            if on_busy is None:
                raise LockedError(message) from None
            on_busy(message)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_toml(source: str | Path) -> dict[str, Any]:
    """A TOML file (a ``Path``) or TOML text (a ``str``), parsed; ``ValueError`` when it is missing or invalid."""
    where = source if isinstance(source, Path) else "the config"
    try:
        text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
        return tomllib.loads(text)
    except FileNotFoundError as e:
        raise ValueError(f"{source}: no such config file; check the path") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where} is not valid TOML ({e})") from e
