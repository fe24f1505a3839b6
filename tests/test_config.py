"""The config module: TOML round trip, validation in the library, command-line overrides, the examples, the guard
kinds, and `softguard run --config` end to end with each kind of guard on tiny random models."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_llama, tiny_bert_config
from test_kill import _cache, _without_timings
from transformers import AutoTokenizer, BertForSequenceClassification

from softguard.cli import build_parser, main, run_config
from softguard.config import (
    COMPARE_PRESETS,
    PRESETS,
    CompareConfig,
    GuardConfig,
    RunConfig,
    dumps,
    load,
    preset,
    read_toml,
    to_dict,
    update,
)
from softguard.guards import CausalLMGuard, EncoderGuard, GuardError, HFClassifierGuard, guard_kind, load_guard

EXAMPLES = Path(__file__).parent.parent / "examples"
GPU_EXAMPLE = EXAMPLES / "gpu-llama-guard.toml"


# ------------------------------------------------------------------------------------------------------------
# TOML round trip and the examples


def _unusual() -> RunConfig:
    """Values the writer must escape or mark: None where the default is not None, quotes, newlines, DEL, unicode."""
    return preset(
        "quick",
        name="odd",
        teacher={"refusal": 'Nope: "no".\n\tNot\x7f ever ✋ \\ done'},
        train={"teacher_topk": None, "lr": 1e-5, "min_lr_ratio": 0.0},
        guard={"path": "owner/guard", "kind": "causal-lm", "unsafe_token": "\n\nunsafe", "safe_token": "\n\nsafe"},
        adapter={"method": "lora", "lora": {"targets": ["q_proj", "k_proj", "v_proj"], "alpha": 32}},
    )


@pytest.mark.parametrize(
    "cfg",
    [*PRESETS.values(), *COMPARE_PRESETS.values(), RunConfig(), CompareConfig(), _unusual()],
    ids=lambda c: f"{type(c).__name__}-{c.name}",
)
def test_toml_round_trip(cfg, tmp_path):
    """load(dump(cfg)) == cfg, from a blank default (every field is written, None included)."""
    (tmp_path / "c.toml").write_text(dumps(cfg))
    assert load(tmp_path / "c.toml", type(cfg)()) == cfg
    assert read_toml(dumps(cfg)) == read_toml(dumps(to_dict(cfg)))  # a dataclass or its dict: the same text


def test_dump_writes_none_as_the_none_string_and_sections_as_tables():
    text = dumps(_unusual())
    assert 'teacher_topk = "none"' in text and "lr = 1e-05" in text and "alpha = 32.0" in text
    assert "\n[adapter.lora]\n" in text and text.index("[adapter]") < text.index("[adapter.lora]")
    assert read_toml(text)["teacher"]["refusal"] == 'Nope: "no".\n\tNot\x7f ever ✋ \\ done'


def test_compare_presets_train_each_row_as_the_run_preset_of_the_same_name():
    for name in ("quick", "full"):
        row_run = COMPARE_PRESETS[name].run
        assert dataclasses.replace(row_run, name=PRESETS[name].name) == PRESETS[name]


def test_examples_parse_and_demo_is_the_quick_preset():
    """examples/demo.toml is `make demo`'s config: exactly the quick preset named demo, over either base;
    examples/gate.toml the quick preset's system with the gate on the whole train split and dev split."""
    demo = preset("quick", name="demo")
    assert load(EXAMPLES / "demo.toml") == demo
    assert load(EXAMPLES / "demo.toml", PRESETS["quick"]) == demo
    whole = {"n_train_harmful": None, "n_train_benign": None, "contexts": 256, "n_dev": None}
    gate = preset("quick", name="gate", data=whole, adapter={"method": "gate"})
    assert load(EXAMPLES / "gate.toml") == gate and gate.train.objective == "logistic"
    assert gate.adapter.gate.readouts == ["last", "last+mean"]
    gpu = load(GPU_EXAMPLE)
    assert (gpu.model.name, gpu.guard.path, gpu.guard.kind) == (
        "Qwen/Qwen2.5-1.5B-Instruct",
        "meta-llama/Llama-Guard-3-8B",
        "causal-lm",
    )
    assert (gpu.guard.unsafe_token, gpu.guard.safe_token) == ("\n\nunsafe", "\n\nsafe")
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == ["demo.toml", "gate.toml", "gpu-llama-guard.toml"]


