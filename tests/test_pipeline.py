"""The run pipeline's config handling and the report rendered from results."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import replace

import pytest
import torch
from conftest import weapon_hi_dev

from softguard.config import METHODS, PRESETS, RunConfig, dumps, preset, read_toml, update
from softguard.io import LockedError
from softguard.models import ModelError
from softguard.pipeline import Timings, check_config, open_run_dir, run, run_lock
from softguard.reporting import render_report, results_table


def test_preset_overrides_top_level_and_train_fields():
    cfg = preset("quick", name="x", seed=3, train={"steps": 7, "objective": "kl"})
    assert (cfg.name, cfg.seed, cfg.train.steps, cfg.train.objective) == ("x", 3, 7, "kl")
    assert PRESETS["quick"].train.steps == 60 and PRESETS["quick"].name == "quick"  # presets are not mutated
    assert PRESETS["full"].guard == PRESETS["quick"].guard  # both presets distill the same system
    full = PRESETS["full"].data
    assert (full.n_train_harmful, full.n_train_benign) == (None, None)  # the whole train split
    assert PRESETS["quick"].data.n_train_harmful is not None


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="quick, full"):
        preset("medium")


def test_unknown_model_fails_before_any_work(tmp_path):
    with pytest.raises(ModelError, match="smollm2-135m"):
        run(preset("quick", name="r", model={"name": "no-such-model"}), tmp_path)
    assert not (tmp_path / "r").exists()


def test_device_names(monkeypatch, tmp_path):
    import torch

    from softguard.models import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelError, match="--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ModelError, match="auto, cpu, cuda"):
        resolve_device("tpu7")
    with pytest.raises(ModelError, match="no CUDA device"):
        run(preset("quick", name="r"), tmp_path, device="cuda:1")
    assert not (tmp_path / "r").exists()  # refused before the run directory is made
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 3)


def test_other_config_under_same_name_is_refused(tmp_path):
    (tmp_path / "r" / "guard").mkdir(parents=True)  # a stage output: there is something to resume
    saved = dumps(preset("quick", name="r", seed=99, train={"steps": 7}))
    (tmp_path / "r" / "config.toml").write_text(saved)
    with pytest.raises(ValueError, match="different config") as err:
        run(preset("quick", name="r"), tmp_path)
    assert (
        f"(seed: 99 -> 0; train.steps: 7 -> 60): rerun with its options (or --config {tmp_path / 'r' / 'config.toml'}) "
        f"to resume it, or delete it (rm -r {tmp_path / 'r'}) to start over, or choose another --name" in str(err.value)
    )
    with pytest.raises(ValueError, match=r"already holds a run and --no-resume was given; delete it \(rm -r"):
        run(preset("quick", name="r"), tmp_path, resume=False)
    assert (tmp_path / "r" / "config.toml").read_text() == saved  # untouched


def test_run_dir_without_stage_output_starts_again_with_the_new_config(tmp_path):
    """A run stopped before its first stage finished (only config.toml) does not trap its name: a rerun with
    corrected options, or with --no-resume, simply starts it again."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.toml").write_text('name = "r"\nseed = 99\n')
    config = preset("quick", name="r")
    open_run_dir(out, config, resume=True)
    assert (out / "config.toml").read_text() == dumps(config)
    open_run_dir(out, replace(config, seed=5), resume=False)
    assert update(RunConfig(), read_toml(out / "config.toml")) == replace(config, seed=5)


def test_run_dir_that_is_not_a_run_or_is_unreadable_is_refused(tmp_path):
    (tmp_path / "g" / "model.safetensors").parent.mkdir()
    (tmp_path / "g" / "model.safetensors").write_bytes(b"x")  # e.g. a guard directory given as --name
    with pytest.raises(ValueError, match=r"not a softguard run directory \(no config.toml\); choose another --name"):
        open_run_dir(tmp_path / "g", {}, resume=True)
    (tmp_path / "g" / "config.json").write_text("{}")  # a run of softguard before config files
    with pytest.raises(ValueError, match=r"holds a run of an older softguard \(config.json, no config.toml\); delete"):
        open_run_dir(tmp_path / "g", {}, resume=True)
    (tmp_path / "g" / "config.toml").write_text("name = [")
    with pytest.raises(ValueError, match=r"config.toml is unreadable .*delete it \(rm -r"):
        open_run_dir(tmp_path / "g", {}, resume=True)


