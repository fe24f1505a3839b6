"""`softguard run` on a tiny model, for the kill tests: ``python tiny_run.py RUNS_DIR MODEL_DIR BACKBONE_DIR``.

The CLI cannot shrink a run this far (guard backbone, prompt counts, eval sizes), so this builds the quick preset
with tiny sizes and calls ``pipeline.run`` the way ``softguard run`` does, on the CPU. Soft labels (the tiny guard's
u is never >= 0.99, so every training prompt gets base samples) and K = 2 base samples (two teacher passes)."""

from __future__ import annotations

import sys

from softguard.pipeline import preset, run


def main(runs_dir: str, model_dir: str, backbone_dir: str) -> None:
    cfg = preset(
        "quick",
        name="tiny",
        model=model_dir,
        guard_backbone=backbone_dir,
        guard_pairs=4,
        hard_labels=False,
        n_train_harmful=8,
        n_train_benign=8,
        num_samples=2,
        sample_max_new_tokens=16,
        num_tokens=4,
        n_dev=2,
        n_eval=6,
        eval_max_new_tokens=16,
        gen_batch_size=2,
        train_steps=24,
        train_eval_every=8,
        train_batch_size=4,
        train_dev_max_new_tokens=4,
    )
    run(cfg, runs_dir, device="cpu")


if __name__ == "__main__":
    main(*sys.argv[1:])