# ------------------------------------------------------------------------------------------------------------
# validation: in the library, naming the section and the key


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nmae": "x"}, r"unknown key 'nmae' in the top level; its keys are: name, seed, gen_batch_size, model, "),
        ({"guard": {"tua": 0.3}}, r"unknown key 'tua' in \[guard\]; its keys are: path, kind, unsafe_label, "),
        ({"adapter": {"lora": {"rnak": 2}}}, r"unknown key 'rnak' in \[adapter.lora\]; its keys are: rank, alpha"),
        ({"train": {"steps": "10"}}, r"\[train\] steps must be an integer, got '10'"),
        ({"train": {"steps": 2.5}}, r"\[train\] steps must be an integer, got 2.5"),
        ({"train": {"steps": True}}, r"\[train\] steps must be an integer, got True"),
        ({"train": {"decision_weight": -1.0}}, r"decision_weight must be >= 0, got -1.0"),
        ({"teacher": {"hard_labels": 1}}, r"\[teacher\] hard_labels must be true or false, got 1"),
        ({"eval": {"n": "all"}}, r"\[eval\] n must be an integer or \"none\", got 'all'"),
        ({"adapter": {"lora": {"targets": "q_proj"}}}, r"\[adapter.lora\] targets must be a list of a string"),
        ({"adapter": {"lora": {"targets": ["q_proj", 3]}}}, r"\[adapter.lora\] targets\[1\] must be a string, got 3"),
        ({"model": "smollm2-135m"}, r"\[model\] must be a table, got 'smollm2-135m'"),
        ({"adapter": {"soft_prompt": {"num_tokens": 5}, "method": "lora"}}, r"\[adapter\]: soft_prompt.num_tokens is"),
        ({"guard": {"unsafe_label": "toxic"}}, r"\[guard\]: unsafe_label is an option of a classifier guard; it"),
        ({"guard": {"path": "a/b", "kind": "classifier", "safe_token": "No"}}, r"safe_token is an option of a causal"),
        ({"guard": {"kind": "classifier"}}, r"\[guard\]: kind 'classifier' needs a path"),
        ({"guard": {"kind": "llama"}}, r"kind must be one of softguard, classifier, causal-lm, None, got 'llama'"),
        ({"guard": {"path": "a/b", "unsafe_token": "no", "safe_token": "no"}}, "unsafe_token and safe_token must"),
    ],
)
def test_bad_config_is_refused_by_the_library(data, message):
    with pytest.raises(ValueError, match=message):
        update(PRESETS["quick"], data)


def test_an_option_of_another_method_is_refused_however_the_config_is_made():
    """Not only the command line: a config built in Python, or a file, with another method's options fails."""
    from softguard.config import AdapterConfig, LoRAConfig

    with pytest.raises(ValueError, match=r"lora.rank is a lora option; it does nothing for method steering"):
        AdapterConfig(method="steering", lora=LoRAConfig(rank=4))
    with pytest.raises(ValueError, match=r"soft_prompt.placement is a soft-prompt option; it does nothing for method"):
        preset("quick", adapter={"method": "lora", "soft_prompt": {"placement": "user"}})
    AdapterConfig(method="lora", lora=LoRAConfig(rank=4))  # its own options are fine


