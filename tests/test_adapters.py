"""SoftPrompt and the shared adapter interface, on the tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from softguard.adapters import (
    ADAPTERS,
    DEFAULT_INIT_TEXT,
    AdapterError,
    SoftPrompt,
    decoder_hidden,
    embed_inputs,
    load_adapter,
)
from softguard.adapters.base import CONFIG_NAME, WEIGHTS_NAME
from softguard.adapters.soft_prompt import template_head
from softguard.assets import sha256_file
from softguard.generation import PrefixCache, generate, tokenize_prompts
from softguard.models import chat_prompt


def test_text_init_is_cycled_text_embeddings(tiny_lm):
    model, tok = tiny_lm
    text = "Be safe."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert 1 < len(ids) < 7
    sp = SoftPrompt.for_model(model, tok, num_tokens=7, init="text", init_text=text)
    cycled = torch.tensor([ids[i % len(ids)] for i in range(7)])
    expected = model.get_input_embeddings()(cycled)
    assert sp.prompt.shape == (7, 32)
    assert torch.equal(sp.prompt.data, expected)
    assert torch.equal(sp.prompt[0], sp.prompt[len(ids)])  # the text really is cycled
    assert sp.config() == {
        "num_tokens": 7,
        "hidden_size": 32,
        "init": "text",
        "init_text": text,
        "placement": "start",
        "head": [],
    }
    assert sp.prompt.requires_grad


def test_default_init_text(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=5)
    ids = tok(DEFAULT_INIT_TEXT, add_special_tokens=False)["input_ids"][:5]
    assert torch.equal(sp.prompt.data, model.get_input_embeddings()(torch.tensor(ids)))
    assert sp.init_text == DEFAULT_INIT_TEXT


def test_init_uses_embedding_module_not_raw_weight(tiny_lm):
    """A model that scales inside its embedding module (Gemma) must get scaled init vectors (DESIGN §3)."""
    model, tok = tiny_lm
    emb = model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda mod, inp, out: out * 3.0)
    try:
        sp = SoftPrompt.for_model(model, tok, num_tokens=4, init="text", init_text="Hello there friend")
    finally:
        handle.remove()
    ids = tok("Hello there friend", add_special_tokens=False)["input_ids"]
    cycled = torch.tensor([ids[i % len(ids)] for i in range(4)])
    assert torch.allclose(sp.prompt.data, 3.0 * emb.weight[cycled])


def test_vocab_init_is_seeded_vocab_rows(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=6, init="vocab", seed=3)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, len(tok), (6,), generator=g)
    assert torch.equal(sp.prompt.data, model.get_input_embeddings()(ids))
    again = SoftPrompt.for_model(model, tok, num_tokens=6, init="vocab", seed=3)
    other = SoftPrompt.for_model(model, tok, num_tokens=6, init="vocab", seed=4)
    assert torch.equal(again.prompt, sp.prompt) and not torch.equal(other.prompt, sp.prompt)
    assert sp.init_text == ""


def test_normal_init(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=50, init="normal", sigma=0.5, seed=1)
    expected = torch.randn(50, 32, generator=torch.Generator().manual_seed(1)) * 0.5
    assert torch.equal(sp.prompt.data, expected)
    assert float(sp.prompt.detach().std()) == pytest.approx(0.5, rel=0.1)


def test_bad_init_raises(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(AdapterError, match="unknown init 'zeros'"):
        SoftPrompt.for_model(model, tok, num_tokens=4, init="zeros")
    with pytest.raises(AdapterError, match="non-empty"):
        SoftPrompt.for_model(model, tok, num_tokens=4, init="text", init_text="")
    with pytest.raises(AdapterError, match="at least 1 token"):
        SoftPrompt(num_tokens=0, hidden_size=32)


def test_sizes(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=10)
    assert sp.prefix_length == 10
    assert sp.num_parameters() == 10 * 32
    assert sp.num_bytes() == 4 * 10 * 32
    assert [p.shape for p in sp.trainable_parameters()] == [(10, 32)]


def test_wrap_inputs_places_prompt_after_left_padding():
    sp = SoftPrompt(num_tokens=2, hidden_size=1)
    sp.prompt.data = torch.tensor([[100.0], [200.0]])
    # three rows, d = 1, token embeddings numbered by (row, position); rows padded by 2, 0 and 1
    embeds = torch.tensor(
        [[[-1.0], [-2.0], [11.0], [12.0]], [[21.0], [22.0], [23.0], [24.0]], [[-3.0], [31.0], [32.0], [33.0]]]
    )
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    out, new_mask = sp.wrap_inputs(embeds, mask, torch.zeros_like(mask))
    assert out.squeeze(-1).tolist() == [
        [-1.0, -2.0, 100.0, 200.0, 11.0, 12.0],
        [100.0, 200.0, 21.0, 22.0, 23.0, 24.0],
        [-3.0, 100.0, 200.0, 31.0, 32.0, 33.0],
    ]
    assert new_mask.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]]
    assert new_mask.dtype == mask.dtype
    # position ids count real positions only: the prefix starts at 0 in every row
    _, _, pos = embed_inputs(_IdentityEmbedModel(embeds), sp, torch.zeros(3, 4, dtype=torch.long), mask)
    assert pos.tolist() == [[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 3, 4]]


class _IdentityEmbedModel:
    """Just enough of a model for ``embed_inputs``: its input embeddings return fixed vectors."""

    def __init__(self, embeds: torch.Tensor):
        self._embeds = embeds

    def get_input_embeddings(self):
        return lambda ids: self._embeds


def test_wrap_inputs_width_mismatch():
    sp = SoftPrompt(num_tokens=2, hidden_size=4)
    with pytest.raises(AdapterError, match="4"):
        sp.wrap_inputs(torch.zeros(1, 3, 5), torch.ones(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


def _batch(tok, texts: list[str]):
    return tokenize_prompts(tok, [chat_prompt(tok, t) for t in texts])


@pytest.mark.parametrize("placement", ["start", "user"])
def test_padding_does_not_change_hidden_states(tiny_lm, placement):
    """With the soft prompt after the padding and positions counted from it, a left-padded row gives the same
    hidden states as the same prompt alone, wherever the soft prompt is placed."""
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5, placement=placement)
    texts = ["Hi", "Tell me a long story about a brave little toaster and its friends"]
    ids, mask = _batch(tok, texts)
    assert int(mask[0].sum()) < mask.shape[1]  # row 0 is padded
    with torch.no_grad():
        batched = decoder_hidden(model, sp, ids, mask)
        assert batched.shape == (2, 3 + ids.shape[1], 32)
        for i, t in enumerate(texts):
            sid, smask = _batch(tok, [t])
            alone = decoder_hidden(model, sp, sid, smask)[0]
            assert torch.allclose(batched[i, -alone.shape[0] :], alone, atol=1e-5)


def test_soft_prompt_changes_outputs(tiny_lm):
    model, tok = tiny_lm
    ids, mask = _batch(tok, ["Hi"])
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5)
    with torch.no_grad():
        base = decoder_hidden(model, None, ids, mask)
        with_sp = decoder_hidden(model, sp, ids, mask)
    assert with_sp.shape[1] == base.shape[1] + 3
    assert not torch.allclose(with_sp[:, 3:], base, atol=1e-4)


def test_gradients_reach_only_the_soft_prompt(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=4)
    ids, mask = _batch(tok, ["Hi", "How are you today?"])
    hidden = decoder_hidden(model, sp, ids, mask)
    logits = model.get_output_embeddings()(hidden[:, -1])
    loss = torch.log_softmax(logits, -1)[:, 42].sum()
    loss.backward()
    assert sp.prompt.grad is not None and float(sp.prompt.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(not p.requires_grad for p in model.parameters())


def test_save_load_round_trip(tiny_lm, tmp_path):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=6, init="text", init_text="Stay safe")
    with torch.no_grad():
        sp.prompt.add_(torch.randn(6, 32))
    sp.save_pretrained(tmp_path / "sp", step=7, note="x")
    assert {p.name for p in (tmp_path / "sp").iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}
    assert [p.name for p in tmp_path.iterdir()] == ["sp"]  # no temp dirs left behind
    loaded = SoftPrompt.from_pretrained(tmp_path / "sp", model)
    assert isinstance(loaded, SoftPrompt)
    assert torch.equal(loaded.prompt, sp.prompt)
    assert loaded.config() == sp.config()
    cfg = json.loads((tmp_path / "sp" / CONFIG_NAME).read_text())
    assert cfg == {
        "method": "soft-prompt",
        "config": sp.config(),
        "files": {WEIGHTS_NAME: sha256_file(tmp_path / "sp" / WEIGHTS_NAME)},
        "step": 7,
        "note": "x",
    }
    # saving again replaces the directory
    with torch.no_grad():
        sp.prompt.mul_(2)
    sp.save_pretrained(tmp_path / "sp")
    assert torch.equal(SoftPrompt.from_pretrained(tmp_path / "sp").prompt, sp.prompt)
    assert [p.name for p in tmp_path.iterdir()] == ["sp"]


def test_load_adapter_dispatches_on_method(tiny_lm, tmp_path):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3)
    sp.save_pretrained(tmp_path / "sp")
    loaded = load_adapter(tmp_path / "sp", model)
    assert type(loaded) is ADAPTERS["soft-prompt"] is SoftPrompt
    assert torch.equal(loaded.prompt, sp.prompt)
    cfg_path = tmp_path / "sp" / CONFIG_NAME
    cfg = json.loads(cfg_path.read_text())
    cfg["method"] = "telepathy"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match=r"unknown adapter method 'telepathy'.*soft-prompt"):
        load_adapter(tmp_path / "sp")
    with pytest.raises(AdapterError, match="'telepathy' adapter, not 'soft-prompt'"):
        SoftPrompt.from_pretrained(tmp_path / "sp")


def test_load_into_model_of_other_width_raises(tiny_lm, make_lm, tmp_path):
    model, tok = tiny_lm
    SoftPrompt.for_model(model, tok, num_tokens=3).save_pretrained(tmp_path / "sp")
    narrow = make_lm(len(tok), hidden_size=16)
    for load in (SoftPrompt.from_pretrained, load_adapter):
        with pytest.raises(AdapterError) as err:
            load(tmp_path / "sp", narrow)
        assert "32" in str(err.value) and "16" in str(err.value)


def test_config_weights_mismatch_raises(tiny_lm, tmp_path):
    model, tok = tiny_lm
    SoftPrompt.for_model(model, tok, num_tokens=3).save_pretrained(tmp_path / "sp")
    cfg_path = tmp_path / "sp" / CONFIG_NAME
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["num_tokens"] = 4
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match=WEIGHTS_NAME):
        SoftPrompt.from_pretrained(tmp_path / "sp")


@pytest.mark.parametrize("damage", ["garbage", "truncate", "garble-header", "garble-data"])
def test_corrupt_weights_raise(tiny_lm, tmp_path, damage):
    model, tok = tiny_lm
    SoftPrompt.for_model(model, tok, num_tokens=8).save_pretrained(tmp_path / "sp")
    w = tmp_path / "sp" / WEIGHTS_NAME
    data = bytearray(w.read_bytes())
    if damage == "garbage":
        data = bytearray(b"this is not a safetensors file at all")
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garble-header":
        data[8:40] = b"\xff" * 32
    else:  # overwrite tensor data: the file still parses, but the values are NaN (0xffffffff) and wrong
        data[-64:] = b"\xff" * 64
    w.write_bytes(bytes(data))
    for load in (SoftPrompt.from_pretrained, load_adapter):
        with pytest.raises(AdapterError, match=rf"{WEIGHTS_NAME}.*corrupt"):
            load(tmp_path / "sp", model)


def test_missing_or_corrupt_config_raises(tiny_lm, tmp_path):
    model, tok = tiny_lm
    SoftPrompt.for_model(model, tok, num_tokens=2).save_pretrained(tmp_path / "sp")
    (tmp_path / "sp" / CONFIG_NAME).write_text("{not json")
    with pytest.raises(AdapterError, match=rf"{CONFIG_NAME} is corrupt"):
        load_adapter(tmp_path / "sp")
    (tmp_path / "sp" / CONFIG_NAME).unlink()
    with pytest.raises(AdapterError, match=rf"{CONFIG_NAME} is missing"):
        load_adapter(tmp_path / "sp")
    with pytest.raises(AdapterError, match="missing"):
        load_adapter(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------------------
# placement "user": P just before the user's message, after the chat template's head


def test_user_placement_records_the_template_head(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, placement="user")
    ids = tok(chat_prompt(tok, "x"), add_special_tokens=False)["input_ids"]
    n = len(sp.head)
    assert 0 < n < len(ids)
    assert ids[:n] == sp.head
    # the head ends with the user header: the next token is the message itself
    assert tok.decode(ids[n:]).startswith("x")
    assert tok.decode(sp.head).endswith("user\n")
    assert sp.head == template_head(tok)
    assert sp.config()["placement"] == "user" and sp.config()["head"] == sp.head
    assert sp.prefix_length == 3
    assert not sp.prefix_cacheable
    assert SoftPrompt.for_model(model, tok, num_tokens=3).prefix_cacheable
    with pytest.raises(AdapterError, match="head token ids"):
        SoftPrompt(num_tokens=2, hidden_size=32, placement="user")
    with pytest.raises(AdapterError, match="unknown placement 'middle'"):
        SoftPrompt(num_tokens=2, hidden_size=32, placement="middle")


def test_user_placement_inserts_after_pads_and_head(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5, placement="user")
    k, n = 3, len(sp.head)
    ids, mask = _batch(tok, ["Hi", "Tell me a long story about a brave little toaster"])
    pads = (mask == 0).sum(-1).tolist()
    assert pads[0] > 0 and pads[1] == 0
    assert sp.insert_at(mask, ids).squeeze(-1).tolist() == [pads[0] + n, n]
    embeds = model.get_input_embeddings()(ids)
    out, new_mask = sp.wrap_inputs(embeds, mask, ids)
    assert out.shape == (2, ids.shape[1] + k, 32) and new_mask.shape == (2, ids.shape[1] + k)
    for i, p in enumerate(pads):
        s = p + n
        expected = torch.cat([embeds[i, :s], sp.prompt.detach(), embeds[i, s:]])
        assert torch.equal(out[i], expected)
        expected_mask = torch.cat([mask[i, :s], torch.ones(k, dtype=mask.dtype), mask[i, s:]])
        assert torch.equal(new_mask[i], expected_mask)
    assert new_mask[0, : pads[0]].tolist() == [0] * pads[0] and int(new_mask[0].sum()) == int(mask[0].sum()) + k


def test_user_placement_refuses_a_prompt_without_the_head(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=2, placement="user")
    other = chat_prompt(tok, "Hi", system="You are a pirate.")  # another system turn: another head
    for prompts in (["plain text, no template"], [chat_prompt(tok, "Hi"), other], ["Hi"]):
        ids, mask = tokenize_prompts(tok, prompts)
        embeds = model.get_input_embeddings()(ids)
        with pytest.raises(AdapterError, match="chat template head"):
            sp.wrap_inputs(embeds, mask, ids)
    # the head itself (nothing after it) is fine
    ids, mask = tokenize_prompts(tok, [tok.decode(sp.head)])
    assert ids[0].tolist() == sp.head
    out, _ = sp.wrap_inputs(model.get_input_embeddings()(ids), mask, ids)
    assert out.shape[1] == len(sp.head) + 2


def test_user_placement_has_no_prefix_cache(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=2, placement="user")
    with pytest.raises(AdapterError, match="no fixed leading prefix"):
        PrefixCache(model, sp)


def test_user_placement_save_load_generates_the_same(tiny_lm, tmp_path):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=4, init="normal", sigma=0.5, seed=2, placement="user")
    sp.save_pretrained(tmp_path / "sp")
    loaded = load_adapter(tmp_path / "sp", model)
    assert isinstance(loaded, SoftPrompt)
    assert (loaded.placement, loaded.head) == ("user", sp.head)
    assert loaded.config() == sp.config() and torch.equal(loaded.prompt, sp.prompt)
    prompts = [chat_prompt(tok, u) for u in ("Hi", "What is the capital of France?", "Write a haiku about rain")]
    gen = dict(max_new_tokens=6, batch_size=len(prompts), progress=False)
    ours = generate(model, tok, prompts, sp, **gen)
    again = generate(model, tok, prompts, loaded, **gen)
    assert [g.token_ids for g in again] == [g.token_ids for g in ours]
    assert all(g.token_ids for g in ours)
    start = SoftPrompt.for_model(model, tok, num_tokens=4, placement="start")
    start.prompt.data.copy_(sp.prompt.data)
    at_start = generate(model, tok, prompts, start, **gen)
    assert [g.token_ids for g in at_start] != [g.token_ids for g in ours]  # the placement matters


def test_export_refuses_user_placement(tiny_lm, tmp_path):
    from softguard.export import export

    model, tok = tiny_lm
    SoftPrompt.for_model(model, tok, num_tokens=2, placement="user").save_pretrained(tmp_path / "sp")
    for fmt in ("peft", "safetensors"):
        with pytest.raises(ValueError, match="placement"):
            export(tmp_path / "sp", tmp_path / "out", fmt)
    assert not (tmp_path / "out").exists()


def test_adapter_saved_before_per_file_hashes_still_loads_and_is_checked(tiny_lm, tmp_path):
    """Old adapter configs record ``weights_sha256``, the hash of their only other file: still checked in full."""
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=2, init="normal", sigma=0.5)
    sp.save_pretrained(tmp_path / "sp")
    cfg_path = tmp_path / "sp" / CONFIG_NAME
    cfg = json.loads(cfg_path.read_text())
    cfg["weights_sha256"] = cfg.pop("files")[WEIGHTS_NAME]
    cfg_path.write_text(json.dumps(cfg))
    assert torch.equal(load_adapter(tmp_path / "sp", model).prompt, sp.prompt)
    (tmp_path / "sp" / WEIGHTS_NAME).write_bytes(b"x")
    with pytest.raises(AdapterError, match=rf"{WEIGHTS_NAME} was changed or is corrupt.*retrain or restore"):
        load_adapter(tmp_path / "sp", model)
