"""BENCHMARKS.md holds one section per benchmark script; each script replaces only its own."""

from __future__ import annotations

from pathlib import Path

from softguard.io import atomic_write_text


def update_section(path: str | Path, section: str) -> None:
    """Put ``section`` (markdown starting with a ``# Title`` line) into the file at ``path``: in place of the
    section with the same title (up to the next ``# `` line), else at the end; the file is replaced atomically."""
    path = Path(path)
    title = section.splitlines()[0]
    if not title.startswith("# "):
        raise ValueError(f"a section starts with a '# Title' line, not {title!r}")
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    starts = [i for i, line in enumerate(lines) if line.startswith("# ")]
    new = section.rstrip("\n").splitlines()
    if title in lines:
        start = lines.index(title)
        end = next((i for i in starts if i > start), len(lines))
        lines[start:end] = [*new, ""] if end < len(lines) else new
    else:
        lines += ["", *new] if lines else new
    atomic_write_text(path, "\n".join(lines) + "\n")
