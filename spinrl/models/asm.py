"""Action Structure Model (ASM): a masked model of sub-actions given the state (docs/method.md, stage 1)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spinrl.models.config import ModelConfig
from spinrl.models.layers import SubActionHeads
from spinrl.models.trunk import Trunk


class ActionStructureModel(Trunk):
    """The trunk over [M state tokens ; N sub-action tokens], then per-sub-action heads.

    Sub-action i's tokens live in rows ``offset_i .. offset_i + m_i`` of ONE embedding table with
    sum(m_i + 1) rows; row ``offset_i + m_i`` is that sub-action's [MASK]. Distinct rows per
    sub-action give each token its identity, so no positional encoding is needed.

    Args:
        obs_dim: State dimension.
        nvec: Cardinalities (m_1, ..., m_N).
        cfg: Sizes; d_model, n_heads, n_blocks, n_state_tokens must match the SPIN actor later.
    """

    token_offsets_N: torch.Tensor
    mask_N: torch.Tensor

    def __init__(self, obs_dim: int, nvec: Sequence[int], cfg: ModelConfig | None = None):
        super().__init__(obs_dim, nvec, cfg or ModelConfig())
        self.heads = SubActionHeads(self.cfg.d_model, self.nvec, self.cfg.head_hidden, self.cfg.dropout)

    def make_tokens(self, d: int) -> None:
        """One embedding table for every sub-action's values and its [MASK] (non-persistent index buffers)."""
        rows = torch.as_tensor(self.nvec) + 1
        self.register_buffer("token_offsets_N", torch.cumsum(rows, 0) - rows, persistent=False)
        self.register_buffer("mask_N", torch.as_tensor(self.nvec, dtype=torch.long), persistent=False)
        self.embed = nn.Embedding(int(rows.sum()), d)

    def mask_tokens(self) -> torch.Tensor:
        """Token value of [MASK] per sub-action, shape [N] (equals nvec)."""
        return self.mask_N

    def contextual(self, obs_BO: torch.Tensor, tokens_BN: torch.Tensor) -> torch.Tensor:
        """Contextual sub-action embeddings [B, N, d] for sub-action values [B, N] (m_i means [MASK])."""
        return self.encode(obs_BO, self.embed(tokens_BN + self.token_offsets_N))

    def forward(self, obs_BO: torch.Tensor, tokens_BN: torch.Tensor) -> torch.Tensor:
        """Logits [B, N, max_m] (padding masked) for every sub-action.

        Args:
            obs_BO: States [B, obs_dim].
            tokens_BN: Long [B, N], value in [0, m_i]; m_i means [MASK].
        """
        return self.heads(self.contextual(obs_BO, tokens_BN))

    def masked_features(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """Contextual embeddings [B, N, d] with every sub-action [MASK]ed: a function of the state alone."""
        return self.contextual(obs_BO, self.mask_N.expand(obs_BO.shape[0], -1))
