"""Range checks for the config dataclasses (``RunConfig``, ``TrainConfig``, ``GuardTrainConfig``), run in their
``__post_init__`` so a bad value is refused where the config is made, before any work.

A rule is written as the user reads it: ``">= 1"``, ``"> 0"``, ``"(0, 1)"`` (an interval; round brackets exclude the
end), ``"[0, 1) or None"``, or a tuple of allowed values. The error names the field, the rule and the value.
"""

from __future__ import annotations

import math
import operator
from typing import Any

_COMPARE = {">=": operator.ge, ">": operator.gt}


def _holds(value: Any, rule: str) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return False
    if rule[0] in "([":
        low, high = (float(x) for x in rule[1:-1].split(","))
        above = value > low if rule[0] == "(" else value >= low
        return above and (value < high if rule[-1] == ")" else value <= high)
    op, bound = rule.split()
    return _COMPARE[op](value, float(bound))


def require(obj: Any, rules: dict[str, str | tuple[Any, ...]]) -> None:
    """Raise ``ValueError`` for the first field of ``obj`` that breaks its rule (see the module docstring)."""
    for name, rule in rules.items():
        value = getattr(obj, name)
        if isinstance(rule, tuple):
            if value not in rule:
                raise ValueError(f"{name} must be one of {', '.join(map(str, rule))}, got {value!r}")
            continue
        base, optional = rule.removesuffix(" or None"), rule.endswith(" or None")
        if not (optional and value is None) and not _holds(value, base):
            raise ValueError(f"{name} must be {'in ' if base[0] in '([' else ''}{rule}, got {value!r}")
