"""Plain building blocks shared by the ASM, the actors and the critics (each exists once; docs/method.md).

Where a measured CPU fast path computes the same thing faster, the plain function hands over to it in
one line (``fast.py``, behind its one switch).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spinrl.errors import ConfigError
from spinrl.models import fast

NEG = -1e9
"""Logit of padded entries j >= m_i: finite so that 0 * NEG = 0 and log_softmax stays finite."""


def padding_index(nvec: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Map a concatenated [sum m_i] vector to a padded [N, max_m] layout.

    Returns:
        index_NM: position in the concatenation of entry (i, j), clamped inside block i for padding.
        valid_NM: True where j < m_i.
    """
    m = torch.as_tensor(list(nvec), dtype=torch.long)
    offsets = torch.cumsum(m, 0) - m
    j = torch.arange(int(m.max()))
    valid = j[None, :] < m[:, None]
    index = offsets[:, None] + torch.minimum(j[None, :], m[:, None] - 1)
    return index, valid


def to_padded(flat: torch.Tensor, index_NM: torch.Tensor, valid_NM: torch.Tensor, fill: float) -> torch.Tensor:
    """A concatenated [..., sum m_i] tensor -> padded [..., N, max_m], entries j >= m_i set to ``fill``.

    With equal cardinalities the concatenation already is the padded layout: a view, no gather and no
    mask (the gather's backward is a scatter that costs more than the small matmul beside it).
    """
    N, M = index_NM.shape
    if flat.shape[-1] == N * M:
        return flat.view(*flat.shape[:-1], N, M)
    lead = flat.shape[:-1]
    out = flat.gather(-1, index_NM.reshape(N * M).expand(*lead, N * M)).view(*lead, N, M)
    return out.masked_fill(~valid_NM, fill)


def concat_offsets(nvec: Sequence[int]) -> torch.Tensor:
    """Start of each sub-action's block in a concatenated [sum m_i] vector, shape [N]."""
    m = torch.as_tensor(list(nvec), dtype=torch.long)
    return torch.cumsum(m, 0) - m


def _uniform_(t: torch.Tensor, fan_in: int) -> None:
    # Same distribution as nn.Linear's default init (kaiming_uniform a=sqrt(5) == U(+-1/sqrt(fan_in))).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(t, -bound, bound)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, ``F.dropout``; on CPU ``fast.dropout`` (same rule, a cheaper mask)."""
    if not training or p == 0.0:
        return x
    if fast.on(x) and p < 1.0:
        return fast.dropout(x, p)
    return F.dropout(x, p, True)


def attention(qkv_BTE: torch.Tensor, heads: int, p: float) -> torch.Tensor:
    """Multi-head self-attention softmax(q k^T / sqrt(d_h)) v, dropout p on the attention weights.

    qkv [B, T, 3D] (q, k, v, heads contiguous, as nn.MultiheadAttention packs them) -> [B, T, D]. In CPU
    training ``fast.attention`` computes the same (SDPA would take its unfused math path there).
    """
    if fast.on(qkv_BTE) and 0.0 < p < 1.0:
        return fast.attention(qkv_BTE, heads, p)
    B, T, E = qkv_BTE.shape
    q, k, v = qkv_BTE.view(B, T, 3, heads, E // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    att = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    return att.transpose(1, 2).reshape(B, T, E // 3)


class Dropout(nn.Module):
    """``nn.Dropout`` through :func:`dropout` (same state dict: none)."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TransformerBlock(nn.Module):
    """Pre-LN self-attention block, the one block of the ASM, SAINT and SPIN (docs/method.md, section "The shared
    transformer trunk").

    x = X + Dropout(OutProj(MHA(LN(X)))); x = x + FFN(LN(x)); FFN = d->2d GELU Dropout 2d->d Dropout.
    No positional encoding: the block is permutation-equivariant over tokens.
    """

    def __init__(self, d: int, heads: int, dropout: float = 0.1):
        super().__init__()
        if d % heads:
            raise ConfigError(f"d_model {d} must be divisible by n_heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.drop1 = Dropout(dropout)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU(), Dropout(dropout), nn.Linear(2 * d, d), Dropout(dropout)
        )

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        att = attention(self.qkv(self.ln1(x_BTD)), self.heads, self.dropout if self.training else 0.0)
        x = x_BTD + self.drop1(self.out_proj(att))
        return x + self.ffn(self.ln2(x))


class StateEncoder(nn.Module):
    """s -> Linear(obs, 2d) -> GELU -> Linear(2d, M*d), reshaped to M state tokens [B, M, d]."""

    def __init__(self, obs_dim: int, d: int, n_tokens: int = 1):
        super().__init__()
        self.d, self.n_tokens = d, n_tokens
        self.net = nn.Sequential(nn.Linear(obs_dim, 2 * d), nn.GELU(), nn.Linear(2 * d, n_tokens * d))

    def forward(self, obs_BO: torch.Tensor) -> torch.Tensor:
        return self.net(obs_BO).view(obs_BO.shape[0], self.n_tokens, self.d)


class SubActionHeads(nn.Module):
    """N heads Linear(d, h) -> GELU -> Dropout -> Linear(h, m_i) evaluated as one batched op.

    Weights are stacked ([N, d, h], [N, h], [N, h, max_m], [N, max_m]) so all heads run in two
    einsums instead of a Python loop over sub-actions; columns j >= m_i are padding and their
    logits are set to ``NEG``.
    """

    valid_NM: torch.Tensor

    def __init__(self, d: int, nvec: Sequence[int], hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.nvec = tuple(int(m) for m in nvec)
        n, max_m = len(self.nvec), max(self.nvec)
        self.w1 = nn.Parameter(torch.empty(n, d, hidden))
        self.b1 = nn.Parameter(torch.empty(n, hidden))
        self.w2 = nn.Parameter(torch.empty(n, hidden, max_m))
        self.b2 = nn.Parameter(torch.empty(n, max_m))
        self.drop = Dropout(dropout)
        _, valid = padding_index(self.nvec)
        self.register_buffer("valid_NM", valid, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise each sub-head as nn.Linear would; padding columns start at zero."""
        d, h = self.w1.shape[1], self.w1.shape[2]
        with torch.no_grad():
            for t in (self.w1, self.b1):
                _uniform_(t, d)
            for t in (self.w2, self.b2):
                _uniform_(t, h)
            self.w2.mul_(self.valid_NM[:, None, :])
            self.b2.mul_(self.valid_NM)

    def forward(self, x_BND: torch.Tensor) -> torch.Tensor:
        """Per-sub-action logits [B, N, max_m] from per-sub-action features [B, N, d]."""
        h = torch.einsum("bnd,ndh->bnh", x_BND, self.w1) + self.b1
        h = self.drop(F.gelu(h))
        logits = torch.einsum("bnh,nhm->bnm", h, self.w2) + self.b2
        return logits.masked_fill(~self.valid_NM, NEG)

    def one(self, x_BD: torch.Tensor, i: int) -> torch.Tensor:
        """Logits [B, max_m] of head ``i`` only (for sequential autoregressive sampling)."""
        h = self.drop(F.gelu(x_BD @ self.w1[i] + self.b1[i]))
        return (h @ self.w2[i] + self.b2[i]).masked_fill(~self.valid_NM[i], NEG)
