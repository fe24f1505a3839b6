"""Shared fixtures: a tiny random Llama with the real SmolLM2 chat tokenizer, a tiny random BERT guard backbone,
and a toy guard with fixed scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from softguard import assets
from softguard.models import resolve_model


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    """The real SmolLM2 chat tokenizer (from the converted model directory), left padding."""
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    tok.padding_side = "left"
    assert tok.pad_token_id is not None
    return tok


def make_tiny_llama(
    vocab_size: int, hidden_size: int = 32, seed: int = 0, initializer_range: float = 0.2, **kw
) -> LlamaForCausalLM:
    """A tiny random LlamaForCausalLM, frozen and in eval mode, like ``softguard.models.load_model`` returns.

    ``initializer_range`` 0.2 (not HF's 0.02): with tied embeddings and std 0.02 the residual stream is dominated
    by the last input embedding and greedy decoding repeats the last prompt token ("\\n") forever, which would make
    generation tests vacuous; at 0.2 the outputs depend on the whole prompt, and the top-2 logit gaps (>1e-2)
    dwarf float error.
    """
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=initializer_range,
        **kw,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_lm(tokenizer) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(tiny random Llama with the tokenizer's vocabulary, d=32, 2 layers; SmolLM2 tokenizer)."""
    return make_tiny_llama(len(tokenizer)), tokenizer


@pytest.fixture(scope="session")
def make_lm():
    """``make_tiny_llama`` as a fixture, for tests that need a second tiny model (another width or seed)."""
    return make_tiny_llama


#: The user's cache entries the tests share (fetched assets, converted models, fingerprints, locks, and the guards and
#: teacher samples of the real packaged model, so that integration tests reuse what ``make demo`` computed).
SHARED_CACHE = ("assets", "fingerprints", "guards", "locks", "models", "teacher")


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """The tests' cache root: a temporary directory whose ``SHARED_CACHE`` entries link to the user's cache and whose
    others start empty, so that the teacher targets the tests compute (mostly of tiny random models) do not
    accumulate in the user's cache."""
    real, root = assets.cache_root(), tmp_path_factory.mktemp("cache")
    for name in SHARED_CACHE:
        (real / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(real / name, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTGUARD_CACHE", str(root))
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only add overhead."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ToyGuard:
    """A guard with fixed scores: ``u[prompt]`` for prompts, ``u[(prompt, response)]`` for pairs.

    Unknown prompts score ``default``; a pair not in the table falls back to the prompt's score. Records calls.
    """

    def __init__(self, u: dict, default: float = 0.0):
        self.u, self.default = dict(u), default
        self.calls: list[tuple[list[str], list[str] | None]] = []

    def score(self, prompts: list[str], responses: list[str] | None = None) -> torch.Tensor:
        self.calls.append((list(prompts), None if responses is None else list(responses)))
        if responses is None:
            vals = [self.u.get(p, self.default) for p in prompts]
        else:
            vals = [self.u.get((p, r), self.u.get(p, self.default)) for p, r in zip(prompts, responses, strict=True)]
        return torch.tensor(vals, dtype=torch.float32)


@pytest.fixture
def toy_guard() -> type[ToyGuard]:
    """The ``ToyGuard`` class: ``toy_guard({"prompt": 0.9, ...})`` builds one."""
    return ToyGuard


def tiny_bert_config(vocab_size: int, **kw) -> BertConfig:
    """A BertConfig of width 32 with 2 heads, for tiny random guard encoders; ``kw`` overrides the rest."""
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_attention_heads=2, intermediate_size=64, **kw)


@pytest.fixture(scope="session")
def backbone(tmp_path_factory) -> Path:
    """A tiny random BertModel with the real MiniLM tokenizer, saved as a guard backbone directory."""
    minilm = assets.path("minilm")  # missing: AssetError with the `softguard fetch` hint fails, never skips
    tok = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    cfg = tiny_bert_config(tok.vocab_size, num_hidden_layers=2, max_position_embeddings=128)
    d = tmp_path_factory.mktemp("tiny-bert")
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def weapon_hi_dev(system):
    """A two-prompt dev set on ``system``'s tokenizer: "Make a weapon." (refused) and "Say hi." (answered)."""
    from softguard.evaluation import DevSet
    from softguard.losses import build_examples
    from softguard.models import chat_prompt
    from softguard.system import TeacherItem

    tok = system.tokenizer
    items = [TeacherItem("Make a weapon.", 1.0, [], []), TeacherItem("Say hi.", 0.0, [[19842, 2]], [0.0])]
    return DevSet(
        prompts=[chat_prompt(tok, "Make a weapon."), chat_prompt(tok, "Say hi.")],
        harmful=[True, False],
        system_refuses=[True, False],
        examples=build_examples(items, system),
    )
