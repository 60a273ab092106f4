"""Implicit Q-Learning (Kostrikov et al. 2022) with a factored twin critic."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spinrl.algorithms.common import (
    Batch,
    LossInfo,
    Nets,
    actor_act,
    actor_action_probs,
    ensemble_mse,
    expectile_loss,
    td_target,
    weighted_likelihood_loss,
)

UPDATES = ("value", "critic", "actor")
TARGETS = ("critic",)


@dataclass
class IQLConfig:
    """IQL objective (docs/method.md, section "Algorithms: IQL, AWAC, BCQ").

    V: expectile(tau) regression of V(s) to min_k Q_target,k(s, a) over dataset actions.
    Q_k: MSE to r + gamma (1 - terminated) V(s').
    actor: maximise E_D[w log pi(a|s)], w = min(exp(beta (min_k Q_target,k(s,a) - V(s))), clip).
    """

    gamma: float = 0.99
    """Discount factor."""
    polyak: float = 0.005
    """Target-network averaging rate tau."""
    expectile: float = 0.8
    """Expectile tau of the value regression (0.5 = mean, -> 1 = max over dataset actions)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights."""
    clip: float = 100.0
    """Upper bound on the advantage weights."""


def actor_weights(adv_B: torch.Tensor, cfg: IQLConfig) -> torch.Tensor:
    """min(exp(beta * adv), clip), computed without overflow."""
    return torch.exp((cfg.beta * adv_B).clamp(max=math.log(cfg.clip)))


def _once(shared: dict | None, key: str, compute):
    """``compute()`` without grad, kept in the step's scratch dict ``shared`` (or None) for a later loss."""
    if shared is not None and key in shared:
        return shared[key]
    with torch.no_grad():
        out = compute()
    if shared is not None:
        shared[key] = out
    return out


def target_q(nets: Nets, batch: Batch, shared: dict | None) -> torch.Tensor:
    """min_k Q_target,k(s, a), computed once per step: the value and actor losses both read it and the
    target critic only moves after every update."""
    return _once(shared, "target_q", lambda: nets.critic_target(batch.obs, batch.actions).min(0).values)


def updated_values(nets: Nets, batch: Batch, shared: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(V(s), V(s')) after the value update, from one forward over both halves: the critic's target reads
    V(s'), the actor's advantage V(s), and V does not move between those two losses."""
    value = nets.value
    assert value is not None  # built: UPDATES names "value"
    return _once(shared, "v_updated", lambda: value(torch.cat([batch.obs, batch.next_obs])).chunk(2))


def value_loss(nets: Nets, batch: Batch, cfg: IQLConfig, shared: dict | None = None) -> LossInfo:
    """Expectile regression of V(s) on min_k Q_target,k(s, a)."""
    q_B = target_q(nets, batch, shared)
    assert nets.value is not None  # built: UPDATES names "value"
    v_B = nets.value(batch.obs)
    loss = expectile_loss(q_B - v_B, cfg.expectile)
    return loss, {"value_loss": loss.detach(), "v": v_B.detach().mean()}


def critic_loss(nets: Nets, batch: Batch, cfg: IQLConfig, shared: dict | None = None) -> LossInfo:
    """MSE of each Q_k(s, a) to r + gamma (1 - terminated) V(s')."""
    with torch.no_grad():
        target_B = td_target(batch, updated_values(nets, batch, shared)[1], cfg.gamma)
    q_KB = nets.critic(batch.obs, batch.actions)
    loss = ensemble_mse(q_KB, target_B)
    return loss, {"critic_loss": loss.detach(), "q": q_KB.detach().mean()}


def actor_loss(nets: Nets, batch: Batch, cfg: IQLConfig, shared: dict | None = None) -> LossInfo:
    """Advantage-weighted likelihood: -E[w log pi(a|s)] with detached weights (V after its update)."""
    q_B = target_q(nets, batch, shared)
    with torch.no_grad():
        adv_B = q_B - updated_values(nets, batch, shared)[0]
        w_B = actor_weights(adv_B, cfg)
    return weighted_likelihood_loss(nets, batch, adv_B, w_B)


def act(
    nets: Nets, obs: torch.Tensor, cfg: IQLConfig, deterministic: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The actor's sample (or mode when ``deterministic``), long [B, N]."""
    return actor_act(nets, obs, deterministic, generator)


def action_probs(
    nets: Nets, obs: torch.Tensor, all_AN: torch.Tensor, cfg: IQLConfig, deterministic: bool
) -> torch.Tensor:
    """Distribution of ``act`` over the joint actions ``all_AN``, [B, A] (exact evaluation on a known model)."""
    return actor_action_probs(nets, obs, all_AN, deterministic)