def test_init_from_resolves_a_run_to_its_adapter_and_records_its_hash(tmp_path):
    """A run directory resolves to its ``student/best``; the hash is filled in, round-trips through TOML, and a
    changed adapter, another method, a missing directory or a stray hash are refused before any work."""
    from softguard.adapters import SoftPrompt, SteeringVector
    from softguard.fingerprint import dir_sha256

    best = tmp_path / "run" / "student" / "best"
    SoftPrompt(num_tokens=2, hidden_size=4, init="vocab").save_pretrained(best)
    cfg = preset("quick", adapter={"init_from": str(tmp_path / "run")})
    assert cfg.adapter.init_from == str(best.resolve())
    assert cfg.adapter.init_from_sha256 == dir_sha256(best)
    (tmp_path / "c.toml").write_text(dumps(cfg))
    assert load(tmp_path / "c.toml", RunConfig()) == cfg

    with pytest.raises(ValueError, match="holds a 'soft-prompt' adapter; this run trains 'lora'"):
        preset("quick", adapter={"method": "lora", "init_from": str(best)})
    with pytest.raises(ValueError, match=r"init_from: .*adapter_config\.json is missing"):
        preset("quick", adapter={"init_from": str(tmp_path / "nothing")})
    with pytest.raises(ValueError, match="init_from_sha256 is set without init_from"):
        preset("quick", adapter={"init_from_sha256": "ab"})
    steering = tmp_path / "steering"
    SteeringVector(hidden_size=4, layer=0, num_layers=2).save_pretrained(steering)
    with pytest.raises(ValueError, match="diff-of-means computes its adapter from the prompts"):
        adapter = {"method": "steering", "init_from": str(steering)}
        preset("quick", adapter=adapter, train={"objective": "diff-of-means"})
    SoftPrompt(num_tokens=3, hidden_size=4, init="vocab").save_pretrained(best)  # the adapter changes
    with pytest.raises(ValueError, match="has changed"):
        load(tmp_path / "c.toml", RunConfig())
    with pytest.raises(ValueError, match="compare trains every row"):
        update(COMPARE_PRESETS["quick"], {"run": {"adapter": {"init_from": str(best)}}})


def test_bad_config_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nsteps = 0\n")
    with pytest.raises(ValueError, match=rf"{bad}: \[train\]: steps must be >= 1, got 0"):
        load(bad)
    bad.write_text("[train\nsteps = 1\n")
    with pytest.raises(ValueError, match=rf"{bad} is not valid TOML"):
        load(bad)
    with pytest.raises(ValueError, match="no such config file"):
        load(tmp_path / "nope.toml")


def test_cli_config_errors_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("softguard.pipeline.fetch_stage", lambda *a: pytest.fail("must not fetch"))
    (tmp_path / "c.toml").write_text('[adapter]\nmethod = "lora"\n[data]\nrephrasing = 2\n')
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(tmp_path / "c.toml"), "--runs-dir", str(tmp_path / "runs")])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 2 and "unknown key 'rephrasing' in [data]; its keys are: n_train_harmful" in out
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------------------
# the command line: preset, then the file, then the flags given


