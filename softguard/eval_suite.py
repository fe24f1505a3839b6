"""The evaluation suite: every row of ``softguard run`` and ``softguard compare`` measured the same way.

Rows: ``base`` (the LLM, greedy), ``system`` (the deployed two-model system: r* where its guard flags, else the base
response) and any number of adapters (``run``'s student, ``compare``'s grid rows). ``Suite`` generates the base
responses (once per model, prompts and settings: ``SafeSystem.greedy`` caches them on disk) and the system's once;
each further row's greedy responses are generated once, in ``Suite.row``, and every metric reads them:

- per set, refusal rate and score (refusal on a harmful set, compliance = 1 - refusal rate on a benign one) with a
  percentile bootstrap 95 % interval (``evaluation.SetResult``); a set of both labels (the user's
  ``--eval-prompts``) by its right decisions (``evaluation.mixed_set_scores``);
- decision agreement with the system, per set, over all prompts and per bin of |u - tau|
  (``evaluation.agreement_by_set``);
- fidelity: mean per-token TV and KL (``evaluation.fidelities``) to the system along its responses (r* where its
  guard flags), and to the base model along its own responses to the benign prompts.

The sets are built by ``pipeline.eval_sets``: ``run`` evaluates its ``EVAL_SETS``, ``compare`` its
``COMPARE_SETS``, both named in ``SETS`` and both followed by the user's set; ``compare`` adds its own measures
(judges, MMLU, cost) to the suite's.
"""

from __future__ import annotations

import time
from typing import Any

from .adapters import Adapter
from .config import RunConfig
from .data import Example
from .evaluation import (
    SetResult,
    agreement_by_set,
    bootstrap_ci,
    fidelities,
    fidelity_examples,
    mixed_set_scores,
    score_set,
)
from .generation import Generation, generate
from .system import SafeSystem

#: Every packaged evaluation set: name -> harmful (refusal is good) or benign (compliance is good). A set of
#: another name (the user's ``user:<stem>``) holds both labels. The robust-* sets are test prompts reworded by
#: transformations the training never uses; jailbreak: HarmBench test prompts inside jailbreak templates.
SETS: dict[str, bool] = {
    "harmbench": True,
    "strongreject": True,
    "xstest-unsafe": True,
    "jailbreak": True,
    "xstest-safe": False,
    "benign": False,
    "robust-harmful": True,
    "robust-benign": False,
}


