"""Distillation objectives: per-token divergences between teacher and student next-token distributions.

Every function takes log-probabilities over the vocabulary at N loss positions and returns one value per
position, shape [N]. The distillation loss of DESIGN §4 combines two branches per prompt x:

    L(x) = (1/K) sum_k (1 - u_k) * mean_t D(pi(.|x, r_k,<t), q(.|x, r_k,<t))      "keep" branch
           + rho(x) * mean_t D(onehot(r*_t), q(.|x, r*_<t))                          "refuse" branch

softguard normalises per token within each branch (``mean_t``, optionally weighted towards the first response
tokens, see ``training.token_weights``), so a long base response weighs no more than the short refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Objective:
    """A divergence D with its soft-target form D(p, q) and its one-hot form D(onehot(y), q)."""

    name: str
    soft: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    onehot: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


OBJECTIVES: dict[str, Objective] = {
    "tv": Objective("tv", tv, tv_onehot),
    "kl": Objective("kl", forward_kl, kl_onehot),
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