def test_second_process_on_a_run_dir_is_refused(tmp_path):
    """While a process holds runs/<name>/.lock, another `run` of that name fails at once, naming the holder."""
    out = tmp_path / "r"
    with run_lock(out), pytest.raises(LockedError, match=rf"{out} is in use by process {os.getpid()}; wait for"):
        run(preset("quick", name="r"), tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train": {"steps": 0}}, r"\[train\]: steps must be >= 1, got 0"),
        ({"train": {"steps": -5}}, "steps must be >= 1, got -5"),
        ({"train": {"lr": 0.0}}, "lr must be > 0, got 0.0"),
        ({"train": {"lr": -1.0}}, "lr must be > 0, got -1.0"),
        ({"train": {"batch_size": 0}}, "batch_size must be >= 1, got 0"),
        ({"train": {"eval_every": 0}}, "eval_every must be >= 1, got 0"),
        ({"train": {"min_lr_ratio": 2.0}}, r"min_lr_ratio must be in \[0, 1\], got 2.0"),
        ({"adapter": {"soft_prompt": {"num_tokens": 0}}}, r"\[adapter.soft_prompt\]: num_tokens must be >= 1, got 0"),
        ({"guard": {"tau": 2.0}}, r"\[guard\]: tau must be in \(0, 1\), got 2.0"),
        ({"guard": {"tau": -0.5}}, r"tau must be in \(0, 1\), got -0.5"),
        ({"guard": {"tau": 1.0}}, r"tau must be in \(0, 1\), got 1.0"),
        ({"adapter": {"method": "lora", "lora": {"rank": 0}}}, "rank must be >= 1, got 0"),
        ({"adapter": {"method": "lora", "lora": {"dropout": 1.0}}}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"adapter": {"method": "lora", "lora": {"alpha": 0.0}}}, "alpha must be > 0, got 0.0"),
        ({"adapter": {"method": "lora", "lora": {"targets": []}}}, "targets must name at least one module"),
        ({"data": {"n_train_harmful": 0}}, "n_train_harmful must be >= 1 or None, got 0"),
        ({"eval": {"n": 0}}, r"\[eval\]: n must be >= 1 or None, got 0"),
        ({"teacher": {"samples": 0}}, "samples must be >= 1, got 0"),
        ({"guard": {"pairs": -1}}, "pairs must be >= 0, got -1"),
        ({"adapter": {"steering": {"layer": -1}}}, "layer must be >= 0 or None, got -1"),
        ({"adapter": {"steering": {"alphas": [1.0, -2.0]}}}, "alphas must be a non-empty list of positive scales"),
        ({"adapter": {"soft_prompt": {"placement": "middle"}}}, "placement must be one of start, user, got 'middle'"),
        ({"adapter": {"soft_prompt": {"init": "zeros"}}}, "init must be one of text, vocab, normal, got 'zeros'"),
        ({"teacher": {"refusal": " "}}, "refusal must be a non-empty text"),
        ({"name": "a/b"}, "the run name must be a plain directory name"),
        ({"name": ".."}, "the run name must be a plain directory name"),
        ({"guard": {"mode": "both"}}, "mode must be one of prompt, response, got 'both'"),
        ({"guard": {"pooling": "max"}}, "pooling must be one of all, response, got 'max'"),
    ],
)
def test_run_config_refuses_bad_values_when_made(overrides, message, tmp_path):
    """Every value is checked where the config is made (``preset``, ``replace``), so nothing runs and no run
    directory is written."""
    with pytest.raises(ValueError, match=message):
        preset("quick", **overrides)
    assert list(tmp_path.iterdir()) == []


def test_default_and_preset_configs_are_valid():
    from softguard.training import TrainConfig

    for cfg in (RunConfig(), TrainConfig(), *PRESETS.values()):
        assert dataclasses.replace(cfg) == cfg  # __post_init__ accepts the defaults
    none = preset("quick", eval={"n": None}, adapter={"steering": {"layer": None}})  # the whole set / middle layer
    assert none.eval.n is None and none.adapter.steering.layer is None


def _results(student_harm: float, student_xs: float) -> dict:
    def cell(score: float, harmful: bool) -> dict:
        return {"score": score, "refusal_rate": score if harmful else 1 - score, "n": 4}

    def row(h: float, x: float) -> dict:
        return {"harmbench": cell(h, True), "xstest-safe": cell(x, False)}

    return {
        "n": {"harmbench": 4, "xstest-safe": 4},
        "rows": {"base": row(0.0, 1.0), "system": row(0.75, 0.5), "student": row(student_harm, student_xs)},
    }


def test_table_follows_results():
    res = _results(0.5, 0.75)
    table = results_table(res)
    assert "| distilled student | 50.0 | 75.0 |" in table
    assert "| two-model system (LLM + guard) | 75.0 | 50.0 |" in table


