"""Types and helpers shared by the offline algorithms (no training loop here)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple, Sequence, TypeVar

import torch
from torch import nn

from spinrl.models import FactoredTwinCritic, ModelConfig, ValueNet
from spinrl.models.actors import ActorModule

_M = TypeVar("_M", bound=nn.Module)

LossInfo = tuple[torch.Tensor, dict[str, torch.Tensor]]
"""What every loss function returns: the scalar to minimise and detached values to log."""


class Batch(NamedTuple):
    """A minibatch of transitions; ``actions`` is long [B, N], the rest float."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


@dataclass
class Nets:
    """The networks an algorithm reads and updates; names match ``UPDATES`` and ``TARGETS``."""

    actor: ActorModule
    critic: FactoredTwinCritic
    critic_target: FactoredTwinCritic
    value: ValueNet | None = None
    value_target: ValueNet | None = None


def target_copy(net: _M) -> _M:
    """Frozen copy of ``net`` to be tracked by :func:`polyak`."""
    target = copy.deepcopy(net)
    target.requires_grad_(False)
    return target


def build_nets(
    actor: ActorModule,
    obs_dim: int,
    nvec: Sequence[int],
    cfg: ModelConfig | None = None,
    updates: Sequence[str] = ("value", "critic", "actor"),
    targets: Sequence[str] = ("critic",),
) -> Nets:
    """Critic, targets and (if the algorithm updates one) a value net around ``actor``.

    Pass an algorithm module's ``UPDATES`` and ``TARGETS``.
    """
    cfg = cfg or ModelConfig()
    critic = FactoredTwinCritic(obs_dim, nvec, cfg.critic_hidden).to(_device(actor))
    value = ValueNet(obs_dim, cfg.critic_hidden).to(_device(actor)) if "value" in updates else None
    return Nets(
        actor=actor,
        critic=critic,
        critic_target=target_copy(critic),
        value=value,
        value_target=target_copy(value) if value is not None and "value" in targets else None,
    )


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def polyak(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place, one fused op over all tensors."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean of |tau - 1(u < 0)| u^2 over all elements (IQL's asymmetric L2)."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


def td_target(batch: Batch, next_v_B: torch.Tensor, gamma: float) -> torch.Tensor:
    """r + gamma (1 - terminated) V(s'); truncation is not termination, so it bootstraps."""
    return batch.rewards + gamma * (1.0 - batch.terminated.to(next_v_B.dtype)) * next_v_B


def ensemble_mse(q_KB: torch.Tensor, target_B: torch.Tensor) -> torch.Tensor:
    """Sum over critic members of each member's mean squared error to a shared target."""
    return (q_KB - target_B.unsqueeze(0)).pow(2).mean(1).sum(0)


def weighted_likelihood_loss(
    nets: Nets, batch: Batch, adv_B: torch.Tensor, w_B: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-E[w log pi(a|s)] with detached weights: the actor objective IQL and AWAC share."""
    logp_B = nets.actor.log_prob(batch.obs, batch.actions)
    loss = -(w_B * logp_B).mean()
    info = {"actor_loss": loss.detach(), "adv": adv_B.mean(), "weight": w_B.mean(), "log_prob": logp_B.detach().mean()}
    return loss, info


@torch.no_grad()
def actor_act(
    nets: Nets, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The actor's sample (or mode when ``deterministic``), long [B, N]."""
    return nets.actor.mode(obs) if deterministic else nets.actor.sample(obs, generator)


def joint_one_hot(act_BN: torch.Tensor, all_AN: torch.Tensor) -> torch.Tensor:
    """One-hot [B, A] of each row's joint action among the enumerated ``all_AN`` [A, N] (float64)."""
    return (act_BN.unsqueeze(1) == all_AN.unsqueeze(0)).all(-1).double()


@torch.no_grad()
def actor_action_probs(nets: Nets, obs_BO: torch.Tensor, all_AN: torch.Tensor, deterministic: bool) -> torch.Tensor:
    """Distribution of ``actor_act`` over the joint actions ``all_AN`` [A, N], shape [B, A]: pi(a|s) from
    the actor's likelihood, or a one-hot on its mode when ``deterministic``."""
    B, A = obs_BO.shape[0], all_AN.shape[0]
    if deterministic:
        return joint_one_hot(nets.actor.mode(obs_BO), all_AN)
    logp_BA = nets.actor.log_prob(obs_BO.repeat_interleave(A, 0), all_AN.repeat(B, 1)).view(B, A).double()
    return torch.softmax(logp_BA, dim=-1)  # = exp(log pi), renormalized against float rounding
