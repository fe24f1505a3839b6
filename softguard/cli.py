"""The ``softguard`` command line: fetch, list, data show, guard train/eval, run, train, compare, summarize, export,
chat."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

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
    from .data import make_splits
    from .guards import CONFIG_FILE, GuardTrainConfig
    from .io import read_json
    from .models import load_model, resolve_device
    from .pipeline import PRESETS, guard_pairs, train_split_guard

    base = PRESETS["quick" if args.quick else "full"]  # the guard stage of `softguard run [--quick]`
    run_cfg = replace(
        base,
        model=args.model,
        guard_epochs=base.guard_epochs if args.epochs is None else args.epochs,
        guard_pairs=base.guard_pairs if args.pairs is None else args.pairs,
        seed=args.seed,
        tau=args.tau,
    )
    cfg = GuardTrainConfig(epochs=run_cfg.guard_epochs, lr=args.lr, max_length=run_cfg.guard_max_length, seed=args.seed)
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file():  # saving replaces the directory
        raise ValueError(f"--out {out} holds files but no saved guard; choose another --out (or delete it)")
    splits, pairs, device = make_splits(args.seed), None, resolve_device(args.device)
    if run_cfg.guard_pairs > 0:  # (prompt, base response) pairs from the LLM, as the run's guard stage builds them
        from .system import SafeSystem

        model, tokenizer = load_model(args.model, device=device)
        pairs = guard_pairs(run_cfg, splits, SafeSystem(model, tokenizer, None, tau=args.tau))
    train_split_guard(splits, args.out, args.backbone, cfg, args.tau, pairs, device, args.pooling)
    _print_metrics(read_json(Path(args.out) / "guard_eval.json"))
    console.print(f"guard saved to {args.out}")


def cmd_guard_eval(args: argparse.Namespace) -> None:
    from .data import make_splits
    from .guards import EncoderGuard, check_tau
    from .io import write_json
    from .pipeline import guard_metrics

    check_tau(args.tau)
    metrics = guard_metrics(EncoderGuard.from_pretrained(args.guard), make_splits(args.seed), args.tau)
    write_json(args.out, metrics)
    _print_metrics(metrics)
    console.print(f"written to {args.out}")


def run_config(args: argparse.Namespace):
    """The RunConfig of ``softguard run|train``: the preset with the options given on the command line."""
    from .pipeline import preset

    direct = args.objective in ("sft", "reinforce", "diff-of-means")
    if direct and args.labels is not None:
        raise ValueError(
            f"--labels does not apply to --objective {args.objective}: sft trains on the deployed system's hard "
            "labels, reinforce on the guard's reward, diff-of-means on flagged vs passed prompts"
        )
    given = {
        "name": args.name,
        "model": args.model,
        "method": args.method,
        "guard": args.guard,
        "guard_mode": args.guard_mode,
        "seed": args.seed,
        "num_tokens": args.num_tokens,
        "placement": args.placement,
        "lora_rank": args.lora_rank,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "lora_targets": args.lora_targets.split(",") if args.lora_targets else None,
        "steering_layer": args.steering_layer,
        "hard_labels": None if args.labels is None else args.labels == "hard",
        "train_rephrasings": args.rephrasings,
        "train_prompts": args.train_prompts,
        "eval_prompts": args.eval_prompts,
        "train_objective": args.objective,
        "train_steps": args.steps,
        "train_batch_size": args.batch_size,
        "train_lr": args.lr,
        "train_jsd_beta": args.jsd_beta,
        "train_rl_samples": args.rl_samples,
        "train_kl_coef": args.kl_coef,
    }
    method = args.method or "soft-prompt"
    for option, owner in (
        ("num_tokens", "soft-prompt"),
        ("placement", "soft-prompt"),
        ("lora_rank", "lora"),
        ("lora_alpha", "lora"),
        ("lora_dropout", "lora"),
        ("lora_targets", "lora"),
        ("steering_layer", "steering"),
    ):
        if given[option] is not None and method != owner:
            raise ValueError(f"--{option.replace('_', '-')} is a {owner} option; it does nothing for --method {method}")
    return preset("quick" if args.quick else "full", **{k: v for k, v in given.items() if v is not None})


def cmd_run(args: argparse.Namespace) -> None:
    from .pipeline import run

    out = run(run_config(args), args.runs_dir, resume=not args.no_resume, device=args.device)
    print((out / "report.md").read_text())


def cmd_train(args: argparse.Namespace) -> None:
    from .pipeline import run

    out = run(run_config(args), args.runs_dir, resume=not args.no_resume, evaluate=False, device=args.device)
    console.print(f"adapter: {out / 'student' / 'best'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .compare import compare, preset

    given = {
        "name": args.name,
        "methods": args.methods.split(",") if args.methods else None,
        "objectives": args.objectives.split(",") if args.objectives else None,
        "seeds": list(range(args.seed, args.seed + args.seeds)) if args.seeds else None,
        "judge": args.judge,
        "run_guard": args.guard,
        "run_model": args.model,
    }
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    cfg = preset("quick" if args.quick else "full", **{k: v for k, v in given.items() if v is not None})
    out = compare(cfg, args.runs_dir, resume=not args.no_resume, device=args.device)
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
    from .guards import EncoderGuard
    from .io import read_json
    from .models import load_model
    from .system import DEFAULT_REFUSAL, SafeSystem

    run_dir = Path(args.system or args.adapter or ".")
    run_cfg = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    if args.system and not run_cfg:
        raise ValueError(f"--system {run_dir} is not a run directory (no config.json); pass a `softguard run` dir")
    model, tok = load_model(args.model or run_cfg.get("model", "smollm2-135m"))
    adapter = load_adapter(resolve_adapter_dir(args.adapter), model) if args.adapter else None
    system = None
    if args.system:  # the run's own system: its guard (trained into the run, or the --guard it was given), mode, tau
        guard = EncoderGuard.from_pretrained(run_cfg.get("guard") or run_dir / "guard")
        refusal, tau = run_cfg.get("refusal", DEFAULT_REFUSAL), run_cfg.get("tau", 0.5)
        system = SafeSystem(model, tok, guard, refusal, tau, run_cfg.get("guard_mode", "prompt"))

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
    gt.add_argument("--quick", action="store_true", help="the quick preset's guard (3 epochs, 64 tokens, 64 pairs)")
    gt.add_argument("--epochs", type=int, help="default: the preset's (full 2, quick 3)")
    gt.add_argument("--lr", type=float, default=3e-5)
    gt.add_argument("--tau", type=float, default=0.5)
    gt.add_argument("--seed", type=int, default=0)
    gt.add_argument(
        "--pairs",
        type=int,
        help="train prompts per class whose (prompt, response) pairs also train it (default: full 400, quick 64)",
    )
    gt.add_argument(
        "--pooling",
        choices=["all", "response"],
        default="all",
        help="pairs: mean over all tokens, or over the response's tokens only",
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
    cp.add_argument("--name", help="run name (default: the preset's)")
    cp.add_argument("--runs-dir", default="runs")
    cp.add_argument("--methods", help="comma-separated, e.g. soft-prompt,lora,steering")
    cp.add_argument("--objectives", help="comma-separated, e.g. tv,kl,sft,diff-of-means (invalid pairs skipped)")
    cp.add_argument("--seeds", type=int, help="training seeds per cell: seed, seed+1, ... (mean and spread)")
    cp.add_argument("--seed", type=int, default=0, help="first training seed")
    cp.add_argument("--judge", help="an extra judge guard directory (besides the refusal detector and half-B judge)")
    cp.add_argument("--guard", help="reuse a trained teacher guard directory")
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
    e = sub.add_parser("export", help="export a trained soft prompt or LoRA (run dir or adapter dir) for inference")
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
    from .pipeline import METHODS

    r.add_argument("--quick", action="store_true", help="small preset sized for a 2-core CPU (~15 min)")
    r.add_argument("--name", help="run name (default: the preset's name)")
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--model", help="packaged model name, Hugging Face id or local directory")
    r.add_argument("--method", choices=list(METHODS), help="adapter (default soft-prompt)")
    r.add_argument(
        "--objective",
        choices=list(METHODS["steering"]),
        help="distillation: tv, kl, rkl, jsd; direct: sft (hard guard labels), reinforce (guard reward); "
        "diff-of-means: steering vector without training (--method steering only). Default tv",
    )
    r.add_argument(
        "--labels",
        choices=["soft", "hard"],
        help="distill the guard's probabilities (soft) or the deployed system's decisions 1[u >= tau] (hard); "
        "default: the preset's (quick: hard, full: soft)",
    )
    r.add_argument("--guard", help="reuse a trained guard directory instead of training one")
    r.add_argument("--guard-mode", choices=["prompt", "response"], help="the system's guard reads (default prompt)")
    r.add_argument(
        "--rephrasings",
        type=int,
        help="programmatic rewordings added per training prompt, each labelled by the guard (0-5; default 0)",
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
    r.add_argument("--lora-targets", help="comma-separated module names (default q_proj,v_proj)")
    r.add_argument("--steering-layer", type=int, help="decoder layer of the steering vector (default: the middle)")
    r.add_argument("--seed", type=int)
    r.add_argument("--no-resume", action="store_true", help="fail instead of resuming when the run directory exists")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)


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
