"""softguard.models on bad names: a missing path, a Hugging Face id that is not cached (offline, or the hub
unreachable: one try, no retries), a cached id (no network at all), and a tokenizer without a chat template."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoTokenizer

from softguard.models import ModelError, check_model_name, load_model, resolve_model, resolve_precision

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(monkeypatch, tmp_path) -> list[str]:
    """An empty private Hugging Face cache, the hub online as far as settings go, and every hub request recorded
    (and failing as on a machine without network)."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    calls: list[str] = []

    def unreachable(url, *a, **k):
        calls.append(url)
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr("softguard.models.get_hf_file_metadata", unreachable)
    return calls


@pytest.mark.parametrize("name", ["runs/nope/model", "./nope", "/no/such/dir"])
def test_a_missing_path_is_named_as_such(name, hub):
    with pytest.raises(ModelError, match=rf"no such directory '{name}'"):
        check_model_name(name)
    assert hub == []  # a path is never looked up on the hub


def test_uncached_hub_id_under_hf_hub_offline_fails_without_the_network(hub, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ModelError, match=r"'nobody/nothing' is not a local directory and not in the Hugging Face cache"
    ):
        load_model("nobody/nothing")
    assert hub == []


def test_uncached_hub_id_with_the_hub_unreachable_fails_after_one_try(hub):
    with pytest.raises(ModelError, match=r"the hub is unreachable \(\[Errno -2\].*set HF_HUB_OFFLINE=1") as err:
        load_model("nobody/nothing")
    assert "not in the Hugging Face cache" in str(err.value)
    assert hub == ["https://huggingface.co/nobody/nothing/resolve/main/config.json"]  # one request, no retries


def test_cached_hub_id_loads_from_its_snapshot_without_the_network(hub, tiny_lm, tmp_path):
    model, tok = tiny_lm
    repo = tmp_path / "hf" / "models--me--tiny"
    model.save_pretrained(repo / "snapshots" / COMMIT)
    tok.save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    assert resolve_model("me/tiny") == str(repo / "snapshots" / COMMIT)
    loaded, _ = load_model("me/tiny")
    assert hub == []
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_tokenizer_without_a_chat_template_is_refused(tiny_lm, tmp_path):
    model, tok = tiny_lm
    plain = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    plain.chat_template = None
    model.save_pretrained(tmp_path / "m")
    plain.save_pretrained(tmp_path / "m")
    with pytest.raises(ModelError, match=r"has no chat template: .*add a chat_template to its tokenizer_config\.json"):
        load_model(str(tmp_path / "m"))
    tok.save_pretrained(tmp_path / "m")  # the same directory with the chat tokenizer loads
    assert load_model(str(tmp_path / "m"))[1].chat_template


@pytest.mark.parametrize(
    ("caps", "expected"),
    [({"amx_bf16": True}, "bf16"), ({"avx512_bf16": True}, "bf16"), ({"avx2": True, "amx_bf16": False}, "fp32")],
)
def test_auto_precision_is_bf16_only_on_a_cpu_that_computes_it(caps, expected, monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"  # as given
