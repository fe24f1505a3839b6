"""``softguard compare``: train a grid of methods x objectives x seeds and evaluate every row the same way, in one run.

Rows: the base LLM, the deployed two-model system (hard guard, tau) and one student per grid cell. All rows share
the teacher samples, the dev set, the base model's generations and the system's decisions; only the students'
own generations are new. Every rate gets a bootstrap 95 % interval; with several seeds a cell also reports the
mean and spread of its seeds' scores (DESIGN §6).

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
from .config import METHODS, AdapterConfig, CompareConfig, RunConfig
from .cost import measure_row_isolated
from .data import Example, Splits, load_jailbreaks, load_mmlu_test, make_splits, seeded_sample, wrap_jailbreaks
from .evaluation import agreement_by_set, fidelity, fidelity_examples, mmlu_accuracy, rate, score_by_category
from .generation import generate
from .guards import Guard, load_guard
from .io import atomic_write_text, read_json, write_json
from .models import load_model, resolve_device
from .pipeline import (
    check_config,
    check_guard,
    check_inputs,
    console,
    dev_stage,
    fetch_stage,
    guard_dir,
    guard_stage,
    input_fingerprints,
    open_run_dir,
    run_lock,
    system_guard,
    teacher_examples,
    train_stage,
    trained_guard,
)
from .refusal import is_refusal
from .reporting import plot_pareto, render_compare_report
from .system import SafeSystem

#: The name of the user's judge (``CompareConfig.judge``) in the reports.
USER_JUDGE = "user judge"
#: Evaluation sets: name -> harmful (refusal is good) or benign (compliance is good).
COMPARE_SETS: dict[str, bool] = {
    "harmbench": True,
    "strongreject": True,
    "xstest-unsafe": True,
    "jailbreak": True,
    "xstest-safe": False,
    "benign": False,
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
    """Every (method, objective, seed) the method can train; other combinations are skipped."""
    rows = [Row(m, o, s) for m in cfg.methods for o in cfg.objectives if o in METHODS[m].objectives for s in cfg.seeds]
    if not rows:
        raise ValueError(f"no valid method x objective combination in {cfg.methods} x {cfg.objectives}")
    return rows


def row_config(cfg: CompareConfig, row: Row) -> RunConfig:
    """The shared RunConfig with the row's method (its options from ``cfg.run.adapter`` when that is the run's
    method, else the method's defaults), objective, training seed and the method's learning rate.

    The seed changes the adapter's initialisation and the batch order; teacher samples stay shared."""
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


