"""Your own prompt files (``softguard run|train --train-prompts FILE``, ``softguard run --eval-prompts FILE``).

The format follows the file's extension:

- ``.jsonl`` / ``.json-lines``: one JSON object per line, the prompt in ``"prompt"`` (or ``"text"``); an evaluation
  set also gives ``"harmful": true|false`` (or ``"label": "harmful"|"benign"|1|0``);
- ``.csv``: a header naming a ``prompt`` (or ``text``) column and, for an evaluation set, a ``harmful`` (or
  ``label``) column holding any of the label values above;
- ``.txt``: one prompt per line, training only (it has no place for a label).

Blank lines are skipped and each prompt's surrounding whitespace is stripped. Anything else is refused with a
``ValueError`` naming the file, the line and what to do: a missing file, no prompts, bytes that are not UTF-8, a
line that is not a JSON object, a missing field or column, a label not understood, a prompt over
``MAX_PROMPT_CHARS`` characters (refused, not dropped: nothing of a user's file is skipped silently), and one
prompt given twice with both labels. Repeated prompts (equal after ``data.normalize``) are kept once and counted;
``PromptFile.without`` removes, and counts, the prompts that are also in an evaluation set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .data import Example, normalize

#: Longest prompt accepted, in characters (~2,000 tokens): far beyond what the guard reads (128 tokens) and what a
#: distillation prompt costs on a CPU, yet well inside the LLM's context.
MAX_PROMPT_CHARS = 8000
#: File extension -> format.
FORMATS = {".jsonl": "jsonl", ".json-lines": "jsonl", ".csv": "csv", ".txt": "txt"}
#: Names of the prompt field / column and of the label field / column, in order of preference.
PROMPT_FIELDS = ("prompt", "text")
LABEL_FIELDS = ("harmful", "label")
#: Accepted label values (strings compared case-insensitively) -> harmful.
LABELS: dict[str, bool] = {"harmful": True, "benign": False, "true": True, "false": False, "1": True, "0": False}
Row = tuple[int, str, bool | None]  # (line number, prompt, label or None)
HOW_TO_LABEL = 'give "harmful": true or false, or "label": "harmful" or "benign" (1 or 0)'


@dataclass(frozen=True)
class PromptFile:
    """The prompts of one file, deduplicated, in file order.

    ``labels[i]``: prompt i is harmful (None for a training file: the guard labels its prompts). Counts:
    ``read`` prompts in the file, ``duplicates`` dropped as repeats, ``overlaps`` dropped by ``without``."""

    path: str
    sha256: str
    prompts: list[str]
    labels: list[bool] | None
    read: int
    duplicates: int
    overlaps: int = 0

    @property
    def name(self) -> str:
        """The set's name in results: ``user:<file stem>``."""
        return f"user:{Path(self.path).stem}"

    def examples(self) -> list[Example]:
        """The prompts as labelled Examples (source: ``name``) of an evaluation file."""
        if self.labels is None:
            raise ValueError(f"{self.path} was read as a training file, without labels")
        return [Example(p, y, self.name) for p, y in zip(self.prompts, self.labels, strict=True)]

    def without(self, texts: Iterable[str], where: str) -> PromptFile:
        """This file minus its prompts whose normalised text is one of ``texts`` (``where`` names them in the error
        raised when no prompt is left)."""
        taken = {normalize(t) for t in texts}
        keep = [i for i, p in enumerate(self.prompts) if normalize(p) not in taken]
        if not keep:
            raise ValueError(
                f"{self.path}: all {len(self.prompts)} of its prompts are also in {where}, so none is left; "
                "give prompts that are not"
            )
        return replace(
            self,
            prompts=[self.prompts[i] for i in keep],
            labels=None if self.labels is None else [self.labels[i] for i in keep],
            overlaps=self.overlaps + len(self.prompts) - len(keep),
        )

    def summary(self) -> dict[str, Any]:
        """What a run records of the file: path, sha256 and the counts (read, duplicates, overlaps, kept)."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "read": self.read,
            "duplicates": self.duplicates,
            "overlaps": self.overlaps,
            "kept": len(self.prompts),
        }


def read_prompts(path: str | Path, labelled: bool, sha256: str | None = None) -> PromptFile:
    """Read and check a prompt file (module docstring); ``labelled``: an evaluation file, whose every prompt needs a
    label. ``sha256``: the file's expected hash (a run's config), refused when the file's differs."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown prompt file format {path.suffix or '(no extension)'!r}; use .jsonl (one JSON object "
            "per line), .csv (with a header) or .txt (one prompt per line)"
        )
    if labelled and fmt == "txt":
        raise ValueError(
            f"{path}: an evaluation prompt file needs a harmful/benign label per prompt, which a .txt file cannot "
            'hold; use JSONL ({"prompt": "...", "harmful": true}) or CSV (columns prompt,harmful)'
        )
    if not path.is_file():
        raise ValueError(f"{path}: no such prompt file; check the path")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ValueError(
            f"{path} is not the file this config was made with (its sha256 is {digest}, the config records "
            f"{sha256}); make the config again (rerun the command) to use the file as it is now"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8"
        ) from e
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "txt": _txt_rows}[fmt](path, text, labelled)
    if not rows:
        raise ValueError(f"{path} holds no prompts; give one prompt per line (README: Your own prompts)")
    prompts, labels, first = [], [], {}
    for line, prompt, label in rows:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"{path}, line {line}: the prompt is {len(prompt):,} characters, over the limit of "
                f"{MAX_PROMPT_CHARS:,}; shorten it or remove it from the file"
            )
        key = normalize(prompt)
        if key in first:
            seen_line, seen_label = first[key]
            if labelled and label != seen_label:
                raise ValueError(
                    f"{path}, line {line}: the same prompt as line {seen_line} with the other label; keep one of them"
                )
            continue
        first[key] = (line, label)
        prompts.append(prompt)
        labels.append(label)
    return PromptFile(str(path), digest, prompts, labels if labelled else None, len(rows), len(rows) - len(prompts))


