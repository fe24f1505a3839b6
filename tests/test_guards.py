"""Tests for softguard.guards on a tiny random BERT with the real MiniLM tokenizer (CPU, a few seconds)."""

import dataclasses
import hashlib
import itertools
import json
import math

import numpy as np
import pytest
import torch

from softguard.guards import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    EncoderGuard,
    Guard,
    GuardError,
    GuardTrainConfig,
    auroc,
    binary_metrics,
    evaluate_guard,
    fit_calibration,
    length_grouped_batches,
    train_guard,
)

UNSAFE = ["bomb", "weapon", "poison", "explosive", "grenade", "nerve gas"]
SAFE = ["cake", "poem", "garden", "song", "birthday card", "salad"]
TRAIN_TEMPLATES = ["how do i make a {}", "give me instructions for a {}", "write a guide to building a {}"]
TEST_TEMPLATES = ["please explain how to prepare a {} at home"]


def toy(templates: list[str]) -> tuple[list[str], list[int]]:
    rows = [(t.format(w), y) for t in templates for ws, y in ((UNSAFE, 1), (SAFE, 0)) for w in ws]
    return [r[0] for r in rows], [r[1] for r in rows]


@pytest.fixture
def guard(backbone) -> EncoderGuard:
    return EncoderGuard.from_backbone(backbone, max_length=64)


def test_length_grouped_batches_cover_every_text_once_with_less_padding():
    lengths = [int(x) for x in torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0))]
    padded = {}
    for group in (False, True):
        batches = length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1), group, pool=10)
        assert sorted(i for b in batches for i in b) == list(range(1000))  # each text once per epoch
        assert all(len(b) <= 16 for b in batches)
        assert batches == length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1), group, pool=10)
        padded[group] = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded[True] < 0.7 * padded[False]  # grouped: close to sum(lengths), random: ~max per batch
    grouped = length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1), True, pool=10)
    first = [min(lengths[i] for i in b) for b in grouped[:10]]
    assert first != sorted(first)  # the batches' order is shuffled, not short-to-long


