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
        (["run", "--quick", "--model", "nope"], "not a packaged model (smollm2-135m, qwen2.5-coder-0.5b)"),
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
    assert dev["n"] == 278 and 0.0 <= dev["auroc"] <= 1.0
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
        (["train", "--quick", "--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (["train", "--quick", "--steps", "0"], "steps must be >= 1, got 0"),
        (["run", "--quick", "--steps", "-5"], "steps must be >= 1, got -5"),
        (["train", "--quick", "--lr", "0"], "lr must be > 0, got 0.0"),
        (["run", "--quick", "--lr", "-1"], "lr must be > 0, got -1.0"),
        (["train", "--quick", "--num-tokens", "0"], "num_tokens must be >= 1, got 0"),
        (["train", "--quick", "--method", "lora", "--lora-rank", "0"], "[adapter.lora]: rank must be >= 1, got 0"),
        (
            ["train", "--quick", "--method", "lora", "--lora-dropout", "1"],
            "[adapter.lora]: dropout must be in [0, 1), got 1.0",
        ),
        (
            ["train", "--quick", "--method", "lora", "--lora-targets", ","],
            "[adapter.lora]: targets must name at least one",
        ),
        (
            ["train", "--quick", "--method", "steering", "--steering-layer", "-1"],
            "[adapter.steering]: layer must be >= 0",
        ),
        (["run", "--quick", "--kl-coef", "-1"], "kl_coef must be >= 0, got -1.0"),
        (["run", "--quick", "--name", "../escape"], "the run name must be a plain directory name"),
    ],
)
def test_bad_run_options_exit_2_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    """`run` and `train` share their options: an option of another method, --labels with a direct objective, or a
    method x objective that cannot run is refused with its reason, before any asset, model or run directory."""

    def no_work(*a, **k):
        raise AssertionError("a refused config must not fetch or load anything")

    monkeypatch.setattr("softguard.pipeline.fetch_stage", no_work)
    monkeypatch.setattr("softguard.pipeline.load_model", no_work)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--runs-dir", str(tmp_path)])
    assert exc.value.code == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "error:" in out and message in out
    assert list(tmp_path.iterdir()) == []  # no run directory, no config.toml


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["guard", "train", "--tau", "2"], "tau must be in (0, 1), got 2.0"),
        (["guard", "train", "--tau", "-0.5"], "tau must be in (0, 1), got -0.5"),
        (["guard", "train", "--lr", "0"], "lr must be > 0, got 0.0"),
        (["guard", "train", "--epochs", "-1"], "[guard]: epochs must be >= 0, got -1"),
        (["guard", "train", "--pairs", "-1"], "[guard]: pairs must be >= 0, got -1"),
        (["guard", "eval", "--tau", "2"], "tau must be in (0, 1), got 2.0"),
        (["guard", "eval", "--tau", "-0.5"], "tau must be in (0, 1), got -0.5"),
    ],
)
def test_bad_guard_options_exit_2_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("a refused option must not load or train anything")

    monkeypatch.setattr("softguard.models.load_model", no_work)
    monkeypatch.setattr("softguard.guard_training.train_split_guard", no_work)
    monkeypatch.setattr("softguard.guards.EncoderGuard.from_pretrained", no_work)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().out.split())
    assert list(tmp_path.iterdir()) == []


