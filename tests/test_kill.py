"""kill -9 anywhere: a real `softguard run` process (tiny model, ``tiny_run.py``) is SIGKILLed inside the guard,
teacher, train and evaluate stages in turn, each time rerun with the same command, and must end with exactly the
results of an uninterrupted run in another directory: results.json (timings aside), generations.jsonl, the guard's
weights, the adapters and the optimizer state.

A kill point is a file the stage writes part-way (the guard's weights before its evaluation, the teacher cache's
per-pass files, ``student/last``) or the stage's rule on stderr; after each kill the test checks from stderr and
the run directory that the process really died inside that stage, with work of the stage still left.

Two in-process tests cover what that run does not exercise: a LoRA (dropout) resumed after a crash, and a
diff-of-means steering vector interrupted in the middle of its alpha grid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_llama
from safetensors.torch import load_file

from softguard import assets

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = {"seconds", "timings", "generation_seconds"}


@pytest.fixture(scope="module")
def tiny_model_dir(tokenizer, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(len(tokenizer)).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _cache(tmp: Path) -> Path:
    """A fresh softguard cache (empty teacher cache) that reads the real cache's fetched assets."""
    cache = tmp / "cache"
    cache.mkdir()
    (cache / "assets").symlink_to(assets.cache_root() / "assets", target_is_directory=True)
    return cache


class Run:
    """``tiny_run.py`` into ``runs`` with its own cache, as a subprocess whose stderr is read line by line."""

    def __init__(self, tmp: Path, model_dir: Path, backbone: Path):
        self.cache, self.runs = _cache(tmp), tmp / "runs"
        self.cmd = [sys.executable, str(ROOT / "tests" / "tiny_run.py"), str(self.runs), str(model_dir), str(backbone)]
        self.env = os.environ | {
            "SOFTGUARD_CACHE": str(self.cache),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            "OMP_NUM_THREADS": "1",
        }

    @property
    def out(self) -> Path:
        return self.runs / "tiny"

    def teacher_files(self) -> list[Path]:
        return sorted((self.cache / "teacher").glob("*.json"))

    def complete(self) -> None:
        proc = subprocess.run(self.cmd, env=self.env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def kill_in(self, stage: str, ready: Callable[[], bool] = lambda: True) -> str:
        """Start the run, SIGKILL it once ``stage`` has begun and ``ready()`` holds; return its stderr."""
        proc = subprocess.Popen(self.cmd, env=self.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        while proc.poll() is None and not (stage in _stages(lines) and ready()):
            assert time.monotonic() < deadline, "the run neither reached the kill point nor ended"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        err = "".join(lines)
        assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed in {stage}:\n{err[-3000:]}"
        assert _stages(lines)[-1] == stage, f"killed in {_stages(lines)[-1]}, not {stage}"
        return err


def _stages(lines: list[str]) -> list[str]:
    """The stages whose rule (``──── name ────``) the pipeline has printed, in order."""
    return [s.strip(" ─\n") for s in list(lines) if s.startswith("─") and s.rstrip().endswith("─")]


def _guard_saved(cache: Path, files: set[str]) -> bool:
    """Whether a guard directory of the cache (``<cache>/guards/<key>``, where the guard stage trains, or its
    temporary directory ``.<key>.tmp-*``) holds all of ``files``."""
    root = cache / "guards"
    return root.is_dir() and any(files <= {p.name for p in d.iterdir()} for d in root.iterdir() if d.is_dir())


def _cached_guards(cache: Path) -> list[str]:
    """The complete (renamed into place) guards of the cache."""
    return [d.name for d in (cache / "guards").iterdir() if not d.name.startswith(".")]


def _step(out: Path) -> int:
    return json.loads((out / "student" / "last" / "trainer_state.json").read_text())["step"]


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if k not in TIMINGS}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


def _assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a.name}: {k} differs"


def test_kill_9_in_every_stage_then_rerun_matches_an_uninterrupted_run(tiny_model_dir, backbone, tmp_path):
    (tmp_path / "ref").mkdir()
    ref = Run(tmp_path / "ref", tiny_model_dir, backbone)
    ref.complete()
    # guard pairs, teacher passes k = 0 and 1, dev samples, and the base model's greedy responses to dev and test
    assert len(ref.teacher_files()) == 6

    (tmp_path / "killed").mkdir()
    run = Run(tmp_path / "killed", tiny_model_dir, backbone)
    # guard: trained and saved into the cache's temporary directory, its guard_eval.json still being computed; a
    # guard without its evaluation must not count as done, in the cache or in the run
    files = {p.name for p in (ref.out / "guard").iterdir()} - {"guard_eval.json"}
    run.kill_in("guard", lambda: _guard_saved(run.cache, files))
    assert not (run.out / "guard").exists() and not _cached_guards(run.cache) and len(run.teacher_files()) == 1
    # teacher: the first of its two sampling passes is cached, the second is being drawn
    run.kill_in("teacher", lambda: len(run.teacher_files()) == 2)
    assert (run.out / "guard" / "guard_eval.json").is_file() and len(run.teacher_files()) == 2
    # train: right after the first checkpoint (step 8 of 24)
    last = run.out / "student" / "last" / "trainer_state.json"
    run.kill_in("train", last.is_file)
    assert 8 <= _step(run.out) < 24
    first_step = json.loads(last.read_text())["history"][0]
    # evaluate: as soon as it starts (training has resumed and finished)
    run.kill_in("evaluate")
    assert _step(run.out) == 24 and not (run.out / "results.json").exists()
    run.complete()

    assert [p.name for p in run.teacher_files()] == [p.name for p in ref.teacher_files()]  # content keys: all hits
    got, want = (json.loads((r.out / "results.json").read_text()) for r in (run, ref))
    assert _without_timings(got) == _without_timings(want)
    assert want["training"]["history"][-1]["step"] == 24
    assert got["training"]["history"][0] == first_step  # resumed from the checkpoint, not trained again
    assert (run.out / "generations.jsonl").read_text() == (ref.out / "generations.jsonl").read_text()
    for rel in (
        "guard/model.safetensors",
        "student/best/adapter.safetensors",
        "student/last/adapter/adapter.safetensors",
        "student/last/optimizer.safetensors",
    ):
        _assert_same_tensors(run.out / rel, ref.out / rel)


