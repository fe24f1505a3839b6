"""The configuration of a run: one dataclass per component, each validated where it is made, and its TOML form.

``RunConfig`` (``softguard run`` / ``train``) holds, besides ``name``, ``seed`` and ``gen_batch_size``, one section per
component: ``model``, ``guard``, ``teacher``, ``data``, ``adapter`` (the method and one sub-section per method:
``soft_prompt``, ``lora``, ``steering``, ``gate``), ``train`` (``training.TrainConfig``) and ``eval``. ``CompareConfig``
(``softguard compare``) holds the grid, a user ``judge`` guard and the ``run`` every row shares. Every dataclass
checks its values in ``__post_init__`` (``checks.require``), so a bad value, or an option of a method other than the
chosen one, is refused by the library wherever the config is made, before any work. Defaults are stated once, on
the fields; ``PRESETS`` / ``COMPARE_PRESETS`` name the few values a preset changes.

A config file is TOML (read with ``tomllib``) in the same shape: top-level keys, then a table per section::

    name = "demo"
    [model]
    name = "smollm2-135m"
    [adapter]
    method = "lora"
    [adapter.lora]
    rank = 4

``update(cfg, data)`` lays ``data`` (parsed TOML, or the same nested dict from the command line) over ``cfg``: a key
left out keeps ``cfg``'s value; an unknown key or a value of the wrong type is an error naming the section and the
section's keys. TOML has no null: ``"none"`` is read as None in a field that may be None (a path actually named
``none`` can be written ``./none``), and ``dumps`` writes None that way, so ``load(dump(cfg)) == cfg``. Changing the
method without giving ``train.lr`` sets the method's learning rate (``METHODS``), and to the gate its objective.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from .adapters import READOUTS, AdapterError, read_adapter_config, resolve_adapter_dir
from .adapters.soft_prompt import INITS, PLACEMENTS
from .checks import require
from .fingerprint import dir_sha256
from .generation import BATCH_SIZE
from .guards import GuardConfig
from .io import read_toml
from .losses import TRAIN_OBJECTIVES, check_objective
from .prompts import read_prompts
from .rephrase import TRAIN_TRANSFORMS
from .system import DEFAULT_REFUSAL
from .train_config import TrainConfig

#: TOML has no null: this string stands for None in a field that may be None.
NONE = "none"


@dataclass
class ModelConfig:
    """The chat LLM that is distilled into."""

    name: str = "smollm2-135m"  # a packaged model name, a Hugging Face id or a local directory

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must name a model: a packaged name, a Hugging Face id or a local directory")


@dataclass
class TeacherConfig:
    """The teacher's labels and the base model's samples for the keep branch (DESIGN §3)."""

    refusal: str = DEFAULT_REFUSAL  # r*, the system's answer to a flagged prompt
    hard_labels: bool = False  # train on 1[u >= tau] instead of the guard's probability
    samples: int = 2  # K base samples per prompt
    max_new_tokens: int = 64
    temperature: float = 1.0

    def __post_init__(self) -> None:
        require(self, {"samples": ">= 1", "max_new_tokens": ">= 1", "temperature": ">= 0"})
        if not self.refusal.strip():
            raise ValueError("refusal must be a non-empty text (the answer r* of a flagged prompt)")


@dataclass
class DataConfig:
    """Which prompts train and select: the packaged train split (a seeded sample per class) or the user's file, its
    rewordings, contextual copies of some of its prompts, and the dev prompts per class."""

    n_train_harmful: int | None = None  # None: the whole train split
    n_train_benign: int | None = None
    rephrasings: int = 0  # programmatic rewordings added per training prompt, labelled by the guard (0: none)
    contexts: int = 0  # training prompts per class also placed under a passage of other train text (0: none)
    train_prompts: str | None = None  # the user's training prompt file (``prompts``); None: the packaged train split
    train_prompts_sha256: str | None = None  # its sha256, filled in from the file when not given
    eval_prompts: str | None = None  # the user's labelled evaluation file, evaluated as set ``user:<stem>``
    eval_prompts_sha256: str | None = None
    n_dev: int | None = None  # per class; None: the whole dev split

    def __post_init__(self) -> None:
        require(
            self,
            {
                "n_train_harmful": ">= 1 or None",
                "n_train_benign": ">= 1 or None",
                "rephrasings": f"[0, {len(TRAIN_TRANSFORMS)}]",
                "contexts": ">= 0",
                "n_dev": ">= 1 or None",
            },
        )
        if self.contexts and self.train_prompts is not None:
            raise ValueError(
                "contexts puts packaged train prompts under packaged passages; with your own train_prompts set "
                "contexts = 0 and put any contextual prompts in your file"
            )
        for attr, labelled in (("train_prompts", False), ("eval_prompts", True)):
            self._check_prompt_file(attr, labelled)

    def _check_prompt_file(self, attr: str, labelled: bool) -> None:
        """Read and check the prompt file ``attr`` (``prompts.read_prompts``), store its absolute path and fill in
        its sha256 (or refuse a file whose sha256 differs from the one given): the hash in config.toml makes a
        changed file a changed config, which a run refuses to resume."""
        path, sha = getattr(self, attr), getattr(self, f"{attr}_sha256")
        if path is None:
            if sha is not None:
                raise ValueError(f"{attr}_sha256 is set without {attr}: give the file too, or neither")
            return
        path = str(Path(path).expanduser().resolve())
        setattr(self, attr, path)
        setattr(self, f"{attr}_sha256", read_prompts(path, labelled, sha).sha256)


@dataclass
class SoftPromptConfig:
    """A soft prompt P in R^{k x d} (``adapters.SoftPrompt``)."""

    num_tokens: int = 100  # k
    init: str = "text"
    placement: str = "start"  # before everything, or "user" (just before the user's message)

    def __post_init__(self) -> None:
        require(self, {"num_tokens": ">= 1", "init": INITS, "placement": PLACEMENTS})


@dataclass
class LoRAConfig:
    """Rank-r updates B A of the ``targets`` linear layers (``adapters.LoRA``)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        require(self, {"rank": ">= 1", "alpha": "> 0", "dropout": "[0, 1)"})
        if not self.targets or not all(self.targets):
            raise ValueError(f"targets must name at least one module and no empty names, got {self.targets}")


