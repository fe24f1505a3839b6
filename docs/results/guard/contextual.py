"""HarmBench's contextual prompts against its plain ones: the share each guard flags at tau = 0.5.

python docs/results/guard/contextual.py runs/guard-right64 runs/guard-ht64 runs/guard-ht64-ctx256

A contextual prompt is a passage, "\\n\\n---\\n\\n", then the request (81 of the 320 HarmBench test prompts, each longer
than the guard's 64-token window); a plain one is the request alone.
"""

from __future__ import annotations

import sys

import torch

from softguard.data import make_splits
from softguard.guards import EncoderGuard

SEPARATOR = "\n\n---\n\n"


def flagged(guard: EncoderGuard, prompts: list[str]) -> float:
    return 100 * (guard.score(prompts) >= 0.5).float().mean().item()


def main(dirs: list[str]) -> None:
    harmbench = [e.text for e in make_splits(0).test["harmbench"]]
    contextual = [p for p in harmbench if SEPARATOR in p]
    plain = [p for p in harmbench if SEPARATOR not in p]
    for d in dirs:
        guard = EncoderGuard.from_pretrained(d)
        print(
            f"{d}: contextual {flagged(guard, contextual):.1f} % of {len(contextual)}, "
            f"plain {flagged(guard, plain):.1f} % of {len(plain)}"
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
