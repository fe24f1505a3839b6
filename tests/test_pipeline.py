"""The run pipeline's config handling and the report rendered from results."""

from __future__ import annotations

import json

import pytest

from softguard.models import ModelError
from softguard.pipeline import PRESETS, preset, run
from softguard.reporting import render_report, results_table, targets


def test_preset_overrides_top_level_and_train_fields():
    cfg = preset("quick", name="x", seed=3, train_steps=7, train_objective="kl")
    assert (cfg.name, cfg.seed, cfg.train.steps, cfg.train.objective) == ("x", 3, 7, "kl")
    assert PRESETS["quick"].train.steps == 60 and PRESETS["quick"].name == "quick"  # presets are not mutated
    assert cfg.hard_labels and not PRESETS["full"].hard_labels


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="quick, full"):
        preset("medium")


def test_unknown_model_fails_before_any_work(tmp_path):
    with pytest.raises(ModelError, match="smollm2-135m"):
        run(preset("quick", name="r", model="no-such-model"), tmp_path)
    assert not (tmp_path / "r").exists()


def test_other_config_under_same_name_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps({"name": "r", "seed": 99}))
    with pytest.raises(ValueError, match="different config"):
        run(preset("quick", name="r"), tmp_path)
    with pytest.raises(ValueError, match="already exists"):
        run(preset("quick", name="r"), tmp_path, resume=False)


def _results(student_harm: float, student_xs: float) -> dict:
    def cell(score: float, harmful: bool) -> dict:
        return {"score": score, "refusal_rate": score if harmful else 1 - score, "n": 4}

    def row(h: float, x: float) -> dict:
        return {"harmbench": cell(h, True), "xstest-safe": cell(x, False)}

    return {
        "n": {"harmbench": 4, "xstest-safe": 4},
        "rows": {"base": row(0.0, 1.0), "system": row(0.75, 0.5), "student": row(student_harm, student_xs)},
    }


def test_table_and_targets_follow_results():
    res = _results(0.5, 0.75)
    table = results_table(res)
    assert "| distilled student | 50.0 | 75.0 |" in table
    assert "| two-model system (LLM + guard) | 75.0 | 50.0 |" in table
    lines = targets(res)
    assert "= 0.67 (target >= 0.80): NOT met" in lines[0]
    assert "gap = 25.0 points (target <= 10): NOT met" in lines[1]
    assert all(line.endswith(": met") for line in targets(_results(0.75, 0.5)))


def test_render_report_uses_results_numbers():
    res = _results(0.5, 0.75) | {
        "config": {
            "name": "t",
            "model": "m",
            "guard": None,
            "guard_backbone": "g",
            "guard_mode": "prompt",
            "tau": 0.5,
            "num_tokens": 5,
            "seed": 0,
            "eval_max_new_tokens": 8,
            "train": {"objective": "tv", "steps": 2, "batch_size": 2, "lr": 0.1},
        },
        "student": {"method": "lora", "objective": "kl", "parameters": 10, "bytes": 40},
        "guard": {"dev": {"auroc": 0.9, "precision": 0.8, "recall": 0.7, "f1": 0.75, "n": 12}},
        "training": {
            "prompts": 3,
            "examples": 3,
            "keep_examples": 2,
            "refuse_examples": 1,
            "best_step": 2,
            "history": [
                {
                    "step": 2,
                    "loss": 0.5,
                    "dev_tv": 0.25,
                    "dev_agreement": 0.75,
                    "dev_harmful_refusal": 1.0,
                    "dev_benign_compliance": 0.5,
                },
            ],
        },
        "timings": {"guard": 1.0, "total": 2.0},
    }
    md = render_report(res)
    assert results_table(res) in md
    assert "| dev | 0.900 | 0.800 | 0.700 | 0.750 | 12 |" in md
    assert "| 2 | 0.500 | 0.250 | 0.75 | 1.00 | 0.50 |" in md
    assert "10 added parameters, 40 bytes" in md
    assert "| student (lora, kl) | 50.0 | 75.0 |" in md
    assert "adapter selected on dev at step 2" in md
    # a diff-of-means steering run reports its alpha grid instead of training steps
    steer = res | {"training": res["training"] | {"best_alpha": 2.0, "history": [{"alpha": 2.0, "dev_loss": 0.4}]}}
    steer["training"]["history"][0] |= {k: v for k, v in res["training"]["history"][0].items() if k.startswith("dev_")}
    steer["training"]["history"][0]["dev_loss"] = 0.4
    md = render_report(steer)
    assert "scale alpha chosen on dev: 2.0" in md
    assert "| 2.0 | 0.400 | 0.250 | 0.75 | 1.00 | 0.50 |" in md


def test_evaluate_stage_rows_records_and_rates_agree(tiny_lm, toy_guard):
    """On a tiny model: the system row refuses exactly what the guard flags (r*), the base row is the base
    generation, and every rate equals the mean of the per-prompt refusal flags written to generations.jsonl."""
    from softguard.adapters import SoftPrompt
    from softguard.data import Example, Splits
    from softguard.pipeline import EVAL_SETS, evaluate_stage
    from softguard.system import DEFAULT_REFUSAL, SafeSystem

    model, tok = tiny_lm
    test = {
        name: [Example(f"{name} prompt {i}", harmful, name) for i in range(3)] for name, harmful in EVAL_SETS.items()
    }
    flagged = {"harmbench prompt 0", "harmbench prompt 1", "xstest-safe prompt 2"}
    system = SafeSystem(model, tok, toy_guard(dict.fromkeys(flagged, 0.9)))
    cfg = preset("quick", n_eval=None, eval_max_new_tokens=4)
    student = SoftPrompt.for_model(model, tok, num_tokens=2)
    res = evaluate_stage(cfg, system, student, Splits([], [], test))
    records = res["records"]
    assert [r["set"] for r in records] == [name for name in EVAL_SETS for _ in range(3)]
    for r in records:
        assert (r["system"]["response"] == DEFAULT_REFUSAL) == (r["prompt"] in flagged)
        if r["prompt"] not in flagged:
            assert r["system"]["response"] == r["base"]["response"]
    for row in ("base", "system", "student"):
        for name in EVAL_SETS:
            refused = [r[row]["refused"] for r in records if r["set"] == name]
            assert res["rows"][row][name]["refusal_rate"] == pytest.approx(sum(refused) / 3)
    assert res["rows"]["system"]["harmbench"]["refusal_rate"] == pytest.approx(2 / 3)