@dataclass
class SteeringConfig:
    """A vector added to the residual stream after decoder layer ``layer`` (``adapters.SteeringVector``)."""

    layer: int | None = None  # None: the middle layer
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 6.0, 8.0, 12.0])  # diff-of-means scales

    def __post_init__(self) -> None:
        require(self, {"layer": ">= 0 or None"})
        if not self.alphas or not all(a > 0 for a in self.alphas):
            raise ValueError(f"alphas must be a non-empty list of positive scales, got {self.alphas}")


@dataclass
class GateConfig:
    """A linear gate on the output of a decoder layer (``adapters.LinearGate``), fitted by logistic regression.

    Every (read-out, layer, l2) of the grid is fitted on the training prompts' guard flags; the one whose gate agrees
    with the guard on the most dev prompts is kept, ties going to the best dev AUROC, then to the first (docs/gate.md).
    ``readouts``: "last" (the last prompt token's state) and/or "last+mean" (that and the mean over the prompt's own
    tokens). ``layers`` None: every sixth of the depth (5 layers)."""

    readouts: list[str] = field(default_factory=lambda: list(READOUTS))
    layers: list[int] | None = None
    l2: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])

    def __post_init__(self) -> None:
        if not self.readouts or not set(self.readouts) <= set(READOUTS):
            raise ValueError(f"readouts must be a non-empty list of {', '.join(READOUTS)}; got {self.readouts}")
        if self.layers is not None and (not self.layers or any(layer < 0 for layer in self.layers)):
            raise ValueError(f"layers must be a non-empty list of decoder layers >= 0 (or none), got {self.layers}")
        if not self.l2 or not all(v >= 0 for v in self.l2):
            raise ValueError(f"l2 must be a non-empty list of weights >= 0, got {self.l2}")


#: The gate's objective: a logistic regression of the guard's flags on the LLM's states, fitted, not trained.
GATE_OBJECTIVE = "logistic"
#: Objectives that compute their adapter from the prompts (a steering vector, a gate) rather than train it: the
#: training seed does not change them (no initialisation, no batch order), so ``softguard compare`` fits them once.
FITTED_OBJECTIVES = ("diff-of-means", GATE_OBJECTIVE)


