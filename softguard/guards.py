"""The teacher's safety classifier: a guard g that returns u = P(unsafe) in [0, 1] (DESIGN §2).

A prompt-level guard reads the prompt x and gives u(x); a response-level guard reads the pair (x, r) and gives
u(x, r). The deployed system flags when u >= tau (tau = 0.5 by default). A trained guard's u is calibrated on the
dev split (``fit_calibration``, Platt scaling), so tau = 0.5 is the threshold chosen on dev.

No ready harmful-request classifier ships in any package (DESIGN §5), so the default guard is one we train:
``EncoderGuard`` is a BERT-like encoder (all-MiniLM-L6-v2 by default) with masked mean pooling (as in
sentence-transformers), dropout and a linear head,

    h = sum_t m_t H_t / sum_t m_t,   u = sigmoid(w . dropout(h) + b),

where H in R^{T x d} are the encoder's last hidden states and m the attention mask. A response is encoded as
the tokenizer's text pair ``[CLS] prompt [SEP] response [SEP]``, truncated longest-first to ``max_length``
tokens. A prompt longer than its share of the window is cut by ``truncation``: ``"right"`` keeps its beginning (the
tokenizer's own truncation); ``"head-tail"`` keeps its first quarter (``HEAD_SHARE``) and fills the rest from its end,
where a long prompt's request usually is (a document or a role-play preamble, then the question: HarmBench's
contextual behaviours put a 100-900-token context before a one-line request). A response always keeps its beginning.

A trained guard is saved as a directory: ``model.safetensors`` (encoder + head), ``guard_config.json`` (the
backbone config, head size, max_length, training metadata and the sha256 of every other file) and the tokenizer
files. Loading checks every recorded file and raises ``GuardError`` naming a missing or changed one rather than
guessing (a guard without its tokenizer files would otherwise load with a stand-in tokenizer that reads every word
as [UNK]). Guards saved before per-file hashes (only ``weights_sha256``) still load, with a warning, when their
tokenizer's vocabulary matches the encoder's; re-save or retrain them to have every file checked.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from . import assets
from .checks import require
from .io import atomic_dir, changed_file, file_hashes
from .models import resolve_precision
from .train_config import PRECISIONS

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "guard_config.json"
FORMAT = "softguard-encoder-guard/1"
RETRAIN_HINT = "retrain the guard with `softguard guard train` (or point to another guard directory)"


class GuardError(RuntimeError):
    """A guard directory is missing, incomplete or corrupt."""


@runtime_checkable
class Guard(Protocol):
    def score(self, prompts: list[str], responses: list[str] | None = None) -> torch.Tensor:
        """P(unsafe) in [0, 1], float tensor [N]: u(x_i) when ``responses`` is None, else u(x_i, r_i)."""
        ...


# ------------------------------------------------------------------------------------------------------------
# the model


POOLINGS = ("all", "response")
#: How a prompt longer than the window is cut (module docstring); "right" is what guards saved without the field did.
TRUNCATIONS = ("right", "head-tail")
#: head-tail: the share of the prompt's tokens taken from its beginning.
HEAD_SHARE = 0.25


class EncoderGuard(nn.Module):
    """Encoder + masked mean pooling + dropout + Linear(d, 1): ``forward`` gives logits [B], ``score`` u.

    ``pooling="all"`` averages the hidden states of every token, prompt and response alike; ``"response"``
    averages only the response's tokens (segment 1 of a (prompt, response) pair; they attend to the prompt), so a
    long answer does not dilute the prompt and a short refusal is not read as the prompt alone. Rows without a
    response are pooled over all their tokens either way, so prompt-level scores keep the same form.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        dropout: float = 0.1,
        max_length: int = 256,
        metadata: dict[str, Any] | None = None,
        seed: int = 0,
        pooling: str = "all",
        calibration: tuple[float, float] = (1.0, 0.0),
        truncation: str = "right",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise GuardError(f"unknown guard pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if truncation not in TRUNCATIONS:
            raise GuardError(f"unknown guard truncation {truncation!r}; choose one of: {', '.join(TRUNCATIONS)}")
        self.pooling, self.truncation = pooling, truncation
        self.calibration = (float(calibration[0]), float(calibration[1]))  # (a, b): u = sigmoid(a * logit + b)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, 1)
        # never longer than the encoder's position table (MiniLM: 512)
        self.max_length = min(max_length, getattr(encoder.config, "max_position_embeddings", max_length))
        self.metadata = dict(metadata or {})
        g = torch.Generator().manual_seed(seed)  # the head's init depends on `seed` only, not on global RNG
        std = getattr(encoder.config, "initializer_range", 0.02)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * std)
            self.head.bias.zero_()
        self.eval()  # like a Hugging Face model: eval mode until training asks otherwise

    @classmethod
    def from_backbone(
        cls,
        path_or_dir: str | Path = "minilm",
        dropout: float = 0.1,
        max_length: int = 256,
        seed: int = 0,
        pooling: str = "all",
        truncation: str = "right",
    ) -> EncoderGuard:
        """A fresh guard (untrained head, seeded by ``seed``) on a pretrained encoder: ``"minilm"`` (the
        packaged all-MiniLM-L6-v2), a local directory, or a Hugging Face model id."""
        src = assets.path("minilm") if str(path_or_dir) == "minilm" else path_or_dir
        try:
            encoder = AutoModel.from_pretrained(src)
            tokenizer = AutoTokenizer.from_pretrained(src)
        except OSError as e:
            raise GuardError(f"could not load the guard backbone {str(src)!r}: {e}") from e
        return cls(
            encoder,
            tokenizer,
            dropout=dropout,
            max_length=max_length,
            seed=seed,
            pooling=pooling,
            truncation=truncation,
        )

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def encode(
        self, prompts: list[str], responses: list[str | None] | None = None, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenize prompts, or (prompt, response) pairs where a response is given; padded tensors [B, T]."""
        responses = responses if responses is not None else [None] * len(prompts)
        if len(responses) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        n = min(max_length or self.max_length, self.max_length)
        pairs = zip(prompts, responses, strict=True)
        if self.truncation == "head-tail":
            pairs = ((self._head_tail(p, r, n), r) for p, r in pairs)
        feats = [self.tokenizer(p, r, truncation=True, max_length=n) for p, r in pairs]
        return dict(self.tokenizer.pad(feats, return_tensors="pt"))

    def _head_tail(self, prompt: str, response: str | None, n: int) -> str:
        """``prompt`` cut to its share of an ``n``-token window: its first ``HEAD_SHARE`` and its last tokens,
        joined by a space at token boundaries (the tokenizer's offsets), so that the tokenizer's own longest-first
        truncation then only has to cut the response. The prompt's share is what longest-first would leave it:
        the window less the special tokens and the response, but at least half of that (rounded down, as the fast
        tokenizers' longest-first gives the odd token to the response)."""
        room = n - self.tokenizer.num_special_tokens_to_add(pair=response is not None)
        if response is not None:
            n_response = len(self.tokenizer(response, add_special_tokens=False, verbose=False)["input_ids"])
            room = max(room - n_response, room // 2)
        # verbose=False: the whole prompt is tokenized on purpose, without the too-long-for-the-model warning
        tokens = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        spans = tokens["offset_mapping"]
        if len(spans) <= room or room < 2:
            return prompt
        head = max(1, int(HEAD_SHARE * room))
        return prompt[: spans[head - 1][1]] + " " + prompt[spans[len(spans) - (room - head)][0] :]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B] from token ids [B, T]: head(mean of the pooled tokens' hidden states)."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pool = attention_mask
        if self.pooling == "response" and token_type_ids is not None:
            response = attention_mask * token_type_ids  # [B, T], 1 on the response's tokens
            pool = torch.where(response.sum(1, keepdim=True) > 0, response, attention_mask)
        m = pool.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B, d]
        return self.head(self.dropout(pooled)).squeeze(-1).float()

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(**{k: v.to(self.device) for k, v in batch.items()})

    def score(self, prompts: list[str], responses: list[str] | None = None, batch_size: int = 64) -> torch.Tensor:
        """u = sigmoid(a * logit + b) = P(unsafe) in [0, 1], CPU float32 [N], with (a, b) = ``calibration``
        ((1, 0) until ``fit_calibration`` sets it on dev); eval mode, no autograd, batches of ``batch_size`` texts of
        similar length (padding is masked out, so the grouping changes u only by float error)."""
        was_training, (a, b) = self.training, self.calibration
        self.eval()
        pairs = responses if responses is not None else [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(pairs[i] or ""))
        u = torch.empty(len(prompts))
        with torch.inference_mode():
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                logit = self.logits(self.encode([prompts[j] for j in idx], [pairs[j] for j in idx]))
                u[idx] = torch.sigmoid(a * logit + b).float().cpu()
        self.train(was_training)
        return u

    # --------------------------------------------------------------------------------------------------------
    # save / load

    def save_pretrained(self, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write the guard to ``out_dir`` atomically: build it in a temp dir next to it, then swap it in.

        ``metadata`` (JSON-serialisable, e.g. the training history) replaces ``self.metadata`` when given."""
        if metadata is not None:
            self.metadata = dict(metadata)
        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
            self.tokenizer.save_pretrained(tmp)
            config = {
                "format": FORMAT,
                "backbone_config": self.encoder.config.to_dict(),
                "hidden_size": self.head.in_features,
                "head_outputs": self.head.out_features,
                "dropout": self.dropout.p,
                "max_length": self.max_length,
                "pooling": self.pooling,
                "truncation": self.truncation,
                "calibration": list(self.calibration),
                "files": file_hashes(tmp),  # weights and tokenizer files, each checked at load
                "metadata": self.metadata,
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, guard_dir: str | Path) -> EncoderGuard:
        """Rebuild a guard saved by ``save_pretrained``; any missing or corrupt file raises ``GuardError``."""
        d = Path(guard_dir)
        if not d.is_dir():
            raise GuardError(f"guard directory {d} does not exist; {RETRAIN_HINT}")
        config = _read_config(d / CONFIG_FILE)
        problem = changed_file(d, config.get("files") or {WEIGHTS_FILE: config["weights_sha256"]})
        if problem:
            raise GuardError(f"{problem}; restore the guard directory as saved, or {RETRAIN_HINT}")
        state = _read_weights(d / WEIGHTS_FILE)
        encoder = _build_encoder(config["backbone_config"], d / CONFIG_FILE)
        try:
            tokenizer = AutoTokenizer.from_pretrained(d)
        except (OSError, ValueError) as e:
            raise GuardError(f"the tokenizer files in {d} are unreadable ({e}); {RETRAIN_HINT}") from e
        if "files" not in config:
            _check_legacy_tokenizer(d, tokenizer, encoder)
        pooling = config.get("pooling", "all")  # guards saved before pooling was an option pooled all tokens
        calibration = config.get("calibration", (1.0, 0.0))  # guards saved before calibration: the raw sigmoid
        guard = cls(
            encoder,
            tokenizer,
            config["dropout"],
            config["max_length"],
            config.get("metadata"),
            pooling=pooling,
            calibration=calibration,
            truncation=config.get("truncation", "right"),  # guards saved before the option kept the beginning
        )
        try:
            guard.load_state_dict(state)
        except RuntimeError as e:  # missing / unexpected / mis-shaped tensors
            raise GuardError(f"{d / WEIGHTS_FILE} does not match {CONFIG_FILE} ({e}); {RETRAIN_HINT}") from e
        return guard


def _read_config(p: Path) -> dict[str, Any]:
    try:
        config = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise GuardError(f"{p} is missing, so this is not a saved guard; {RETRAIN_HINT}") from e
    except (OSError, ValueError) as e:
        raise GuardError(f"{p} is corrupt ({e}); {RETRAIN_HINT}") from e
    keys = ("backbone_config", "dropout", "max_length")
    if (
        not isinstance(config, dict)
        or config.get("format") != FORMAT
        or any(k not in config for k in keys)
        or ("files" not in config and "weights_sha256" not in config)
    ):
        raise GuardError(f"{p} is not a {FORMAT} config (need keys {', '.join(keys)}, files); {RETRAIN_HINT}")
    return config


def _check_legacy_tokenizer(d: Path, tokenizer: PreTrainedTokenizerBase, encoder: PreTrainedModel) -> None:
    """A guard saved before per-file hashes: its tokenizer files are unchecked, so refuse a tokenizer whose
    vocabulary differs from the encoder's (missing files load as a stand-in tokenizer) and warn."""
    if tokenizer.vocab_size != encoder.config.vocab_size:
        raise GuardError(
            f"the tokenizer in {d} has {tokenizer.vocab_size} tokens but the guard's encoder "
            f"{encoder.config.vocab_size} (are its tokenizer files missing?); {RETRAIN_HINT}"
        )
    warnings.warn(
        f"{d} was saved before guards recorded a sha256 per file: only its weights are checked; retrain it "
        "(`softguard guard train`) to have every file checked",
        stacklevel=3,
    )


def _build_encoder(backbone: dict[str, Any], where: Path) -> PreTrainedModel:
    """An encoder with random weights from its config dict (the weights come from model.safetensors)."""
    try:
        cfg = AutoConfig.for_model(**backbone)
    except (KeyError, TypeError, ValueError) as e:
        raise GuardError(f"the backbone config in {where} is invalid ({e}); {RETRAIN_HINT}") from e
    return AutoModel.from_config(cfg)


def _read_weights(p: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(p))
    except (SafetensorError, OSError) as e:
        raise GuardError(f"{p} is corrupt ({e}); {RETRAIN_HINT}") from e


# ------------------------------------------------------------------------------------------------------------
# off-the-shelf guards (any Hugging Face model; never trust_remote_code)


class HFClassifierGuard:
    """Any sequence-classification guard: u = softmax(logits)[unsafe], or sigmoid(logit) for a 1-logit head.

    ``unsafe_label`` is a label name from the model's ``id2label`` (case-insensitive) or an index. A response is
    encoded as the tokenizer's text pair (prompt, response).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        unsafe_label: str | int = "unsafe",
        max_length: int = 512,
        batch_size: int = 32,
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
        if isinstance(unsafe_label, int):
            self.unsafe_index = unsafe_label
        elif unsafe_label.lower() in labels:
            self.unsafe_index = labels[unsafe_label.lower()]
        else:
            raise GuardError(f"the guard has no label {unsafe_label!r}; its labels are {sorted(labels)}")

    @classmethod
    def from_pretrained(cls, name_or_dir: str, unsafe_label: str | int = "unsafe", **kw: Any) -> HFClassifierGuard:
        model = AutoModelForSequenceClassification.from_pretrained(name_or_dir, use_safetensors=True)
        return cls(model, AutoTokenizer.from_pretrained(name_or_dir), unsafe_label, **kw)

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str] | None = None) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            pair = None if responses is None else responses[i : i + self.batch_size]
            enc = self.tokenizer(
                prompts[i : i + self.batch_size],
                pair,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.model.device)
            logits = self.model(**enc).logits.float()
            probs = torch.sigmoid(logits[:, 0]) if logits.shape[-1] == 1 else logits.softmax(-1)[:, self.unsafe_index]
            out.append(probs.cpu())
        return torch.cat(out) if out else torch.zeros(0)


class CausalLMGuard:
    """A generative guard in the style of Llama Guard / ShieldGemma.

    The conversation (user prompt, and the assistant response when given) is rendered with the guard's own chat
    template; u = p(unsafe) / (p(unsafe) + p(safe)) at the first token where the verdict words ``unsafe_token`` and
    ``safe_token`` differ ("unsafe"/"safe" for Llama Guard, "Yes"/"No" for ShieldGemma). Their common leading
    tokens are appended to the template first: Llama Guard 3's template ends at the assistant header and its
    answer starts with a blank line, so its verdicts are "\\n\\nunsafe" / "\\n\\nsafe" (u is then read after "\\n\\n").
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        unsafe_token: str = "unsafe",
        safe_token: str = "safe",
        batch_size: int = 8,
    ):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        if tokenizer.pad_token_id is None:  # batches are left-padded; the pad token itself is masked out
            tokenizer.pad_token = tokenizer.eos_token
        unsafe, safe = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (unsafe_token, safe_token))
        common = next((i for i, (a, b) in enumerate(zip(unsafe, safe, strict=False)) if a != b), None)
        if common is None:
            raise GuardError(
                f"{unsafe_token!r} and {safe_token!r} must differ in a token (neither a prefix of the other)"
            )
        self.verdict_prefix = torch.tensor(unsafe[:common], dtype=torch.long)  # [c], appended to every conversation
        self.verdict_ids = torch.tensor([unsafe[common], safe[common]])

    @classmethod
    def from_pretrained(cls, name_or_dir: str, **kw: Any) -> CausalLMGuard:
        model = AutoModelForCausalLM.from_pretrained(name_or_dir, use_safetensors=True)
        return cls(model, AutoTokenizer.from_pretrained(name_or_dir), **kw)

    def render(self, prompt: str, response: str | None = None) -> str:
        """The guard's own template over the conversation, ending where its verdict starts."""
        chat = [{"role": "user", "content": prompt}]
        if response is not None:
            chat.append({"role": "assistant", "content": response})
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str] | None = None) -> torch.Tensor:
        texts = [self.render(p, None if responses is None else responses[i]) for i, p in enumerate(prompts)]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                padding_side="left",
                add_special_tokens=False,
                return_tensors="pt",
            )
            prefix = self.verdict_prefix.expand(len(enc["input_ids"]), -1)  # [B, c]: rows end together (left padding)
            ids = torch.cat([enc["input_ids"], prefix], 1).to(self.model.device)
            mask = torch.cat([enc["attention_mask"], torch.ones_like(prefix)], 1).to(self.model.device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)  # padding-independent positions
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
            out.append(logits.float()[:, self.verdict_ids.to(logits.device)].softmax(-1)[:, 0].cpu())
        return torch.cat(out) if out else torch.zeros(0)


