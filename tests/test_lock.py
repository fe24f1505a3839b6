"""requirements.lock (what `make` installs) agrees with pyproject.toml (the ranges the package declares) and with
the environment the suite runs in."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}( \\)?$")


def parse_lock(text: str) -> dict[str, tuple[Version, int]]:
    """``name -> (pinned version, number of sha256 hashes)`` of a hashed requirements file."""
    pins: dict[str, tuple[Version, int]] = {}
    name = None
    for line in text.splitlines():
        if m := PIN.match(line):
            name = canonicalize_name(m[1])
            pins[name] = (Version(m[2]), 0)
        elif HASH.match(line):
            assert name is not None, f"a hash before any pin: {line!r}"
            pins[name] = (pins[name][0], pins[name][1] + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"unexpected line in requirements.lock: {line!r}")
    return pins


def declared() -> list[Requirement]:
    """pyproject's dependencies and dev extras, and requirements.in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    extra = (ROOT / "requirements.in").read_text().splitlines()
    lines += [s for s in extra if s.strip() and not s.startswith("#")]
    return [Requirement(s) for s in lines]


def test_parse_lock_counts_hashes_and_rejects_stray_lines():
    pins = parse_lock(
        "# c\nFoo_Bar==1.2 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
    )
    assert pins == {"foo-bar": (Version("1.2"), 2)}
    with pytest.raises(AssertionError, match="unexpected line"):
        parse_lock("foo>=1\n")


def test_every_pin_has_a_hash():
    pins = parse_lock((ROOT / "requirements.lock").read_text())
    assert len(pins) > 20
    assert not [name for name, (_, n) in pins.items() if n == 0]


def test_lock_satisfies_every_declared_range():
    pins = parse_lock((ROOT / "requirements.lock").read_text())
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is declared but not locked: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"lock has {name}=={pins[name][0]}, not {req}"


def test_suite_runs_on_the_locked_versions():
    """The numbers and tests of this repo were made with the lock; another environment is a different system."""
    pins = parse_lock((ROOT / "requirements.lock").read_text())
    for req in declared():
        name = canonicalize_name(req.name)
        installed = Version(version(req.name))
        assert installed == pins[name][0], (
            f"{name} {installed} is installed, the lock has {pins[name][0]}: make install"
        )