@dataclass(frozen=True)
class Method:
    """A method of the registry: its ``AdapterConfig`` sub-section and its class, the objectives it accepts, and
    its learning rate unless ``train.lr`` is given."""

    section: str
    config: type
    objectives: tuple[str, ...]
    lr: float


#: The one registry of methods. Learning rates: soft prompt as DESIGN §8; LoRA in its usual range; a learned
#: steering vector 1e-1, since SmolLM2's residual stream has norm ~160 at the middle layer (a 1e-2 step barely moves
#: it). ``diff-of-means``: a steering vector computed, not trained.
METHODS: dict[str, Method] = {
    "soft-prompt": Method("soft_prompt", SoftPromptConfig, TRAIN_OBJECTIVES, 1e-2),
    "lora": Method("lora", LoRAConfig, TRAIN_OBJECTIVES, 1e-3),
    "steering": Method("steering", SteeringConfig, (*TRAIN_OBJECTIVES, "diff-of-means"), 1e-1),
    "gate": Method("gate", GateConfig, (GATE_OBJECTIVE,), 1e-2),
}


@dataclass
class AdapterConfig:
    """The method and its options; the sub-section of any other method must keep its defaults.

    ``init_from``: a saved adapter of the same method and shape (an adapter directory, or a run directory: its
    ``student/best``) whose weights start the training instead of the method's initialisation (a warm start, e.g.
    distillation after a run trained on the decision alone). Stored as the resolved directory with its content hash
    ``init_from_sha256`` (filled in; a given one must match), so a changed adapter is a changed config."""

    method: str = "soft-prompt"
    soft_prompt: SoftPromptConfig = field(default_factory=SoftPromptConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    init_from: str | None = None
    init_from_sha256: str | None = None

    def __post_init__(self) -> None:
        require(self, {"method": tuple(METHODS)})
        for name, m in METHODS.items():
            section = getattr(self, m.section)
            if name == self.method or section == m.config():
                continue
            changed = next(f.name for f in fields(section) if getattr(section, f.name) != getattr(m.config(), f.name))
            raise ValueError(f"{m.section}.{changed} is a {name} option; it does nothing for method {self.method}")
        self._check_init_from()

    def _check_init_from(self) -> None:
        """Resolve ``init_from`` to an adapter directory of this method and fill in (or check) its hash."""
        if self.init_from is None:
            if self.init_from_sha256 is not None:
                raise ValueError("init_from_sha256 is set without init_from: give the adapter too, or neither")
            return
        path = resolve_adapter_dir(Path(self.init_from).expanduser().resolve())
        try:
            saved = read_adapter_config(path).get("method")
        except AdapterError as e:
            raise ValueError(f"init_from: {e}") from e
        if saved != self.method:
            raise ValueError(f"init_from: {path} holds a {saved!r} adapter; this run trains {self.method!r}")
        sha = dir_sha256(path)
        if self.init_from_sha256 is not None and self.init_from_sha256 != sha:
            raise ValueError(
                f"init_from: {path} has changed (sha256 {sha}, expected {self.init_from_sha256}); "
                "remove init_from_sha256 to use it as it is now"
            )
        self.init_from, self.init_from_sha256 = str(path), sha

    @property
    def options(self) -> Any:
        """The chosen method's sub-section."""
        return getattr(self, METHODS[self.method].section)


@dataclass
class EvalConfig:
    """The held-out evaluation."""

    n: int | None = None  # prompts per evaluation set; None: the whole set
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        require(self, {"n": ">= 1 or None", "max_new_tokens": ">= 1"})


@dataclass
class RunConfig:
    """Everything that determines a run's numbers."""

    name: str = "default"
    seed: int = 0
    gen_batch_size: int = BATCH_SIZE  # prompts per generation batch (teacher samples, dev, evaluation)
    model: ModelConfig = field(default_factory=ModelConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, eval_every=50))
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        """Refuse a value that cannot run, before any work, with the reason: a bad name, a method x objective the
        method cannot train, an objective's own parameters, a reward or response-level system without pairs."""
        if not self.name or self.name in (".", "..") or "/" in self.name or self.name.startswith("."):
            raise ValueError(
                f"the run name must be a plain directory name (no '/', not starting with '.'), got {self.name!r}"
            )
        require(self, {"gen_batch_size": ">= 1"})
        method, objective = self.adapter.method, self.train.objective
        if objective not in METHODS[method].objectives:
            if objective == "diff-of-means":
                raise ValueError(
                    f"diff-of-means computes a steering vector without training; --method {method} needs a "
                    f"training objective: {', '.join(TRAIN_OBJECTIVES)}"
                )
            if objective == GATE_OBJECTIVE:
                raise ValueError(
                    f"{GATE_OBJECTIVE} fits a gate (--method gate); --method {method} trains with one of: "
                    f"{', '.join(METHODS[method].objectives)}"
                )
            raise ValueError(f"unknown objective {objective!r}; choose one of: {', '.join(METHODS[method].objectives)}")
        if objective in TRAIN_OBJECTIVES:  # the objective's own parameters (jsd beta)
            check_objective(self.train)
        if objective in FITTED_OBJECTIVES and self.adapter.init_from is not None:
            raise ValueError(f"{objective} computes its adapter from the prompts; init_from is for a trained adapter")
        if method == "gate" and self.guard.mode != "prompt":
            raise ValueError(
                "the gate decides from the prompt before any response, like a prompt-level guard; a response-level "
                "system refuses by the response, so distil it with another method or use guard mode prompt"
            )
        needs_pairs = objective == "reinforce" or self.guard.mode == "response"
        if needs_pairs and self.guard.path is None and self.guard.pairs <= 0:
            why = "reinforce's reward 1 - u(x, r)" if objective == "reinforce" else "a response-level system"
            raise ValueError(f"{why} needs a guard trained on (prompt, response) pairs; set guard pairs > 0")


