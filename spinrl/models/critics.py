"""Factored twin critic and state-value net shared by every algorithm and actor."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spinrl.models.layers import _uniform_, concat_offsets, padding_index, to_padded


DENSE_ROWS_MAX_MEAN_M = 10
"""Largest mean cardinality for which the critic sums chosen rows by a one-hot matmul (measured on CPU)."""


class FactoredTwinCritic(nn.Module):
    """K MLP critics obs -> h -> h -> sum(m_i), Q_k(s, a) = sum_i q_k,i(s)[a_i] (method.md).

    All members run in one batched matmul (weights [K, in, out]) instead of a loop over members.
    Q(s, a) for given actions never forms the [B, sum m_i] output: it sums the output-layer rows of the
    chosen sub-actions (one ``embedding_bag``) and dots them with the last hidden layer, so its cost does
    not grow with the cardinalities (38 x 30 for dog: 1140 outputs, 38 of them read). The output weights
    are stored out-major, ``output.weight`` [K, sum m_i, h], so each row is contiguous for that gather.
    With small cardinalities (mean m_i <= ``DENSE_ROWS_MAX_MEAN_M``) the same row sum is one matmul of the
    actions' one-hot [B, sum m_i] with that layer instead: ``embedding_bag``'s sort-based backward costs more
    there than the few FLOPs it saves (crossover measured by ``benchmarks/critic_rows.py``); on CUDA always.

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
        ws = [torch.empty(members, i, o) for i, o in zip(dims, dims[1:])]
        bs = [torch.empty(members, 1, o) for o in dims[1:]]
        for w, b in zip(ws, bs):  # the same draws as nn.Linear-style [in, out] layers
            _uniform_(w, w.shape[1])
            _uniform_(b, w.shape[1])
        # Child modules in this order keep parameters() as before the out-major layout (optimizer state order).
        self.weights = nn.ParameterList(nn.Parameter(w) for w in ws[:-1])
        self.output = _OutMajor(ws[-1].transpose(1, 2).contiguous())
        self.biases = nn.ParameterList(nn.Parameter(b) for b in bs)
        index, valid = padding_index(self.nvec)
        self.register_buffer("pad_index_NM", index, persistent=False)
        self.register_buffer("valid_NM", valid, persistent=False)
        self.register_buffer("offsets_N", concat_offsets(self.nvec), persistent=False)
        self.register_buffer("member_rows_K11", (torch.arange(members) * dims[-1]).view(members, 1, 1), persistent=False)
        self.dense_rows = dims[-1] <= DENSE_ROWS_MAX_MEAN_M * len(self.nvec)
        self.register_load_state_dict_pre_hook(_upgrade_in_major_output)

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
        """Q_k(s, a) for every member, shape [K, B]: sum_i (h_k . W_k[a_i] + b_k[a_i]) over chosen rows only."""
        h_KBH = self.hidden(obs_BO)
        K, B, H = h_KBH.shape
        cols_BN = act_BN + self.offsets_N  # rows of one member's [sum m, h]
        if self.dense_rows or h_KBH.is_cuda:  # CUDA: cheap, and deterministic (embedding_bag uses atomics)
            onehot_BM = torch.zeros(B, self.output.weight.shape[1], dtype=h_KBH.dtype, device=h_KBH.device)
            onehot_BM.scatter_(1, cols_BN, 1.0)
            w_KBH = torch.matmul(onehot_BM, self.output.weight)
            b_KB = torch.matmul(onehot_BM, self.biases[-1].view(K, -1, 1)).squeeze(-1)
        else:
            rows = (cols_BN.unsqueeze(0) + self.member_rows_K11).view(K * B, -1)  # rows of [K * sum m, h]
            w_KBH = F.embedding_bag(rows, self.output.weight.view(-1, H), mode="sum").view(K, B, H)
            b_KB = self.biases[-1].view(-1).index_select(0, rows.view(-1)).view(K, B, -1).sum(-1)
        return (h_KBH * w_KBH).sum(-1) + b_KB


class _OutMajor(nn.Module):
    """Holds the critic's output weights [K, sum m_i, h] (a child module, so parameters() keeps its order)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)


def _upgrade_in_major_output(module, state_dict, prefix, *args) -> None:
    """Checkpoints written before the out-major layout hold the output layer as ``weights.2`` [K, h, sum m]."""
    old = state_dict.pop(prefix + f"weights.{len(module.weights)}", None)
    if old is not None and prefix + "output.weight" not in state_dict:
        state_dict[prefix + "output.weight"] = old.transpose(1, 2).contiguous()


class ValueNet(nn.Module):
    """State value V(s): obs -> h -> h -> 1 (ReLU), returns [B]."""

    def __init__(self, obs_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, obs_BO: torch.Tensor) -> torch.Tensor:
        return self.net(obs_BO).squeeze(-1)
