"""Factored twin critic and state-value net shared by every algorithm and actor."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spinrl.models import fast
from spinrl.models.layers import _uniform_, concat_offsets, padding_index, to_padded


class FactoredTwinCritic(nn.Module):
    """K MLP critics obs -> h -> h -> sum(m_i), Q_k(s, a) = sum_i q_k,i(s)[a_i] (docs/method.md, section "Critics").

    All members run in one batched matmul (weights [K, in, out]) instead of a loop over members. The
    output layer is stored out-major, ``output.weight`` [K, sum m_i, h] (a layout for ``fast.critic_q``,
    which reads only the chosen rows); ``q_concat`` computes the same layer for every sub-action value.

    Args:
        obs_dim: State dimension.
        nvec: Cardinalities (m_1, ..., m_N).
        hidden: Hidden width of both layers.
        members: Ensemble size K.
    """

    pad_index_NM: torch.Tensor
    valid_NM: torch.Tensor
    offsets_N: torch.Tensor

    def __init__(self, obs_dim: int, nvec: Sequence[int], hidden: int = 256, members: int = 2):
        super().__init__()
        self.nvec = tuple(int(m) for m in nvec)
        self.members = members
        dims = [obs_dim, hidden, hidden, sum(self.nvec)]
        ws = [torch.empty(members, i, o) for i, o in zip(dims, dims[1:])]
        bs = [torch.empty(members, 1, o) for o in dims[1:]]
        for w, b in zip(ws, bs):  # the same draws as nn.Linear-style [in, out] layers
            _uniform_(w, w.shape[1])
            _uniform_(b, w.shape[1])
        self.weights = nn.ParameterList(nn.Parameter(w) for w in ws[:-1])
        self.output = fast.OutMajor(ws[-1].transpose(1, 2).contiguous())
        self.biases = nn.ParameterList(nn.Parameter(b) for b in bs)
        index, valid = padding_index(self.nvec)
        self.register_buffer("pad_index_NM", index, persistent=False)
        self.register_buffer("valid_NM", valid, persistent=False)
        self.register_buffer("offsets_N", concat_offsets(self.nvec), persistent=False)
        self.register_load_state_dict_pre_hook(fast.upgrade_in_major_output)

    def hidden(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """Last hidden layer of every member: [K, B, h]."""
        x = obs_BO.unsqueeze(0).expand(self.members, *obs_BO.shape)
        for w, b in zip(self.weights, self.biases):
            x = F.relu(torch.baddbmm(b, x, w), inplace=True)  # in place: baddbmm's backward never reads its output
        return x

    def q_concat(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """All per-sub-action values, concatenated: [K, B, sum m_i]."""
        return torch.baddbmm(self.biases[-1], self.hidden(obs_BO), self.output.weight.transpose(1, 2))

    def q_all(self, obs_BO: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Per-sub-action values padded to [K, B, N, max_m]; entries j >= m_i hold ``fill``."""
        return to_padded(self.q_concat(obs_BO), self.pad_index_NM, self.valid_NM, fill)

    def forward(self, obs_BO: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
        """Q_k(s, a) = sum_i q_k,i(s)[a_i] for every member, shape [K, B]."""
        cols_BN = act_BN + self.offsets_N  # columns of the concatenated [sum m_i] output
        if fast.ENABLED:
            return fast.critic_q(self.hidden(obs_BO), self.output.weight, self.biases[-1], cols_BN)
        q_KBS = self.q_concat(obs_BO)
        return q_KBS.gather(-1, cols_BN.expand(self.members, -1, -1)).sum(-1)


class ValueNet(nn.Module):
    """State value V(s): obs -> h -> h -> 1 (ReLU), returns [B]."""

    def __init__(self, obs_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, obs_BO: torch.Tensor) -> torch.Tensor:
        return self.net(obs_BO).squeeze(-1)
