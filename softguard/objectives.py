"""Training objectives: per-token divergences between teacher and student next-token distributions, and the
policy-gradient pieces of the ``reinforce`` baseline.

Every divergence takes log-probabilities over the vocabulary at N loss positions and returns one value per
position, shape [N]. The distillation loss of DESIGN §4 combines two branches per prompt x:

    L(x) = (1/K) sum_k (1 - u_k) * mean_t D(pi(.|x, r_k,<t), q(.|x, r_k,<t))      "keep" branch
           + rho(x) * mean_t D(onehot(r*_t), q(.|x, r*_<t))                          "refuse" branch

softguard normalises per token within each branch (``mean_t``, optionally weighted towards the first response
tokens, see ``losses.token_weights``), so a long base response weighs no more than the short refusal. The
mathematics, derived: docs/objectives.md (§2 the branches, §4 the one-hot forms, §5 coarse-graining) and
docs/reinforce.md (the leave-one-out policy gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch


def tv(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Total variation TV(p, q) = 1/2 sum_v |p_v - q_v|.  [N, V], [N, V] -> [N], in [0, 1]."""
    return 0.5 * (teacher_logp.exp() - student_logp.exp()).abs().sum(-1)


def tv_onehot(student_logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TV(onehot(y), q) = 1 - q_y.  [N, V], [N] -> [N]."""
    return 1.0 - student_logp.gather(-1, target[:, None]).squeeze(-1).exp()


def forward_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Forward KL(p || q) = sum_v p_v (log p_v - log q_v).  [N, V], [N, V] -> [N], >= 0."""
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


def kl_onehot(student_logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(onehot(y) || q) = -log q_y (cross-entropy).  [N, V], [N] -> [N]."""
    return -student_logp.gather(-1, target[:, None]).squeeze(-1)


def reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Reverse KL(q || p) = sum_v q_v (log q_v - log p_v): mode-seeking.  [N, V], [N, V] -> [N], >= 0."""
    return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)


def reverse_kl_onehot(student_logp: torch.Tensor, target: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """KL(q || p_eps) against the smoothed one-hot p_eps = (1 - eps) onehot(y) + eps / V (docs/objectives.md §4).
    [N, V], [N] -> [N].

    KL(q || onehot(y)) is infinite unless q is one-hot, so the target is smoothed; the minimiser is q = p_eps:
        sum_v q_v log q_v - q_y log(1 - eps + eps/V) - (1 - q_y) log(eps/V).
    """
    v = student_logp.shape[-1]
    q_y = student_logp.gather(-1, target[:, None]).squeeze(-1).exp()
    neg_entropy = (student_logp.exp() * student_logp).sum(-1)
    return neg_entropy - q_y * math.log(1 - eps + eps / v) - (1 - q_y) * math.log(eps / v)


def jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalised JSD_beta(p, q) = beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q.

    beta = 0.5 is the symmetric Jensen-Shannon divergence (<= log 2); beta -> 0 behaves like beta * KL(p || q)
    and beta -> 1 like (1 - beta) * KL(q || p).  [N, V], [N, V] -> [N], >= 0.
    """
    if not 0 < beta < 1:
        raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
    m = torch.logsumexp(torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1 - beta)]), dim=0)
    return beta * forward_kl(m, teacher_logp) + (1 - beta) * forward_kl(m, student_logp)


def jsd_onehot(student_logp: torch.Tensor, target: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """JSD_beta(onehot(y), q) in closed form, with m_y = beta + (1 - beta) q_y and m_v = (1 - beta) q_v elsewhere:
    beta (-log m_y) + (1 - beta) [ (1 - q_y) (-log(1 - beta)) + q_y log(q_y / m_y) ] (docs/objectives.md §4).
    [N, V], [N] -> [N]
    """
    if not 0 < beta < 1:
        raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
    logq_y = student_logp.gather(-1, target[:, None]).squeeze(-1)
    q_y = logq_y.exp()
    log_m_y = torch.log(beta + (1 - beta) * q_y)
    return -beta * log_m_y + (1 - beta) * ((1 - q_y) * -math.log(1 - beta) + q_y * (logq_y - log_m_y))


#: The log-mass of an empty "rest" bucket (``coarse_grain`` with K = V): finite, so that the divergences stay finite
#: and differentiable, and exp() of it is 0 in every float type.
EMPTY_LOGP = -1e4


def coarse_grain(logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """A distribution over the vocabulary coarse-grained onto K tokens and one bucket for all others ("rest").
    [N, V] log-probabilities, [N, K] token ids -> [N, K + 1]: log p(ids_1..ids_K), log p(rest).

    log p(rest) is a logsumexp over the complement of ``ids`` (exact, not log(1 - sum), which loses a small
    rest to rounding); an empty rest (K = V) gets about ``EMPTY_LOGP`` on both sides. The divergences above apply
    unchanged to the result. With the teacher p's top-K tokens as ``ids`` for both p and the student q, each of
    them, an f-divergence, can only shrink (data-processing inequality): D(p~, q~) <= D(p, q) on the coarse-grained
    p~, q~. The gap is what the rest bucket hides: for KL(p || q) it is p(rest) KL(p(.|rest) || q(.|rest))
    (log-sum inequality), for TV at most p(rest) (triangle inequality), and nothing when K = V (docs/objectives.md
    §5).
    """
    rest = logp.scatter(-1, ids, EMPTY_LOGP).logsumexp(-1, keepdim=True)  # the K entries' exp() vanish beside any other
    return torch.cat([logp.gather(-1, ids), rest], dim=-1)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out advantages A_k = R_k - 1/(K-1) sum_{j != k} R_j for K samples per prompt (docs/reinforce.md
    §2).  [P, K] -> [P, K]."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"the leave-one-out baseline needs K >= 2 samples per prompt, got K={k}")
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


def reinforce_loss(seq_logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Policy-gradient surrogate -mean_i A_i log q(r_i | x_i), whose gradient is the REINFORCE estimate.

    ``seq_logp`` [B]: per-sample log-probability of the sampled response (softguard uses the mean over its tokens,
    a constant-free normalisation that keeps long samples from dominating, docs/reinforce.md §3); ``advantages``
    [B] (no gradient).
    """
    return -(advantages.detach() * seq_logp).mean()


@dataclass(frozen=True)
class Objective:
    """A divergence D with its soft-target form D(p, q) and its one-hot form D(onehot(y), q)."""

    name: str
    soft: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    onehot: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


#: Distillation divergences (``sft`` and ``reinforce``, the direct-optimization baselines, are ``losses`` strategies).
OBJECTIVES: dict[str, Objective] = {
    "tv": Objective("tv", tv, tv_onehot),
    "kl": Objective("kl", forward_kl, kl_onehot),
    "rkl": Objective("rkl", reverse_kl, reverse_kl_onehot),
    "jsd": Objective("jsd", jsd, jsd_onehot),
}


def get_objective(name: str, beta: float = 0.5) -> Objective:
    """The divergence ``name``; ``beta`` parameterises ``jsd``."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    if name == "jsd":
        return Objective("jsd", partial(jsd, beta=beta), partial(jsd_onehot, beta=beta))
    return OBJECTIVES[name]
