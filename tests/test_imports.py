"""Imports go one way: every softguard module imports only modules of earlier layers (read from the source with
``ast``, imports inside functions included), so a back-import, e.g. evaluation importing training, fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "softguard"

#: The layers, first to last. A module may import the modules of earlier layers only, none of its own layer.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundations", {"io", "checks", "refusal", "rephrase", "contrast", "objectives"}),
    ("assets and configs", {"assets", "train_config"}),
    ("models, data", {"models", "fingerprint", "data"}),
    ("guards", {"guards"}),
    ("adapters, prompt files", {"adapters", "prompts"}),
    ("generation", {"generation"}),
    ("the system, export", {"system", "export"}),
    ("on top of the system: chat, the objectives' losses", {"chat", "losses"}),
    ("the run's configuration", {"config"}),
    ("cost, evaluation, the run's guard training", {"cost", "evaluation", "guard_training"}),
    ("the evaluation suite", {"eval_suite"}),
    ("training, reporting", {"training", "reporting"}),
    ("pipeline", {"pipeline"}),
    ("compare", {"compare"}),
    ("cli", {"cli"}),
]
LAYER = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}
#: Every source file but the package's ``__init__`` (which imports nothing).
FILES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def top_module(path: Path) -> str:
    """softguard/x.py -> "x"; a subpackage's files (softguard/adapters/*.py) -> the subpackage's name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported(path: Path) -> set[str]:
    """The softguard modules (``top_module`` names) that the file at ``path`` imports, itself left out."""
    own, package = top_module(path), path.parent.relative_to(PACKAGE.parent).parts  # e.g. ("softguard", "adapters")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            full = [*base, *(node.module.split(".") if node.module else [])]
            names = [".".join(full)] if node.module else [".".join([*full, a.name]) for a in node.names]
        else:
            continue
        out |= {n.split(".")[1] for n in names if n.startswith("softguard.")}
    return out - {own}


def test_imported_reads_relative_and_absolute_imports():
    assert imported(PACKAGE / "adapters" / "soft_prompt.py") == {"models"}  # from ..models, from .base (itself)
    assert imported(PACKAGE / "system.py") >= {"assets", "fingerprint", "generation"}  # from . import assets, ...
    assert "training" in imported(PACKAGE / "pipeline.py")


def test_every_module_has_a_layer():
    modules = {top_module(p) for p in FILES}
    assert modules - LAYER.keys() == set(), "add the new module to LAYERS in tests/test_imports.py"
    assert LAYER.keys() - modules == set(), "LAYERS names a module that is gone"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    own = top_module(path)
    back = {m for m in imported(path) if LAYER[m] >= LAYER[own]}
    assert not back, f"{own} ({LAYERS[LAYER[own]][0]}) imports {sorted(back)} of the same or a later layer"