def test_guard_train_never_replaces_a_directory_that_is_not_a_guard(tmp_path, capsys, monkeypatch):
    """Saving a guard replaces its --out directory, so --out pointing at a run (or anything else) is refused."""
    monkeypatch.setattr("softguard.models.load_model", lambda *a, **k: pytest.fail("must not load a model"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.md").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["guard", "train", "--out", str(run)])
    assert exc.value.code == 2 and "holds files but no saved guard" in capsys.readouterr().out
    assert (run / "report.md").read_text() == "keep me"


def _summarize_args(tmp_path) -> list[str]:
    from test_pipeline import _run_results

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(_run_results("lora", "tv", 0.5, 0.1, 0.5)))
    return ["summarize", str(tmp_path / "a"), "--out", str(tmp_path / "s.md")]


def test_disk_full_or_no_permission_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """An OSError the user can fix (disk full, permissions) exits 2 with the path and what to do, leaving no
    half-written file; any other OSError is a bug and keeps its traceback."""
    from test_io import disk_full

    import softguard.io as sgio

    argv = _summarize_args(tmp_path)
    disk_full(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 2
    assert f"error: {tmp_path / 's.md'}: No space left on device; free some disk space" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no s.md, no temporary file
    monkeypatch.undo()

    def denied(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(sgio.tempfile, "mkstemp", denied)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 2 and f"error: {tmp_path}: Permission denied; check the permissions" in out

    def bug(*a, **k):
        raise FileNotFoundError(2, "No such file or directory", "a path softguard got wrong")

    monkeypatch.setattr(sgio.tempfile, "mkstemp", bug)
    with pytest.raises(FileNotFoundError):
        main(argv)


def test_prompt_file_options(tmp_path, capsys, monkeypatch):
    """--train-prompts / --eval-prompts (run and train) put the files' absolute paths and sha256 in the config; a bad
    file is refused with its line before any asset, model or run directory."""
    import hashlib

    from softguard.cli import build_parser, run_config

    train, ev = tmp_path / "train.txt", tmp_path / "eval.jsonl"
    train.write_text("Reset my router.\n")
    ev.write_text('{"prompt": "Make meth.", "harmful": true}\n')
    monkeypatch.chdir(tmp_path)
    for command in ("run", "train"):
        args = build_parser().parse_args(
            [command, "--quick", "--train-prompts", "train.txt", "--eval-prompts", str(ev)]
        )
        cfg = run_config(args)
        assert (cfg.data.train_prompts, cfg.data.eval_prompts) == (str(train), str(ev))
        assert cfg.data.train_prompts_sha256 == hashlib.sha256(b"Reset my router.\n").hexdigest()
        assert cfg.data.eval_prompts_sha256 == hashlib.sha256(ev.read_bytes()).hexdigest()

    def no_work(*a, **k):
        raise AssertionError("a refused prompt file must not fetch or load anything")

    monkeypatch.setattr("softguard.pipeline.fetch_stage", no_work)
    monkeypatch.setattr("softguard.pipeline.load_model", no_work)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    runs = tmp_path / "runs"
    for argv, message in (
        (
            ["run", "--train-prompts", "empty.jsonl"],
            f"error: [data]: {tmp_path / 'empty.jsonl'} holds no prompts; give one",
        ),
        (
            ["train", "--train-prompts", "latin1.txt"],
            f"error: [data]: {tmp_path / 'latin1.txt'}, line 1: not UTF-8 text",
        ),
        (["run", "--eval-prompts", "train.txt"], "an evaluation prompt file needs a harmful/benign label per prompt"),
        (
            ["run", "--eval-prompts", "nope.csv"],
            f"error: [data]: {tmp_path / 'nope.csv'}: no such prompt file; check the path",
        ),
    ):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--quick", "--runs-dir", str(runs)])
        assert exc.value.code == 2
        assert message in " ".join(capsys.readouterr().out.split())
    assert not runs.exists()


def test_compare_grid_flags_are_comma_separated_lists(tmp_path, capsys, monkeypatch):
    """`--methods a,b --objectives c --seeds 3` reach the CompareConfig as lists, as the help text says."""
    seen = {}

    def fake_compare(cfg, runs_dir, resume, device):
        seen["cfg"] = cfg
        (tmp_path / "report.md").write_text("report")
        return tmp_path

    monkeypatch.setattr("softguard.compare.compare", fake_compare)
    main(
        ["compare", "--quick", "--methods", "soft-prompt,lora", "--objectives", "tv,kl", "--seeds", "3", "--seed", "2"]
    )
    cfg = seen["cfg"]
    assert (cfg.methods, cfg.objectives, cfg.seeds) == (["soft-prompt", "lora"], ["tv", "kl"], [2, 3, 4])
    assert capsys.readouterr().out.strip() == "report"
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--quick", "--methods", "soft-prompt,nope"])
    assert exc.value.code == 2
    assert "methods must be some of" in capsys.readouterr().out