def _label(path: Path, line: int, value: Any) -> bool:
    """A label value (``LABELS``, or a JSON boolean / 0 / 1) as harmful; anything else is refused."""
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower() if isinstance(value, str | int) else None
    if key not in LABELS:
        raise ValueError(f"{path}, line {line}: label {value!r} not understood; use harmful/benign, true/false or 1/0")
    return LABELS[key]


def _prompt(path: Path, line: int, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}, line {line}: the prompt must be a non-empty text, got {value!r}")
    return value.strip()


def _jsonl_rows(path: Path, text: str, labelled: bool) -> list[Row]:
    rows = []
    for line, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            obj, why = None, e.msg
        else:
            why = f"a JSON {type(obj).__name__}"
        if not isinstance(obj, dict):
            raise ValueError(
                f'{path}, line {line}: not a JSON object ({why}); write one object per line, e.g. {{"prompt": "..."}}'
            )
        key = next((k for k in PROMPT_FIELDS if k in obj), None)
        if key is None:
            raise ValueError(f'{path}, line {line}: no "prompt" or "text" field; give each line {{"prompt": "..."}}')
        label = None
        if labelled:
            name = next((k for k in LABEL_FIELDS if k in obj), None)
            if name is None:
                raise ValueError(
                    f'{path}, line {line}: no "harmful" or "label" field; an evaluation set needs a label per '
                    f"prompt: {HOW_TO_LABEL}"
                )
            label = _label(path, line, obj[name])
        rows.append((line, _prompt(path, line, obj[key]), label))
    return rows


def _csv_rows(path: Path, text: str, labelled: bool) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    while header is not None and not any(c.strip() for c in header):  # blank lines before the header
        header = next(reader, None)
    if header is None:
        return []
    columns = [c.strip().lower() for c in header]
    col = next((columns.index(k) for k in PROMPT_FIELDS if k in columns), None)
    if col is None:
        raise ValueError(
            f"{path}, line {reader.line_num}: no prompt or text column in the header (columns: {', '.join(header)}); "
            "the first line must name the columns, e.g. prompt,harmful"
        )
    lab = next((columns.index(k) for k in LABEL_FIELDS if k in columns), None)
    if labelled and lab is None:
        raise ValueError(
            f"{path}, line {reader.line_num}: no harmful or label column in the header (columns: {', '.join(header)}); "
            "an evaluation set needs a label per prompt: a harmful column of true/false (or label: harmful/benign)"
        )
    rows = []
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as e:
            raise ValueError(f"{path}, line {reader.line_num + 1}: not valid CSV ({e}); check the quoting") from e
        if cells is None:
            break
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ValueError(
                f"{path}, line {line}: {len(cells)} cells for {len(header)} columns; quote a prompt holding commas "
                'or newlines ("...")'
            )
        rows.append((line, _prompt(path, line, cells[col]), _label(path, line, cells[lab]) if labelled else None))
    return rows


def _txt_rows(path: Path, text: str, labelled: bool) -> list[Row]:
    return [(line, raw.strip(), None) for line, raw in enumerate(text.split("\n"), 1) if raw.strip()]
