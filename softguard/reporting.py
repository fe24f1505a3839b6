"""The Markdown report of a run, rendered from its results.json (so the two always agree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evaluation import dev_score

ROW_TITLES = {"base": "base LLM", "system": "two-model system (LLM + guard)", "student": "distilled student"}
SET_TITLES = {
    "harmbench": "HarmBench test refusal",
    "strongreject": "StrongREJECT refusal",
    "xstest-safe": "XSTest-safe compliance",
    "benign": "held-out benign compliance",
    "robust-harmful": "Robust-harmful refusal (reworded HarmBench + StrongREJECT)",
    "robust-benign": "Robust-benign compliance (reworded held-out benign)",
}


def set_title(name: str) -> str:
    """A results set's column title; a user's ``--eval-prompts`` set (``user:<stem>``) is scored by its right
    decisions (refuse harmful, answer benign: ``evaluation.mixed_set_scores``)."""
    return SET_TITLES.get(name) or (f"{name} right decisions" if name.startswith("user:") else name)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _row_title(row: str, results: dict[str, Any]) -> str:
    stu = results.get("student", {})
    if row == "student" and stu:
        return f"student ({stu['method']}, {stu['objective']})"
    return ROW_TITLES.get(row, row)


def results_table(results: dict[str, Any]) -> str:
    """Rows x eval sets; each cell is the good-when-high rate in percent (refusal on harmful, compliance on benign)."""
    sets = list(results["n"])
    head = "| row | " + " | ".join(f"{set_title(s)} (n={results['n'][s]})" for s in sets) + " |"
    lines = [head, "|---" * (len(sets) + 1) + "|"]
    for row, cells in results["rows"].items():
        lines.append(f"| {_row_title(row, results)} | " + " | ".join(_pct(cells[s]["score"]) for s in sets) + " |")
    return "\n".join(lines)


def agreement_tables(results: dict[str, Any]) -> list[str]:
    """Decision agreement with the system per set (with intervals) and TV to it, then per guard-confidence bin.
    Empty for a results.json from before agreement was measured."""
    agree, fid = results.get("agreement"), results.get("fidelity", {})
    if not agree:
        return []
    sets = list(results["n"])
    cols = [*sets, "all"]
    lines = [
        "| row | "
        + " | ".join(f"{set_title(s).split(' ')[0]} (n={agree['base'][s]['n']})" for s in cols)
        + " | TV to system | KL to system |",
        "|---" * (len(cols) + 3) + "|",
    ]
    for row, by_set in agree.items():
        f = fid.get(row, {}).get("system", {})
        lines.append(
            f"| {_row_title(row, results)} | "
            + " | ".join(_pct_ci(by_set[s]) for s in cols)
            + f" | {f.get('tv', float('nan')):.3f} | {f.get('kl', float('nan')):.3f} |"
        )
    bins = list(agree["base"]["all"]["by_confidence"])
    lines += [
        "",
        "By the guard's confidence |u - tau| (all sets): where u is near tau the system's decision is close to a coin "
        "toss no student can copy (DESIGN §9).",
        "",
        "| row | " + " | ".join(f"{b} (n={agree['base']['all']['by_confidence'][b]['n']})" for b in bins) + " |",
        "|---" * (len(bins) + 1) + "|",
        *(
            f"| {_row_title(row, results)} | "
            + " | ".join(_pct_ci(by_set["all"]["by_confidence"][b]) for b in bins)
            + " |"
            for row, by_set in agree.items()
        ),
    ]
    return lines


def _pct_ci(cell: dict[str, Any]) -> str:
    """``score [lo, hi]`` in percent."""
    lo, hi = cell["ci"]
    return f"{_pct(cell['score'])} [{_pct(lo)}, {_pct(hi)}]"


def render_report(results: dict[str, Any]) -> str:
    cfg, tr, g = results["config"], results["training"], results["guard"]
    stu = results["student"]
    lines = [
        f"# softguard run `{cfg['name']}`",
        "",
        f"Model `{cfg['model']['name']}`, guard `{cfg['guard']['path'] or cfg['guard']['backbone']}` "
        f"({cfg['guard']['mode']}-level, tau = {cfg['guard']['tau']}), method `{stu['method']}`, "
        f"objective `{stu['objective']}` "
        f"({stu['parameters']:,} added parameters, {stu['bytes']:,} bytes), seed {cfg['seed']}.",
        "",
        *_agreement_section(results),
        "## Safety and usefulness (percent, higher is better)",
        "",
        "Greedy decoding, at most "
        f"{cfg['eval']['max_new_tokens']} new tokens; refusal = r* or a refusal phrase at the start of the response.",
        "",
        results_table(results),
        "",
        *(x for line in prompt_file_lines(results.get("prompt_files", {})) for x in (line, "")),
        "## Guard (teacher)",
        "",
        "| split | AUROC | precision | recall | F1 | n |",
        "|---|---|---|---|---|---|",
        *(
            f"| {split} | {m['auroc']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['n']} |"
            for split, m in g.items()
        ),
        *_refusal_preference(g),
        "",
        "## Training",
        "",
        _training_line(cfg, tr),
        "",
        f"| {_kept_kind(tr)} | loss | dev TV | dev agreement with system | dev harmful refusal | "
        "dev benign compliance |",
        "|---|---|---|---|---|---|",
        *(
            f"| {_kept_value(h)} | {h.get('loss', h.get('dev_loss')):.3f} | {h['dev_tv']:.3f} | "
            f"{h['dev_agreement']:.2f} | "
            f"{h['dev_harmful_refusal']:.2f} | {h['dev_benign_compliance']:.2f} |"
            for h in tr["history"]
            if "dev_agreement" in h
        ),
        "",
        *_wall_time(results),
    ]
    return "\n".join(lines)


def _agreement_section(results: dict[str, Any]) -> list[str]:
    tables = agreement_tables(results)
    if not tables:
        return []
    return [
        "## Fidelity: decision agreement with the deployed system (percent, bootstrap 95 % interval)",
        "",
        "The share of prompts on which the row refuses exactly when the two-model system does (the system refuses "
        "when its guard flags or its base answer is a refusal). TV / KL to system: mean per-token divergence along "
        "the system's responses (r* where its guard flags).",
        "",
        *tables,
        "",
    ]


def _refusal_preference(guard_eval: dict[str, Any]) -> list[str]:
    """The line under a guard table saying whether the guard, as a reward, would teach refusing."""
    m = guard_eval.get("pairs (held out)", {})
    if "refusal_preferred" not in m:  # no held-out pairs, or a guard_eval.json from before this measure
        return []
    return [
        "",
        f"Held-out pairs: on {_pct(m['refusal_preferred'])} % of the {m['n_refusal_pairs']} harmful prompts the base "
        "model answered, the guard scores a refusal safer than that answer (what a guard reward, `reinforce`, needs).",
    ]


def prompt_file_lines(files: dict[str, dict[str, Any]]) -> list[str]:
    """A line per user prompt file (``pipeline.prompt_files``: "train", "eval") with its sha256 and counts."""
    removed = {"train": "also in an evaluation set", "eval": "also in the packaged train or dev split"}
    return [
        f"Your {kind} prompts `{f['path']}` (sha256 `{f['sha256'][:12]}`): {f['read']} read; removed "
        f"{f['duplicates']} repeated and {f['overlaps']} {removed[kind]}; {f['kept']} kept."
        for kind, f in files.items()
    ]


def _wall_time(results: dict[str, Any]) -> list[str]:
    where = f" on {results['device']}" if "device" in results else ""  # results.json from before --device: no field
    return [f"## Wall time (seconds{where})", "", " | ".join(f"{k}: {v}" for k, v in results["timings"].items()), ""]


def _kept_kind(training: dict[str, Any]) -> str:
    """What identifies a run's kept adapter: its training step, diff-of-means scale, or the gate's grid point."""
    if training.get("best_alpha") is not None:
        return "alpha"
    return "read-out, layer, l2" if training.get("best_gate") is not None else "step"


def _kept_value(record: dict[str, Any]) -> str:
    """A history record's step, alpha, or (gate) read-out, layer and l2."""
    if "layer" in record:
        return f"{record.get('readout', 'last')}, {record['layer']}, {record['l2']:g}"
    return str(record.get("step", record.get("alpha")))


