"""Discrete BCQ (Fujimoto et al. 2019) for factored actions: Q-learning restricted to likely actions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spinrl.algorithms.common import Batch, LossInfo, Nets, ensemble_mse, joint_one_hot, td_target
from spinrl.models import NEG

UPDATES = ("critic", "actor")
TARGETS = ("critic",)


@dataclass
class BCQConfig:
    """BCQ objective (docs/method.md, section "Algorithms: IQL, AWAC, BCQ"); ``nets.actor`` is the imitation model pi_b.

    pi_b: maximise E_D[log pi_b(a|s)].
    allowed set per sub-action: A_i(s) = {a_i : pi_b(a_i|s) >= threshold * max pi_b(.|s)}.
    Q_k: MSE to r + gamma (1 - terminated) min_k' sum_i max_{a_i in A_i(s')} q_target,k',i(s')[a_i]
       (max and sum per target member, then the min over members: clipped double Q, as in IQL/AWAC).
    acting: a_i = argmax_{a_i in A_i(s)} mean_k q_k,i(s)[a_i]; the mean over members keeps the joint
       argmax exactly decomposable per sub-action (a min over members would not be).
    An autoregressive pi_b instead proposes k_candidates joint actions; the best by Q is taken.
    """

    gamma: float = 0.99
    """Discount factor."""
    polyak: float = 0.005
    """Target-network averaging rate tau."""
    threshold: float = 0.3
    """Relative likelihood a sub-action needs under pi_b to be allowed (0 = plain Q-learning)."""
    k_candidates: int = 10
    """Joint candidates sampled from an autoregressive pi_b."""


def allowed_set(logits_BNM: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool [B, N, max_m]: pi_b(a_i|s) >= threshold * max pi_b(.|s); padding never allowed.

    Works on logits: the softmax normaliser cancels in the ratio, so the test is
    logit - max logit >= log(threshold).
    """
    log_thr = math.log(threshold) if threshold > 0 else -math.inf
    rel = logits_BNM - logits_BNM.amax(-1, keepdim=True)
    return (rel >= log_thr) & (logits_BNM > NEG / 2)


def _candidates(nets: Nets, obs: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    return nets.actor.sample_k(obs, k, generator)


def _candidate_q(critic, obs: torch.Tensor, cand_BCN: torch.Tensor) -> torch.Tensor:
    B, C, _ = cand_BCN.shape
    return critic(obs.repeat_interleave(C, 0), cand_BCN.flatten(0, 1)).view(-1, B, C)


def constrained_max(
    nets: Nets, critic, obs: torch.Tensor, cfg: BCQConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per critic member, max of Q_k(s, .) over pi_b's allowed actions, shape [K, B]."""
    if nets.actor.factored:
        allowed_BNM = allowed_set(nets.actor.logits(obs), cfg.threshold)
        q_KBNM = critic.q_all(obs).masked_fill(~allowed_BNM, -math.inf)
        return q_KBNM.amax(-1).sum(-1)
    cand_BCN = _candidates(nets, obs, cfg.k_candidates, generator)
    return _candidate_q(critic, obs, cand_BCN).amax(-1)


def critic_loss(
    nets: Nets, batch: Batch, cfg: BCQConfig, generator: torch.Generator | None = None, shared: dict | None = None
) -> LossInfo:
    """MSE of each Q_k(s, a) to r + gamma (1 - terminated) min_k max_{allowed a'} Q_target,k(s', a')."""
    with torch.no_grad():
        next_v_B = constrained_max(nets, nets.critic_target, batch.next_obs, cfg, generator).min(0).values
        target_B = td_target(batch, next_v_B, cfg.gamma)
    q_KB = nets.critic(batch.obs, batch.actions)
    loss = ensemble_mse(q_KB, target_B)
    return loss, {"critic_loss": loss.detach(), "q": q_KB.detach().mean()}


def actor_loss(nets: Nets, batch: Batch, cfg: BCQConfig, shared: dict | None = None) -> LossInfo:
    """Imitation: -E_D[log pi_b(a|s)]."""
    logp_B = nets.actor.log_prob(batch.obs, batch.actions)
    loss = -logp_B.mean()
    return loss, {"actor_loss": loss.detach(), "log_prob": logp_B.detach().mean()}


@torch.no_grad()
def act(
    nets: Nets, obs: torch.Tensor, cfg: BCQConfig, deterministic: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Greedy constrained action, long [B, N].

    Factored pi_b: per sub-action argmax of mean_k q_k,i over the allowed set (``deterministic`` is
    irrelevant). Autoregressive pi_b: best of k_candidates samples by mean_k Q_k; when
    ``deterministic`` the greedy decode replaces the first candidate.
    """
    if nets.actor.factored:
        allowed_BNM = allowed_set(nets.actor.logits(obs), cfg.threshold)
        q_BNM = nets.critic.q_all(obs).mean(0).masked_fill(~allowed_BNM, -math.inf)
        return q_BNM.argmax(-1)
    cand_BCN = _candidates(nets, obs, cfg.k_candidates, generator)
    if deterministic:
        cand_BCN[:, 0] = nets.actor.mode(obs)
    best_B = _candidate_q(nets.critic, obs, cand_BCN).mean(0).argmax(-1)
    return cand_BCN[torch.arange(obs.shape[0], device=obs.device), best_B]


@torch.no_grad()
def action_probs(
    nets: Nets, obs: torch.Tensor, all_AN: torch.Tensor, cfg: BCQConfig, deterministic: bool
) -> torch.Tensor:
    """Distribution of ``act`` over the joint actions ``all_AN`` [A, N], shape [B, A], in closed form.

    Factored pi_b: ``act`` is deterministic (one-hot). Autoregressive pi_b: the best by mean_k Q of k
    i.i.d. draws is action a with probability C(a)^k - C_<(a)^k, where C(a) is pi_b's mass on actions with
    Q <= Q(a) and C_<(a) = C(a) - pi_b(a); with ``deterministic`` the greedy decode is one candidate and
    k - 1 draws compete with it. (Exactly tied Q values between different actions are not split.)
    """
    B, A = obs.shape[0], all_AN.shape[0]
    if nets.actor.factored:
        return joint_one_hot(act(nets, obs, cfg, True), all_AN)
    pi_BA = torch.softmax(nets.actor.log_prob(obs.repeat_interleave(A, 0), all_AN.repeat(B, 1)).view(B, A).double(), -1)
    q_BA = _candidate_q(nets.critic, obs, all_AN.unsqueeze(0).expand(B, A, -1)).mean(0)
    order = q_BA.argsort(-1)  # ascending Q
    c_BA = pi_BA.gather(1, order).cumsum(-1).clamp(max=1.0)
    below_BA = (c_BA - pi_BA.gather(1, order)).clamp(min=0.0)
    k = cfg.k_candidates
    if not deterministic:
        p_sorted = c_BA**k - below_BA**k
    else:
        mode_B = joint_one_hot(nets.actor.mode(obs), all_AN).gather(1, order).argmax(-1)  # rank of the greedy decode
        rank_A = torch.arange(A, device=obs.device)
        above = rank_A.unsqueeze(0) > mode_B.unsqueeze(1)
        p_sorted = torch.where(above, c_BA ** (k - 1) - below_BA ** (k - 1), 0.0)
        at_mode_BA = rank_A.unsqueeze(0) == mode_B.unsqueeze(1)
        p_sorted = p_sorted + at_mode_BA * c_BA.gather(1, mode_B.unsqueeze(1)) ** (k - 1)
    return torch.zeros_like(p_sorted).scatter_(1, order, p_sorted)