@dataclass
class CompareConfig:
    """``softguard compare``: the grid and the evaluation sizes; ``run`` holds what every row shares (model, guard,
    teacher, training). A row takes its method's options from ``run.adapter`` when that is the run's method, else
    the method's defaults, and its method's learning rate (``METHODS``). ``judge``: a further, user-supplied judge
    guard (``path`` None: none), scored at its own ``tau``."""

    name: str = "compare"
    methods: list[str] = field(default_factory=lambda: ["soft-prompt", "lora", "steering"])
    objectives: list[str] = field(default_factory=lambda: ["tv", "kl", "sft", "diff-of-means"])
    seeds: list[int] = field(default_factory=lambda: [0])
    n_jailbreak: int = 128  # jailbreak-wrapped HarmBench test prompts: a seeded sample of (template, prompt) pairs
    n_mmlu: int = 200
    n_cost: int = 8  # prompts per row for the cost measurement (batch 1, fresh process per row)
    cost_max_new_tokens: int = 32
    n_boot: int = 1000
    judge: GuardConfig = field(default_factory=GuardConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="compare"))

    def __post_init__(self) -> None:
        require(
            self,
            {
                "n_jailbreak": ">= 0",
                "n_mmlu": ">= 0",
                "n_cost": ">= 1",
                "cost_max_new_tokens": ">= 1",
                "n_boot": ">= 1",
            },
        )
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be some of {', '.join(METHODS)}, got {self.methods}")
        if not self.objectives or not self.seeds:
            raise ValueError("objectives and seeds must each name at least one")
        if self.run.adapter.init_from is not None:
            raise ValueError("init_from warm-starts one run's adapter; compare trains every row from its method's init")