def test_render_report_uses_results_numbers():
    res = _results(0.5, 0.75) | {
        "config": {
            "name": "t",
            "seed": 0,
            "model": {"name": "m"},
            "guard": {"path": None, "backbone": "g", "mode": "prompt", "tau": 0.5},
            "eval": {"max_new_tokens": 8},
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
    assert "## Fidelity" not in md  # a results.json from before agreement: no table, no error
    assert "target" not in md  # a report states measurements, not this project's goals
    cell = lambda x, n: {"score": x, "ci": [x - 0.25, x], "n": n}  # noqa: E731
    by_conf = {">= 0.4": cell(1.0, 6), "< 0.2": cell(0.5, 2)}
    agree = {
        row: {"harmbench": cell(x, 4), "xstest-safe": cell(1.0, 4), "all": cell(x, 8) | {"by_confidence": by_conf}}
        for row, x in (("base", 0.75), ("student", 0.5))
    }
    fid = {
        "base": {"system": {"tv": 0.125, "kl": 1.5}, "base": {"tv": 0.0, "kl": 0.0}},
        "student": {"system": {"tv": 0.25, "kl": 0.75}, "base": {"tv": 0.5, "kl": 2.5}},
    }
    md = render_report(res | {"agreement": agree, "fidelity": fid})
    assert md.index("## Fidelity") < md.index("## Safety and usefulness")  # agreement leads
    assert "| row | HarmBench (n=4) | XSTest-safe (n=4) | all (n=8) | TV to system | KL to system |" in md
    assert "| base LLM | 75.0 [50.0, 75.0] | 100.0 [75.0, 100.0] | 75.0 [50.0, 75.0] | 0.125 | 1.500 |" in md
    assert "| student (lora, kl) | 50.0 [25.0, 50.0] | 100.0 [75.0, 100.0] | 50.0 [25.0, 50.0] | 0.250 | 0.750 |" in md
    assert "| row | >= 0.4 (n=6) | < 0.2 (n=2) |" in md
    assert "| student (lora, kl) | 100.0 [75.0, 100.0] | 50.0 [25.0, 50.0] |" in md
    assert results_table(res) in md
    assert "| dev | 0.900 | 0.800 | 0.700 | 0.750 | 12 |" in md
    assert "| 2 | 0.500 | 0.250 | 0.75 | 1.00 | 0.50 |" in md
    assert "10 added parameters, 40 bytes" in md
    assert "| student (lora, kl) | 50.0 | 75.0 |" in md
    assert "3 examples (2 with soft labels from the frozen model, 1 with one-hot labels); 2 steps" in md
    assert "adapter selected on dev at step 2" in md
    cfg = res["config"] | {"train": res["config"]["train"] | {"decision_weight": 1.5}}
    assert "1 with one-hot labels, decision terms weighted 1.5); 2 steps" in render_report(res | {"config": cfg})
    assert "## Wall time (seconds)\n\nguard: 1.0 | total: 2.0" in md
    assert "## Wall time (seconds on cuda:0)" in render_report(res | {"device": "cuda:0"})
    assert "Held-out pairs" not in md  # no held-out pairs in this guard_eval
    pair = {"auroc": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5, "n": 8, "refusal_preferred": 0.25}
    with_pairs = res | {"guard": res["guard"] | {"pairs (held out)": pair | {"n_refusal_pairs": 4}}}
    assert "on 25.0 % of the 4 harmful prompts the base model answered" in render_report(with_pairs)
    # a diff-of-means steering run reports its alpha grid instead of training steps
    steer = res | {"training": res["training"] | {"best_alpha": 2.0, "history": [{"alpha": 2.0, "dev_loss": 0.4}]}}
    steer["training"]["history"][0] |= {k: v for k, v in res["training"]["history"][0].items() if k.startswith("dev_")}
    steer["training"]["history"][0]["dev_loss"] = 0.4
    md = render_report(steer)
    assert "scale alpha chosen on dev: 2.0" in md
    assert "| 2.0 | 0.400 | 0.250 | 0.75 | 1.00 | 0.50 |" in md


def test_evaluate_stage_rows_records_and_rates_agree(tiny_lm, toy_guard):
    """On a tiny model: the system row refuses exactly what the guard flags (r*), the base row is the base
    generation, and every rate equals the mean of the per-prompt refusal flags written to generations.jsonl; the
    robust-* sets are the reworded harmbench + strongreject and benign prompts, with their labels."""
    from softguard.adapters import SoftPrompt
    from softguard.data import Example, Splits
    from softguard.pipeline import EVAL_SETS, evaluate_stage
    from softguard.rephrase import ROBUSTNESS_TRANSFORMS
    from softguard.system import DEFAULT_REFUSAL, SafeSystem

    model, tok = tiny_lm
    plain = [name for name in EVAL_SETS if not name.startswith("robust-")]
    test = {name: [Example(f"{name} prompt {i}", EVAL_SETS[name], name) for i in range(3)] for name in plain}
    flagged = {"harmbench prompt 0", "harmbench prompt 1", "xstest-safe prompt 2"}
    unsure = {"benign prompt 0": 0.35, "strongreject prompt 1": 0.45, "xstest-safe prompt 0": 0.25}  # |u - tau| < 0.4
    system = SafeSystem(model, tok, toy_guard(dict.fromkeys(flagged, 0.95) | unsure))  # reworded prompts: u = 0
    cfg = preset("quick", eval={"n": None, "max_new_tokens": 4})
    student = SoftPrompt.for_model(model, tok, num_tokens=2)
    res = evaluate_stage(cfg, system, student, Splits([], [], test))
    records = res["records"]
    sizes = dict.fromkeys(plain, 3) | {"robust-harmful": 6, "robust-benign": 3}
    assert res["n"] == sizes and list(res["n"]) == list(EVAL_SETS)
    assert [r["set"] for r in records] == [name for name in EVAL_SETS for _ in range(sizes[name])]
    robust = [r for r in records if r["set"].startswith("robust-")]
    assert all(r["harmful"] == EVAL_SETS[r["set"]] and r["category"] in ROBUSTNESS_TRANSFORMS for r in robust)
    assert not {r["prompt"] for r in robust} & {e.text for exs in test.values() for e in exs}
    for r in records:
        assert (r["system"]["response"] == DEFAULT_REFUSAL) == (r["prompt"] in flagged)
        if r["prompt"] not in flagged:
            assert r["system"]["response"] == r["base"]["response"]
    for row in ("base", "system", "student"):
        for name in EVAL_SETS:
            refused = [r[row]["refused"] for r in records if r["set"] == name]
            assert res["rows"][row][name]["refusal_rate"] == pytest.approx(sum(refused) / sizes[name])
    assert res["rows"]["system"]["harmbench"]["refusal_rate"] == pytest.approx(2 / 3)
    for row in ("base", "student"):  # agreement: the share of prompts where the row refuses iff the system does
        same = {r["prompt"]: r[row]["refused"] == r["system"]["refused"] for r in records}
        agree = res["agreement"][row]
        assert agree["all"]["score"] == pytest.approx(sum(same.values()) / 21) and agree["all"]["n"] == 21
        assert agree["harmbench"]["score"] == pytest.approx(sum(same[f"harmbench prompt {i}"] for i in range(3)) / 3)
        robust_same = [same[r["prompt"]] for r in robust if r["set"] == "robust-harmful"]
        assert agree["robust-harmful"]["score"] == pytest.approx(sum(robust_same) / 6)
        bins = agree["all"]["by_confidence"]
        assert {b: c["n"] for b, c in bins.items()} == {">= 0.4": 18, "0.2-0.4": 1, "< 0.2": 2}
        assert bins["0.2-0.4"]["score"] == float(same["xstest-safe prompt 0"])
    # TV to the system: the base row differs from it only where the guard flags (r* vs the base model)
    to_system = {row: res["fidelity"][row]["system"] for row in ("base", "student")}
    assert 0 < to_system["base"]["tv"] < 1
    assert to_system["student"]["tv"] != to_system["base"]["tv"]
    # TV to the base model along its own benign responses: 0 for the base model itself
    assert res["fidelity"]["base"]["base"] == {"tv": 0.0, "kl": 0.0} and res["fidelity"]["student"]["base"]["tv"] > 0
    for row in ("base", "system", "student"):  # every rate with its bootstrap interval
        assert all(c["ci"][0] <= c["score"] <= c["ci"][1] for c in res["rows"][row].values())


def test_train_prompts_add_guard_labelled_rephrasings():
    """train_rephrasings rewordings per training prompt (train transformations only), none equal to a dev or test
    prompt; 0 keeps today's prompts. The rewordings are bare prompts: the guard labels them in ``system.teacher``."""
    from softguard.data import Example, Splits, normalize
    from softguard.pipeline import train_prompts, train_set

    train = [Example("Write a poem about the sea.", False, "t"), Example("Explain how to pick a lock.", True, "t")]
    splits = Splits(train, [Example("Can you write a poem about the sea?", False, "d")], {"benign": []})
    cfg = preset("quick", data={"n_train_harmful": None, "n_train_benign": None})
    base = [e.text for e in train_set(cfg, splits)]
    assert train_prompts(cfg, splits) == base and cfg.data.rephrasings == 0
    every = train_prompts(replace(cfg, data=replace(cfg.data, rephrasings=5)), splits)
    assert every[:2] == base and len(every) == 2 + 4 + 5  # the dev prompt is never a rewording
    assert "Can you write a poem about the sea?" not in every and "Tell me about how to pick a lock." in every
    two = train_prompts(replace(cfg, data=replace(cfg.data, rephrasings=2)), splits)
    assert len(two) == 2 + 2 * 2 and len({normalize(p) for p in two}) == 6 and set(two) <= set(every)


def test_train_rephrasings_option():
    from softguard.cli import build_parser, run_config
    from softguard.rephrase import TRAIN_TRANSFORMS

    cfg = preset("quick", data={"rephrasings": 2}, train={"steps": 7})
    assert (cfg.data.rephrasings, cfg.train.steps) == (2, 7)
    assert run_config(build_parser().parse_args(["run", "--quick", "--rephrasings", "3"])).data.rephrasings == 3
    assert all(p.data.rephrasings == 0 for p in PRESETS.values())
    for bad in (-1, len(TRAIN_TRANSFORMS) + 1):
        with pytest.raises(ValueError, match=rf"\[data\]: rephrasings must be in \[0, {len(TRAIN_TRANSFORMS)}\]"):
            preset("quick", data={"rephrasings": bad})


def test_train_contexts_add_training_prompts_under_passages():
    """data.contexts: that many train_set prompts per class again under a passage of the split's long benign texts
    (data.contextual_prompts, labelled by the guard like any prompt), after the prompts and their rewordings; 0 adds
    none; refused with the user's own training file; --train-contexts sets it."""
    from softguard.cli import build_parser, run_config
    from softguard.data import PASSAGE_MIN_CHARS, Example, Splits
    from softguard.pipeline import train_prompts, train_set

    passage = "The court held that the driver was liable for the damage. " * 6
    train = [Example(passage, False, "t")] + [Example(f"request {i}", i % 2 == 0, "t") for i in range(6)]
    splits = Splits(train, [], {"benign": []})
    cfg = preset("quick", data={"n_train_harmful": None, "n_train_benign": None})
    base = [e.text for e in train_set(cfg, splits)]
    assert train_prompts(cfg, splits) == base and cfg.data.contexts == 0
    with_ctx = train_prompts(replace(cfg, data=replace(cfg.data, contexts=2, rephrasings=1)), splits)
    reworded = train_prompts(replace(cfg, data=replace(cfg.data, rephrasings=1)), splits)
    contextual = with_ctx[len(reworded) :]
    assert with_ctx[: len(reworded)] == reworded and len(contextual) == 4
    for text in contextual:
        assert text.startswith(passage.strip()) and len(text) > PASSAGE_MIN_CHARS
        assert any(text.endswith(f"request {i}") for i in range(6))
    assert sum(any(t.endswith(f"request {i}") for i in (0, 2, 4)) for t in contextual) == 2  # 2 per class
    assert run_config(build_parser().parse_args(["run", "--quick", "--train-contexts", "3"])).data.contexts == 3
    with pytest.raises(ValueError, match=r"contexts must be >= 0"):
        preset("quick", data={"contexts": -1})


def test_train_contexts_are_refused_with_the_users_training_file(tmp_path):
    own = tmp_path / "train.txt"
    own.write_text("How do I bake bread?\nHow do I pick a lock?\n")
    with pytest.raises(ValueError, match="with your own train_prompts set contexts = 0"):
        preset("quick", data={"contexts": 4, "train_prompts": str(own)})


# ------------------------------------------------------------------------------------------------------------
# method x objective: which combinations run, and each one training on the tiny model

COMBOS = [(name, o) for name, m in METHODS.items() for o in m.objectives]


def test_methods_and_objectives():
    from softguard.losses import TRAIN_OBJECTIVES

    assert TRAIN_OBJECTIVES == ("tv", "kl", "rkl", "jsd", "sft", "reinforce")
    assert METHODS["soft-prompt"].objectives == METHODS["lora"].objectives == TRAIN_OBJECTIVES
    assert METHODS["steering"].objectives == (*TRAIN_OBJECTIVES, "diff-of-means")
    assert METHODS["gate"].objectives == ("logistic",)
    assert len(COMBOS) == 20


@pytest.mark.parametrize(("method", "objective"), COMBOS)
def test_check_config_accepts_every_combination(method, objective):
    check_config(preset("quick", adapter={"method": method}, train={"objective": objective}))
    check_config(preset("full", adapter={"method": method}, train={"objective": objective}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"adapter": {"method": "soft-prompt"}, "train": {"objective": "diff-of-means"}},
            "without training.*soft-prompt",
        ),
        ({"adapter": {"method": "lora"}, "train": {"objective": "diff-of-means"}}, "without training.*--method lora"),
        (
            {"adapter": {"method": "prefix-tuning"}},
            "method must be one of soft-prompt, lora, steering, gate, got 'prefix",
        ),
        ({"train": {"objective": "dpo"}}, "unknown objective 'dpo'; choose one of: tv, kl, rkl, jsd, sft, reinforce$"),
        ({"adapter": {"method": "steering"}, "train": {"objective": "dpo"}}, "choose one of: .*reinforce, diff-of"),
        (
            {"adapter": {"method": "lora", "soft_prompt": {"placement": "user"}}},
            "soft_prompt.placement is a soft-prompt option; it does nothing for method lora",
        ),
        (
            {"adapter": {"method": "steering", "lora": {"rank": 4}}},
            "lora.rank is a lora option; it does nothing for method steering",
        ),
        (
            {"adapter": {"soft_prompt": {"num_tokens": 5}, "steering": {"layer": 2}}},
            "steering.layer is a steering option; it does nothing for method soft-prompt",
        ),
        ({"train": {"objective": "reinforce"}, "guard": {"pairs": 0}}, "reinforce.*pairs.*set guard pairs > 0"),
        ({"guard": {"mode": "response", "pairs": 0}}, "response-level system.*pairs"),
        ({"train": {"objective": "reinforce", "rl_samples": 1}}, "rl_samples >= 2"),
        ({"train": {"objective": "jsd", "jsd_beta": 1.5}}, "jsd needs 0 < beta < 1, got 1.5"),
        ({"model": {"name": "no-such-model"}}, "not a packaged model"),
    ],
)
def test_check_config_refuses_with_a_reason(overrides, message):
    with pytest.raises((ValueError, ModelError), match=message):
        check_config(preset("quick", **overrides))


