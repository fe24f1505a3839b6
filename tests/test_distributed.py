"""Several processes, really run: ``accelerate launch --multi_gpu --num_processes 2`` on CPUs (gloo) trains the same
adapters, with the same logged history, as one process with the same global batch (tests/ddp_train.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import make_tiny_llama
from safetensors.torch import load_file

from softguard import assets, training
from softguard.adapters import SoftPrompt
from softguard.evaluation import DevSet
from softguard.generation import generate
from softguard.losses import DistillExample
from softguard.models import chat_prompt
from softguard.training import TrainConfig, shard

TESTS = Path(__file__).resolve().parent
RUNS = ("tv", "lora-kl", "reinforce")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(processes: int, args: list[Path], cache: Path) -> None:
    """``accelerate launch [--multi_gpu] --num_processes N tests/ddp_train.py ARGS`` on CPUs, importing this source
    tree, with ``cache`` as the softguard cache."""
    env = os.environ | {
        "SOFTGUARD_CACHE": str(cache),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS.parent), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",  # CPU processes (gloo) even on a machine with GPUs
    }
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *(["--multi_gpu"] if processes > 1 else []),  # torchrun's launcher; `--cpu` would start one process only
        f"--num_processes={processes}",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={_free_port()}",
        str(TESTS / "ddp_train.py"),
        *map(str, args),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{processes} process(es) failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer, backbone) -> dict[int, Path]:
    """The tiny Llama saved (safetensors) with its tokenizer, trained on 1 and on 2 processes, each with a fresh
    softguard cache (the fetched assets, no teacher samples)."""
    root = tmp_path_factory.mktemp("ddp")
    make_tiny_llama(len(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    assert (root / "model" / "model.safetensors").is_file()
    outs = {n: root / f"world{n}" for n in (1, 2)}
    for n, out in outs.items():
        cache = root / f"cache{n}"
        cache.mkdir()
        (cache / "assets").symlink_to(assets.cache_root() / "assets")
        _launch(n, [root / "model", backbone, out], cache)
    return outs


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter.safetensors"))


@pytest.mark.parametrize("run", RUNS)
def test_two_processes_train_what_one_does(trained, run):
    one, two = trained[1] / run, trained[2] / run
    init, a1, a2 = _adapter(one / "init"), _adapter(one / "last" / "adapter"), _adapter(two / "last" / "adapter")
    assert a1.keys() == a2.keys() == init.keys()
    for key in a1:
        assert not torch.allclose(a1[key], init[key], atol=1e-3), f"{run}: {key} did not train"
        assert torch.allclose(a1[key], a2[key], atol=1e-5), f"{run}: {key} differs by {(a1[key] - a2[key]).abs().max()}"
    h1, h2 = (json.loads((d / "history.json").read_text()) for d in (one, two))
    assert [r["step"] for r in h1] == [r["step"] for r in h2] == [1, 2, 3]
    for r1, r2 in zip(h1, h2, strict=True):
        assert r1.keys() == r2.keys()
        for key in r1.keys() - {"seconds"}:  # loss, tv / reward + kl, lr, grad_norm, the dev metrics
            assert r2[key] == pytest.approx(r1[key], abs=1e-5), f"{run} step {r1['step']}: {key}"
    assert len({r["loss"] for r in h1}) == 3  # the loss did move
    # dev selection and checkpoints agree: the same best step, and the best adapters equal
    b1, b2 = _adapter(one / "best"), _adapter(two / "best")
    assert all(torch.allclose(b1[k], b2[k], atol=1e-5) for k in b1)
    best_step = lambda d: json.loads((d / "best" / "adapter_config.json").read_text())["training"]["step"]  # noqa: E731
    assert best_step(one) == best_step(two)


def test_two_processes_resume_what_one_trained_straight(trained):
    """The tv run on 2 processes, stopped after its step-2 checkpoint and resumed, ends where 1 process did."""
    one, resumed = trained[1] / "tv", trained[2] / "tv-resumed"
    a1, a2 = _adapter(one / "last" / "adapter"), _adapter(resumed / "last" / "adapter")
    assert torch.allclose(a1["prompt"], a2["prompt"], atol=1e-5)
    h1, h2 = (json.loads((d / "history.json").read_text()) for d in (one, resumed))
    assert [r["loss"] for r in h2] == pytest.approx([r["loss"] for r in h1], abs=1e-5)


def test_a_whole_run_on_two_processes_matches_one(trained):
    """``pipeline.run`` under the launcher: the main process trains the guard and samples the teacher, the other
    reads them, both train, the main process evaluates; the report's numbers are one process's."""
    one, two = trained[1] / "runs" / "tiny", trained[2] / "runs" / "tiny"
    a1, a2 = _adapter(one / "student" / "last" / "adapter"), _adapter(two / "student" / "last" / "adapter")
    assert torch.allclose(a1["prompt"], a2["prompt"], atol=1e-5)
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert r2["rows"] == r1["rows"] and r2["guard"] == r1["guard"]
    h1, h2 = r1["training"]["history"], r2["training"]["history"]
    assert [r["loss"] for r in h2] == pytest.approx([r["loss"] for r in h1], abs=1e-5)
    assert (two / "report.md").is_file() and (two / "generations.jsonl").is_file()
    for n in (1, 2):  # only the main process trained the guard, sampled base responses and evaluated
        assert {p.name for p in (trained[n] / "calls").iterdir()} == {"guard-rank0", "sample-rank0", "evaluate-rank0"}


# ------------------------------------------------------------------------------------------------------------
# in one process: the pieces that make the result independent of the number of processes


def test_shard_weights_sum_to_the_global_mean():
    batch = [7, 3, 9, 1, 4]
    parts = [shard(len(batch), rank, 2) for rank in range(2)]
    assert parts == [(range(0, 5, 2), 3 / 5), (range(1, 5, 2), 2 / 5)]
    losses = {7: 1.0, 3: 2.0, 9: 4.0, 1: 8.0, 4: 16.0}
    means = [sum(losses[batch[j]] for j in positions) / len(positions) for positions, _ in parts]
    assert sum(share * m for (_, share), m in zip(parts, means, strict=True)) == pytest.approx(31 / 5)
    assert shard(5, 0, 1) == (range(5), 1.0)


class _TwoProcesses(Accelerator):
    num_processes = 2  # what `accelerate launch --num_processes 2` would report


def test_train_refuses_fewer_examples_per_step_than_processes(tiny_lm, tmp_path, monkeypatch):
    model, tok = tiny_lm
    examples = [DistillExample([1, 2], [3, 2], 1.0, soft=False)]
    dev = DevSet([], [], [], [])
    sp = SoftPrompt.for_model(model, tok, num_tokens=2)
    with pytest.raises(ValueError, match="no examples"):
        training.train(model, tok, sp, [], dev, TrainConfig(batch_size=4), tmp_path / "empty")
    monkeypatch.setattr(training, "Accelerator", _TwoProcesses)
    for cfg, examples_ in ((TrainConfig(batch_size=1), examples * 4), (TrainConfig(batch_size=4), examples)):
        with pytest.raises(ValueError, match=r"each of the 2 processes needs at least one example per step"):
            training.train(model, tok, sp, examples_, dev, cfg, tmp_path / "run")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "run").exists()


def test_diff_of_means_is_refused_on_several_processes(tmp_path, monkeypatch):
    from softguard import config, pipeline

    class TwoProcessState:  # what PartialState reports under `accelerate launch --num_processes 2`
        num_processes, is_main_process = 2, True

        def __init__(self, **kwargs):
            pass

    monkeypatch.setattr(pipeline, "PartialState", TwoProcessState)
    cfg = config.preset("quick", name="dom", adapter={"method": "steering"}, train={"objective": "diff-of-means"})
    with pytest.raises(ValueError, match=r"diff-of-means trains nothing.*run it in one process"):
        pipeline.run(cfg, tmp_path, device="cpu")
    assert not (tmp_path / "dom").exists()


def test_per_prompt_seeds_sample_independently_of_the_batch(tiny_lm):
    """reinforce's samples: with one seed per prompt, a prompt's sample is the same alone or among others."""
    model, tok = tiny_lm
    prompts = [chat_prompt(tok, p) for p in ("Say hi.", "Name a colour, please.", "Count to three.")]
    kw = dict(max_new_tokens=6, temperature=1.0, progress=False)
    together = generate(model, tok, prompts, seed=[11, 12, 13], **kw)
    alone = [generate(model, tok, [p], seed=[s], **kw)[0] for p, s in zip(prompts, (11, 12, 13), strict=True)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    pairs = generate(model, tok, prompts, seed=[11, 12, 13], batch_size=2, **kw)
    assert [g.token_ids for g in pairs] == [g.token_ids for g in together]
    assert generate(model, tok, prompts[:1] * 2, seed=[11, 14], **kw)[1].token_ids != together[0].token_ids
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(model, tok, prompts, seed=[1, 2], **kw)
