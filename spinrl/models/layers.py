"""Building blocks shared by the ASM, the actors and the critics (each exists once)."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spinrl.errors import ConfigError
from spinrl.utils.hardware import cpu_isa

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


@functools.cache
def cpu_vector_floats() -> int:
    """fp32 lanes of the vectors torch's CPU kernels use here: 16 with AVX512, 8 with AVX2 (4 otherwise: a guess)."""
    isa = cpu_isa()
    return 16 if "AVX512" in isa else 8 if "AVX" in isa else 4


def short_lastdim(x: torch.Tensor) -> bool:
    """Whether a CPU (log-)softmax over x's last dim takes torch's scalar path: over a last dim shorter than
    one vector (attention over 7 or 13 tokens, 3 or 10 choices per sub-action) it runs 4-8x slower forward and
    2-6x backward than the same work written as max, exp, sum (``python benchmarks/attention.py --softmax``)."""
    return not x.is_cuda and x.shape[-1] < cpu_vector_floats()


def softmax_lastdim(s: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(s, -1)``, written out where the last dim is short (bf16 in, fp32 out, as under autocast)."""
    if s.dtype in (torch.bfloat16, torch.float16):
        s = s.float()
    return softmax_written(s) if short_lastdim(s) else torch.softmax(s, dim=-1)


def softmax_backward_lastdim(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The gradient through w = softmax(s, -1) (same dtype as w), written out where the last dim is short."""
    return softmax_backward_written(g, w) if short_lastdim(w) else torch.ops.aten._softmax_backward_data(g, w, -1, w.dtype)


def softmax_written(s: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim as max, exp, sum (vectorized along the other dims whatever the last dim's length)."""
    e = (s - s.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


def softmax_backward_written(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """d softmax written out: w * (g - sum_j g_j w_j)."""
    return (g - (g * w).sum(-1, keepdim=True)).mul_(w)


def _uniform_(t: torch.Tensor, fan_in: int) -> None:
    # Same distribution as nn.Linear's default init (kaiming_uniform a=sqrt(5) == U(+-1/sqrt(fan_in))).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(t, -bound, bound)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout; on CPU with a cheaper mask than ``F.dropout``.

    CPU ``bernoulli_`` draws one 32-bit number per element and costs about as much as the matmul next to
    it (~20% of a transformer step here); 16 random bits per element (four per int64 draw, keep iff
    bits >= p * 2^16) halve the cost of a dropout. The keep rate is exact to 2^-16; the masks come from
    torch's seeded CPU generator, so a seed still fixes the result. CUDA keeps the fused ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.is_cuda or p >= 1.0:
        return F.dropout(x, p, True)
    return x * _keep_scale(x.shape, p, x.dtype, x.device)


def _keep_scale(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The CPU dropout multiplier of :func:`dropout`: 1 / (1 - p) where kept, 0 where dropped."""
    n = math.prod(shape)
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    # The comparison writes the 0/1 mask straight in x's dtype: a bool mask plus its cast costs about twice that.
    keep = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(bits.view(torch.int16)[:n].view(shape), -32768 + round(p * 65536), out=keep)
    return keep.mul_(1.0 / (1.0 - p))


class _DropoutAttention(torch.autograd.Function):
    """Multi-head self-attention with attention-weight dropout, qkv [B, T, 3D] -> [B, T, D], for CPU training.

    The same function as SDPA's math path with the mask of :func:`dropout` (same random draws, so the
    same masks as that composition for a given seed), with the backward written out: autograd's
    backward of the composition assembles dq, dk, dv by a stack and a permuted copy that together
    cost more than the whole attention (measured at 1024 x 7 tokens, d 256); here the three gradients
    are written by ``bmm(out=)`` into one buffer, which is permuted back to qkv's layout in one copy.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, qkv_BTE: torch.Tensor, heads: int, p: float) -> torch.Tensor:
        B, T, E = qkv_BTE.shape
        D = E // 3
        dh = D // heads
        x = qkv_BTE.view(B, T, 3, heads, dh).permute(2, 0, 3, 1, 4).reshape(3, B * heads, T, dh)
        q, k, v = x[0], x[1], x[2]
        scale = dh**-0.5
        w = softmax_lastdim(torch.bmm(q, k.transpose(1, 2)).mul_(scale))  # [BH, T, T]
        keep = _keep_scale(w.shape, p, w.dtype, w.device)
        w_kept = w * keep
        out = torch.bmm(w_kept, v)
        ctx.save_for_backward(x, w, keep, w_kept)
        ctx.shape = (B, T, heads, dh)
        return out.view(B, heads, T, dh).transpose(1, 2).reshape(B, T, D)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_BTD: torch.Tensor):
        x, w, keep, w_kept = ctx.saved_tensors
        B, T, heads, dh = ctx.shape
        dt = x.dtype  # bf16 under autocast (w and keep stay fp32, as autocast's softmax gives them)
        q, k, v = x[0], x[1], x[2]
        g_out = grad_BTD.to(dt).reshape(B, T, heads, dh).transpose(1, 2).reshape(B * heads, T, dh)
        g = torch.empty_like(x)  # [3, BH, T, dh]: dq, dk, dv
        torch.bmm(w_kept.to(dt).transpose(1, 2), g_out, out=g[2])
        g_w = torch.bmm(g_out, v.transpose(1, 2)).to(w.dtype).mul_(keep)
        g_s = softmax_backward_lastdim(g_w, w).mul_(dh**-0.5).to(dt)
        torch.bmm(g_s, k, out=g[0])
        torch.bmm(g_s.transpose(1, 2), q, out=g[1])
        g_qkv = g.view(3, B, heads, T, dh).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * heads * dh)
        return g_qkv, None, None


class Dropout(nn.Module):
    """``nn.Dropout`` with the CPU mask of :func:`dropout` (same state dict: none)."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TransformerBlock(nn.Module):
    """Pre-LN self-attention block (method.md), the one block of the ASM, SAINT and SPIN.

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
        B, T, D = x_BTD.shape
        qkv = self.qkv(self.ln1(x_BTD))
        # Attention-weight dropout as in nn.MultiheadAttention(dropout=...). SDPA's fused kernels serve
        # inference and CUDA; CPU training with dropout would take SDPA's unfused math path, so it has
        # its own function (cheaper dropout mask, cheaper backward).
        if self.training and 0.0 < self.dropout < 1.0 and not x_BTD.is_cuda:
            att = _DropoutAttention.apply(qkv, self.heads, self.dropout)
        else:
            q, k, v = qkv.view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
            att = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
            att = att.transpose(1, 2).reshape(B, T, D)
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