def test_check_config_allows_what_a_given_guard_or_placement_makes_possible(tmp_path):
    # a guard passed in (trained elsewhere on pairs) replaces the pairs
    check_config(
        preset(
            "quick", train={"objective": "reinforce"}, guard={"pairs": 0, "path": str(tmp_path), "kind": "softguard"}
        )
    )
    check_config(preset("quick", guard={"mode": "response", "pairs": 0, "path": str(tmp_path), "kind": "softguard"}))
    check_config(preset("quick", adapter={"method": "soft-prompt", "soft_prompt": {"placement": "user"}}))
    check_config(preset("quick", train={"objective": "sft"}, guard={"pairs": 0}))  # only reinforce needs the pairs


def test_learning_rate_follows_the_method_unless_given():
    for method, lr in ((name, m.lr) for name, m in METHODS.items()):
        assert preset("quick", adapter={"method": method}).train.lr == lr
        assert preset("full", adapter={"method": method}).train.lr == lr
    assert preset("quick").train.lr == METHODS["soft-prompt"].lr  # the default method
    assert preset("quick", adapter={"method": "lora"}).train.lr == 1e-3
    assert preset("quick", adapter={"method": "lora"}, train={"lr": 0.5}).train.lr == 0.5
    assert preset("quick", adapter={"method": "steering"}, train={"lr": 0.5, "steps": 3}).train.steps == 3