def guard_kind(path: str | Path) -> str:
    """The kind of the guard at ``path``: ``softguard`` (a directory with guard_config.json), ``classifier`` (a
    config.json whose architecture ends in ForSequenceClassification) or ``causal-lm`` (ForCausalLM). A Hugging Face
    id is read from the local Hugging Face cache; one not there needs its kind given (``GuardConfig.kind``)."""
    from huggingface_hub import try_to_load_from_cache

    from .models import HUB_ID

    d = Path(path).expanduser()
    if not d.is_dir() and HUB_ID.fullmatch(str(path)):
        cached = try_to_load_from_cache(str(path), "config.json")
        d = Path(cached).parent if isinstance(cached, str) else d
    if (d / CONFIG_FILE).is_file():
        return "softguard"
    hint = "give its kind: --guard-kind softguard|classifier|causal-lm (config: guard.kind)"
    if not (d / "config.json").is_file():
        where = "is not a local directory or in the Hugging Face cache" if not d.is_dir() else "has no config.json"
        raise GuardError(f"cannot tell what kind of guard {str(path)!r} is: it {where}; {hint}")
    try:
        architectures = json.loads((d / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError) as e:
        raise GuardError(f"{d / 'config.json'} is unreadable ({e}); {hint}") from e
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "classifier"
        if arch.endswith("ForCausalLM"):
            return "causal-lm"
    raise GuardError(
        f"{d / 'config.json'} names no sequence-classification or causal-LM architecture {architectures}; {hint}"
    )


#: Guard kinds: softguard's own trained guard (a directory with guard_config.json), any Hugging Face
#: sequence-classification guard, or a Llama Guard / ShieldGemma-style causal LM (``load_guard``).
GUARD_KINDS = ("softguard", "classifier", "causal-lm")
GUARD_MODES = ("prompt", "response")


@dataclass
class GuardConfig:
    """The system's guard: a given one (``path``, of ``kind``), or softguard's default guard trained into the run
    (``path`` None; then ``backbone`` ... ``pooling`` say how). Its ``mode`` and threshold ``tau`` define the system.

    ``kind``: ``softguard`` | ``classifier`` | ``causal-lm``; None: detected from the directory (``guards.guard_kind``;
    a Hugging Face id needs the kind unless it is in the local Hugging Face cache). ``unsafe_label`` (classifier): a
    label name of the model's ``id2label`` or an index; ``unsafe_token`` / ``safe_token`` (causal LM): the verdict
    words whose first tokens are compared ("unsafe"/"safe" for Llama Guard, "Yes"/"No" for ShieldGemma)."""

    path: str | None = None
    kind: str | None = None
    unsafe_label: str | int = "unsafe"
    unsafe_token: str = "unsafe"
    safe_token: str = "safe"
    mode: str = "prompt"  # the guard reads the prompt, or the prompt and the response
    tau: float = 0.5  # the system flags when u >= tau
    # softguard's default guard, trained when path is None
    backbone: str = "minilm"
    epochs: int = 2
    lr: float = 3e-5  # its AdamW learning rate (GuardTrainConfig)
    precision: str = "fp32"  # its training's forward and backward: fp32, bf16 autocast, or auto (GuardTrainConfig)
    max_length: int = 128
    pairs: int = 400  # train prompts per class whose (prompt, base response) pairs also train the guard
    pair_tokens: int = 64  # new tokens of those base responses (the guard's own: a teacher setting never changes it)
    pooling: str = "all"  # EncoderGuard pooling: mean over all tokens, or over a pair's response tokens
    truncation: str = "head-tail"  # a prompt longer than max_length: keep its head and tail, or its beginning
    contexts: int = 256  # train prompts per class also trained under a long passage (data.contextual_prompts)

    def __post_init__(self) -> None:
        require(
            self,
            {
                "kind": (*GUARD_KINDS, None),
                "mode": GUARD_MODES,
                "tau": "(0, 1)",
                "epochs": ">= 0",
                "lr": "> 0",
                "precision": PRECISIONS,
                "max_length": ">= 5",  # [CLS] prompt [SEP] response [SEP]: a token of each
                "pairs": ">= 0",
                "pair_tokens": ">= 1",
                "contexts": ">= 0",
                "pooling": POOLINGS,
                "truncation": TRUNCATIONS,
            },
        )
        if self.path is not None:
            local = Path(self.path).expanduser()
            if local.is_dir():  # a directory is recorded absolute, so the saved config runs from anywhere
                self.path = str(local.resolve())
        elif self.kind not in (None, "softguard"):
            raise ValueError(f"kind {self.kind!r} needs a path (a directory or Hugging Face id of that guard)")
        given = {"unsafe_label": "classifier", "unsafe_token": "causal-lm", "safe_token": "causal-lm"}
        for name, kind in given.items():
            if getattr(self, name) == getattr(GuardConfig, name):
                continue
            if self.path is None or self.kind not in (None, kind):
                what = f"kind {self.kind!r}" if self.path else "softguard's trained guard (no path)"
                raise ValueError(f"{name} is an option of a {kind} guard; it does nothing for {what}")
        if self.unsafe_token == self.safe_token:
            raise ValueError(f"unsafe_token and safe_token must differ, both are {self.safe_token!r}")


def load_guard(cfg: GuardConfig, device: str | torch.device = "cpu") -> Guard:
    """The guard ``cfg.path`` names, of ``cfg.kind`` (None: ``guard_kind``), on ``device``: an ``EncoderGuard``,
    an ``HFClassifierGuard`` reading ``cfg.unsafe_label`` or a ``CausalLMGuard`` comparing ``cfg.unsafe_token`` and
    ``cfg.safe_token``. Loading never runs the model's own code (no ``trust_remote_code``); a hub id not in the local
    Hugging Face cache is downloaded like a model (``models.resolve_model``)."""
    from .models import ModelError, resolve_model

    if cfg.path is None:
        raise GuardError("no guard path given (a run trains softguard's own guard into <run>/guard instead)")
    kind = cfg.kind or guard_kind(cfg.path)
    if kind == "softguard":
        return EncoderGuard.from_pretrained(cfg.path).to(device)
    try:
        src = resolve_model(cfg.path)
        if kind == "classifier":
            guard: HFClassifierGuard | CausalLMGuard = HFClassifierGuard.from_pretrained(src, cfg.unsafe_label)
        else:
            guard = CausalLMGuard.from_pretrained(src, unsafe_token=cfg.unsafe_token, safe_token=cfg.safe_token)
    except (OSError, ValueError, ModelError) as e:
        raise GuardError(f"could not load the {kind} guard {cfg.path!r}: {e}") from e
    guard.model.to(device).requires_grad_(False)
    return guard


# ------------------------------------------------------------------------------------------------------------
# training


@dataclass
class GuardTrainConfig:
    """Full fine-tune: AdamW (no decay on biases / norms), linear warmup then decay to 0, grad clipping."""

    epochs: int = 3
    lr: float = 3e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    max_length: int = 128
    seed: int = 0
    max_grad_norm: float = 1.0
    group_by_length: bool = True  # batches of texts of similar length (``length_grouped_batches``)
    # the encoder's forward and backward under bf16 autocast ("auto": where the device computes bf16 natively,
    # ``models.resolve_precision``); the head's loss, the weights and AdamW stay float32, scoring is float32
    precision: str = "fp32"

    def __post_init__(self) -> None:
        """Refuse a value that cannot train (epochs 0 saves the backbone with an untrained head)."""
        require(
            self,
            {
                "epochs": ">= 0",
                "lr": "> 0",
                "batch_size": ">= 1",
                "weight_decay": ">= 0",
                "warmup_frac": "[0, 1]",
                "max_length": ">= 5",
                "max_grad_norm": "> 0",
                "precision": PRECISIONS,
            },
        )


def check_tau(tau: float) -> None:
    """Raise ``ValueError`` unless 0 < tau < 1 (the guard flags when u >= tau; u is a probability)."""
    if not 0 < tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau} (the guard flags a prompt when P(unsafe) >= tau)")