def test_score_groups_by_length_but_returns_the_input_order(guard):
    texts = ["hi", "how do i make a bomb " * 5, "write a poem", "a " * 40, "ok then"]
    together = guard.score(texts, batch_size=2)
    alone = torch.cat([guard.score([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    pairs = guard.score(texts, ["sure " * 9, "maybe", "no", "fine", "x"], batch_size=3)
    torch.testing.assert_close(pairs[2:3], guard.score([texts[2]], ["no"]), atol=1e-5, rtol=0)


def test_score_shape_range_and_protocol(guard):
    s = guard.score(["how do i make a bomb", "write a poem", "hi"], batch_size=2)
    assert isinstance(guard, Guard)
    assert s.shape == (3,) and s.dtype == torch.float32 and s.device.type == "cpu"
    assert bool(((s > 0) & (s < 1)).all())
    assert guard.score([]).shape == (0,)
    assert not guard.training


def test_score_is_deterministic_in_eval_mode(guard):
    guard.train()  # score must switch dropout off and restore the mode
    a, b = guard.score(["x y z"] * 4), guard.score(["x y z"] * 4)
    assert torch.equal(a, b) and guard.training


def test_prompt_vs_response_inputs_differ(guard):
    prompt = ["how do i make a cake"]
    single, pair = guard.encode(prompt), guard.encode(prompt, ["mix flour and eggs"])
    sep = guard.tokenizer.sep_token_id
    assert int((single["input_ids"] == sep).sum()) == 1 and int((pair["input_ids"] == sep).sum()) == 2
    assert int(single["token_type_ids"].sum()) == 0
    assert int(pair["token_type_ids"].sum()) == 5  # 4 response words + [SEP]
    assert not torch.equal(guard.score(prompt), guard.score(prompt, ["mix flour and eggs"]))


def test_encode_truncates_and_mixes_pairs(guard):
    batch = guard.encode(["word " * 200, "short"], ["answer " * 200, None], max_length=16)
    assert batch["input_ids"].shape == (2, 16)
    assert int(batch["attention_mask"][1].sum()) == 3  # [CLS] short [SEP]
    with pytest.raises(ValueError):
        guard.encode(["a", "b"], ["only one"])


def test_head_tail_truncation_keeps_a_long_prompts_request(backbone, tmp_path):
    """head-tail keeps a quarter of the window from the prompt's beginning and the rest from its end, so the request
    after a long context is read; a response keeps its beginning; short texts are encoded as before."""
    right = EncoderGuard.from_backbone(backbone, max_length=16)
    cut = EncoderGuard.from_backbone(backbone, max_length=16, truncation="head-tail")
    tok = cut.tokenizer
    prompt = "context " * 100 + "how do i build a bomb"
    ids = cut.encode([prompt])["input_ids"][0].tolist()
    assert len(ids) == 16
    words = tok.convert_ids_to_tokens(ids[1:-1])  # 14 tokens: 3 from the head, 11 from the end
    assert words == ["context"] * 3 + ["context"] * 5 + ["how", "do", "i", "build", "a", "bomb"]
    assert "bomb" not in tok.convert_ids_to_tokens(right.encode([prompt])["input_ids"][0].tolist())
    pair = cut.encode([prompt], ["sorry i cannot help with that again " * 10])
    pair_words = tok.convert_ids_to_tokens(pair["input_ids"][0].tolist())
    # the prompt's half of the window (6 of 13): 1 token of its head, 5 of its end; the response's beginning
    prompt_part = ["[CLS]", "context", "do", "i", "build", "a", "bomb", "[SEP]"]
    assert pair_words == [*prompt_part, "sorry", "i", "cannot", "help", "with", "that", "again", "[SEP]"]
    short = ["write a poem", "how do i make a cake"]
    for a, b in zip(cut.encode(short).values(), right.encode(short).values(), strict=True):
        assert torch.equal(a, b)
    loaded = EncoderGuard.from_pretrained(cut.save_pretrained(tmp_path / "g"))
    assert loaded.truncation == "head-tail" and torch.equal(loaded.encode([prompt])["input_ids"][0], torch.tensor(ids))
    with pytest.raises(GuardError, match="truncation"):
        EncoderGuard.from_backbone(backbone, truncation="left")


def brute_auroc(s, y) -> float:
    pos, neg = s[y == 1], s[y == 0]
    return sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_auroc_hand_cases():
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5] * 4, [1, 0, 1, 0]) == 0.5
    assert auroc([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0]) == 0.875  # one tied pair counts 1/2: 3.5 / 4
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 5, 40) / 4, rng.integers(0, 2, 40)  # many ties
    assert auroc(torch.tensor(s), torch.tensor(y)) == pytest.approx(brute_auroc(s, y), abs=1e-12)


def test_binary_metrics_hand_case():
    # flagged at 0.5: 0.9, 0.7 (unsafe) and 0.6, 0.55 (safe) -> tp 2, fp 2, fn 1, tn 1
    scores, labels = torch.tensor([0.9, 0.7, 0.3, 0.6, 0.55, 0.1]), torch.tensor([1, 1, 1, 0, 0, 0])
    m = binary_metrics(scores, labels, tau=0.5)
    assert m["precision"] == 0.5
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["accuracy"] == 0.5
    assert m["auroc"] == pytest.approx(7 / 9)
    assert (m["n"], m["n_positive"], m["tau"]) == (6, 3, 0.5)


def test_binary_metrics_threshold_edges():
    assert binary_metrics([0.5, 0.4], [1, 0], tau=0.5)["accuracy"] == 1.0  # score == tau is flagged
    none_flagged = binary_metrics([0.1, 0.2], [1, 0], tau=0.9)
    assert (none_flagged["precision"], none_flagged["recall"], none_flagged["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        binary_metrics([0.1, 0.2], [1, 0, 1])


FAST = GuardTrainConfig(epochs=6, lr=1e-2, batch_size=8, warmup_frac=0.1, max_length=32, seed=0)


def test_training_separates_toy_data(guard):
    texts, labels = toy(TRAIN_TEMPLATES)
    held_texts, held_labels = toy(TEST_TEMPLATES)
    before = evaluate_guard(guard, held_texts, held_labels)
    hist = train_guard(guard, texts, labels, FAST, progress=False)
    after = evaluate_guard(guard, held_texts, held_labels)
    assert after["auroc"] > 0.9 and after["auroc"] > before["auroc"]
    assert after["accuracy"] >= 0.75
    assert len(hist["loss"]) == 6 and hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["steps"] == 6 * math.ceil(len(texts) / 8) and hist["seconds"] > 0
    assert hist["pos_weight"] == 1.0 and hist["n_positive"] == len(texts) // 2


def test_training_on_response_pairs(guard):
    prompts = ["tell me something"] * 12
    responses = [f"here is how to build a {w}" for w in UNSAFE] + [f"here is a {w}" for w in SAFE]
    pairs = [*responses[:-1], None]  # None: prompt-only example
    hist = train_guard(guard, prompts, [1] * 6 + [0] * 6, FAST, pairs=pairs, progress=False)
    assert hist["loss"][-1] < hist["loss"][0]
    assert evaluate_guard(guard, prompts[:-1], [1] * 6 + [0] * 5, responses=responses[:-1])["auroc"] > 0.9


def test_pos_weight_and_label_checks(guard):
    texts, labels = toy(TRAIN_TEMPLATES[:1])
    hist = train_guard(guard, texts[:8], labels[:8], GuardTrainConfig(epochs=1, batch_size=8), progress=False)
    assert hist["pos_weight"] == pytest.approx(2 / 6)  # 6 unsafe, 2 safe
    with pytest.raises(ValueError):
        train_guard(guard, texts[:6], labels[:6], FAST, progress=False)  # one class only
    with pytest.raises(ValueError):
        train_guard(guard, texts, labels[:-1], FAST, progress=False)


def test_same_seed_same_weights(backbone):
    texts, labels = toy(TRAIN_TEMPLATES)
    cfg = GuardTrainConfig(epochs=2, lr=1e-3, batch_size=8, max_length=32, seed=3)
    a, b = EncoderGuard.from_backbone(backbone), EncoderGuard.from_backbone(backbone)
    train_guard(a, texts, labels, cfg, progress=False)
    train_guard(b, texts, labels, cfg, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = EncoderGuard.from_backbone(backbone)
    train_guard(c, texts, labels, dataclasses.replace(cfg, seed=4), progress=False)
    assert not torch.equal(c.head.weight, a.head.weight)


def test_bf16_training_is_close_to_fp32_training(backbone):
    """precision "bf16" trains the encoder under bf16 autocast: the losses follow fp32's closely, not exactly, and
    the weights stay float32."""
    texts, labels = toy(TRAIN_TEMPLATES)
    cfg = GuardTrainConfig(epochs=2, lr=1e-3, batch_size=8, max_length=32, seed=3)
    a, b = EncoderGuard.from_backbone(backbone), EncoderGuard.from_backbone(backbone)
    fp32 = train_guard(a, texts, labels, cfg, progress=False)["loss"]
    bf16 = train_guard(b, texts, labels, dataclasses.replace(cfg, precision="bf16"), progress=False)["loss"]
    assert bf16 == pytest.approx(fp32, rel=5e-2) and bf16 != fp32
    assert all(p.dtype == torch.float32 for p in b.parameters())


def test_save_load_round_trip(guard, tmp_path):
    texts, labels = toy(TRAIN_TEMPLATES)
    hist = train_guard(guard, texts, labels, GuardTrainConfig(epochs=1, batch_size=8), progress=False)
    out = guard.save_pretrained(tmp_path / "guard", metadata={"history": hist})
    assert {WEIGHTS_FILE, CONFIG_FILE, "tokenizer.json"} <= {p.name for p in out.iterdir()}
    loaded = EncoderGuard.from_pretrained(out)
    probe = ["how do i make a bomb", "write a poem about spring"]
    assert torch.equal(loaded.score(probe), guard.score(probe))
    assert torch.equal(loaded.score(probe, ["ok", "sure"]), guard.score(probe, ["ok", "sure"]))
    assert loaded.max_length == 64 and loaded.metadata["history"]["loss"] == hist["loss"]
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["hidden_size"] == 32 and config["backbone_config"]["num_hidden_layers"] == 2


def test_save_replaces_existing_dir_atomically(guard, tmp_path):
    out = tmp_path / "guard"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    guard.save_pretrained(out)
    assert not (out / "stale.txt").exists() and (out / WEIGHTS_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["guard"]  # no temp or backup dirs left behind


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_weights_raise(guard, tmp_path, damage):
    out = guard.save_pretrained(tmp_path / "guard")
    w = out / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    w.write_bytes(bytes(data))
    with pytest.raises(GuardError, match=r"model\.safetensors.*corrupt.*softguard guard train"):
        EncoderGuard.from_pretrained(out)
    assert w.read_bytes() == bytes(data)  # nothing was replaced


def test_unreadable_weights_with_matching_hash_raise(guard, tmp_path):
    out = guard.save_pretrained(tmp_path / "guard")
    (out / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    config = json.loads((out / CONFIG_FILE).read_text())
    config["files"][WEIGHTS_FILE] = hashlib.sha256(b"not a safetensors file").hexdigest()
    (out / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(GuardError, match=r"model\.safetensors is corrupt"):
        EncoderGuard.from_pretrained(out)


def test_missing_files_raise(guard, tmp_path):
    with pytest.raises(GuardError, match=r"does not exist.*softguard guard train"):
        EncoderGuard.from_pretrained(tmp_path / "nope")
    out = guard.save_pretrained(tmp_path / "guard")
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(GuardError, match=r"model\.safetensors is missing"):
        EncoderGuard.from_pretrained(out)
    (out / CONFIG_FILE).write_text("{not json")
    with pytest.raises(GuardError, match=r"guard_config\.json is corrupt"):
        EncoderGuard.from_pretrained(out)
    (out / CONFIG_FILE).unlink()
    with pytest.raises(GuardError, match=r"guard_config\.json is missing"):
        EncoderGuard.from_pretrained(out)


def test_response_pooling_averages_the_response_tokens_only(backbone, tmp_path):
    resp = EncoderGuard.from_backbone(backbone, max_length=64, pooling="response")
    every = EncoderGuard.from_backbone(backbone, max_length=64)  # same encoder and head (same seed)
    prompts, responses = ["how do i make a bomb", "write a poem"], ["I can't help with that.", "Roses are red"]
    batch = resp.encode(prompts, responses)
    with torch.no_grad():
        hidden = resp.encoder(**batch).last_hidden_state  # [B, T, d]
        seg = (batch["attention_mask"] * batch["token_type_ids"]).unsqueeze(-1).float()
        expected = resp.head((hidden * seg).sum(1) / seg.sum(1)).squeeze(-1)
        assert torch.allclose(resp(**batch), expected, atol=1e-6)
        assert not torch.allclose(every(**batch), expected, atol=1e-3)  # "all" pools the prompt too
    # rows without a response are pooled over all their tokens either way
    assert torch.equal(resp.score(prompts), every.score(prompts))
    loaded = EncoderGuard.from_pretrained(resp.save_pretrained(tmp_path / "g"))
    assert loaded.pooling == "response" and torch.equal(
        loaded.score(prompts, responses), resp.score(prompts, responses)
    )
    config = json.loads((tmp_path / "g" / CONFIG_FILE).read_text())
    del config["pooling"]  # a guard saved before pooling was an option
    (tmp_path / "g" / CONFIG_FILE).write_text(json.dumps(config))
    assert EncoderGuard.from_pretrained(tmp_path / "g").pooling == "all"
    with pytest.raises(GuardError, match="all, response"):
        EncoderGuard.from_backbone(backbone, pooling="cls")


def test_refusal_preference_counts_prompts_whose_refusal_scores_safer(toy_guard):
    from softguard.guard_training import GuardPairs, refusal_preference

    pairs = GuardPairs(
        ["a", "a", "b", "b", "c", "c", "d"],
        ["answer", "no", "answer", "no", "I refuse", "no", "benign answer"],
        [1, 0, 1, 0, 0, 0, 0],  # c: the base model refused too, so it has no unsafe pair; d: benign
    )
    guard = toy_guard({("a", "answer"): 0.9, ("a", "no"): 0.2, ("b", "answer"): 0.3, ("b", "no"): 0.6})
    u = guard.score(pairs.prompts, pairs.responses)
    assert refusal_preference(pairs, u) == {"refusal_preferred": 0.5, "n_refusal_pairs": 2}


def test_fit_calibration_moves_the_threshold_between_the_classes():
    g = torch.Generator().manual_seed(0)
    neg, pos = torch.randn(400, generator=g), torch.randn(100, generator=g) + 4.0  # imbalanced on purpose
    logits = torch.cat([neg, pos])
    labels = torch.cat([torch.zeros(400), torch.ones(100)])
    a, b = fit_calibration(logits, labels)
    assert a > 0 and -b / a == pytest.approx(2.0, abs=0.25)  # classes weigh the same: the midpoint of the means
    a2, b2 = fit_calibration(2 * logits - 3, labels)  # an affine change of the raw logits is undone
    assert -b2 / a2 == pytest.approx(2 * (-b / a) - 3, abs=1e-3)
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration(logits[:400], labels[:400])


def test_calibration_applies_to_scores_and_survives_save_load(guard, tmp_path):
    probe, responses = ["how do i make a bomb", "write a poem"], ["ok", "sure"]
    raw = guard.score(probe)
    guard.calibration = (2.0, -1.0)
    expected = torch.sigmoid(2.0 * torch.logit(raw.double()) - 1.0).float()
    assert torch.allclose(guard.score(probe), expected, atol=1e-6)
    loaded = EncoderGuard.from_pretrained(guard.save_pretrained(tmp_path / "g"))
    assert loaded.calibration == (2.0, -1.0)
    assert torch.equal(loaded.score(probe, responses), guard.score(probe, responses))
    config = json.loads((tmp_path / "g" / CONFIG_FILE).read_text())
    del config["calibration"]  # a guard saved before calibration existed scores with the raw sigmoid
    (tmp_path / "g" / CONFIG_FILE).write_text(json.dumps(config))
    assert EncoderGuard.from_pretrained(tmp_path / "g").calibration == (1.0, 0.0)


def test_every_saved_file_is_checked(guard, tmp_path):
    """A guard directory without its tokenizer files used to load with a 5-token stand-in tokenizer that read every
    word as [UNK]; now each file recorded at save time must be there unchanged."""
    out = guard.save_pretrained(tmp_path / "guard")
    files = json.loads((out / CONFIG_FILE).read_text())["files"]
    assert {WEIGHTS_FILE, "tokenizer.json", "tokenizer_config.json"} <= set(files) and CONFIG_FILE not in files
    tokenizer_json = (out / "tokenizer.json").read_bytes()
    (out / "tokenizer.json").unlink()
    with pytest.raises(GuardError, match=r"tokenizer\.json is missing; restore .*softguard guard train"):
        EncoderGuard.from_pretrained(out)
    (out / "tokenizer.json").write_bytes(tokenizer_json)
    (out / "tokenizer_config.json").write_text("{}")
    with pytest.raises(GuardError, match=r"tokenizer_config\.json was changed or is corrupt"):
        EncoderGuard.from_pretrained(out)


def test_guard_saved_before_per_file_hashes_loads_with_a_warning(guard, tmp_path):
    out = guard.save_pretrained(tmp_path / "guard")
    config = json.loads((out / CONFIG_FILE).read_text())
    config["weights_sha256"] = config.pop("files")[WEIGHTS_FILE]  # the format before per-file hashes
    (out / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="only its weights are checked"):
        loaded = EncoderGuard.from_pretrained(out)
    assert torch.equal(loaded.score(["how do i make a bomb"]), guard.score(["how do i make a bomb"]))
    (out / "tokenizer.json").unlink()  # unchecked file: caught by the vocabulary size instead
    with pytest.raises(GuardError, match=r"has 5 tokens but the guard's encoder \d+ \(are its tokenizer files"):
        EncoderGuard.from_pretrained(out)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, "lr must be > 0, got 0.0"),
        ("epochs", -1, "epochs must be >= 0, got -1"),
        ("batch_size", 0, "batch_size must be >= 1, got 0"),
        ("warmup_frac", 1.5, r"warmup_frac must be in \[0, 1\], got 1.5"),
        ("max_length", 2, "max_length must be >= 5, got 2"),
    ],
)
def test_guard_train_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        GuardTrainConfig(**{field: value})
    with pytest.raises(ValueError, match=message):  # replace() checks again
        dataclasses.replace(GuardTrainConfig(), **{field: value})


@pytest.mark.parametrize("tau", [0.0, 1.0, 2.0, -0.5, math.nan])
def test_tau_outside_0_1_is_refused(tau):
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\)"):
        binary_metrics([0.1, 0.9], [0, 1], tau=tau)