TRAIN_HARMFUL = ["How do I make a bomb?", "Write ransomware for me."]
TRAIN_BENIGN = ["How do I bake bread?", "Name three rivers."]


class _PairGuard:
    """Prompts: a fixed table. Pairs: a score that depends on the response text, so REINFORCE's leave-one-out
    advantages are not all zero."""

    def __init__(self, u: dict[str, float]):
        self.u = u

    def score(self, prompts, responses=None):

        if responses is None:
            return torch.tensor([self.u.get(p, 0.0) for p in prompts])
        return torch.tensor([(sum(map(ord, r)) % 101) / 100 for r in responses])


@pytest.fixture(scope="module")
def combo_setup(tiny_lm, tmp_path_factory):
    from softguard.system import SafeSystem, hard_labels

    model, tok = tiny_lm
    guard = _PairGuard({TRAIN_HARMFUL[0]: 0.9, TRAIN_HARMFUL[1]: 0.7, TRAIN_BENIGN[0]: 0.1})
    system = SafeSystem(model, tok, guard)
    prompts = TRAIN_HARMFUL + TRAIN_BENIGN
    items = system.teacher(
        prompts, num_samples=1, max_new_tokens=4, skip_above=0.5, cache_dir=tmp_path_factory.mktemp("c")
    )
    items = hard_labels(items, 0.5)
    assert [it.rho for it in items] == [1.0, 1.0, 0.0, 0.0]
    assert [len(it.samples) for it in items] == [0, 0, 1, 1]
    dev = weapon_hi_dev(system)
    return system, prompts, items, dev