#: The default guard of both presets, so that they distill the same system (the guard is cached by its config and
#: trained once). Epochs and learning rate chosen on dev (docs/results/guard): 2 epochs at 8e-5 (dev AUROC 0.989, F1
#: 0.948) against 3 at 3e-5 (0.988, 0.941), in two thirds of the time. Its truncation and contexts are GuardConfig's
#: defaults (head-tail, 256), also chosen on dev: AUROC 0.938 -> 0.987.
#: bf16 autocast where the CPU or GPU computes it natively ("auto"): the same dev AUROC and F1 (0.989, 0.949 against
#: 0.948) in 114 s of training against 152 on this CPU (AMX).
PRESET_GUARD = GuardConfig(epochs=2, lr=8e-5, precision="auto", max_length=64, pairs=64, pair_tokens=48)
#: Hard labels: with only 60 steps, distilling the soft mixture (this guard gives benign prompts u ~ 0.05, never 0)
#: taught the student a prompt-independent "I'm sorry" (README, measured).
PRESET_TEACHER = TeacherConfig(hard_labels=True, samples=1, max_new_tokens=48)

PRESETS: dict[str, RunConfig] = {
    # `make demo`: under 10 minutes on a 2-core CPU from an empty cache (9 min 48 s measured; README, Wall time).
    "quick": RunConfig(
        name="quick",
        guard=PRESET_GUARD,
        teacher=PRESET_TEACHER,
        # 64 dev prompts per class: with 16, one prompt is 3 points and the kept step was noise (docs/results/fidelity)
        data=DataConfig(n_train_harmful=160, n_train_benign=160, n_dev=64),
        eval=EvalConfig(n=48, max_new_tokens=32),
        # one dev evaluation, after the last step: in the six quick runs of docs/results/fidelity/demo* since
        # session 6 a step-30 evaluation never chose its step, and each costs ~47 s here (docs/results/fidelity)
        train=TrainConfig(steps=60, eval_every=60, dev_max_new_tokens=10),
    ),
    # 40 minutes on a 2-core CPU once make demo has cached the guard (39 min 41 s measured 2026-12-07 with the dev
    # set cached too, 80 s more without; README, the full preset): the quick preset's system, the whole train split
    # (5,067 prompts; with the teacher targets kept by the sampling pass their base samples take 16 minutes here),
    # 4x the quick preset's steps, 2x its dev set and 128 prompts per evaluation set. On the same 240 steps it
    # copied the system more closely than 640 + 640 prompts did, on dev and on test (docs/results/fidelity, session
    # 26). RunConfig()'s own defaults are DESIGN's (soft labels, 2 samples of 64 tokens, 400 steps, whole dev and
    # test sets), for a GPU.
    "full": RunConfig(
        name="full",
        guard=PRESET_GUARD,
        teacher=PRESET_TEACHER,
        data=DataConfig(n_train_harmful=None, n_train_benign=None, n_dev=128),
        eval=EvalConfig(n=128, max_new_tokens=32),
        train=TrainConfig(steps=240, eval_every=80, dev_max_new_tokens=10),
    ),
}

COMPARE_PRESETS: dict[str, CompareConfig] = {
    # Sized for a 2-core CPU: three methods, each with the quick preset (its training and its 48 prompts per set).
    "quick": CompareConfig(
        name="compare-quick",
        objectives=["tv", "diff-of-means"],
        n_jailbreak=48,
        n_mmlu=100,
        n_cost=4,
        run=replace(PRESETS["quick"], name="compare-quick"),
    ),
    # Every row with the full preset's system, data and training (`softguard run`'s default); `--seeds 3` for spreads.
    "full": CompareConfig(run=replace(PRESETS["full"], name="compare")),
}

C = TypeVar("C")


def update(cfg: C, data: dict[str, Any]) -> C:
    """``cfg`` with ``data`` laid over it (module docstring): a nested dict of sections, as parsed from TOML; a
    section may also be given as its dataclass. Validated (every ``__post_init__`` runs); ``cfg`` is not changed."""
    if isinstance(cfg, RunConfig):
        data = _method_lr(data)
    elif isinstance(cfg, CompareConfig) and isinstance(data.get("run"), dict):
        data = {**data, "run": _method_lr(data["run"])}
    return _build(cfg, data, "")