class Suite:
    """The prompts of ``sets`` (name -> examples, in order), the base and system rows' responses, and the fidelity
    references, computed once; ``row`` measures a row (``n_boot`` bootstrap resamples, seeded with ``cfg.seed``)."""

    def __init__(self, cfg: RunConfig, system: SafeSystem, sets: dict[str, list[Example]], n_boot: int = 1000):
        self.cfg, self.system, self.sets, self.n_boot = cfg, system, sets, n_boot
        self.sizes = {name: len(exs) for name, exs in sets.items()}
        self.examples = [(name, e) for name, exs in sets.items() for e in exs]
        self.prompts = [e.text for _, e in self.examples]
        self.templated = system.template(self.prompts)
        #: per row: its responses, refusal flags (per set, and one per prompt), and the seconds its generation took
        self.texts: dict[str, list[str]] = {}
        self.set_results: dict[str, dict[str, SetResult]] = {}
        self.refused: dict[str, list[bool]] = {}
        self.seconds: dict[str, float] = {}
        base = self._generate("base", None)
        sys_out = system.respond(self.prompts, base)
        self._add("system", [r.text for r in sys_out])
        self.guard_u = [r.u for r in sys_out]
        ids = [system.tokenizer(t, add_special_tokens=False)["input_ids"] for t in self.templated]
        responses, refusal = [g.token_ids for g in base], system.refusal_ids()
        benign = [i for i, (_, e) in enumerate(self.examples) if not e.harmful]
        self.references = {  # fidelity: the system on every prompt; the base model along its own benign responses
            "system": fidelity_examples(ids, responses, [r.flagged for r in sys_out], refusal),
            "base": fidelity_examples(
                [ids[i] for i in benign], [responses[i] for i in benign], [False] * len(benign), refusal
            ),
        }

    def row(self, name: str, adapter: Adapter | None = None) -> dict[str, Any]:
        """{"sets", "agreement", "fidelity"} of row ``name``: ``base``, ``system``, or a new row, whose responses
        are generated here with ``adapter``. The system's fidelity is 0 to itself and undefined (nan) to the base
        model (its distribution is not one where it refuses)."""
        if name not in self.texts:
            self._generate(name, adapter)
        if name == "system":
            fid = {"system": {"tv": 0.0, "kl": 0.0}, "base": {"tv": float("nan"), "kl": float("nan")}}
        else:
            model, tok = self.system.model, self.system.tokenizer
            fid = fidelities(model, tok, adapter, self.references)
        agreement = agreement_by_set(
            [s for s, _ in self.examples],
            self.refused[name],
            self.refused["system"],
            self.guard_u,
            self.cfg.guard.tau,
            self.n_boot,
            self.cfg.seed,
        )
        return {"sets": self._set_scores(name), "agreement": agreement, "fidelity": fid}

    def records(self) -> list[dict[str, Any]]:
        """Per prompt: its set, label, category, text and guard score u, and per row its response and refusal flag."""
        return [
            {"set": name, "harmful": e.harmful, "category": e.category, "prompt": e.text, "guard_u": self.guard_u[i]}
            | {row: {"response": texts[i], "refused": self.refused[row][i]} for row, texts in self.texts.items()}
            for i, (name, e) in enumerate(self.examples)
        ]

    def _generate(self, name: str, adapter: Adapter | None) -> list[Generation]:
        """Row ``name``'s greedy responses, timed and scored (``_add``): without an adapter the base model's, read
        from the cache when a run has generated them before (``SafeSystem.greedy``)."""
        t0 = time.perf_counter()
        settings = {"max_new_tokens": self.cfg.eval.max_new_tokens, "batch_size": self.cfg.gen_batch_size}
        if adapter is None:
            out = self.system.greedy(self.prompts, desc=f"eval: {name}", **settings)
        else:
            model, tokenizer = self.system.model, self.system.tokenizer
            out = generate(
                model,
                tokenizer,
                self.templated,
                adapter,
                desc=f"eval: {name}",
                **settings,
            )
        self.seconds[name] = time.perf_counter() - t0
        self._add(name, [g.text for g in out])
        return out

    def _add(self, name: str, texts: list[str]) -> None:
        """Row ``name``'s responses, their refusal flags per set (``score_set``) and over all prompts."""
        self.texts[name], self.set_results[name], start = texts, {}, 0
        for set_name, exs in self.sets.items():
            harmful = SETS.get(set_name, True)  # a user's set: only the flags count (``_set_scores``)
            res = score_set(set_name, harmful, texts[start : start + len(exs)], self.cfg.teacher.refusal)
            self.set_results[name][set_name] = res
            start += res.n
        self.refused[name] = [f for res in self.set_results[name].values() for f in res.flags]

    def _set_scores(self, name: str) -> dict[str, dict[str, Any]]:
        """Per set: ``SetResult.as_dict`` (score, refusal rate, n, interval); a user's set of both labels:
        ``mixed_set_scores`` and the interval of its share of right decisions."""
        out, seed = {}, self.cfg.seed
        for set_name, res in self.set_results[name].items():
            if set_name in SETS:
                out[set_name] = res.as_dict(seed, self.n_boot)
                continue
            harmful = [e.harmful for e in self.sets[set_name]]
            right = [f == h for f, h in zip(res.flags, harmful, strict=True)]
            ci = bootstrap_ci(right, self.n_boot, seed)
            out[set_name] = mixed_set_scores(harmful, res.flags) | {"ci": list(ci)}
        return out
