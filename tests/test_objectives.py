"""Per-token divergences against hand-computed values (DESIGN §4)."""

from __future__ import annotations

import math

import pytest
import torch

from softguard.objectives import (
    OBJECTIVES,
    forward_kl,
    get_objective,
    jsd,
    jsd_onehot,
    kl_onehot,
    reinforce_loss,
    reverse_kl,
    reverse_kl_onehot,
    rloo_advantages,
    tv,
    tv_onehot,
)

P = [0.5, 0.3, 0.2]
Q = [0.2, 0.3, 0.5]


def logp(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def test_tv_hand_value():
    # 1/2 (|0.5-0.2| + |0.3-0.3| + |0.2-0.5|) = 0.3
    got = tv(logp(Q), logp(P))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(0.3, abs=1e-12)
    # symmetric
    assert tv(logp(P), logp(Q)).item() == pytest.approx(0.3, abs=1e-12)


def test_forward_kl_hand_value_and_direction():
    kl_pq = 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(0.3 / 0.3) + 0.2 * math.log(0.2 / 0.5)
    kl_qp = 0.2 * math.log(0.2 / 0.5) + 0.3 * math.log(0.3 / 0.3) + 0.5 * math.log(0.5 / 0.2)
    # forward_kl(student, teacher) = KL(teacher || student)
    assert forward_kl(logp(Q), logp(P)).item() == pytest.approx(kl_pq, abs=1e-12)
    p2, q2 = [0.7, 0.2, 0.1], [0.4, 0.4, 0.2]
    kl2 = sum(a * math.log(a / b) for a, b in zip(p2, q2, strict=True))
    kl2_rev = sum(b * math.log(b / a) for a, b in zip(p2, q2, strict=True))
    assert kl2 != pytest.approx(kl2_rev)
    assert forward_kl(logp(q2), logp(p2)).item() == pytest.approx(kl2, abs=1e-12)
    assert kl_qp == pytest.approx(kl_pq)  # this particular pair is symmetric; p2/q2 above is not


def test_batched_rows_are_independent():
    s, t = logp(Q, [0.4, 0.4, 0.2]), logp(P, [0.7, 0.2, 0.1])
    got = tv(s, t)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([0.3, 0.3])  # 1/2 (0.3 + 0.2 + 0.1)


def test_pinsker_on_hand_values():
    assert tv(logp(Q), logp(P)).item() <= math.sqrt(forward_kl(logp(Q), logp(P)).item() / 2)


@pytest.mark.parametrize("y", [0, 1, 2])
def test_onehot_forms(y):
    q = torch.tensor([Q], dtype=torch.float64)
    target = torch.tensor([y])
    assert tv_onehot(q.log(), target).item() == pytest.approx(1 - Q[y], abs=1e-12)
    assert kl_onehot(q.log(), target).item() == pytest.approx(-math.log(Q[y]), abs=1e-12)
    # the one-hot forms agree with the soft forms on a one-hot teacher (up to the log(0) guard)
    onehot = torch.full((1, 3), 1e-30, dtype=torch.float64)
    onehot[0, y] = 1.0
    assert tv(q.log(), onehot.log()).item() == pytest.approx(1 - Q[y], abs=1e-9)
    assert forward_kl(q.log(), onehot.log()).item() == pytest.approx(-math.log(Q[y]), abs=1e-9)


def test_onehot_batch_gathers_each_row():
    q = logp(Q, P)
    target = torch.tensor([2, 0])
    assert tv_onehot(q, target).tolist() == pytest.approx([0.5, 0.5])
    assert kl_onehot(q, target).tolist() == pytest.approx([-math.log(0.5), -math.log(0.5)])


def test_zero_when_equal():
    p = logp(P, Q)
    assert torch.allclose(tv(p, p), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(forward_kl(p, p), torch.zeros(2, dtype=torch.float64))
    certain = torch.tensor([[0.0, -1e4, -1e4]], dtype=torch.float64)  # q = onehot(0)
    assert tv_onehot(certain, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_onehot(certain, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-12)


def test_get_objective():
    assert set(OBJECTIVES) == {"tv", "kl", "rkl", "jsd"}
    tv_obj, kl_obj = get_objective("tv"), get_objective("kl")
    assert (tv_obj.soft, tv_obj.onehot) == (tv, tv_onehot)
    assert (kl_obj.soft, kl_obj.onehot) == (forward_kl, kl_onehot)
    with pytest.raises(ValueError, match="unknown objective 'nope'") as err:
        get_objective("nope")
    assert all(name in str(err.value) for name in OBJECTIVES)


@pytest.mark.parametrize("name", ["tv", "kl", "rkl", "jsd"])
@pytest.mark.parametrize("form", ["soft", "onehot"])
def test_gradient_step_moves_student_towards_teacher(name, form):
    obj = get_objective(name)
    logits = torch.tensor([Q, [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]], dtype=torch.float64).log().requires_grad_(True)
    teacher = logp(P, [0.3, 0.3, 0.4], [0.2, 0.6, 0.2])
    target = torch.tensor([0, 2, 1])

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        s = torch.log_softmax(x, -1)
        return (obj.soft(s, teacher) if form == "soft" else obj.onehot(s, target)).sum()

    before = loss_of(logits)
    before.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = logits - 0.1 * logits.grad
        after = loss_of(stepped)
        q_before, q_after = logits.softmax(-1), stepped.softmax(-1)
    assert after < before
    if form == "soft":  # closer to the teacher in TV, row by row
        assert bool((tv(q_after.log(), teacher) < tv(q_before.log(), teacher)).all())
    else:  # more mass on the target token in every row
        rows = torch.arange(3)
        assert bool((q_after[rows, target] > q_before[rows, target]).all())


P2, Q2 = [0.7, 0.2, 0.1], [0.4, 0.4, 0.2]


def test_reverse_kl_hand_value():
    # reverse_kl(student q, teacher p) = KL(q || p)
    want = sum(b * math.log(b / a) for a, b in zip(P2, Q2, strict=True))
    assert reverse_kl(logp(Q2), logp(P2)).item() == pytest.approx(want, abs=1e-12)
    assert reverse_kl(logp(Q2), logp(P2)).item() != pytest.approx(forward_kl(logp(Q2), logp(P2)).item())


def test_reverse_kl_onehot_is_kl_to_the_smoothed_target():
    eps, y = 0.1, 1
    smoothed = torch.full((1, 3), eps / 3, dtype=torch.float64)
    smoothed[0, y] += 1 - eps
    want = sum(b * math.log(b / a) for a, b in zip(smoothed[0].tolist(), Q2, strict=True))
    got = reverse_kl_onehot(logp(Q2), torch.tensor([y]), eps=eps)
    assert got.item() == pytest.approx(want, abs=1e-12)
    # its minimiser is the smoothed target itself (value 0), not the exact one-hot
    assert reverse_kl_onehot(smoothed.log(), torch.tensor([y]), eps=eps).item() == pytest.approx(0.0, abs=1e-12)


def test_jsd_hand_value_symmetric_and_bounded():
    m = [(a + b) / 2 for a, b in zip(P2, Q2, strict=True)]
    want = 0.5 * sum(a * math.log(a / c) for a, c in zip(P2, m, strict=True)) + 0.5 * sum(
        b * math.log(b / c) for b, c in zip(Q2, m, strict=True)
    )
    assert jsd(logp(Q2), logp(P2)).item() == pytest.approx(want, abs=1e-12)
    assert jsd(logp(P2), logp(Q2)).item() == pytest.approx(want, abs=1e-12)
    disjoint_p = torch.tensor([[0.0, -1e4, -1e4]], dtype=torch.float64)
    disjoint_q = torch.tensor([[-1e4, 0.0, -1e4]], dtype=torch.float64)
    assert jsd(disjoint_q, disjoint_p).item() == pytest.approx(math.log(2), abs=1e-9)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_beta_weights_and_onehot_closed_form(beta):
    m = [beta * a + (1 - beta) * b for a, b in zip(P2, Q2, strict=True)]
    want = beta * sum(a * math.log(a / c) for a, c in zip(P2, m, strict=True)) + (1 - beta) * sum(
        b * math.log(b / c) for b, c in zip(Q2, m, strict=True)
    )
    assert jsd(logp(Q2), logp(P2), beta).item() == pytest.approx(want, abs=1e-12)
    assert get_objective("jsd", beta).soft(logp(Q2), logp(P2)).item() == pytest.approx(want, abs=1e-12)
    for y in range(3):
        onehot = torch.full((1, 3), 1e-300, dtype=torch.float64)
        onehot[0, y] = 1.0
        closed = jsd_onehot(logp(Q2), torch.tensor([y]), beta).item()
        assert closed == pytest.approx(jsd(logp(Q2), onehot.log(), beta).item(), abs=1e-9)
    with pytest.raises(ValueError, match="0 < beta < 1"):
        jsd(logp(Q2), logp(P2), 1.0)


def test_rloo_advantages_hand_values():
    rewards = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.2, 0.2]], dtype=torch.float64)
    # row 0: 1 - (0 + 0.5)/2 = 0.75, 0 - (1 + 0.5)/2 = -0.75, 0.5 - (1 + 0)/2 = 0
    assert rloo_advantages(rewards).tolist() == [pytest.approx([0.75, -0.75, 0.0]), pytest.approx([0.0, 0.0, 0.0])]
    with pytest.raises(ValueError, match="K >= 2"):
        rloo_advantages(torch.ones(3, 1))


def test_reinforce_loss_raises_the_logp_of_better_samples():
    logits = torch.zeros(2, 3, requires_grad=True)
    samples = torch.tensor([0, 1])  # two samples of one prompt: token 0 (reward 1) and token 1 (reward 0)
    adv = rloo_advantages(torch.tensor([[1.0, 0.0]])).flatten()
    seq_logp = torch.log_softmax(logits, -1)[torch.arange(2), samples]
    loss = reinforce_loss(seq_logp, adv)
    assert loss.item() == pytest.approx(-(1.0 * math.log(1 / 3) - 1.0 * math.log(1 / 3)) / 2)
    loss.backward()
    stepped = (logits - 1.0 * logits.grad).softmax(-1)
    assert stepped[0, 0] > 1 / 3 and stepped[1, 1] < 1 / 3
