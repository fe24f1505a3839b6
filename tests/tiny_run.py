"""`softguard run` on a tiny model, for the kill tests: ``python tiny_run.py RUNS_DIR MODEL_DIR BACKBONE_DIR``.

The CLI cannot shrink a run this far (guard backbone, prompt counts, eval sizes), so this builds the quick preset
with tiny sizes and calls ``pipeline.run`` the way ``softguard run`` does, on the CPU. Soft labels (the tiny guard's
u is never >= 0.99, so every training prompt gets base samples) and K = 2 base samples (two teacher passes)."""

from __future__ import annotations

import sys

from softguard.config import preset
from softguard.pipeline import run


def main(runs_dir: str, model_dir: str, backbone_dir: str) -> None:
    cfg = preset(
        "quick",
        name="tiny",
        model={"name": model_dir},
        guard={"backbone": backbone_dir, "pairs": 4},
        teacher={"hard_labels": False, "samples": 2, "max_new_tokens": 16},
        data={"n_train_harmful": 8, "n_train_benign": 8, "n_dev": 2},
        adapter={"soft_prompt": {"num_tokens": 4}},
        eval={"n": 6, "max_new_tokens": 16},
        gen_batch_size=2,
        train={"steps": 24, "eval_every": 8, "batch_size": 4, "dev_max_new_tokens": 4},
    )
    run(cfg, runs_dir, device="cpu")


if __name__ == "__main__":
    main(*sys.argv[1:])
