"""The command line: each subcommand on real data (tiny guard backbone), and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from softguard.cli import main


def test_list_and_data_show(capsys):
    main(["list", "datasets"])
    out = capsys.readouterr().out
    assert "harmbench" in out and "xstest" in out and "splits" in out
    main(["data", "show", "strongreject", "-n", "2"])
    out = capsys.readouterr().out
    assert "strongreject: 313 rows" in out and "harmful: 313" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "show", "nope"], "known datasets: advbench"),
        (["fetch", "nope"], "known assets: advbench"),
        (["run", "--quick", "--model", "nope"], "not a packaged model (smollm2-135m)"),
    ],
)
def test_bad_names_exit_2_with_the_known_names(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--runs-dir", str(tmp_path)] if argv[0] == "run" else argv)
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().out.split())


def test_guard_train_then_eval(backbone, tmp_path):
    """`guard train` on the real train split (tiny backbone, 1 epoch, pairs from SmolLM2's answers to 3 + 3 train
    prompts) writes a loadable guard with dev and held-out pair metrics; `guard eval` writes AUROC/precision/
    recall/F1 for dev and test."""
    out = tmp_path / "guard"
    main(["guard", "train", "--backbone", str(backbone), "--epochs", "1", "--pairs", "3", "--out", str(out)])
    metrics = json.loads((out / "guard_eval.json").read_text())
    dev = metrics["dev"]
    assert dev["n"] == 198 and 0.0 <= dev["auroc"] <= 1.0
    assert metrics["pairs (held out)"]["n"] == 2  # one of the 6 prompts held out (a benign one: answer, refusal)
    assert json.loads((out / "guard_config.json").read_text())["metadata"]["pairs"] == 12
    main(["guard", "eval", "--guard", str(out), "--out", str(tmp_path / "eval.json")])
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert set(ev) == {"dev", "test"}
    assert ev["dev"] == pytest.approx(dev)  # same guard, same dev split, same numbers
    assert ev["test"]["n"] == 1165 and {"auroc", "precision", "recall", "f1"} <= set(ev["test"])
    flagged = ev["test"]["flagged"]  # per test set: the share the guard flags
    assert set(flagged) >= {"harmbench", "strongreject", "xstest-safe", "benign"}
    assert all(0.0 <= v <= 1.0 for v in flagged.values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--quick", "--method", "lora", "--num-tokens", "5"], "--num-tokens is a soft-prompt option"),
        (["run", "--quick", "--method", "steering", "--placement", "user"], "--placement is a soft-prompt option"),
        (["train", "--quick", "--lora-rank", "4"], "--lora-rank is a lora option; it does nothing for --method"),
        (["train", "--method", "lora", "--steering-layer", "3"], "--steering-layer is a steering option"),
        (["train", "--quick", "--objective", "sft", "--labels", "soft"], "--labels does not apply to --objective sft"),
        (["run", "--objective", "reinforce", "--labels", "hard"], "--labels does not apply to --objective reinforce"),
        (
            ["run", "--quick", "--method", "soft-prompt", "--objective", "diff-of-means"],
            "without training; --method soft-prompt needs a training objective",
        ),
        (["train", "--method", "lora", "--objective", "diff-of-means"], "without training; --method lora"),
        (["train", "--quick", "--method", "lora", "--placement", "start"], "--placement is a soft-prompt option"),
        (["run", "--quick", "--objective", "reinforce", "--rl-samples", "1"], "rl_samples >= 2"),
        (["train", "--quick", "--objective", "jsd", "--jsd-beta", "1.5"], "0 < beta < 1"),
        (["train", "--quick", "--batch-size", "0"], "batch_size must be at least 1"),
    ],
)
def test_bad_run_options_exit_2_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    """`run` and `train` share their options: an option of another method, --labels with a direct objective, or a
    method x objective that cannot run is refused with its reason, before any asset, model or run directory."""
    import time

    def no_work(*a, **k):
        raise AssertionError("a refused config must not fetch or load anything")

    monkeypatch.setattr("softguard.pipeline.fetch_stage", no_work)
    monkeypatch.setattr("softguard.pipeline.load_model", no_work)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--runs-dir", str(tmp_path)])
    assert time.perf_counter() - t0 < 1.0
    assert exc.value.code == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "error:" in out and message in out
    assert list(tmp_path.iterdir()) == []  # no run directory, no config.json