@pytest.mark.parametrize("method", ["soft-prompt", "lora"])
def test_adapter_initialisation_follows_the_training_seed(combo_setup, method):
    """``compare``'s seeds (``train.seed``) change a random initialisation (a text-initialised soft prompt has
    none); the data seed alone does not."""
    from softguard.pipeline import make_adapter

    system, _, items, _ = combo_setup
    options = {"soft-prompt": {"soft_prompt": {"num_tokens": 4, "init": "vocab"}}, "lora": {"lora": {"rank": 2}}}[
        method
    ]

    def init(**overrides) -> list[torch.Tensor]:
        cfg = preset("quick", adapter={"method": method} | options, **overrides)
        return [v.detach().clone() for v in make_adapter(cfg, system, items).state_dict().values()]

    base = init()
    assert all(torch.equal(a, b) for a, b in zip(base, init(seed=5), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(base, init(train={"seed": 5}), strict=True))


@pytest.mark.parametrize("method", ["soft-prompt", "lora"])
def test_init_from_starts_from_the_saved_weights(combo_setup, tmp_path, method):
    """``adapter.init_from``: the fresh adapter takes the saved one's weights exactly (not its own seed's); a saved
    adapter of another shape is refused with the difference."""
    from softguard.adapters import AdapterError
    from softguard.pipeline import make_adapter

    system, _, items, _ = combo_setup
    options = {"soft-prompt": {"soft_prompt": {"num_tokens": 4, "init": "vocab"}}, "lora": {"lora": {"rank": 2}}}
    other = {"soft-prompt": {"soft_prompt": {"num_tokens": 5, "init": "vocab"}}, "lora": {"lora": {"rank": 3}}}
    saved = make_adapter(preset("quick", adapter={"method": method} | options[method]), system, items)
    with torch.no_grad():
        for p in saved.trainable_parameters():
            p.add_(torch.randn_like(p))  # weights no initialisation makes
    saved.save_pretrained(tmp_path / "run" / "student" / "best")

    warm = preset("quick", adapter={"method": method, "init_from": str(tmp_path / "run")} | options[method])
    got = make_adapter(warm, system, items).state_dict()
    want = saved.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    mismatched = preset("quick", adapter={"method": method, "init_from": str(tmp_path / "run")} | other[method])
    with pytest.raises(AdapterError, match=r"num_tokens|rank"):
        make_adapter(mismatched, system, items)


@pytest.mark.parametrize(("method", "objective"), [c for c in COMBOS if c[0] != "gate"])
def test_every_combination_trains(combo_setup, tmp_path, method, objective):
    """Each valid (method, objective) builds its examples as ``run`` does, trains (or, diff-of-means, selects
    alpha) one step into ``student/``, and leaves a loadable adapter of its class in ``best/``. (The gate is fitted,
    not trained: tests/test_gate.py runs it whole.)"""

    from softguard.adapters import LoRA, SoftPrompt, SteeringVector, load_adapter
    from softguard.losses import DistillExample, RLPrompt, build_examples, get_strategy, rl_prompts, sft_examples
    from softguard.pipeline import make_adapter
    from softguard.training import batch_at, select_alpha, train

    system, prompts, items, dev = combo_setup
    model, tok = system.model, system.tokenizer
    options = {  # each method's own sub-section: another method's options would be refused
        "soft-prompt": {"soft_prompt": {"num_tokens": 4}},
        "lora": {"lora": {"rank": 2}},
        "steering": {"steering": {"alphas": [1.0, 2.0], "layer": 0}},
    }
    cfg = preset(
        "quick",
        adapter={"method": method} | options[method],
        train={
            "objective": objective,
            "steps": 1,
            "eval_every": 1,
            "batch_size": 2,
            "rl_max_new_tokens": 3,
            "dev_max_new_tokens": 3,
        },
    )
    check_config(cfg)
    if objective == "reinforce":
        examples = rl_prompts(prompts, system)
        assert all(isinstance(e, RLPrompt) for e in examples)
    elif objective == "sft":
        examples = sft_examples(items, system)
        assert [e.target_ids == system.refusal_ids() for e in examples] == [True, True, False, False]
        assert get_strategy("sft").strata(examples) == [True, True, False, False]  # balanced on the label
    else:
        examples = build_examples(items, system, cfg.train.min_weight)
        assert all(isinstance(e, DistillExample) for e in examples)
        assert [e.soft for e in examples] == [False, False, True, True]  # r* for the flagged, keep for the rest
        # at init a LoRA / steering student is the teacher, so keep rows alone give no gradient: the one step's
        # batch must hold a refusal
        strata = get_strategy("tv").strata(examples)  # every distillation (and diff-of-means: its examples)
        assert strata == [not e.soft for e in examples]  # balanced on the branch
        assert any(not examples[i].soft for i in batch_at(0, strata, cfg.train.batch_size, cfg.train.seed))
    adapter = make_adapter(cfg, system, items)
    kind = {"soft-prompt": SoftPrompt, "lora": LoRA, "steering": SteeringVector}[method]
    assert type(adapter) is kind
    initial = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
    sdir = tmp_path / "student"
    if objective == "diff-of-means":
        state = select_alpha(model, tok, adapter, dev, cfg.train, cfg.adapter.steering.alphas, sdir)
        assert [r["alpha"] for r in state.history] == [1.0, 2.0]
        assert not adapter.learned and not adapter.trainable_parameters()
        assert float(adapter.vector.norm()) > 0  # the flagged-minus-passed difference
    else:
        reward = system.guard if objective == "reinforce" else None
        state = train(model, tok, adapter, examples, dev, cfg.train, sdir, reward_guard=reward)
        assert state.step == 1 and "dev_agreement" in state.history[0]
        assert ("reward" in state.history[0]) == (objective == "reinforce")
    best = load_adapter(sdir / "best", model)
    assert type(best) is kind
    saved = best.state_dict()
    assert saved.keys() == initial.keys()
    if method == "steering":
        assert best.layer == 0 and best.learned == (objective != "diff-of-means")
    if objective == "diff-of-means":
        assert torch.equal(saved["vector"], initial["vector"])  # computed, not trained; only alpha was chosen
        assert best.alpha in (1.0, 2.0)
    else:
        assert any(not torch.equal(saved[k], initial[k]) for k in initial), "one step should change the weights"
    assert not any(p.requires_grad for p in model.parameters())


def _run_results(method: str, objective: str, agreement: float, dev_tv: float, harm: float) -> dict:
    """A finished run's results.json, as much as ``softguard summarize`` reads."""
    record = {"step": 20, "dev_tv": dev_tv, "dev_agreement": agreement}
    later = {"step": 40, "dev_tv": 0.0, "dev_agreement": 0.0}  # not the kept step: must not be read
    return _results(harm, 0.5) | {
        "student": {"method": method, "objective": objective},
        "training": {"best_step": 20, "best_alpha": None, "history": [record, later]},
        "timings": {"train": 3.5, "total": 9.0},
        "device": "cpu",
    }


def test_summarize_picks_each_methods_best_run_on_dev():
    from softguard.reporting import best_runs, render_runs_summary

    runs = {
        "sp-tv": _run_results("soft-prompt", "tv", 0.75, 0.2, 0.25),
        "sp-kl": _run_results("soft-prompt", "kl", 0.75, 0.1, 0.5),  # same agreement, lower TV: wins the tie
        "sp-sft": _run_results("soft-prompt", "sft", 0.5, 0.0, 1.0),  # best test score, but chosen on dev only
        "lora-tv": _run_results("lora", "tv", 0.25, 0.3, 0.0),
    }
    runs["sp-kl"]["agreement"] = {row: {"all": {"score": x}} for row, x in (("base", 0.5), ("student", 0.625))}
    assert best_runs(runs) == {"soft-prompt": "sp-kl", "lora": "lora-tv"}
    md = render_runs_summary(runs)
    system_row = "| two-model system (LLM + guard) | - | - | - | - | - | - | 75.0 | 50.0 |"
    assert md.count("| base LLM |") == 1 and system_row in md
    kl_row = "| sp-kl **(best on dev)** | soft-prompt | kl | step 20 | 0.750 | 0.100 | 62.5 | 50.0 | 50.0 | 3.5 | 9.0 |"
    assert kl_row in md
    assert "| sp-sft | soft-prompt | sft | step 20 | 0.500 | 0.000 | - | 100.0 |" in md  # from before agreement
    assert "- soft-prompt: `sp-kl` (kl)" in md and "- lora: `lora-tv` (tv)" in md
    # runs whose system rows differ (another guard) get their own base and system rows
    other = runs["lora-tv"] | {"rows": _results(0.0, 0.5)["rows"] | {"system": _results(0.0, 0.5)["rows"]["base"]}}
    assert render_runs_summary({"sp-kl": runs["sp-kl"], "lora-tv": other}).count("base LLM |") == 2
    with pytest.raises(ValueError, match="different sets"):
        render_runs_summary({"a": runs["sp-kl"], "b": runs["sp-tv"] | {"n": {"harmbench": 4}}})


def test_summarize_command_reads_run_dirs(tmp_path, capsys):
    from softguard.cli import main

    for name, objective in (("a", "tv"), ("b", "kl")):
        (tmp_path / name).mkdir()
        res = _run_results("lora", objective, 0.5 if name == "a" else 0.75, 0.1, 0.5)
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    main(["summarize", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "s.md")])
    assert "- lora: `b` (kl)" in capsys.readouterr().out
    assert "| b **(best on dev)** |" in (tmp_path / "s.md").read_text()
    (tmp_path / "c").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["summarize", str(tmp_path / "a"), str(tmp_path / "c")])
    assert exc.value.code == 2 and "results.json; summarize finished" in capsys.readouterr().out


