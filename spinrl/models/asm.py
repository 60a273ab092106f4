"""Action Structure Model (ASM): a masked model of sub-actions given the state (method.md, stage 1)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spinrl.models.config import ModelConfig
from spinrl.models.layers import StateEncoder, SubActionHeads, TransformerBlock


class ActionStructureModel(nn.Module):
    """[M state tokens ; N sub-action tokens] -> transformer blocks -> per-sub-action heads.

    Sub-action i's tokens live in rows ``offset_i .. offset_i + m_i`` of ONE embedding table with
    sum(m_i + 1) rows; row ``offset_i + m_i`` is that sub-action's [MASK]. Distinct rows per
    sub-action give each token its identity, so no positional encoding is needed.

    Args:
        obs_dim: State dimension.
        nvec: Cardinalities (m_1, ..., m_N).
        cfg: Sizes; d_model, n_heads, n_blocks, n_state_tokens must match the SPIN actor later.
    """

    def __init__(self, obs_dim: int, nvec: Sequence[int], cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.obs_dim = int(obs_dim)
        self.nvec = tuple(int(m) for m in nvec)
        d = cfg.d_model
        self.state_encoder = StateEncoder(obs_dim, d, cfg.n_state_tokens)
        rows = torch.as_tensor(self.nvec) + 1
        self.register_buffer("token_offsets_N", torch.cumsum(rows, 0) - rows, persistent=False)
        self.register_buffer("mask_N", torch.as_tensor(self.nvec, dtype=torch.long), persistent=False)
        self.embed = nn.Embedding(int(rows.sum()), d)
        self.blocks = nn.ModuleList(TransformerBlock(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.heads = SubActionHeads(d, self.nvec, cfg.head_hidden, cfg.dropout)

    def mask_tokens(self) -> torch.Tensor:
        """Token value of [MASK] per sub-action, shape [N] (equals nvec)."""
        return self.mask_N

    def contextual(self, obs_BO: torch.Tensor, tokens_BN: torch.Tensor) -> torch.Tensor:
        """Contextual sub-action embeddings [B, N, d] (the blocks' output at the sub-action tokens)."""
        x = torch.cat([self.state_encoder(obs_BO), self.embed(tokens_BN + self.token_offsets_N)], dim=1)
        for block in self.blocks:
            x = block(x)
        return x[:, self.cfg.n_state_tokens :]

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