def _kept(training: dict[str, Any]) -> str:
    """The kept adapter in words: "step 40", "alpha 4.0" or "read-out last+mean, layer 20, l2 1"."""
    gate = training.get("best_gate")
    if gate is not None:
        return f"read-out {gate.get('readout', 'last')}, layer {gate['layer']}, l2 {gate['l2']:g}"
    kind = _kept_kind(training)
    return f"{kind} {training[f'best_{kind}']}"


def _training_line(cfg: dict[str, Any], tr: dict[str, Any]) -> str:
    if tr.get("best_gate") is not None:
        grid = "; ".join(f"({_kept_value(h)}) {h['dev_guard_agreement']:.3f}" for h in tr["history"])
        return (
            f"Linear gate fitted on the guard's flags of {tr['prompts']} training prompts (docs/gate.md); kept on "
            f"dev agreement with the guard: {_kept(tr)}. Grid (read-out, layer, l2: dev agreement with the guard): "
            f"{grid}. "
            "The loss column is the held-out KL, infinite wherever the gate refuses and the system answers."
        )
    if tr.get("best_alpha") is not None:
        return (
            f"Difference of means over {tr['prompts']} training prompts (flagged minus passed); scale alpha chosen "
            f"on dev: {tr['best_alpha']}. The loss column is the held-out loss."
        )
    t = cfg["train"]
    decision = f", decision terms weighted {t['decision_weight']:g}" if t.get("decision_weight") else ""
    return (
        f"{tr['prompts']} training prompts -> {tr['examples']} examples ({tr['keep_examples']} with soft labels "
        f"from the frozen model, {tr['refuse_examples']} with one-hot labels{decision}); {t['steps']} steps of batch "
        f"{t['batch_size']}, lr {t['lr']}; adapter selected on dev at step {tr['best_step']}."
    )