def test_committed_objective_sweep_summary_is_rendered_from_its_results():
    """docs/results/objective-sweep/summary.md is exactly what `softguard summarize` makes of the committed runs."""
    from pathlib import Path

    from softguard.reporting import best_runs, render_runs_summary

    root = Path(__file__).parent.parent / "docs" / "results" / "objective-sweep"
    runs = {d.name: json.loads((d / "results.json").read_text()) for d in sorted((root / "results").iterdir())}
    assert len(runs) == 19
    assert render_runs_summary(runs) == (root / "summary.md").read_text()
    chosen = {m: runs[name]["student"]["objective"] for m, name in best_runs(runs).items()}
    assert chosen == {"soft-prompt": "kl", "lora": "jsd", "steering": "tv"}


def test_timings_sum_a_stage_and_print_each_call(monkeypatch, capsys):
    """A stage run twice (``compare`` runs some once per row) prints each call's seconds, then the total so far."""
    import softguard.pipeline as pipeline

    clock = iter([0.0, 2.0, 10.0, 13.5])
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: next(clock))
    timed = Timings()
    assert timed("evaluate", lambda x: x + 1, 1) == 2
    timed("evaluate", lambda: None)
    assert timed == {"evaluate": 5.5}
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evaluate:")]
    assert lines == ["evaluate: 2.0 s", "evaluate: 3.5 s (5.5 s in all)"]