def _optimizer(guard: nn.Module, cfg: GuardTrainConfig) -> torch.optim.AdamW:
    params = [p for p in guard.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel per step over all of MiniLM's 22.7M parameters instead of a loop of small ops per tensor,
    # which on CPU took a sixth of the guard's training (py-spy, 2026-12-07); the same update up to float rounding
    fused = params[0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """lr multiplier: step / warmup during warmup, then (total - step) / (total - warmup) down to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def length_grouped_batches(
    lengths: list[int], batch_size: int, gen: torch.Generator, group: bool = True, pool: int = 50
) -> list[list[int]]:
    """One epoch's batches of indices into ``lengths``: a seeded permutation cut into batches; with ``group``, each
    run of ``pool`` batches is first sorted by length and the batches are then shuffled, so a batch holds texts of
    similar length (little padding: on the quick guard's train split, 3x fewer tokens) while every epoch still sees
    every text once in a random batch order."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    if not group:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    for c in range(0, len(order), batch_size * pool):
        chunk = sorted(order[c : c + batch_size * pool], key=lambda j: lengths[j])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def train_guard(
    guard: EncoderGuard,
    texts: list[str],
    labels: list[float] | torch.Tensor,
    config: GuardTrainConfig | None = None,
    pairs: list[str | None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``guard`` in place on (text[, pair]) -> label (1 = unsafe) and return the history.

    Loss: BCE-with-logits with pos_weight = n_neg / n_pos, so both classes weigh the same in total. The run is
    deterministic given ``config.seed`` on a given device: the batch order comes from a seeded
    ``torch.Generator`` and the global RNG (dropout) is seeded with ``torch.manual_seed(seed)``.
    Returns {"loss": mean loss per epoch, "steps", "seconds", "n", "n_positive", "pos_weight", "config"}.
    """
    cfg = config or GuardTrainConfig()
    y = torch.as_tensor(labels, dtype=torch.float32)
    if y.shape != (len(texts),) or (pairs is not None and len(pairs) != len(texts)):
        raise ValueError(f"need one label (and pair) per text: {len(texts)} texts, labels {tuple(y.shape)}")
    n_pos = int((y >= 0.5).sum())
    if n_pos in (0, len(y)):
        raise ValueError(f"need both classes to train a guard; got {n_pos} unsafe of {len(y)}")
    pos_weight = torch.tensor((len(y) - n_pos) / n_pos, device=guard.device)
    y = y.to(guard.device)
    steps_per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    opt = _optimizer(guard, cfg)
    warmup = round(cfg.warmup_frac * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, warmup))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    lengths = [len(t) + len(r or "") for t, r in zip(texts, pairs or [None] * len(texts), strict=True)]  # characters
    history: dict[str, Any] = {"loss": [], "n": len(y), "n_positive": n_pos, "pos_weight": pos_weight.item()}
    bf16 = resolve_precision(cfg.precision, guard.device) == "bf16"
    guard.train()
    t0 = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task("guard", total=total, loss=float("nan"))
        for epoch in range(cfg.epochs):
            losses = []
            for idx in length_grouped_batches(lengths, cfg.batch_size, gen, cfg.group_by_length):
                pair = None if pairs is None else [pairs[j] for j in idx]
                batch = guard.encode([texts[j] for j in idx], pair, cfg.max_length)
                with torch.autocast(guard.device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = guard.logits(batch)  # float32 [B] (``forward``)
                loss = F.binary_cross_entropy_with_logits(logits, y[idx], pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(guard.parameters(), cfg.max_grad_norm)
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.update(task, advance=1, loss=losses[-1], description=f"guard {epoch + 1}/{cfg.epochs}")
            history["loss"].append(sum(losses) / len(losses))
    guard.eval()
    history |= {"steps": total, "seconds": time.perf_counter() - t0, "config": asdict(cfg)}
    return history


def fit_calibration(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising the BCE of sigmoid(a * logit + b) against ``labels`` (1 = unsafe), each
    class weighted to half the total so the fit does not depend on the held-out set's class balance. logits,
    labels: [N]. The map is increasing when a > 0, so AUROC is unchanged; it moves the decision threshold
    u >= 0.5 to the raw logit -b / a, where the held-out classes' weighted likelihood is best, and makes u a
    calibrated probability (DESIGN §9: agreement is capped where the guard is unsure, so its u should mean what
    it says)."""
    x, y = logits.detach().double().cpu(), labels.detach().double().cpu()
    n_pos = float((y >= 0.5).sum())
    if n_pos in (0.0, float(len(y))):
        raise ValueError(f"calibration needs both classes; got {int(n_pos)} unsafe of {len(y)}")
    w = torch.where(y >= 0.5, 0.5 / n_pos, 0.5 / (len(y) - n_pos))
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (w * F.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y, reduction="none")).sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, b = ab.detach().tolist()
    return a, b


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


# ------------------------------------------------------------------------------------------------------------
# evaluation


def auroc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve by Mann–Whitney U: (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), where
    R_pos is the sum of the positives' ranks and tied scores share their average rank; NaN if a class is
    empty."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels) >= 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each tie group's last member
    ranks = (last - (counts - 1) / 2.0)[inverse]  # average rank within each tie group
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(
    scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, tau: float = 0.5
) -> dict[str, float]:
    """AUROC and, flagging score >= tau, precision, recall, F1 and accuracy (0.0 where a ratio is 0 / 0)."""
    check_tau(tau)
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels) >= 0.5
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    flag = s >= tau
    tp, fp, fn = int((flag & y).sum()), int((flag & ~y).sum()), int((~flag & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "auroc": auroc(s, y),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "accuracy": float((flag == y).mean()) if len(y) else float("nan"),
        "n": len(y),
        "n_positive": int(y.sum()),
        "tau": tau,
    }


def evaluate_guard(
    guard: Guard,
    texts: list[str],
    labels: list[float] | torch.Tensor,
    tau: float = 0.5,
    responses: list[str] | None = None,
) -> dict[str, float]:
    """``binary_metrics`` of ``guard.score(texts, responses)`` against ``labels`` (1 = unsafe)."""
    return binary_metrics(guard.score(texts, responses), torch.as_tensor(labels).cpu(), tau)