def test_lora_resumed_after_a_crash_trains_the_same_adapter(tiny_lm, tmp_path, monkeypatch):
    """LoRA's dropout masks come from the global RNG: a run resumed in a new process (another RNG state) must draw
    the masks of the uninterrupted run, as ``student/last`` restores everything else."""
    from conftest import weapon_hi_dev

    from softguard import training
    from softguard.adapters import LoRA
    from softguard.losses import build_examples
    from softguard.system import SafeSystem, TeacherItem
    from softguard.training import TrainConfig, train

    model, tok = tiny_lm
    system = SafeSystem(model, tok, None)
    items = [
        TeacherItem("Make a weapon.", 1.0),
        TeacherItem("Write malware.", 0.8, [[19842, 2]], [0.8]),
        TeacherItem("Say hi.", 0.0, [[19842, 2]], [0.0]),
    ]
    examples, dev = build_examples(items, system), weapon_hi_dev(system)
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-2, warmup_steps=1, eval_every=2, dev_max_new_tokens=2)

    def fresh() -> LoRA:
        return LoRA.for_model(model, rank=2, alpha=4.0, dropout=0.5, seed=0)

    torch.manual_seed(1)
    straight = fresh()
    train(model, tok, straight, examples, dev, cfg, tmp_path / "straight")

    real_batch_at = training.batch_at

    def crash_at_step_2(step, *args):
        if step == 2:
            raise KeyboardInterrupt("simulated kill")
        return real_batch_at(step, *args)

    monkeypatch.setattr(training, "batch_at", crash_at_step_2)
    torch.manual_seed(2)
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, fresh(), examples, dev, cfg, tmp_path / "resumed")
    monkeypatch.setattr(training, "batch_at", real_batch_at)
    torch.manual_seed(3)  # a new process: another global RNG state
    resumed = fresh()
    assert train(model, tok, resumed, examples, dev, cfg, tmp_path / "resumed").step == 4
    want, got = straight.state_dict(), resumed.state_dict()
    assert any(not torch.equal(v, fresh().state_dict()[k]) for k, v in want.items())  # it did train
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_diff_of_means_interrupted_mid_grid_is_not_taken_as_done(tiny_lm, toy_guard, tmp_path, monkeypatch):
    """select_alpha saves best/ at the first alpha already: a rerun must score the whole grid again, not skip it."""
    from conftest import weapon_hi_dev

    from softguard import training
    from softguard.config import preset
    from softguard.pipeline import train_stage
    from softguard.system import SafeSystem, TeacherItem

    model, tok = tiny_lm
    system = SafeSystem(model, tok, toy_guard({}))
    items = [TeacherItem("Make a weapon.", 1.0), TeacherItem("Say hi.", 0.0, [[19842, 2]], [0.0])]
    cfg = preset(
        "quick",
        adapter={"method": "steering", "steering": {"layer": 0, "alphas": [1.0, 2.0, 4.0]}},
        train={"objective": "diff-of-means", "dev_max_new_tokens": 2},
    )
    dev = weapon_hi_dev(system)
    train_stage(cfg, system, items, [], dev, tmp_path / "straight")

    real_evaluate_dev, calls = training.evaluate_dev, []

    def crash_at_the_second_alpha(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return real_evaluate_dev(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate_dev", crash_at_the_second_alpha)
    with pytest.raises(KeyboardInterrupt):
        train_stage(cfg, system, items, [], dev, tmp_path / "killed")
    assert (tmp_path / "killed" / "best").is_dir() and not (tmp_path / "killed" / "history.json").exists()
    train_stage(cfg, system, items, [], dev, tmp_path / "killed")
    got, want = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("killed", "straight"))
    assert [r["alpha"] for r in got] == [1.0, 2.0, 4.0] and got == want
    _assert_same_tensors(
        tmp_path / "killed" / "best" / "adapter.safetensors", tmp_path / "straight" / "best" / "adapter.safetensors"
    )
