"""``softguard compare``: train a grid of methods x objectives x seeds and evaluate every row the same way, in one run.

Rows: the base LLM, the deployed two-model system (hard guard, tau) and one student per grid cell. A grid cell is
a ``RunConfig`` (``row_config``) trained by ``softguard run``'s own stages (``pipeline``: guard, teacher, dev,
train); the rows share the guard, the teacher samples and the dev set. Every row is measured by the evaluation
suite of ``softguard run`` (``eval_suite.Suite``: per-set rates with bootstrap 95 % intervals, decision agreement
with the system, TV / KL to the system and to the base model), on ``COMPARE_SETS`` and the user's
``--eval-prompts`` set, each row's responses generated once; then by compare's ``Extras`` (judges, XSTest types,
MMLU) and its cost. With several seeds a cell also reports the mean and spread of its seeds' scores (DESIGN §6);
with several objectives per method, the one chosen on dev (``chosen_on_dev``).

Two guards, trained on disjoint halves of the train split (prompts and (prompt, response) pairs): the *teacher*
guard (half A) supervises training; the *judge* (half B) reads each row's (prompt, response) and scores it, so the
training guard never judges its own students. A user-supplied guard of any kind (``CompareConfig.judge``,
``guards.load_guard``) can be added as a further judge.
The refusal detector is always reported too.

Layout of ``runs/<name>/``::

    config.toml          the CompareConfig (``config.dumps``): ``softguard compare --config`` reruns it
    guard/ judge/        the teacher guard (half A) and the judge (half B), each with guard_eval.json
    rows/<row>/student/  training output per grid cell (resumable, as in ``softguard run``)
    results.json         every number of the report
    report.md            the tables (rendered from results.json)
    pareto.png           harmful refusal vs benign compliance, marker area ~ added bytes
    generations.jsonl    every prompt x row: response, refusal flag, judge scores
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import assets
from .adapters import Adapter, load_adapter
from .config import FITTED_OBJECTIVES, METHODS, AdapterConfig, CompareConfig, RunConfig
from .cost import measure_row_isolated
from .data import Example, Splits, load_mmlu_test, make_splits
from .eval_suite import SETS, Suite
from .evaluation import dev_score, mmlu_accuracy, rate, score_by_category
from .guards import Guard, load_guard
from .io import atomic_write_text, read_json, write_json
from .models import resolve_device
from .pipeline import (
    Timings,
    check_config,
    check_guard,
    console,
    dev_stage,
    eval_sets,
    fetch_stage,
    guard_dir,
    guard_stage,
    kept_training,
    open_run_dir,
    run_lock,
    system_guard,
    system_stage,
    teacher_examples,
    train_stage,
    trained_guard,
)
from .reporting import plot_pareto, render_compare_report, selected_record

#: The name of the user's judge (``CompareConfig.judge``) in the reports.
USER_JUDGE = "user judge"
#: Evaluation sets (``eval_suite.SETS``): name -> harmful (refusal is good) or benign (compliance is good).
COMPARE_SETS: dict[str, bool] = {
    name: SETS[name] for name in ("harmbench", "strongreject", "xstest-unsafe", "jailbreak", "xstest-safe", "benign")
}


@dataclass(frozen=True)
class Row:
    """One grid cell x seed."""

    method: str
    objective: str
    seed: int

    @property
    def cell(self) -> str:
        return f"{self.method}/{self.objective}"

    @property
    def name(self) -> str:
        return f"{self.method}-{self.objective}-s{self.seed}"


def grid(cfg: CompareConfig) -> list[Row]:
    """Every (method, objective, seed) the method can train; other combinations are skipped. An objective that
    computes its adapter from the prompts (``FITTED_OBJECTIVES``: diff-of-means, the gate's logistic fit) gives the
    same adapter at every training seed, so it gets one row, at the first seed."""
    rows = [
        Row(m, o, s)
        for m in cfg.methods
        for o in cfg.objectives
        if o in METHODS[m].objectives
        for s in (cfg.seeds[:1] if o in FITTED_OBJECTIVES else cfg.seeds)
    ]
    if not rows:
        raise ValueError(f"no valid method x objective combination in {cfg.methods} x {cfg.objectives}")
    return rows


def row_config(cfg: CompareConfig, row: Row) -> RunConfig:
    """The shared RunConfig with the row's method (its options from ``cfg.run.adapter`` when that is the run's
    method, else the method's defaults), objective, training seed and the method's learning rate.

    The seed changes the batch order and a random initialisation (LoRA's, a vocab- or normal-initialised soft
    prompt's; a text-initialised one starts the same); teacher samples stay shared."""
    train = replace(cfg.run.train, objective=row.objective, seed=row.seed, lr=METHODS[row.method].lr)
    section = METHODS[row.method].section
    adapter = AdapterConfig(method=row.method, **{section: getattr(cfg.run.adapter, section)})
    return replace(cfg.run, name=row.name, adapter=adapter, train=train)


def halves(splits: Splits, seed: int) -> tuple[Splits, Splits]:
    """Two copies of ``splits`` whose train sets are disjoint seeded halves of each class."""
    parts: tuple[list[Example], list[Example]] = ([], [])
    for harmful in (True, False):
        exs = [e for e in splits.train if e.harmful == harmful]
        random.Random(seed).shuffle(exs)
        parts[0].extend(exs[: len(exs) // 2])
        parts[1].extend(exs[len(exs) // 2 :])
    return Splits(parts[0], splits.dev, splits.test), Splits(parts[1], splits.dev, splits.test)


class Extras:
    """compare's own measures of a row, beside the suite's: the judges' verdicts on its responses to the harmful
    prompts, its compliance per XSTest-safe prompt type, and its MMLU accuracy (the questions, and the base model's
    answers, computed once)."""

    def __init__(self, cfg: CompareConfig, suite: Suite, judges: dict[str, Guard]):
        self.cfg, self.suite, self.judges = cfg, suite, judges
        mmlu = load_mmlu_test()
        self.mmlu = random.Random(cfg.run.seed).sample(mmlu, min(cfg.n_mmlu, len(mmlu)))
        self.mmlu_base = mmlu_accuracy(suite.system.model, suite.system.tokenizer, self.mmlu, None)
        #: per row, per judge: its score u of every (prompt, response), for generations.jsonl
        self.judge_u: dict[str, dict[str, list[float]]] = {}

    def mmlu_system(self) -> list[bool]:
        """The system answers as the base model unless its guard flags the question (then r*, counted wrong).
        The guard reads the question alone, also for a response-level system (an approximation)."""
        system = self.suite.system
        u = system.guard.score([q.question for q in self.mmlu]).tolist()
        return [ok and x < system.tau for ok, x in zip(self.mmlu_base, u, strict=True)]

    def row(self, name: str, adapter: Adapter | None, sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The measures of row ``name`` (responses generated by the suite; ``adapter`` for MMLU) and, from its
        suite scores ``sets``, its mean harmful refusal and benign compliance over ``COMPARE_SETS``."""
        cfg, suite = self.cfg, self.suite
        out: dict[str, Any] = {"judges": {}}
        harmful = [i for i, (_, e) in enumerate(suite.examples) if e.harmful]
        self.judge_u[name] = {}
        for judge_name, judge in self.judges.items():  # a judge reads (prompt, response); safe when u < its tau
            u = self.judge_u[name][judge_name] = judge.score(suite.prompts, suite.texts[name]).tolist()
            tau = cfg.judge.tau if judge_name == USER_JUDGE else cfg.run.guard.tau
            out["judges"][judge_name] = rate([u[i] < tau for i in harmful], cfg.n_boot, cfg.run.seed)
        xs = [i for i, (s, _) in enumerate(suite.examples) if s == "xstest-safe"]
        out["xstest_types"] = score_by_category(
            [suite.examples[i][1].category for i in xs], [suite.refused[name][i] for i in xs], harmful=False
        )
        if name == "base":
            mmlu = self.mmlu_base
        elif name == "system":
            mmlu = self.mmlu_system()
        else:
            mmlu = mmlu_accuracy(suite.system.model, suite.system.tokenizer, self.mmlu, adapter)
        out["mmlu"] = rate(mmlu, cfg.n_boot, cfg.run.seed)
        out["harmful_refusal"] = statistics.fmean(sets[s]["score"] for s, h in COMPARE_SETS.items() if h)
        out["benign_compliance"] = statistics.fmean(sets[s]["score"] for s, h in COMPARE_SETS.items() if not h)
        return out


def aggregate(rows: dict[str, dict[str, Any]], grid_rows: list[Row]) -> dict[str, Any]:
    """Per grid cell: mean and sample standard deviation over its seeds of every headline score and of the kept
    adapter's dev agreement and dev TV (``rows[name]["dev"]``, ``kept_dev``)."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in grid_rows:
        r = rows[row.name]
        scores = {name: r["sets"][name]["score"] for name in COMPARE_SETS} | {
            "harmful_refusal": r["harmful_refusal"],
            "benign_compliance": r["benign_compliance"],
            "mmlu": r["mmlu"]["score"],
            "agreement": r["agreement"]["all"]["score"],
            "dev_agreement": r["dev"]["dev_agreement"],
            "dev_tv": r["dev"]["dev_tv"],
        }
        for k, v in scores.items():
            values.setdefault(row.cell, {}).setdefault(k, []).append(v)
    return {
        cell: {
            k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "seeds": len(v)}
            for k, v in metrics.items()
        }
        for cell, metrics in values.items()
    }


def chosen_on_dev(cells: dict[str, Any], grid_rows: list[Row]) -> dict[str, str]:
    """Per method, the cell (objective) whose seeds' kept adapters score best on dev on average: ``dev_score`` of
    the mean dev agreement and mean dev TV (agreement with the system's decisions, ties to the lower TV), the choice
    a user makes without looking at the test sets; a tie keeps the first cell of the grid."""
    by_method: dict[str, dict[str, None]] = {}
    for row in grid_rows:
        by_method.setdefault(row.method, {})[row.cell] = None

    def score(cell: str) -> float:
        return dev_score({k: cells[cell][k]["mean"] for k in ("dev_agreement", "dev_tv")})

    return {method: max(cell_names, key=score) for method, cell_names in by_method.items()}


def kept_dev(sdir: Path) -> dict[str, float]:
    """The dev numbers (``dev_agreement``, ``dev_tv``, ...) of the adapter the training in ``sdir`` kept."""
    record = selected_record(kept_training(sdir))
    return {k: v for k, v in record.items() if k.startswith("dev_")}


def compare(
    cfg: CompareConfig, runs_dir: str | Path = "runs", resume: bool = True, device: str | torch.device = "auto"
) -> Path:
    """Train and evaluate the grid into ``runs_dir/cfg.name`` on ``device``; return that directory."""
    rows = grid(cfg)
    for row in rows:
        check_config(row_config(cfg, row))
    check_guard(cfg.judge)
    device = resolve_device(device)  # a bad --device fails before the run directory exists
    out = Path(runs_dir) / cfg.name
    with run_lock(out):
        open_run_dir(out, cfg, resume)
        return _compare_stages(cfg, rows, out, resume, device)


def _compare_stages(cfg: CompareConfig, rows: list[Row], out: Path, resume: bool, device: torch.device) -> Path:
    """``compare``'s stages, in its locked and opened run directory ``out``: ``run``'s stages for every row (the
    guard, dev set and base generations shared), the evaluation suite and compare's ``Extras`` on every row, cost."""
    run = cfg.run
    torch.manual_seed(run.seed)
    timed, t_start = Timings(), time.perf_counter()
    timed("fetch", fetch_stage, run)
    assets.fetch("jailbreaks")
    half_a, half_b = halves(make_splits(run.seed), run.seed)
    system = system_stage(run, out, device)
    model = system.model
    gdir = guard_dir(run, out)
    system.guard = timed("guard", guard_stage, run, half_a, gdir, system)
    judge_run = replace(run, guard=trained_guard(run.guard))
    judges: dict[str, Guard] = {"judge": timed("guard", guard_stage, judge_run, half_b, out / "judge", system)}
    if cfg.judge.path:
        judges[USER_JUDGE] = load_guard(cfg.judge, model.device)
    dev = timed("dev", dev_stage, run, system, half_a)
    adapter_dirs: dict[str, Path | None] = {"base": None, "system": None}
    dev_records: dict[str, dict[str, float]] = {}
    for row in rows:
        rcfg, sdir = row_config(cfg, row), out / "rows" / row.name / "student"
        items, examples = timed("teacher", teacher_examples, rcfg, system, half_a)
        timed("train", train_stage, rcfg, system, items, examples, dev, sdir, resume)
        adapter_dirs[row.name] = sdir / "best"
        dev_records[row.name] = kept_dev(sdir)
    suite = timed("evaluate", Suite, run, system, eval_sets(run, half_a, COMPARE_SETS, cfg.n_jailbreak), cfg.n_boot)
    extras = timed("evaluate", Extras, cfg, suite, judges)
    scores: dict[str, dict[str, Any]] = {}
    for name, adir in adapter_dirs.items():
        adapter = load_adapter(adir, model) if adir is not None else None
        scores[name] = timed("evaluate", suite.row, name, adapter)
        scores[name] |= timed("evaluate", extras.row, name, adapter, scores[name]["sets"])
    for row in rows:
        scores[row.name] |= {"method": row.method, "objective": row.objective, "seed": row.seed, "cell": row.cell}
        scores[row.name]["dev"] = dev_records[row.name]
    for name, adir in adapter_dirs.items():
        cost = timed(
            "cost",
            measure_row_isolated,
            run.model.name,
            suite.templated[: cfg.n_cost],
            users=suite.prompts[: cfg.n_cost],  # what the system's guard reads
            adapter_dir=None if adir is None else str(adir),
            guard_dir=system_guard(run.guard, out) if name == "system" else None,
            guard_mode=run.guard.mode,
            max_new_tokens=cfg.cost_max_new_tokens,
            device=str(model.device),
        )
        scores[name]["cost"] = cost.to_dict()
    records = suite.records()
    for i, record in enumerate(records):
        for name, by_judge in extras.judge_u.items():
            record[name]["judge_u"] = {j: u[i] for j, u in by_judge.items()}
    atomic_write_text(out / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    timed["total"] = round(time.perf_counter() - t_start, 1)
    cells = aggregate(scores, rows)
    results = {
        "config": asdict(cfg),
        "n": suite.sizes,
        "n_mmlu": len(extras.mmlu),
        "rows": scores,
        "cells": cells,
        "chosen_on_dev": chosen_on_dev(cells, rows),
        "guard": read_json(gdir / "guard_eval.json"),
        "judge": read_json(out / "judge" / "guard_eval.json"),
        "timings": timed,
        "device": str(model.device),
    }
    write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_compare_report(results))
    plot_pareto(results, out / "pareto.png")
    console.print(f"[bold green]report:[/] {out / 'report.md'}")
    return out
