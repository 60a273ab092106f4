"""Factored twin critic and state-value net shared by every algorithm and actor."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spinrl.models.layers import _uniform_, concat_offsets, padding_index, to_padded


class FactoredTwinCritic(nn.Module):
    """K MLP critics obs -> h -> h -> sum(m_i), Q_k(s, a) = sum_i q_k,i(s)[a_i] (method.md).

    All members run in one batched matmul (weights [K, in, out]) instead of a loop over members.

    Args:
        obs_dim: State dimension.
        nvec: Cardinalities (m_1, ..., m_N).
        hidden: Hidden width of both layers.
        members: Ensemble size K.
    """

    def __init__(self, obs_dim: int, nvec: Sequence[int], hidden: int = 256, members: int = 2):
        super().__init__()
        self.nvec = tuple(int(m) for m in nvec)
        self.members = members
        dims = [obs_dim, hidden, hidden, sum(self.nvec)]
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(members, i, o)) for i, o in zip(dims, dims[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(members, 1, o)) for o in dims[1:])
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                _uniform_(w, w.shape[1])
                _uniform_(b, w.shape[1])
        index, valid = padding_index(self.nvec)
        self.register_buffer("pad_index_NM", index, persistent=False)
        self.register_buffer("valid_NM", valid, persistent=False)
        self.register_buffer("offsets_N", concat_offsets(self.nvec), persistent=False)

    def q_concat(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """All per-sub-action values, concatenated: [K, B, sum m_i]."""
        x = obs_BO.unsqueeze(0).expand(self.members, *obs_BO.shape)
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if layer < last:
                x = F.relu(x)
        return x

    def q_all(self, obs_BO: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Per-sub-action values padded to [K, B, N, max_m]; entries j >= m_i hold ``fill``."""
        return to_padded(self.q_concat(obs_BO), self.pad_index_NM, self.valid_NM, fill)

    def forward(self, obs_BO: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
        """Q_k(s, a) for every member, shape [K, B] (one gather over concatenated values)."""
        q = self.q_concat(obs_BO)
        idx = (act_BN + self.offsets_N).unsqueeze(0).expand(q.shape[0], -1, -1)
        return q.gather(2, idx).sum(-1)


class ValueNet(nn.Module):
    """State value V(s): obs -> h -> h -> 1 (ReLU), returns [B]."""

    def __init__(self, obs_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, obs_BO: torch.Tensor) -> torch.Tensor:
        return self.net(obs_BO).squeeze(-1)
