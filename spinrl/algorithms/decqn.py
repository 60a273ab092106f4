"""DecQN (Seyde et al. 2023; Ireland's variant): online factored Q-learning for the behaviour policies.

Q(s, a) = mean_i U_i(s, a_i), so argmax_a Q = per-sub-action argmax. The target is the double-Q n-step
target y = R^(n) + gamma^n (1 - terminated) Q_target(s_{t+n}, argmax_a Q_online(s_{t+n}, a)) and
the loss is Huber(Q(s_t, a_t) - y). Pure functions only: the loop lives in ``spinrl.training.behaviour``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from spinrl.models.decqn import DecQNNet


@dataclass
class DecQNConfig:
    """DecQN objective: Huber(mean_i U_i(s, a_i) - [R^(n) + discount * Q_targ(s', argmax Q(s', .))])."""

    gamma: float = 0.99
    """discount per env step (the n-step discount gamma^n is stored per transition)"""
    n_step: int = 3
    """length of the n-step return"""
    huber_delta: float = 1.0
    """Huber loss threshold"""


class NStepBatch(NamedTuple):
    """A replay batch of n-step transitions; ``discount`` = gamma^k (k <= n), 0 after a termination."""

    obs: torch.Tensor  # [B, obs_dim]
    actions: torch.Tensor  # [B, N] int64
    returns: torch.Tensor  # [B] sum_k gamma^k r_{t+k}
    next_obs: torch.Tensor  # [B, obs_dim]  s_{t+k}
    discount: torch.Tensor  # [B]


def q_target(online: DecQNNet, target: DecQNNet, batch: NStepBatch) -> torch.Tensor:
    """Double-Q n-step target [B]: the online net picks a', the target net scores it."""
    with torch.no_grad():
        a_next = online.greedy(batch.next_obs)
        return batch.returns + batch.discount * target.q_value(batch.next_obs, a_next)


def q_loss(
    online: DecQNNet, target: DecQNNet, batch: NStepBatch, cfg: DecQNConfig, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """Huber TD loss of the mean-decomposed Q, each row times ``weights`` [B] when given (prioritized
    replay's importance weights); returns (loss, info) with info["td_abs"] = |Q - y| [B], the new priorities."""
    y = q_target(online, target, batch)  # no_grad forwards: backward only through the 256 rows of s_t
    q = online.q_value(batch.obs, batch.actions)
    if weights is None:
        loss = F.huber_loss(q, y, delta=cfg.huber_delta)
    else:
        loss = (F.huber_loss(q, y, delta=cfg.huber_delta, reduction="none") * weights).mean()
    return loss, {"loss": float(loss.detach()), "q_mean": float(q.detach().mean()), "td_abs": (q.detach() - y).abs()}
