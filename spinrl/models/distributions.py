"""Products of categoricals over padded logits [B, N, max_m]; sampling honours a torch.Generator."""

from __future__ import annotations

import torch

from spinrl.models import fast


def log_prob(logits_BNM: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) = sum_i log softmax(logits_i)[a_i], shape [B] (one gather, no loop over N)."""
    return log_probs_each(logits_BNM, act_BN).sum(-1)


def log_probs_each(logits_BNM: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
    """log softmax(logits_i)[a_i] per sub-action, shape [B, N]: each sub-action's cross-entropy, negated.

    With fewer choices per sub-action than one CPU vector holds, ``fast.log_probs_each`` computes it.
    """
    if fast.on(logits_BNM) and fast.short_lastdim(logits_BNM):
        return fast.log_probs_each(logits_BNM, act_BN)
    logp = torch.log_softmax(logits_BNM, dim=-1)
    return logp.gather(-1, act_BN.unsqueeze(-1)).squeeze(-1)


def probs(logits_BNM: torch.Tensor) -> torch.Tensor:
    """pi_i(a_i|s) per sub-action, fp32 [B, N, max_m] (padding entries 0: their logits are ``NEG``)."""
    if fast.on(logits_BNM):
        return fast.softmax(logits_BNM)
    return torch.softmax(logits_BNM.float(), dim=-1)


def gumbel_argmax(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One categorical draw per row of the last dim via Gumbel-max, using ``generator`` when given."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    u = u.clamp_(min=torch.finfo(torch.float32).tiny, max=1.0 - torch.finfo(torch.float32).eps)
    gumbel = -torch.log(-torch.log(u))
    return (logits.float() + gumbel).argmax(-1)


def sample_k(logits_BNM: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k independent joint draws from the product distribution, shape [B, k, N]."""
    B, N, M = logits_BNM.shape
    return gumbel_argmax(logits_BNM.unsqueeze(1).expand(B, k, N, M), generator)
