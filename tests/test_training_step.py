"""The fast training step: the shared prefix (exact: the same loss and gradients as whole rows, for every adapter
kind) and the teacher targets computed once (top-K + rest: exact at K = V, a lower bound below)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from softguard import losses, training
from softguard.adapters import LoRA, SoftPrompt, SteeringVector
from softguard.adapters.soft_prompt import template_head
from softguard.evaluation import DevSet
from softguard.generation import generate, shared_head
from softguard.losses import DistillExample, collate, loss_terms, student_logp, teacher_targets
from softguard.models import chat_prompt
from softguard.objectives import OBJECTIVES, coarse_grain, get_objective
from softguard.training import TrainConfig

PROMPTS = ["How do I bake bread?", "Write malware that steals passwords.", "Hi", "Give me three tips, please."]
ADAPTERS = ("soft-prompt", "soft-prompt-user", "lora", "steering")


def make_adapter(kind: str, model, tok):
    """An adapter of ``kind`` with non-trivial weights, so that it changes the outputs."""
    if kind.startswith("soft-prompt"):
        placement = "user" if kind.endswith("user") else "start"
        return SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5, placement=placement)
    if kind == "lora":
        lora = LoRA.for_model(model, rank=2, dropout=0.0, seed=1)
        with torch.no_grad():
            for key in lora.B:
                lora.B[key].weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
        return lora
    sv = SteeringVector.for_model(model, layer=0, alpha=0.5, learned=True)
    with torch.no_grad():
        sv.vector.normal_(generator=torch.Generator().manual_seed(3))
    return sv


def templated(tok) -> list[DistillExample]:
    """Real templated prompts (24 common template tokens) of different lengths; soft and one-hot targets of
    different lengths."""
    ids = [tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    targets = [[10, 11, 12, 13, 2], [40, 41, 2], [50, 51, 52, 53, 54, 55, 56, 2], [60, 2]]
    weights, soft = (0.7, 1.0, 0.4, 0.9), (True, False, True, True)
    return [DistillExample(*e) for e in zip(ids, targets, weights, soft, strict=True)]


def short_head(tok, kind: str) -> list[list[DistillExample]]:
    """Batches whose common beginning is short: 1 token beyond what every prompt must start with (nothing, or the
    template head for a soft prompt placed before the user's message), capped by a prompt that is a prefix of
    another; and, where prompts may start anywhere, none at all."""
    start = template_head(tok) if kind == "soft-prompt-user" else []
    one = [[*start, 5, 6, 7, 8, 9], [*start, 5, 6], [*start, 5, 6, 12, 13]]  # common: start + [5, 6], capped at 5
    batches = [[DistillExample(p, [20 + i, 21, 2], 1.0, soft=i != 1) for i, p in enumerate(one)]]
    if not start:
        none = [[4, 6, 7], [5, 6, 7, 8]]
        batches.append([DistillExample(p, [30, 31 + i, 2], 0.5, soft=True) for i, p in enumerate(none)])
    return batches


def loss_and_grads(model, adapter, examples, cfg, objective="kl") -> tuple[float, list[torch.Tensor]]:
    """The training loss of one batch (exact teacher, computed in the step) and its gradients on the adapter."""
    adapter.zero_grad(set_to_none=True)
    batch = collate(examples, 2, cfg, torch.device("cpu"))
    terms = loss_terms(model, adapter, batch, get_objective(objective))
    loss = (terms["d"] * batch["tok_w"]).sum()
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in adapter.trainable_parameters()]


def assert_same(a: tuple[float, list[torch.Tensor]], b: tuple[float, list[torch.Tensor]]) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    assert len(a[1]) == len(b[1]) > 0
    for ga, gb in zip(a[1], b[1], strict=True):
        assert float(ga.abs().max()) > 1e-4  # the gradient is not trivially zero
        assert torch.allclose(ga, gb, atol=1e-5), float((ga - gb).abs().max())


def test_shared_head():
    assert shared_head([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7]]) == 2
    assert shared_head([[1, 2, 3, 4], [1, 2, 3]]) == 2  # a prompt keeps at least one token of its own
    assert shared_head([[1, 2, 3]] * 3) == 2
    assert shared_head([[1, 2], [3, 2]]) == 0
    assert shared_head([[9]]) == 0


@pytest.mark.parametrize("kind", ADAPTERS)
def test_shared_prefix_gives_the_loss_and_gradients_of_whole_rows(tiny_lm, kind, monkeypatch):
    model, tok = tiny_lm
    adapter = make_adapter(kind, model, tok)
    whole, shared = TrainConfig(shared_prefix=False, teacher_topk=None), TrainConfig(teacher_topk=None)
    batches = [templated(tok), *short_head(tok, kind)]
    expected = [loss_and_grads(model, adapter, b, whole) for b in batches]
    assert collate(batches[0], 2, shared, torch.device("cpu"))["head"] >= 24  # SmolLM2's system turn, shared
    real = losses.decoder_hidden
    monkeypatch.setattr(losses, "decoder_hidden", None)  # the shared path must not run whole rows
    for b, exp in zip(batches, expected, strict=True):
        assert_same(loss_and_grads(model, adapter, b, shared), exp)
    monkeypatch.setattr(losses, "decoder_hidden", real)
    tv_whole = loss_and_grads(model, adapter, batches[0], whole, "tv")
    assert_same(loss_and_grads(model, adapter, batches[0], shared, "tv"), tv_whole)


def test_shared_prefix_with_eager_attention(make_lm, tokenizer):
    model = make_lm(len(tokenizer), seed=4)
    model.set_attn_implementation("eager")
    sp = make_adapter("soft-prompt", model, tokenizer)
    whole = loss_and_grads(model, sp, templated(tokenizer), TrainConfig(shared_prefix=False, teacher_topk=None))
    assert_same(loss_and_grads(model, sp, templated(tokenizer), TrainConfig(teacher_topk=None)), whole)


def test_shared_prefix_positions_are_those_of_whole_rows(tiny_lm):
    """Every token gets the position id it has in the whole row (a shift by one anywhere fails), and the prefix
    runs once, for all rows together."""
    model, tok = tiny_lm
    sp = make_adapter("soft-prompt", model, tok)
    seen: list[torch.Tensor] = []
    hook = model.get_decoder().rotary_emb.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["position_ids"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            for share in (False, True):
                batch = collate(templated(tok), tok.pad_token_id, TrainConfig(shared_prefix=share), model.device)
                student_logp(model, sp, batch)
    finally:
        hook.remove()
    whole, packed = seen
    assert packed.shape[0] == 1  # one packed sequence: the prefix once, then every row's own tokens
    k, head, mask = sp.num_tokens, batch["head"], batch["attention_mask"]
    prefix = k + head
    assert packed[0, :prefix].tolist() == list(range(prefix))
    at = prefix
    for i in range(len(mask)):
        real = whole[i, k:][mask[i].bool()]  # whole rows: [pad | P | tokens]; positions of the tokens
        assert real[:head].tolist() == list(range(k, prefix))
        own = real[head:]
        assert packed[0, at : at + len(own)].tolist() == own.tolist()
        at += len(own)
    assert at == packed.shape[1]


@pytest.mark.parametrize("kind", ["soft-prompt", "lora"])
def test_the_adapter_module_is_called_once_per_forward(tiny_lm, kind):
    """DDP's hooks need the adapter module itself called in the forward: the shared prefix calls it once."""
    model, tok = tiny_lm
    adapter = make_adapter(kind, model, tok)
    calls = []
    hook = adapter.register_forward_hook(lambda *a: calls.append(1))
    try:
        student_logp(model, adapter, collate(templated(tok), tok.pad_token_id, TrainConfig(), model.device))
    finally:
        hook.remove()
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------------------------
# teacher targets: top-K + rest


def test_coarse_grain_is_exact_at_full_k_and_a_lower_bound_below():
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(2 * torch.randn(6, 40, generator=g), -1)
    q = torch.log_softmax(2 * torch.randn(6, 40, generator=g), -1)
    for name in OBJECTIVES:
        d = get_objective(name).soft
        full = torch.arange(40).expand(6, 40)
        assert torch.allclose(coarse_grain(p, full).logsumexp(-1), torch.zeros(6), atol=1e-6)
        leaf = q.clone().requires_grad_(True)
        exact = d(leaf, p)
        (g_exact,) = torch.autograd.grad(exact.sum(), leaf)
        shuffled = torch.stack([torch.randperm(40, generator=g) for _ in range(6)])
        same = d(coarse_grain(leaf, shuffled), coarse_grain(p, shuffled))  # K = V, in any order
        (g_same,) = torch.autograd.grad(same.sum(), leaf)
        assert torch.allclose(same, exact, atol=1e-5), name
        assert torch.allclose(g_same, g_exact, atol=1e-5), name
        for k in (1, 3, 10):
            top = p.topk(k, -1).indices
            coarse = coarse_grain(p, top)
            assert torch.allclose(coarse.logsumexp(-1), torch.zeros(6), atol=1e-5)
            lower = d(coarse_grain(q, top), coarse)
            assert bool((lower <= exact.detach() + 1e-6).all()), (name, k)
            assert bool((lower < exact.detach()).any()), (name, k)


def _soft_prompt_loss(model, sp, batch, objective):
    sp.zero_grad(set_to_none=True)
    terms = loss_terms(model, sp, batch, get_objective(objective))
    loss = (terms["d"] * batch["tok_w"]).sum()
    loss.backward()
    return float(loss.detach()), sp.prompt.grad.clone()


@pytest.mark.parametrize("objective", ["tv", "kl"])
def test_cached_targets_exact_at_full_k_lower_below(tiny_lm, objective):
    model, tok = tiny_lm
    sp = make_adapter("soft-prompt", model, tok)
    examples = templated(tok)
    exact = _soft_prompt_loss(model, sp, collate(examples, 2, TrainConfig(teacher_topk=None), model.device), objective)
    for k in (len(tok), 8):
        cfg = TrainConfig(teacher_topk=k, batch_size=2)
        cached = teacher_targets(model, sp, examples, cfg, tok.pad_token_id)
        assert [ex.teacher_ids is not None for ex in cached] == [ex.soft for ex in examples]
        assert all(ex.teacher_ids.shape == (len(ex.target_ids), k) for ex in cached if ex.soft)
        assert all(ex.teacher_logp.shape == (len(ex.target_ids), k + 1) for ex in cached if ex.soft)
        approx = _soft_prompt_loss(model, sp, collate(cached, 2, cfg, model.device), objective)
        if k == len(tok):
            assert approx[0] == pytest.approx(exact[0], rel=1e-5)
            assert torch.allclose(approx[1], exact[1], atol=1e-5)
        else:
            assert approx[0] < exact[0]


def test_teacher_targets_split_over_processes_equal_one_process(tiny_lm, tmp_path):
    """Process r of W computes batches r, r + W, ... of the same length-sorted batches as one process."""
    model, tok = tiny_lm
    examples = templated(tok) * 2
    cfg = TrainConfig(teacher_topk=4, batch_size=2)
    one = teacher_targets(model, None, examples, cfg, tok.pad_token_id, cache_dir=tmp_path / "one")
    parts = [
        teacher_targets(model, None, examples, cfg, tok.pad_token_id, rank, 2, cache_dir=tmp_path / f"rank{rank}")
        for rank in (0, 1)
    ]
    for i, ex in enumerate(one):
        mine = [p[i] for p in parts if p[i].teacher_ids is not None]
        assert len(mine) == (1 if ex.soft else 0)
        if ex.soft:
            assert torch.equal(mine[0].teacher_ids, ex.teacher_ids)
            assert torch.equal(mine[0].teacher_logp, ex.teacher_logp)


def test_train_steps_use_the_cached_targets(tiny_lm, tmp_path, monkeypatch):
    """With ``teacher_topk`` the frozen model runs before the first step, never in a step; the logged loss is the
    coarse-grained one. The targets are cached by content: a second training on the same examples reads them."""
    model, tok = tiny_lm
    examples = templated(tok)
    cfg = TrainConfig(objective="kl", steps=2, batch_size=len(examples), eval_every=100, teacher_topk=4)
    sp = make_adapter("soft-prompt", model, tok)
    fresh = copy.deepcopy(sp)
    cached = teacher_targets(model, sp, examples, cfg, tok.pad_token_id, cache_dir=tmp_path / "elsewhere")
    batch = collate(cached, tok.pad_token_id, cfg, model.device)
    with torch.no_grad():
        expected = float((loss_terms(model, sp, batch, get_objective("kl"))["d"] * batch["tok_w"]).sum())
    monkeypatch.setattr(training, "evaluate_dev", lambda *a: {"dev_agreement": 0.0, "dev_tv": 0.0})
    monkeypatch.setenv("SOFTGUARD_CACHE", str(tmp_path / "cache"))
    real_base_logp, calls = losses.base_logp, []
    monkeypatch.setattr(losses, "base_logp", lambda *a: calls.append(1) or real_base_logp(*a))
    state = training.train(model, tok, sp, examples, DevSet([], [], [], []), cfg, tmp_path / "run")
    assert len(calls) == 1  # one batch of teacher targets (3 soft examples, batch_size 4), before the steps
    assert state.history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert len(list((tmp_path / "cache" / "targets").glob("*.safetensors"))) == 1
    again = training.train(model, tok, fresh, examples, DevSet([], [], [], []), cfg, tmp_path / "run2")
    assert len(calls) == 1  # read back, not recomputed
    assert [r["loss"] for r in again.history] == [r["loss"] for r in state.history]


def test_cached_targets_keyed_by_content_and_damage_recomputed(tiny_lm, tmp_path, monkeypatch):
    """Another K, batch size or example set is another cache entry; an entry that does not hold the examples'
    targets (damaged, or another shape) is recomputed and replaced; a read-back equals the computed targets."""
    model, tok = tiny_lm
    examples, pad = templated(tok), tok.pad_token_id
    real_base_logp, calls = losses.base_logp, []
    monkeypatch.setattr(losses, "base_logp", lambda *a: calls.append(1) or real_base_logp(*a))

    def run(cfg: TrainConfig, exs: list[DistillExample] = examples) -> list[DistillExample]:
        return teacher_targets(model, None, exs, cfg, pad, cache_dir=tmp_path)

    first = run(TrainConfig(teacher_topk=4, batch_size=4))
    assert len(calls) == 1
    again = run(TrainConfig(teacher_topk=4, batch_size=4))
    assert len(calls) == 1
    for a, b in zip(first, again, strict=True):
        assert (a.teacher_ids is None) == (b.teacher_ids is None) == (not a.soft)
        if a.soft:
            assert torch.equal(a.teacher_ids, b.teacher_ids) and torch.equal(a.teacher_logp, b.teacher_logp)
    run(TrainConfig(teacher_topk=5, batch_size=4))
    run(TrainConfig(teacher_topk=4, batch_size=2))  # two batches
    run(TrainConfig(teacher_topk=4, batch_size=4), examples[:3])
    assert len(calls) == 1 + 1 + 2 + 1
    entries = sorted((tmp_path / "targets").glob("*.safetensors"))
    assert len(entries) == 4
    for entry in entries:
        entry.write_bytes(b"not a safetensors file")
    recomputed = run(TrainConfig(teacher_topk=4, batch_size=4))
    assert len(calls) == 6 and len(list((tmp_path / "targets").glob("*.safetensors"))) == 4
    assert torch.equal(recomputed[0].teacher_logp, first[0].teacher_logp)
    run(TrainConfig(teacher_topk=4, batch_size=4))
    assert len(calls) == 6  # the rewritten entry is read back


def test_mixed_cached_targets_and_bad_topk_are_refused(tiny_lm):
    model, tok = tiny_lm
    examples = templated(tok)
    cached = teacher_targets(model, None, examples[:1], TrainConfig(teacher_topk=4), tok.pad_token_id)
    with pytest.raises(ValueError, match="some soft examples of the batch have teacher targets"):
        collate(cached + examples[2:], 2, TrainConfig(), model.device)
    with pytest.raises(ValueError, match="teacher_topk must be at least 1"):
        TrainConfig(teacher_topk=0)
    assert dataclasses.replace(TrainConfig(), teacher_topk=None).teacher_topk is None


# ------------------------------------------------------------------------------------------------------------
# bf16 autocast (TrainConfig.precision)


def test_head_logp_is_float32_and_exact_under_bf16_autocast(tiny_lm):
    model, _ = tiny_lm
    hidden = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    exact = torch.log_softmax(model.get_output_embeddings()(hidden), -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = losses.head_logp(model, hidden)
        rounded = torch.log_softmax(model.get_output_embeddings()(hidden).float(), -1)  # what autocast alone gives
    assert under.dtype == torch.float32 and torch.equal(under, exact)
    assert not torch.equal(rounded, exact)  # the head would be rounded without the guard against autocast


@pytest.mark.parametrize("kind", ["soft-prompt", "lora"])
def test_bf16_autocast_step_is_close_to_fp32(tiny_lm, kind):
    """The bf16 step's loss and gradients are float32's up to bf16 rounding (8 significant bits): close, not equal."""
    model, tok = tiny_lm
    adapter = make_adapter(kind, model, tok)
    cfg = TrainConfig(teacher_topk=None)
    fp32 = loss_and_grads(model, adapter, templated(tok), cfg, "tv")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = loss_and_grads(model, adapter, templated(tok), cfg, "tv")
    assert bf16[0] == pytest.approx(fp32[0], rel=1e-2) and bf16[0] != fp32[0]
    for g16, g32 in zip(bf16[1], fp32[1], strict=True):
        assert g16.dtype == torch.float32  # the adapter's weights and gradients stay float32
        cos = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cos > 0.99, float(cos)


# ------------------------------------------------------------------------------------------------------------
# teacher targets kept by the sampling pass


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampling_pass_keeps_the_teacher_targets(tiny_lm, tmp_path, temperature):
    """generate(topk=K) keeps, per token, the coarse-grained distribution it was drawn from (at temperature 1):
    the targets teacher_targets computes with a forward over the same prompt and response, up to float rounding;
    keeping them changes no token."""
    model, tok = tiny_lm
    prompts, k = [chat_prompt(tok, p) for p in PROMPTS], 8
    settings = {"max_new_tokens": 6, "temperature": temperature, "seed": 3, "progress": False}
    gens = generate(model, tok, prompts, topk=k, **settings)
    assert [g.token_ids for g in gens] == [g.token_ids for g in generate(model, tok, prompts, **settings)]
    examples = [
        DistillExample(tok(p, add_special_tokens=False)["input_ids"], g.token_ids, 1.0, soft=True)
        for p, g in zip(prompts, gens, strict=True)
    ]
    cfg = TrainConfig(teacher_topk=k, batch_size=2)
    computed = teacher_targets(model, None, examples, cfg, tok.pad_token_id, cache_dir=tmp_path)
    for g, ex in zip(gens, computed, strict=True):
        assert g.topk_ids.shape == (len(g.token_ids), k) and g.topk_logp.shape == (len(g.token_ids), k + 1)
        assert torch.equal(g.topk_ids, ex.teacher_ids)
        assert torch.allclose(g.topk_logp, ex.teacher_logp, atol=1e-5)


def test_carried_targets_of_the_same_k_are_kept(tiny_lm, tmp_path, monkeypatch):
    """teacher_targets keeps the targets an example carries when their K is the config's, and computes the
    others (here: all of them once K differs)."""
    model, tok = tiny_lm
    examples = templated(tok)
    cfg = TrainConfig(teacher_topk=4, batch_size=2)
    carried = teacher_targets(model, None, examples, cfg, tok.pad_token_id, cache_dir=tmp_path / "a")
    real, calls = losses._compute_targets, []
    monkeypatch.setattr(losses, "_compute_targets", lambda *a: calls.append(a[3]) or real(*a))
    again = teacher_targets(model, None, carried, cfg, tok.pad_token_id, cache_dir=tmp_path / "b")
    assert calls == [] and all(a.teacher_ids is b.teacher_ids for a, b in zip(carried, again, strict=True))
    other = teacher_targets(model, None, carried, dataclasses.replace(cfg, teacher_topk=6), 2, cache_dir=tmp_path)
    assert len(calls) == 1 and len(calls[0]) == sum(ex.soft for ex in examples)
    assert all(ex.teacher_ids.shape[-1] == 6 for ex in other if ex.soft)
