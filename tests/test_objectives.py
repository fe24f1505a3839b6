"""Per-token divergences against hand-computed values (DESIGN §4)."""

from __future__ import annotations

import math

import pytest
import torch

from softguard.objectives import OBJECTIVES, forward_kl, get_objective, kl_onehot, tv, tv_onehot

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
    assert set(OBJECTIVES) >= {"tv", "kl"}
    tv_obj, kl_obj = get_objective("tv"), get_objective("kl")
    assert (tv_obj.soft, tv_obj.onehot) == (tv, tv_onehot)
    assert (kl_obj.soft, kl_obj.onehot) == (forward_kl, kl_onehot)
    with pytest.raises(ValueError, match="unknown objective 'nope'") as err:
        get_objective("nope")
    assert all(name in str(err.value) for name in OBJECTIVES)


@pytest.mark.parametrize("name", ["tv", "kl"])
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