class Evaluation:
    """What every row is measured on, computed once: prompts, the base model's generations, the system's
    responses, MMLU questions and the fidelity references (base responses; the system's decisions)."""

    def __init__(self, cfg: CompareConfig, system: SafeSystem, splits: Splits, judges: dict[str, Guard]):
        self.cfg, self.system, self.judges = cfg, system, judges
        self.model, self.tok = system.model, system.tokenizer
        n, seed = cfg.run.eval.n, cfg.run.seed
        sets = {name: seeded_sample(splits.test[name], n, seed) for name in COMPARE_SETS if name != "jailbreak"}
        sets["jailbreak"] = wrap_jailbreaks(splits.test["harmbench"], load_jailbreaks(), cfg.n_jailbreak, seed)
        self.sizes = {name: len(sets[name]) for name in COMPARE_SETS}
        self.examples = [(name, e) for name in COMPARE_SETS for e in sets[name]]
        self.prompts = [e.text for _, e in self.examples]
        self.templated = system.template(self.prompts)
        mmlu = load_mmlu_test()
        self.mmlu = random.Random(seed).sample(mmlu, min(cfg.n_mmlu, len(mmlu)))
        base = self.generate(None, "eval: base")
        self.texts = {"base": [g.text for g in base]}
        sys_out = system.respond(self.prompts, base)
        self.texts["system"] = [r.text for r in sys_out]
        self.guard_u = [r.u for r in sys_out]
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in self.templated]
        responses, refusal = [g.token_ids for g in base], system.refusal_ids()
        benign = [i for i, (name, _) in enumerate(self.examples) if not COMPARE_SETS[name]]
        pick = lambda xs: [xs[i] for i in benign]  # noqa: E731
        #: references: the base model along its own responses on benign prompts; the system on every prompt
        self.ref_base = fidelity_examples(pick(ids), pick(responses), [False] * len(benign), refusal)
        self.ref_system = fidelity_examples(ids, responses, [r.flagged for r in sys_out], refusal)
        self.mmlu_base = mmlu_accuracy(self.model, self.tok, self.mmlu, None)

    def generate(self, adapter: Adapter | None, desc: str):
        run = self.cfg.run
        return generate(
            self.model,
            self.tok,
            self.templated,
            adapter,
            max_new_tokens=run.eval.max_new_tokens,
            batch_size=run.gen_batch_size,
            desc=desc,
        )

    def mmlu_system(self) -> list[bool]:
        """The system answers as the base model unless its guard flags the question (then r*, counted wrong).
        The guard reads the question alone, also for a response-level system (an approximation)."""
        u = self.system.guard.score([q.question for q in self.mmlu]).tolist()
        return [ok and x < self.system.tau for ok, x in zip(self.mmlu_base, u, strict=True)]

    def fidelity(self, adapter: Adapter | None) -> dict[str, dict[str, float]]:
        """Mean per-token TV and KL of the row against the base model (benign prompts) and the system (all)."""
        return {
            "base": fidelity(self.model, self.tok, adapter, self.ref_base),
            "system": fidelity(self.model, self.tok, adapter, self.ref_system),
        }

    def score(self, row: str, mmlu: list[bool], fid: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Every metric of one row from its responses ``self.texts[row]``; keeps the per-prompt flags."""
        cfg, texts = self.cfg, self.texts[row]
        refused = [is_refusal(t, cfg.run.teacher.refusal) for t in texts]
        out: dict[str, Any] = {"sets": {}, "judges": {}, "fidelity": fid}
        for name, harmful in COMPARE_SETS.items():
            idx = [i for i, (s, _) in enumerate(self.examples) if s == name]
            out["sets"][name] = rate([refused[i] == harmful for i in idx], cfg.n_boot, cfg.run.seed)
        xs = [i for i, (s, _) in enumerate(self.examples) if s == "xstest-safe"]
        out["xstest_types"] = score_by_category(
            [self.examples[i][1].category for i in xs], [refused[i] for i in xs], harmful=False
        )
        harmful_idx = [i for i, (s, _) in enumerate(self.examples) if COMPARE_SETS[s]]
        judge_u = {}
        for name, judge in self.judges.items():  # a judge reads (prompt, response); safe when u < its tau
            judge_u[name] = judge.score(self.prompts, texts).tolist()
            tau = cfg.judge.tau if name == USER_JUDGE else cfg.run.guard.tau
            safe = [judge_u[name][i] < tau for i in harmful_idx]
            out["judges"][name] = rate(safe, cfg.n_boot, cfg.run.seed)
        system_refused = [is_refusal(t, cfg.run.teacher.refusal) for t in self.texts["system"]]
        out["agreement"] = agreement_by_set(
            [s for s, _ in self.examples],
            refused,
            system_refused,
            self.guard_u,
            cfg.run.guard.tau,
            cfg.n_boot,
            cfg.run.seed,
        )
        out["mmlu"] = rate(mmlu, cfg.n_boot, cfg.run.seed)
        out["harmful_refusal"] = statistics.fmean(out["sets"][s]["score"] for s, h in COMPARE_SETS.items() if h)
        out["benign_compliance"] = statistics.fmean(out["sets"][s]["score"] for s, h in COMPARE_SETS.items() if not h)
        out["per_prompt"] = {"refused": refused, "judge_u": judge_u}
        return out


def aggregate(rows: dict[str, dict[str, Any]], grid_rows: list[Row]) -> dict[str, Any]:
    """Per grid cell: mean and sample standard deviation over its seeds of every headline score."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in grid_rows:
        r = rows[row.name]
        scores = {name: r["sets"][name]["score"] for name in COMPARE_SETS} | {
            "harmful_refusal": r["harmful_refusal"],
            "benign_compliance": r["benign_compliance"],
            "mmlu": r["mmlu"]["score"],
            "agreement": r["agreement"]["all"]["score"],
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
    """``compare``'s stages, in its locked and opened run directory ``out``."""
    run = cfg.run
    torch.manual_seed(run.seed)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def timed(stage: str, fn, *args, **kwargs):
        console.rule(f"[bold]{stage}")
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - t0, 1)
        return value

    timed("fetch", fetch_stage, run)
    assets.fetch("jailbreaks")
    half_a, half_b = halves(make_splits(run.seed), run.seed)
    model, tok = load_model(run.model.name, device=device)
    system = SafeSystem(model, tok, None, run.teacher.refusal, run.guard.tau, run.guard.mode)
    check_inputs(out, input_fingerprints(run, system))
    gdir = guard_dir(run, out)
    system.guard = timed("guards", guard_stage, run, half_a, gdir, system)
    judge_run = replace(run, guard=trained_guard(run.guard))
    judge = timed("guards", guard_stage, judge_run, half_b, out / "judge", system)
    judges: dict[str, Guard] = {"judge": judge}
    if cfg.judge.path:
        judges[USER_JUDGE] = load_guard(cfg.judge, model.device)
    dev = timed("dev", dev_stage, run, system, half_a)
    for row in rows:
        rcfg = row_config(cfg, row)
        items, examples = timed("teacher", teacher_examples, rcfg, system, half_a)
        timed("train", train_stage, rcfg, system, items, examples, dev, out / "rows" / row.name / "student", resume)
    ev = timed("evaluate", Evaluation, cfg, system, half_a, judges)
    zero, nan = {"tv": 0.0, "kl": 0.0}, {"tv": float("nan"), "kl": float("nan")}
    base_fid = {"base": zero, "system": timed("evaluate", fidelity, model, tok, None, ev.ref_system)}  # 0 vs itself
    scores = {
        "base": ev.score("base", ev.mmlu_base, base_fid),
        "system": ev.score("system", ev.mmlu_system(), {"base": nan, "system": zero}),
    }
    adapter_dirs: dict[str, str | None] = {"base": None, "system": None}
    for row in rows:
        adir = out / "rows" / row.name / "student" / "best"
        adapter = load_adapter(adir, model)
        ev.texts[row.name] = [g.text for g in timed("evaluate", ev.generate, adapter, f"eval: {row.name}")]
        mmlu = timed("evaluate", mmlu_accuracy, model, tok, ev.mmlu, adapter)
        fid = timed("evaluate", ev.fidelity, adapter)
        scores[row.name] = ev.score(row.name, mmlu, fid) | {"method": row.method, "objective": row.objective}
        scores[row.name] |= {"seed": row.seed, "cell": row.cell}
        adapter_dirs[row.name] = str(adir)
    for name, adir in adapter_dirs.items():
        cost = timed(
            "cost",
            measure_row_isolated,
            run.model.name,
            ev.templated[: cfg.n_cost],
            users=ev.prompts[: cfg.n_cost],  # what the system's guard reads
            adapter_dir=adir,
            guard_dir=system_guard(run.guard, out) if name == "system" else None,
            guard_mode=run.guard.mode,
            max_new_tokens=cfg.cost_max_new_tokens,
            device=str(model.device),
        )
        scores[name]["cost"] = cost.to_dict()
    per_prompt = {name: s.pop("per_prompt") for name, s in scores.items()}
    records = [
        {"set": set_name, "harmful": COMPARE_SETS[set_name], "category": e.category, "prompt": e.text}
        | {"guard_u": ev.guard_u[i]}
        | {
            name: {
                "response": ev.texts[name][i],
                "refused": per_prompt[name]["refused"][i],
                "judge_u": {j: u[i] for j, u in per_prompt[name]["judge_u"].items()},
            }
            for name in scores
        }
        for i, (set_name, e) in enumerate(ev.examples)
    ]
    atomic_write_text(out / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    timings["total"] = round(time.perf_counter() - t_start, 1)
    results = {
        "config": asdict(cfg),
        "n": ev.sizes,
        "n_mmlu": len(ev.mmlu),
        "rows": scores,
        "cells": aggregate(scores, rows),
        "guard": read_json(gdir / "guard_eval.json"),
        "judge": read_json(out / "judge" / "guard_eval.json"),
        "timings": timings,
        "device": str(model.device),
    }
    write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_compare_report(results))
    plot_pareto(results, out / "pareto.png")
    console.print(f"[bold green]report:[/] {out / 'report.md'}")
    return out