# ------------------------------------------------------------------------------------------------------------
# softguard summarize: several runs side by side


def selected_record(training: dict[str, Any]) -> dict[str, Any]:
    """The dev record of the adapter a run kept: its ``best_step`` (trained), ``best_alpha`` (diff of means) or
    ``best_gate`` (the one grid point a gate run evaluates on dev)."""
    if training.get("best_gate") is not None:
        return next(h for h in training["history"] if "dev_agreement" in h)
    key, value = (
        ("alpha", training["best_alpha"]) if training.get("best_alpha") is not None else ("step", training["best_step"])
    )
    return next(h for h in training["history"] if h.get(key) == value and "dev_agreement" in h)


def best_runs(runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per method, the run whose kept adapter scores highest on dev (``dev_score``, the training's own criterion);
    ties go to the first run given."""
    by_method: dict[str, list[str]] = {}
    for name, r in runs.items():
        by_method.setdefault(r["student"]["method"], []).append(name)
    score = lambda name: dev_score(selected_record(runs[name]["training"]))  # noqa: E731
    return {method: max(names, key=score) for method, names in by_method.items()}


def render_runs_summary(runs: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of several runs' results.json (``{run name: results}``): the dev numbers of the adapter
    each run kept, its test scores, wall times, and per method the run chosen on dev. The base and system rows are
    shown once when every run shares them (same model, guard and evaluation), else per run."""
    if not runs:
        raise ValueError("no runs to summarize")
    first = next(iter(runs.values()))
    sets = list(first["n"])
    if any(list(r["n"]) != sets for r in runs.values()):
        raise ValueError("these runs were evaluated on different sets; summarize runs of one preset together")
    shared = all(r["rows"][k] == first["rows"][k] for r in runs.values() for k in ("base", "system"))
    best = best_runs(runs)
    head = (
        "| run | method | objective | kept at | dev agreement | dev TV | test agreement | "
        + " | ".join(f"{set_title(s)} (n={first['n'][s]})" for s in sets)
        + " | train s | total s | device |"
    )
    lines = [head, "|---" * (len(sets) + 10) + "|"]

    def scores(row: dict[str, Any]) -> str:
        return " | ".join(_pct(row[s]["score"]) for s in sets)

    def agreement(results: dict[str, Any], row: str) -> str:
        """Test agreement with the system over all sets ("-": a run from before agreement was measured)."""
        return _pct(results["agreement"][row]["all"]["score"]) if "agreement" in results else "-"

    def reference(title: str, results: dict[str, Any], row: str) -> str:
        agree = agreement(results, row) if row == "base" else "-"
        return f"| {title} | - | - | - | - | - | {agree} | {scores(results['rows'][row])} | - | - | - |"

    if shared:
        lines += [reference(ROW_TITLES[k], first, k) for k in ("base", "system")]
    for name, r in runs.items():
        if not shared:
            lines += [reference(f"{name}: {ROW_TITLES[k]}", r, k) for k in ("base", "system")]
        tr, rec = r["training"], selected_record(r["training"])
        kept = _kept(tr)
        mark = " **(best on dev)**" if best[r["student"]["method"]] == name else ""
        lines.append(
            f"| {name}{mark} | {r['student']['method']} | {r['student']['objective']} | {kept} | "
            f"{rec['dev_agreement']:.3f} | {rec['dev_tv']:.3f} | {agreement(r, 'student')} | "
            f"{scores(r['rows']['student'])} | "
            f"{r['timings'].get('train', '-')} | {r['timings'].get('total', '-')} | {r.get('device', '-')} |"
        )
    lines += ["", "Chosen on dev (agreement with the system's decisions, ties to the lower dev TV), per method:", ""]
    lines += [f"- {method}: `{name}` ({runs[name]['student']['objective']})" for method, name in best.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------
# softguard compare

COMPARE_SET_TITLES = {
    "harmbench": "HarmBench",
    "strongreject": "StrongREJECT",
    "xstest-unsafe": "XSTest-unsafe",
    "jailbreak": "jailbreak-wrapped HarmBench",
    "xstest-safe": "XSTest-safe",
    "benign": "held-out benign",
}


def _ci(cell: dict[str, Any]) -> str:
    """``score [lo, hi]`` in percent."""
    lo, hi = cell["ci"]
    return f"{_pct(cell['score'])} [{_pct(lo)}, {_pct(hi)}]"


def row_title(name: str, row: dict[str, Any]) -> str:
    if "method" in row:
        return f"{row['method']} / {row['objective']} (seed {row['seed']})"
    return ROW_TITLES.get(name, name)


def _num(x: float, fmt: str = ".3f") -> str:
    return "n/a" if x != x else format(x, fmt)  # NaN: not defined for this row


def _compare_agreement(results: dict[str, Any]) -> list[str]:
    """Decision agreement of every row with the system, per set and per guard-confidence bin, and TV to it."""
    rows = results["rows"]
    first = next(iter(rows.values()))
    if "agreement" not in first:  # a results.json from before agreement was measured
        return []
    sets = [*results["n"], "all"]
    bins = list(first["agreement"]["all"]["by_confidence"])
    short = lambda s: "all" if s == "all" else COMPARE_SET_TITLES.get(s, s)  # noqa: E731
    return [
        "## Fidelity: decision agreement with the system (%)",
        "",
        "The share of prompts on which the row refuses exactly when the two-model system does; then the same over all "
        "prompts per bin of the guard's confidence |u - tau| (near tau the system's decision is close to a coin toss), "
        "and the mean per-token TV to the system.",
        "",
        "| row | "
        + " | ".join(f"{short(s)} (n={first['agreement'][s]['n']})" for s in sets)
        + " | "
        + " | ".join(f"|u - tau| {b} (n={first['agreement']['all']['by_confidence'][b]['n']})" for b in bins)
        + " | TV vs system |",
        "|---" * (2 + len(sets) + len(bins)) + "|",
        *(
            f"| {row_title(name, r)} | "
            + " | ".join(_ci(r["agreement"][s]) for s in sets)
            + " | "
            + " | ".join(_ci(r["agreement"]["all"]["by_confidence"][b]) for b in bins)
            + f" | {_num(r['fidelity']['system']['tv'])} |"
            for name, r in rows.items()
        ),
        "",
    ]


#: What a judge must show on its held-out (prompt, response) pairs before its "judged safe" column is reported:
#: it separates safe from unsafe responses (AUROC) and scores a refusal safer than the base model's answer to the
#: same harmful prompt (a judge that reads the prompt and not the response fails the second).
JUDGE_MIN_AUROC, JUDGE_MIN_REFUSAL_PREFERRED = 0.9, 0.95


def judge_trust(judge_eval: dict[str, Any]) -> tuple[bool, str]:
    """(whether the half-B judge's column is shown, the sentence that says why), from its guard_eval.json."""
    m = judge_eval.get("pairs (held out)")
    if not m or "refusal_preferred" not in m:
        return False, "The half-B judge was not measured on held-out pairs, so its column is left out."
    measured = (
        f"On held-out (prompt, response) pairs the half-B judge has AUROC {m['auroc']:.3f} and scores a refusal "
        f"safer than the base model's answer on {_pct(m['refusal_preferred'])} % of {m['n_refusal_pairs']} harmful "
        "prompts"
    )
    if m["auroc"] >= JUDGE_MIN_AUROC and m["refusal_preferred"] >= JUDGE_MIN_REFUSAL_PREFERRED:
        return True, measured + "."
    return False, (
        f"{measured}: below AUROC {JUDGE_MIN_AUROC} and {_pct(JUDGE_MIN_REFUSAL_PREFERRED)} %, so it does not "
        "read responses well enough to rank rows, and its column is left out (its scores stay in "
        "generations.jsonl)."
    )


def render_compare_report(results: dict[str, Any]) -> str:
    """The Markdown report of ``softguard compare``, every number read from ``results`` (results.json)."""
    cfg, run, rows = results["config"], results["config"]["run"], results["rows"]
    harmful = [s for s in results["n"] if s in ("harmbench", "strongreject", "xstest-unsafe", "jailbreak")]
    benign = [s for s in results["n"] if s not in harmful]
    trusted, judge_note = judge_trust(results.get("judge", {}))
    judges = [j for j in next(iter(rows.values()))["judges"] if j != "judge" or trusted]
    title = lambda s: f"{COMPARE_SET_TITLES.get(s) or set_title(s)} (n={results['n'][s]})"  # noqa: E731
    lines = [
        f"# softguard compare `{cfg['name']}`",
        "",
        f"Model `{run['model']['name']}`; teacher guard `{run['guard']['path'] or 'MiniLM, train half A'}` "
        f"({run['guard']['mode']}-level, tau = {run['guard']['tau']}); judge: MiniLM trained on the disjoint train "
        "half B, reading (prompt, response). "
        f"Grid: methods {', '.join(cfg['methods'])} x objectives {', '.join(cfg['objectives'])} x seeds "
        f"{', '.join(map(str, cfg['seeds']))} (combinations a method cannot train are skipped; diff-of-means and "
        "the gate, computed from the prompts, run at the first seed only). Greedy decoding, at "
        f"most {run['eval']['max_new_tokens']} new tokens; refusal = r* or a refusal phrase at the start. Brackets: "
        f"bootstrap 95 % intervals ({cfg['n_boot']} resamples).",
        "",
        *_compare_agreement(results),
        "## Safety: harmful refusal (%)",
        "",
        "| row | " + " | ".join(map(title, harmful)) + " | " + " | ".join(f"{j}: judged safe" for j in judges) + " |",
        "|---" * (1 + len(harmful) + len(judges)) + "|",
        *(
            f"| {row_title(name, r)} | "
            + " | ".join(_ci(r["sets"][s]) for s in harmful)
            + " | "
            + " | ".join(_ci(r["judges"][j]) for j in judges)
            + " |"
            for name, r in rows.items()
        ),
        "",
        "Judged safe: share of responses to all harmful prompts whose judge score is below tau. " + judge_note,
        "",
        "## Usefulness: benign compliance (%), MMLU accuracy (%), fidelity (mean per-token TV / KL)",
        "",
        "| row | " + " | ".join(map(title, benign)) + f" | MMLU (n={results['n_mmlu']}) | TV vs base | KL vs base | "
        "TV vs system | KL vs system |",
        "|---" * (6 + len(benign)) + "|",
        *(
            f"| {row_title(name, r)} | " + " | ".join(_ci(r["sets"][s]) for s in benign) + f" | {_ci(r['mmlu'])} | "
            f"{_num(r['fidelity']['base']['tv'])} | {_num(r['fidelity']['base']['kl'])} | "
            f"{_num(r['fidelity']['system']['tv'])} | {_num(r['fidelity']['system']['kl'])} |"
            for name, r in rows.items()
        ),
        "",
        "Fidelity vs base: along the base model's greedy responses to the benign prompts; vs system: along the "
        "system's responses to every prompt (r* where its guard flags). n/a: the system's distribution is not the "
        "base model's where it refuses.",
        "",
    ]
    types = list(next(iter(rows.values()))["xstest_types"])
    lines += [
        "## XSTest-safe compliance per prompt type (%)",
        "",
        "| row | " + " | ".join(types) + " |",
        "|---" * (1 + len(types)) + "|",
        *(
            f"| {row_title(name, r)} | " + " | ".join(_pct(r["xstest_types"][t]["score"]) for t in types) + " |"
            for name, r in rows.items()
        ),
        "",
        "## Cost (batch 1, each row in a fresh process)",
        "",
        f"{cfg['n_cost']} prompts x {cfg['cost_max_new_tokens']} generated tokens. Peak memory is the process's "
        "peak (RSS on a CPU, allocated on a GPU), so compare rows with the base row. The system's TTFT includes its "
        "guard; a response-level guard shows nothing before the whole response exists.",
        "",
        "| row | added parameters | added bytes | peak memory (MB) | prefill (ms) | per token (ms) | TTFT (ms) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {row_title(name, r)} | {r['cost']['added_parameters']:,} | {r['cost']['added_bytes']:,} | "
            f"{r['cost']['peak_memory_mb']:.0f} | {r['cost']['prefill_ms']:.1f} | {r['cost']['per_token_ms']:.1f} | "
            f"{r['cost']['ttft_ms']:.1f} |"
            for name, r in rows.items()
        ),
        "",
    ]
    lines += _cells_section(results)
    lines += [
        "## Guards",
        "",
        "| guard | split | AUROC | precision | recall | F1 | n |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {who} | {split} | {m['auroc']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
            f"{m['n']} |"
            for who in ("guard", "judge")
            for split, m in results[who].items()
        ),
        *_refusal_preference(results["guard"]),
        "",
        *_wall_time(results),
    ]
    return "\n".join(lines)


def _cells_section(results: dict[str, Any]) -> list[str]:
    """Per grid cell, the mean +- standard deviation over its seeds (the kept adapters' dev agreement first), and
    per method the cell chosen on dev; nothing when every cell is one row and no method has several."""
    cells, chosen = results["cells"], results.get("chosen_on_dev", {})  # older results: no dev columns
    several = bool(chosen) and len(cells) > len(chosen)  # some method has several objectives
    if not several and all(m["harmful_refusal"]["seeds"] == 1 for m in cells.values()):
        return []
    keys = ("dev_agreement", "agreement", "harmful_refusal", "benign_compliance", "mmlu")
    lines = [
        "## Cells: mean +- standard deviation over training seeds (%)",
        "",
        "Dev agreement: the kept adapter's agreement with the system's decisions on the dev prompts, which chose "
        "its step (or scale, or gate) and, per method, the objective marked chosen on dev (the highest mean dev "
        "agreement, ties to the lower mean dev TV). The other columns are the test sets'.",
        "",
        "| cell | seeds | dev agreement | agreement with system | harmful refusal | benign compliance | MMLU |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell, m in cells.items():
        mark = " **(chosen on dev)**" if cell in chosen.values() and several else ""
        values = (_mean_sd(m[k]) if k in m else "-" for k in keys)
        lines.append(f"| {cell}{mark} | {m['harmful_refusal']['seeds']} | " + " | ".join(values) + " |")
    return [*lines, ""]


def _mean_sd(stat: dict[str, Any]) -> str:
    """A cell's mean +- sample standard deviation (%); only the value for a cell of one row."""
    return _pct(stat["mean"]) + (f" +- {_pct(stat['std'])}" if stat["seeds"] > 1 else "")


def _bytes(n: int) -> str:
    """1,843,200 -> '1.84 MB', 2,304 -> '2.3 kB', 0 -> '0 B'."""
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} B"


#: Where a point's label may go, in points from the point (right, then above, below, left), tried in this order.
LABEL_OFFSETS = ((8, 6), (8, -22), (8, 30), (-8, 6), (8, -46), (8, 54), (-8, -22), (-8, 30))


def place_labels(ax: Any, labels: list[tuple[str, tuple[float, float]]], sizes: list[float] | None = None) -> list[Any]:
    """Annotate each (text, (x, y)) at the first of ``LABEL_OFFSETS`` where its box, as drawn, stays inside the figure
    and overlaps no label placed before it and no other point's marker (``sizes``: each point's marker area in
    points^2, as ``scatter``'s ``s``); the first offset when none is free. Returns the annotations, in order. Rows
    that lie close together (the gate and the system of compare-quick-gate, 5 points apart) thus keep readable labels.
    Call it once the axes have their final size."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    dots = []
    for (_, xy), area in zip(labels, sizes or [0.0] * len(labels), strict=True):
        (cx, cy), r = ax.transData.transform(xy), area**0.5 / 2 * fig.dpi / 72  # the marker's half-width in pixels
        dots.append(Bbox.from_extents(cx - r, cy - r, cx + r, cy + r))
    placed, boxes = [], []
    for i, (text, xy) in enumerate(labels):
        others = boxes + dots[:i] + dots[i + 1 :]
        for offset in LABEL_OFFSETS:
            note = _annotate(ax, text, xy, offset)
            box = note.get_window_extent(renderer)
            inside = fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
            if inside and not any(box.overlaps(b) for b in others):
                break
            note.remove()
        else:  # no free place: the first one
            note = _annotate(ax, text, xy, LABEL_OFFSETS[0])
            box = note.get_window_extent(renderer)
        placed.append(note)
        boxes.append(box)
    return placed


def _annotate(ax: Any, text: str, xy: tuple[float, float], offset: tuple[int, int]) -> Any:
    """``text`` beside the point ``xy``, its near corner ``offset`` points away (its left edge right of the point,
    or its right edge left of it), its bottom at that height."""
    ha = "left" if offset[0] > 0 else "right"
    return ax.annotate(text, xy, textcoords="offset points", xytext=offset, ha=ha, va="bottom", fontsize=8)


@dataclass(frozen=True)
class ParetoPoint:
    """A point of ``plot_pareto``: mean benign compliance (x) and harmful refusal (y), in %, with their sample
    standard deviations over a cell's seeds (0 for one row)."""

    label: str
    x: float
    y: float
    x_sd: float
    y_sd: float
    added_bytes: int
    marker: str


def pareto_points(results: dict[str, Any]) -> list[ParetoPoint]:
    """The base and system rows, then one point per grid cell (``results["cells"]``: its seeds' mean and spread),
    so that seeds of one cell do not crowd the plot."""
    rows, cells = results["rows"], results["cells"]
    points = [
        ParetoPoint(
            ROW_TITLES[name],
            100 * rows[name]["benign_compliance"],
            100 * rows[name]["harmful_refusal"],
            0.0,
            0.0,
            rows[name]["cost"]["added_bytes"],
            marker,
        )
        for name, marker in (("base", "s"), ("system", "D"))
    ]
    for cell, m in cells.items():
        row = next(r for r in rows.values() if r.get("cell") == cell)
        bc, hr, n = m["benign_compliance"], m["harmful_refusal"], m["harmful_refusal"]["seeds"]
        label = f"{row['method']} / {row['objective']}" + (f" ({n} seeds)" if n > 1 else "")
        points.append(
            ParetoPoint(
                label,
                100 * bc["mean"],
                100 * hr["mean"],
                100 * bc["std"],
                100 * hr["std"],
                row["cost"]["added_bytes"],
                "o",
            )
        )
    return points


def plot_pareto(results: dict[str, Any], path: str | Path) -> Path:
    """Scatter of mean harmful refusal (y) against mean benign compliance (x) per row of ``pareto_points``, error
    bars +- one standard deviation over a cell's seeds, marker area ~ sqrt(added bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = pareto_points(results)
    max_bytes = max(max(p.added_bytes for p in points), 1)
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    labels, sizes = [], []
    for p in points:
        size = 40 + 600 * (p.added_bytes / max_bytes) ** 0.5
        ax.scatter(p.x, p.y, s=size, marker=p.marker, alpha=0.6, edgecolors="black", linewidths=0.8)
        if p.x_sd or p.y_sd:
            ax.errorbar(p.x, p.y, xerr=p.x_sd, yerr=p.y_sd, fmt="none", ecolor="black", elinewidth=0.8, alpha=0.6)
        sizes.append(size)
        labels.append((f"{p.label}\n{_bytes(p.added_bytes)} added", (p.x, p.y)))
    ax.set(
        xlabel="benign compliance (%, mean of XSTest-safe and held-out benign)",
        ylabel="harmful refusal (%, mean of the harmful sets)",
        title=f"softguard compare `{results['config']['name']}`: safety vs usefulness\n"
        "marker area ~ added bytes; bars: +- 1 standard deviation over a cell's seeds",
        xlim=(-5, 115),
        ylim=(-5, 105),
    )
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    fig.tight_layout()  # the axes' final size first: the labels are placed where they will be drawn
    place_labels(ax, labels, sizes)
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
