"""Masked action modelling: the BERT-style objective that pretrains the ASM (docs/method.md, stage 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from spinrl.algorithms.common import LossInfo
from spinrl.models import ActionStructureModel
from spinrl.models.distributions import log_probs_each


@dataclass
class MAMConfig:
    """Choose each sub-action with prob mask_prob (at least one per batch); of the chosen, p_mask
    become [MASK], p_random a uniform value, the rest stay. Loss: cross-entropy on chosen positions,
    averaged over them."""

    mask_prob: float = 0.15
    """Probability that a sub-action is chosen for prediction."""
    p_mask: float = 0.8
    """Fraction of chosen sub-actions replaced by [MASK]."""
    p_random: float = 0.1
    """Fraction of chosen sub-actions replaced by a uniform random value (the rest are kept)."""
    variable: bool = False
    """Ours: per-sample masking ratio ~ U(0, 1) instead of mask_prob, plus fully [MASK]ed rows, so the
    all-[MASK] input of the cached-feature actor is in-distribution."""
    full_mask_fraction: float = 0.25
    """With ``variable``: fraction of rows whose sub-actions are all replaced by [MASK]."""


def corrupt(
    actions_BN: torch.Tensor,
    nvec: Sequence[int] | torch.Tensor,
    generator: torch.Generator | None = None,
    mask_prob: float | torch.Tensor = 0.15,
    mask_ratio: tuple[float, float] | None = None,
    full_rows_B: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style corruption of sub-action tokens.

    Args:
        actions_BN: Long [B, N], a_i in [0, m_i).
        nvec: Cardinalities; value m_i is sub-action i's [MASK] token.
        generator: RNG for every random choice (exact reproducibility).
        mask_prob: Probability that each sub-action is chosen (a float, or [B, 1] per row).
        mask_ratio: (p_mask, p_random) among chosen; default (0.8, 0.1), the rest unchanged.
        full_rows_B: Bool [B]; those rows are entirely [MASK] (all chosen).

    Returns:
        tokens_BN: Long [B, N], values in [0, m_i].
        chosen_BN: Bool [B, N], the positions the loss is computed on (at least one).
    """
    p_mask, p_random = mask_ratio if mask_ratio is not None else (0.8, 0.1)
    dev = actions_BN.device
    m_N = torch.as_tensor(nvec, dtype=torch.long, device=dev)
    B, N = actions_BN.shape
    u = torch.rand((3, B, N), generator=generator, device=dev)
    chosen = u[0] < mask_prob
    # At least one chosen per batch, without a host sync: force one random position if none is.
    forced = torch.randint(B * N, (1,), generator=generator, device=dev)
    flat = chosen.view(-1)
    flat[forced] = flat[forced] | ~chosen.any()
    random_values = (u[2] * m_N).long().clamp_(max=m_N - 1)
    to_mask = chosen & (u[1] < p_mask)
    to_random = chosen & (u[1] >= p_mask) & (u[1] < p_mask + p_random)
    if full_rows_B is not None:
        full = full_rows_B.unsqueeze(1)
        chosen, to_mask, to_random = chosen | full, to_mask | full, to_random & ~full
    tokens = torch.where(to_mask, m_N, actions_BN)
    tokens = torch.where(to_random, random_values, tokens)
    return tokens, chosen


def asm_loss(
    asm: ActionStructureModel,
    obs: torch.Tensor,
    actions: torch.Tensor,
    cfg: MAMConfig,
    generator: torch.Generator | None = None,
) -> LossInfo:
    """Cross-entropy of the original sub-actions at the chosen positions, averaged over them.

    ``info`` holds ``masked_correct`` and ``masked_count`` ([N] float) so callers can aggregate
    per-sub-action accuracy over an epoch, plus scalar ``mam_loss`` and ``masked_acc``.
    """
    mask_prob: float | torch.Tensor = cfg.mask_prob
    full_rows = None
    if cfg.variable:
        u_B2 = torch.rand((actions.shape[0], 2), generator=generator, device=actions.device)
        mask_prob = u_B2[:, :1]
        full_rows = u_B2[:, 1] < cfg.full_mask_fraction
    tokens_BN, chosen_BN = corrupt(actions, asm.nvec, generator, mask_prob, (cfg.p_mask, cfg.p_random), full_rows)
    logits_BNM = asm(obs, tokens_BN)
    ce_BN = -log_probs_each(logits_BNM, actions)  # = F.cross_entropy per position; vectorizes for short m_i
    chosen = chosen_BN.float()
    count = chosen.sum()
    loss = (ce_BN * chosen).sum() / count.clamp(min=1.0)
    with torch.no_grad():
        correct_N = ((logits_BNM.argmax(-1) == actions).float() * chosen).sum(0)
        count_N = chosen.sum(0)
    info = {
        "mam_loss": loss.detach(),
        "masked_acc": correct_N.sum() / count.clamp(min=1.0),
        "masked_correct": correct_N,
        "masked_count": count_N,
    }
    return loss, info
