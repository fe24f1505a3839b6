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
    """`guard train` on the real train split (tiny backbone, 1 epoch) writes a loadable guard and dev metrics;
    `guard eval` writes AUROC/precision/recall/F1 for dev and test."""
    out = tmp_path / "guard"
    main(["guard", "train", "--backbone", str(backbone), "--epochs", "1", "--out", str(out)])
    dev = json.loads((out / "guard_eval.json").read_text())["dev"]
    assert dev["n"] == 158 and 0.0 <= dev["auroc"] <= 1.0
    main(["guard", "eval", "--guard", str(out), "--out", str(tmp_path / "eval.json")])
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert set(ev) == {"dev", "test"}
    assert ev["dev"] == pytest.approx(dev)  # same guard, same dev split, same numbers
    assert ev["test"]["n"] == 1165 and {"auroc", "precision", "recall", "f1"} <= set(ev["test"])