def preset(preset_name: str, **overrides: Any) -> RunConfig:
    """A copy of preset ``preset_name`` with ``overrides`` (``update``): top-level values, and sections as dicts
    of their fields, e.g. ``preset("quick", seed=1, guard={"pairs": 8}, train={"steps": 7})``."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    return update(PRESETS[preset_name], overrides)


def compare_preset(preset_name: str, **overrides: Any) -> CompareConfig:
    """A copy of compare preset ``preset_name`` with ``overrides`` (``update``; the shared run as ``run={...}``)."""
    if preset_name not in COMPARE_PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of: {', '.join(COMPARE_PRESETS)}")
    return update(COMPARE_PRESETS[preset_name], overrides)


def load(path: str | Path, base: C | None = None) -> C:
    """The config in TOML file ``path`` laid over ``base`` (default: ``RunConfig()``, the full preset's values)."""
    p = Path(path).expanduser()
    data = read_toml(p)
    try:
        return update(RunConfig() if base is None else base, data)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """``cfg`` as a nested dict of plain values (None kept; ``dumps`` writes it as ``"none"``)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in fields(cfg)}


def dumps(cfg: Any) -> str:
    """``cfg`` (a config dataclass or ``to_dict``'s dict) as TOML: top-level values first, then one table per
    section, ``[a.b]`` for nested ones. Writes only what configs hold: str, int, float, bool, None, lists, tables."""
    data = cfg if isinstance(cfg, dict) else to_dict(cfg)
    lines: list[str] = []

    def table(d: dict[str, Any], path: list[str]) -> None:
        values = [(k, v) for k, v in d.items() if not isinstance(v, dict)]
        if path and (values or not d):
            lines.extend(["", f"[{'.'.join(path)}]"])
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values)
        for k, v in d.items():
            if isinstance(v, dict):
                table(v, [*path, k])

    table(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------------------
# internals


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return to_dict(value)
    return list(value) if isinstance(value, list | tuple) else value


def _toml_value(v: Any) -> str:
    if v is None:
        return json.dumps(NONE)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return json.dumps(v).replace("\x7f", "\\u007f")  # JSON's escapes are TOML's; TOML also escapes DEL
    if isinstance(v, list):
        return "[" + ", ".join(map(_toml_value, v)) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to TOML")


def _method_lr(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the method's learning rate when it names a method and no ``train.lr``, and with its objective
    when the method has only one (the gate's ``logistic``) and ``data`` names none."""
    adapter, train = data.get("adapter"), data.get("train")
    method = adapter.get("method") if isinstance(adapter, dict) else getattr(adapter, "method", None)
    if method not in METHODS or not (train is None or isinstance(train, dict)):
        return data
    train = dict(train or {})
    train.setdefault("lr", METHODS[method].lr)
    if len(METHODS[method].objectives) == 1:
        train.setdefault("objective", METHODS[method].objectives[0])
    return {**data, "train": train}


def _build(base: C, data: Any, section: str) -> C:
    """A ``type(base)`` with ``data``'s keys laid over ``base``'s values, checked key by key, then constructed."""
    where = f"[{section}]" if section else "the top level"
    if isinstance(data, type(base)):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a table, got {data!r}")
    names = [f.name for f in fields(base)]
    for key in data:
        if key not in names:
            raise ValueError(f"unknown key {key!r} in {where}; its keys are: {', '.join(names)}")
    hints = typing.get_type_hints(type(base))
    values = {}
    for name in names:
        current = getattr(base, name)
        if name not in data:
            values[name] = current
        elif is_dataclass(current):
            values[name] = _build(current, data[name], f"{section}.{name}".lstrip("."))
        else:
            values[name] = _check_type(data[name], hints[name], f"{where} {name}")
    try:
        return type(base)(**values)
    except ValueError as e:
        raise ValueError(f"{where}: {e}" if section else str(e)) from e


def _check_type(value: Any, tp: Any, what: str) -> Any:
    """``value`` as type ``tp`` (an int is a float where a float is expected; ``"none"`` is None where None is
    allowed), or ``ValueError`` saying what was expected."""
    options = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
    if type(None) in options and (value is None or value == NONE):
        return None
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is list:
            if isinstance(value, list):
                (item,) = typing.get_args(option)
                return [_check_type(v, item, f"{what}[{i}]") for i, v in enumerate(value)]
            continue
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, option) and not (option is int and isinstance(value, bool)):
            return value
    expected = " or ".join(_type_name(o) for o in options)
    raise ValueError(f"{what} must be {expected}, got {value!r}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return f'"{NONE}"'
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))
