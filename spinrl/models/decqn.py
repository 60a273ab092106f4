"""DecQN utility network: one torso, per-sub-action utilities U_i(s, a_i) from one batched head."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spinrl.models.layers import concat_offsets, padding_index, to_padded


class ResidualBlock(nn.Module):
    """x + W2 relu(W1 LayerNorm(x)): the residual MLP block of the DecQN torso (docs/benchmarks.md s.1)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(self.norm(x))))


OBS_TRANSFORMS = ("none", "symlog")


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|): about x near 0, logarithmic far out (dog's touch sensors reach 5e4)."""
    return torch.sign(x) * torch.log1p(x.abs())


class DecQNNet(nn.Module):
    """[symlog] -> Linear(obs, hidden) -> residual block -> LayerNorm -> one Linear(hidden, sum m_i) head.

    The concatenated head output holds every U_i(s, j); ``offsets_N`` and ``pad_index_NM`` turn it
    into per-sub-action values with one gather (no Python loop over sub-actions).

    Args:
        obs_dim: State dimension.
        nvec: Cardinalities (m_1, ..., m_N).
        hidden: Torso width (the benchmark used 512; 256 is 2-4x faster here).
        obs_transform: ``"none"`` (the benchmark's DecQN) or ``"symlog"`` applied to the raw observation
            first: a fixed function, so nothing to fit or checkpoint beside the weights.
    """

    pad_index_NM: torch.Tensor
    valid_NM: torch.Tensor
    offsets_N: torch.Tensor

    def __init__(self, obs_dim: int, nvec: Sequence[int], hidden: int = 256, obs_transform: str = "none"):
        super().__init__()
        if obs_transform not in OBS_TRANSFORMS:
            raise ValueError(f"obs_transform {obs_transform!r}: choose one of {OBS_TRANSFORMS}")
        self.obs_dim, self.nvec, self.hidden = int(obs_dim), tuple(int(m) for m in nvec), int(hidden)
        self.obs_transform = obs_transform
        self.inp = nn.Linear(self.obs_dim, self.hidden)
        self.block = ResidualBlock(self.hidden)
        self.norm = nn.LayerNorm(self.hidden)
        self.head = nn.Linear(self.hidden, sum(self.nvec))
        index, valid = padding_index(self.nvec)
        self.register_buffer("pad_index_NM", index, persistent=False)
        self.register_buffer("valid_NM", valid, persistent=False)
        self.register_buffer("offsets_N", concat_offsets(self.nvec), persistent=False)

    def utilities_concat(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """All utilities, concatenated: [B, sum m_i]."""
        if self.obs_transform == "symlog":
            obs_BO = symlog(obs_BO)
        return self.head(self.norm(self.block(F.relu(self.inp(obs_BO)))))

    def utilities(self, obs_BO: torch.Tensor, fill: float = float("-inf")) -> torch.Tensor:
        """Utilities padded to [B, N, max_m]; entries j >= m_i hold ``fill`` (so max/argmax ignore them)."""
        return self.pad(self.utilities_concat(obs_BO), fill)

    def pad(self, u_BS: torch.Tensor, fill: float = float("-inf")) -> torch.Tensor:
        """Concatenated utilities [B, sum m_i] -> padded [B, N, max_m]."""
        return to_padded(u_BS, self.pad_index_NM, self.valid_NM, fill)

    def q_value(self, obs_BO: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
        """Q(s, a) = mean_i U_i(s, a_i), shape [B]."""
        return self.q_from_concat(self.utilities_concat(obs_BO), act_BN)

    def q_from_concat(self, u_BS: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
        """mean_i U_i(s, a_i) from concatenated utilities [B, sum m_i] -> [B]."""
        return u_BS.gather(1, act_BN.long() + self.offsets_N).mean(-1)

    @torch.no_grad()
    def greedy(self, obs_BO: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a) = per-sub-action argmax under the mean decomposition, [B, N] int64."""
        return self.utilities(obs_BO).argmax(-1)
