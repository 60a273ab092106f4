"""AWAC (Nair et al. 2020) with a state-value net and a factored twin critic."""

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
    td_target,
    weighted_likelihood_loss,
)

UPDATES = ("value", "critic", "actor")
TARGETS = ("critic", "value")


@dataclass
class AWACConfig:
    """AWAC objective (docs/method.md, section "Algorithms: IQL, AWAC, BCQ").

    Q_k: MSE to r + gamma (1 - terminated) V_target(s').
    V: MSE to min_k E_{a~pi} Q_target,k(s, a), exact per sub-action for factored actors
       (sum_i sum_{a_i} pi_i(a_i|s) q_k,i(s)[a_i]), k_samples draws for the autoregressive actor.
    actor: maximise E_D[w log pi(a|s)], w = exp(min((min_k Q_k(s,a) - V(s)) / lam, log clip)).
    """

    gamma: float = 0.99
    """Discount factor."""
    polyak: float = 0.005
    """Target-network averaging rate tau (critic and value)."""
    lam: float = 0.3
    """Temperature lambda of the advantage weights."""
    clip: float = 100.0
    """Upper bound on the advantage weights."""
    k_samples: int = 4
    """Actions sampled per state for E_pi Q when the actor is autoregressive."""


def actor_weights(adv_B: torch.Tensor, cfg: AWACConfig) -> torch.Tensor:
    """exp(min(adv / lam, log clip))."""
    return torch.exp((adv_B / cfg.lam).clamp(max=math.log(cfg.clip)))


def policy_value(
    nets: Nets, obs: torch.Tensor, cfg: AWACConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """min_k E_{a~pi(.|s)} Q_target,k(s, a), shape [B]; exact for factored actors.

    Because Q_k is a sum over sub-actions and pi is a product, E_pi Q_k = sum_i E_{pi_i} q_k,i.
    """
    actor, critic = nets.actor, nets.critic_target
    if actor.factored:
        probs_BNM = actor.probs(obs)
        q_KBNM = critic.q_all(obs)
        return (probs_BNM.unsqueeze(0) * q_KBNM).sum((-1, -2)).min(0).values
    B, k = obs.shape[0], cfg.k_samples
    acts_BkN = actor.sample_k(obs, k, generator)
    q_KBk = critic(obs.repeat_interleave(k, 0), acts_BkN.flatten(0, 1)).view(-1, B, k)
    return q_KBk.mean(-1).min(0).values


def value_loss(
    nets: Nets, batch: Batch, cfg: AWACConfig, generator: torch.Generator | None = None, shared: dict | None = None
) -> LossInfo:
    """MSE of V(s) to the policy's value under the target critic."""
    with torch.no_grad():
        target_B = policy_value(nets, batch.obs, cfg, generator)
    assert nets.value is not None  # built: UPDATES names "value"
    v_B = nets.value(batch.obs)
    loss = (v_B - target_B).pow(2).mean()
    return loss, {"value_loss": loss.detach(), "v": v_B.detach().mean()}


def critic_loss(nets: Nets, batch: Batch, cfg: AWACConfig, shared: dict | None = None) -> LossInfo:
    """MSE of each Q_k(s, a) to r + gamma (1 - terminated) V_target(s')."""
    assert nets.value_target is not None  # built: TARGETS names "value"
    with torch.no_grad():
        target_B = td_target(batch, nets.value_target(batch.next_obs), cfg.gamma)
    q_KB = nets.critic(batch.obs, batch.actions)
    loss = ensemble_mse(q_KB, target_B)
    return loss, {"critic_loss": loss.detach(), "q": q_KB.detach().mean()}


def actor_loss(nets: Nets, batch: Batch, cfg: AWACConfig, shared: dict | None = None) -> LossInfo:
    """Advantage-weighted likelihood with the online critic and value (weights detached)."""
    assert nets.value is not None  # built: UPDATES names "value"
    with torch.no_grad():
        adv_B = nets.critic(batch.obs, batch.actions).min(0).values - nets.value(batch.obs)
        w_B = actor_weights(adv_B, cfg)
    return weighted_likelihood_loss(nets, batch, adv_B, w_B)


def act(
    nets: Nets, obs: torch.Tensor, cfg: AWACConfig, deterministic: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The actor's sample (or mode when ``deterministic``), long [B, N]."""
    return actor_act(nets, obs, deterministic, generator)


def action_probs(
    nets: Nets, obs: torch.Tensor, all_AN: torch.Tensor, cfg: AWACConfig, deterministic: bool
) -> torch.Tensor:
    """Distribution of ``act`` over the joint actions ``all_AN``, [B, A] (exact evaluation on a known model)."""
    return actor_action_probs(nets, obs, all_AN, deterministic)