def _args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_flags_override_the_file_which_overrides_the_preset(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('name = "mine"\n[adapter]\nmethod = "lora"\n[adapter.lora]\nrank = 4\n[train]\nsteps = 9\n')
    cfg = run_config(_args("--config", str(f)))
    assert (cfg.name, cfg.adapter.lora.rank, cfg.train.steps, cfg.train.lr) == ("mine", 4, 9, 1e-3)
    assert cfg.eval.n == 128 and cfg.train.eval_every == 80  # the full preset underneath
    quick = run_config(_args("--quick", "--config", str(f), "--steps", "3", "--lora-alpha", "8", "--seed", "2"))
    assert (quick.train.steps, quick.adapter.lora.alpha, quick.seed, quick.adapter.lora.rank) == (3, 8.0, 2, 4)
    assert quick.train.seed == 2  # --seed seeds the training too (initialisation, batch order)
    assert quick.eval.n == 48 and quick.teacher.hard_labels  # the quick preset underneath
    assert run_config(_args("--config", str(f), "--lr", "0.5")).train.lr == 0.5
    with pytest.raises(ValueError, match="--num-tokens is a soft-prompt option; it does nothing for --method lora"):
        run_config(_args("--config", str(f), "--num-tokens", "5"))  # the file's method
    with pytest.raises(ValueError, match=r"lora.rank is a lora option; it does nothing for method steering"):
        run_config(_args("--config", str(f), "--method", "steering"))  # the file's LoRA options, another method


def test_guard_flags(tmp_path):
    cfg = run_config(
        _args(
            "--guard",
            "owner/g",
            "--guard-kind",
            "causal-lm",
            "--guard-verdict-tokens",
            "Yes,No",
            "--guard-mode",
            "response",
        )
    )
    given = {"path": "owner/g", "kind": "causal-lm", "unsafe_token": "Yes", "safe_token": "No", "mode": "response"}
    assert cfg.guard == dataclasses.replace(PRESETS["full"].guard, **given)
    assert run_config(_args("--guard", str(tmp_path), "--guard-unsafe-label", "1")).guard.unsafe_label == 1
    assert run_config(_args("--guard", str(tmp_path))).guard.path == str(tmp_path)
    with pytest.raises(SystemExit):
        _args("--guard-verdict-tokens", "unsafe")  # two words needed


def test_run_dir_config_reruns_the_same_config(tmp_path):
    """The config.toml a run saves is the resolved config: `--config` on it gives the same RunConfig back."""
    from softguard.pipeline import open_run_dir

    cfg = run_config(_args("--quick", "--method", "lora", "--lora-rank", "2", "--steps", "5", "--name", "x"))
    open_run_dir(tmp_path / "x", cfg, resume=True)
    assert run_config(_args("--config", str(tmp_path / "x" / "config.toml"))) == cfg


# ------------------------------------------------------------------------------------------------------------
# guard kinds


@pytest.fixture(scope="module")
def guard_dirs(backbone, tokenizer, tmp_path_factory) -> dict[str, Path]:
    """A saved guard of each kind: softguard's (tiny BERT), an HF sequence classifier (labels SAFE / UNSAFE) and a
    Llama Guard-style causal LM (tiny Llama, its own chat template ending at the assistant header)."""
    root = tmp_path_factory.mktemp("guards")
    EncoderGuard.from_backbone(backbone).save_pretrained(root / "softguard")
    tok = AutoTokenizer.from_pretrained(backbone)
    torch.manual_seed(0)
    labels = {"id2label": {0: "SAFE", 1: "UNSAFE"}, "label2id": {"SAFE": 0, "UNSAFE": 1}}
    BertForSequenceClassification(
        tiny_bert_config(tok.vocab_size, num_hidden_layers=1, num_labels=2, **labels)
    ).save_pretrained(root / "classifier")
    tok.save_pretrained(root / "classifier")
    make_tiny_llama(len(tokenizer), seed=3).save_pretrained(root / "causal-lm")
    guard_tok = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    guard_tok.chat_template = (
        "Task: is the last message unsafe?\n<BEGIN CONVERSATION>\n{% for m in messages %}"
        "{{ 'User' if m['role'] == 'user' else 'Agent' }}: {{ m['content'] }}\n{% endfor %}<END CONVERSATION>\n"
        "First line must read 'safe' or 'unsafe'.<|im_start|>assistant"
    )
    guard_tok.save_pretrained(root / "causal-lm")
    return {kind: root / kind for kind in ("softguard", "classifier", "causal-lm")}


def test_guard_kind_is_detected_from_the_directory(guard_dirs, tmp_path):
    assert {kind: guard_kind(d) for kind, d in guard_dirs.items()} == {k: k for k in guard_dirs}
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(GuardError, match=r"names no sequence-classification or causal-LM .*--guard-kind"):
        guard_kind(tmp_path)
    with pytest.raises(GuardError, match="is not a local directory or in the Hugging Face cache; give its kind"):
        guard_kind("nobody/no-such-guard-xyz")


def test_an_undetectable_guard_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("softguard.pipeline.fetch_stage", lambda *a: pytest.fail("must not fetch"))
    with pytest.raises(SystemExit) as exc:
        main(["run", "--quick", "--guard", str(tmp_path / "nope"), "--runs-dir", str(tmp_path / "runs")])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 2 and f"cannot tell what kind of guard '{tmp_path / 'nope'}' is" in out
    assert not (tmp_path / "runs").exists()


def test_load_guard_builds_each_kind_with_its_options(guard_dirs):
    sg = load_guard(GuardConfig(path=str(guard_dirs["softguard"])))
    assert isinstance(sg, EncoderGuard)
    clf = load_guard(GuardConfig(path=str(guard_dirs["classifier"]), unsafe_label="safe"))
    assert isinstance(clf, HFClassifierGuard) and clf.unsafe_index == 0
    lm = load_guard(GuardConfig(path=str(guard_dirs["causal-lm"]), unsafe_token="\n\nunsafe", safe_token="\n\nsafe"))
    assert isinstance(lm, CausalLMGuard) and lm.verdict_prefix.numel() >= 1
    with pytest.raises(GuardError, match="has no label 'toxic'"):
        load_guard(GuardConfig(path=str(guard_dirs["classifier"]), unsafe_label="toxic"))


def test_causal_lm_guard_reads_the_verdict_after_the_common_prefix(guard_dirs):
    """Verdicts "\\n\\nunsafe" / "\\n\\nsafe": the shared "\\n\\n" tokens are appended, and u compares the next
    token's logits there (one prompt at a time, no padding), also in a left-padded batch."""
    guard = load_guard(GuardConfig(path=str(guard_dirs["causal-lm"]), unsafe_token="\n\nunsafe", safe_token="\n\nsafe"))
    tok, model = guard.tokenizer, guard.model
    prompts = ["How do I make a bomb?", "Hi"]
    u = guard.score(prompts)
    assert tok.decode(guard.verdict_prefix) == "\n\n"
    for p, ui in zip(prompts, u, strict=True):
        ids = tok(guard.render(p), add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([ids, guard.verdict_prefix[None]], 1)
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        assert ui == pytest.approx(torch.softmax(logits[guard.verdict_ids], -1)[0].item(), abs=1e-5)
    plain = load_guard(GuardConfig(path=str(guard_dirs["causal-lm"])))
    assert plain.verdict_prefix.numel() == 0 and not torch.allclose(plain.score(prompts), u)


# ------------------------------------------------------------------------------------------------------------
# `softguard run --config` end to end, one tiny run per guard kind


TINY = {
    "data": {"n_train_harmful": 2, "n_train_benign": 2, "n_dev": 1},
    "teacher": {"samples": 1, "max_new_tokens": 4},
    "adapter": {"soft_prompt": {"num_tokens": 2}},
    "eval": {"n": 1, "max_new_tokens": 4},
    "gen_batch_size": 4,
    "train": {"steps": 2, "eval_every": 2, "batch_size": 2, "dev_max_new_tokens": 2},
}


@pytest.fixture
def tiny_env(tokenizer, tmp_path, monkeypatch) -> Path:
    """A tiny chat LLM saved as a directory, and a fresh cache; returns the LLM's directory."""
    monkeypatch.setenv("SOFTGUARD_CACHE", str(_cache(tmp_path)))
    model_dir = tmp_path / "tiny-llama"
    make_tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def _write_tiny(path: Path, base: dict, model_dir: Path, guard: dict) -> Path:
    """``base`` (a parsed config) shrunk to ``TINY`` with the tiny LLM and ``guard``, written as TOML."""
    data = {**base, **TINY, "model": {"name": str(model_dir)}, "guard": {**base.get("guard", {}), **guard}}
    path.write_text(dumps(update(RunConfig(), data)))
    return path


def _system_u(out: Path) -> dict[str, float]:
    return {r["prompt"]: r["guard_u"] for r in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("kind", ["softguard", "classifier"])
def test_run_with_a_given_guard_directory(kind, guard_dirs, tiny_env, tmp_path, capsys):
    """`softguard run --config FILE --guard DIR` (kind detected): the system's u is the given guard's own score of
    each prompt (the classifier's with its --guard-unsafe-label), and the run measures the guard on dev and test."""
    cfg = _write_tiny(tmp_path / "tiny.toml", read_toml(EXAMPLES / "demo.toml"), tiny_env, {})
    label = ["--guard-unsafe-label", "UNSAFE"] if kind == "classifier" else []
    argv = ["run", "--config", str(cfg), "--guard", str(guard_dirs[kind]), *label, "--name", kind]
    main([*argv, "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
    out = tmp_path / "runs" / kind
    assert "# softguard run" in capsys.readouterr().out
    saved = read_toml(out / "config.toml")["guard"]
    assert (saved["path"], saved["kind"]) == (str(guard_dirs[kind]), "none")
    u = _system_u(out)
    guard = load_guard(GuardConfig(path=str(guard_dirs[kind]), unsafe_label="UNSAFE" if label else "unsafe"))
    assert list(u.values()) == pytest.approx(guard.score(list(u)).tolist(), abs=1e-5)
    results = json.loads((out / "results.json").read_text())
    assert results["guard"]["dev"]["n"] == 278 and results["guard"]["test"]["n"] == 1165
    assert results["guard"] == json.loads((out / "guard" / "guard_eval.json").read_text())
    assert sorted(p.name for p in (out / "guard").iterdir()) == ["guard_eval.json"]  # no copy of the given guard


def test_gpu_example_runs_with_tiny_stand_ins_and_its_config_toml_reproduces_it(guard_dirs, tiny_env, tmp_path):
    """examples/gpu-llama-guard.toml with a tiny chat model and a tiny Llama Guard-style causal LM in place of the
    hub ids (kind and verdict tokens as the example's): the system's u is that guard's; the run's config.toml, run
    again under another name, gives the same results and generations."""
    gpu = read_toml(GPU_EXAMPLE)
    cfg = _write_tiny(tmp_path / "gpu.toml", gpu, tiny_env, {"path": str(guard_dirs["causal-lm"])})
    assert read_toml(cfg)["guard"] | {"path": gpu["guard"]["path"]} == read_toml(dumps(load(GPU_EXAMPLE).guard))
    runs = tmp_path / "runs"
    main(["run", "--config", str(cfg), "--runs-dir", str(runs), "--device", "cpu"])
    first = runs / gpu["name"]
    u = _system_u(first)
    guard = CausalLMGuard.from_pretrained(
        str(guard_dirs["causal-lm"]), unsafe_token="\n\nunsafe", safe_token="\n\nsafe"
    )
    assert list(u.values()) == pytest.approx(guard.score(list(u)).tolist(), abs=1e-5)
    main(["run", "--config", str(first / "config.toml"), "--name", "again", "--runs-dir", str(runs), "--device", "cpu"])
    again = runs / "again"
    assert read_toml(again / "config.toml") == read_toml(first / "config.toml") | {"name": "again"}
    a, b = (_without_timings(json.loads((d / "results.json").read_text())) for d in (first, again))
    assert replace(load(first / "config.toml"), name="again") == load(again / "config.toml")
    assert a | {"config": None} == b | {"config": None} and a["rows"]["student"] == b["rows"]["student"]
    assert (first / "generations.jsonl").read_text() == (again / "generations.jsonl").read_text()


def test_compare_config_file_and_flags(guard_dirs, tmp_path, monkeypatch):
    """`softguard compare --config FILE` with the judge and teacher-guard flags: the CompareConfig it runs."""
    got = []
    monkeypatch.setattr("softguard.compare.compare", lambda cfg, *a, **k: got.append(cfg) or pytest.fail("stop"))
    f = tmp_path / "c.toml"
    f.write_text('name = "cmp"\nn_boot = 50\n[run.train]\nsteps = 3\n[run.adapter]\nmethod = "lora"\n')
    argv = ["compare", "--quick", "--config", str(f), "--seeds", "2", "--seed", "4", "--model", "m/x"]
    judge = ["--judge", str(guard_dirs["classifier"]), "--judge-kind", "classifier", "--judge-unsafe-label", "UNSAFE"]
    with pytest.raises(pytest.fail.Exception):
        main([*argv, *judge, "--guard", "o/g", "--guard-kind", "causal-lm", "--guard-verdict-tokens", "Yes,No"])
    (cfg,) = got
    assert (cfg.name, cfg.n_boot, cfg.seeds, cfg.n_mmlu) == ("cmp", 50, [4, 5], 100)  # n_mmlu: the quick preset's
    assert (cfg.run.train.steps, cfg.run.adapter.method, cfg.run.model.name, cfg.run.eval.n) == (3, "lora", "m/x", 48)
    assert cfg.judge == GuardConfig(path=str(guard_dirs["classifier"]), kind="classifier", unsafe_label="UNSAFE")
    assert (cfg.run.guard.path, cfg.run.guard.kind, cfg.run.guard.unsafe_token) == ("o/g", "causal-lm", "Yes")
    assert update(CompareConfig(), read_toml(dumps(cfg))) == cfg
