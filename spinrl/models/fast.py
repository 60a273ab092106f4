"""Measured CPU fast paths: the same functions as the plain code in the other model files, computed faster.

Nothing here is part of the method. Each function replaces one plain expression (named in its docstring)
where that was measured slower on this project's 2-core CPU (``benchmarks/``); tests keep each one equal
to its plain twin (tests/test_models.py: autograd vs the written-out backward, both sides of ``ENABLED``).

The one switch is ``ENABLED`` (environment ``SPINRL_FAST=0`` turns it off): off, every model runs its
plain torch code. Results with it on are the project's recorded numbers; off, dropout draws other masks
and float sums round in another order, so runs are not bit-identical across the switch.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spinrl.utils.hardware import cpu_isa

ENABLED = os.environ.get("SPINRL_FAST", "1") != "0"
"""The switch: read at every call, so ``monkeypatch.setattr(fast, "ENABLED", False)`` works in tests."""


def on(x: torch.Tensor) -> bool:
    """Whether the CPU fast paths serve ``x``: the switch is on and ``x`` lives on the CPU."""
    return ENABLED and not x.is_cuda


# ---- softmax over a short last dim --------------------------------------------------------------------


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


def softmax(s: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(s.float(), -1)``, written out where the last dim is short (bf16 in, fp32 out, as autocast)."""
    if s.dtype in (torch.bfloat16, torch.float16):
        s = s.float()
    return softmax_written(s) if short_lastdim(s) else torch.softmax(s, dim=-1)


def softmax_backward(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The gradient through w = softmax(s, -1) (same dtype as w), written out where the last dim is short."""
    if short_lastdim(w):
        return softmax_backward_written(g, w)
    return torch.ops.aten._softmax_backward_data(g, w, -1, w.dtype)


def softmax_written(s: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim as max, exp, sum (vectorized along the other dims whatever the last dim's length)."""
    e = (s - s.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


def softmax_backward_written(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """d softmax written out: w * (g - sum_j g_j w_j)."""
    return (g - (g * w).sum(-1, keepdim=True)).mul_(w)


def log_probs_each(logits_BNM: torch.Tensor, act_BN: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits, -1).gather(-1, act)`` per sub-action [B, N], for a last dim shorter than one CPU vector.

    CPU log_softmax over the short last dim does not vectorize (forward + backward for [256, 38, M] on an AVX512
    host: 2.9x slower at M = 3, 4.1x at M = 10, while at M = 16 the last dim is 1.7x faster;
    benchmarks/results/softmax_cpu.jsonl); over dim 1 of the transposed [B, M, N] view it vectorizes across
    sub-actions. Same values to float rounding.
    """
    logp = torch.log_softmax(logits_BNM.transpose(1, 2), dim=1)
    return logp.gather(1, act_BN.unsqueeze(1)).squeeze(1)


# ---- dropout with a 16-bit mask ------------------------------------------------------------------------


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``F.dropout(x, p, True)`` for 0 < p < 1 on CPU, with a cheaper mask.

    CPU ``bernoulli_`` draws one 32-bit number per element and costs about as much as the matmul next to
    it (~20% of a transformer step here); 16 random bits per element (four per int64 draw, keep iff
    bits >= p * 2^16) halve the cost of a dropout. The keep rate is exact to 2^-16; the masks come from
    torch's seeded CPU generator, so a seed still fixes the result.
    """
    return x * keep_scale(x.shape, p, x.dtype, x.device)


def keep_scale(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The multiplier of :func:`dropout`: 1 / (1 - p) where kept, 0 where dropped."""
    n = math.prod(shape)
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    # The comparison writes the 0/1 mask straight in x's dtype: a bool mask plus its cast costs about twice that.
    keep = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(bits.view(torch.int16)[:n].view(shape), -32768 + round(p * 65536), out=keep)
    return keep.mul_(1.0 / (1.0 - p))


# ---- attention with dropout, backward written out ------------------------------------------------------


def attention(qkv_BTE: torch.Tensor, heads: int, p: float) -> torch.Tensor:
    """``layers.attention`` in CPU training (0 < p < 1): SDPA would take its unfused math path there."""
    return DropoutAttention.apply(qkv_BTE, heads, p)


class DropoutAttention(torch.autograd.Function):
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
        w = softmax(torch.bmm(q, k.transpose(1, 2)).mul_(scale))  # [BH, T, T]
        keep = keep_scale(w.shape, p, w.dtype, w.device)
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
        g_s = softmax_backward(g_w, w).mul_(dh**-0.5).to(dt)
        torch.bmm(g_s, k, out=g[0])
        torch.bmm(g_s.transpose(1, 2), q, out=g[1])
        g_qkv = g.view(3, B, heads, T, dh).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * heads * dh)
        return g_qkv, None, None


# ---- the critic's Q(s, a) from the chosen rows only ----------------------------------------------------

DENSE_ROWS_MAX_MEAN_M = 10
"""Largest mean cardinality for which :func:`critic_q` sums chosen rows by a one-hot matmul (measured on CPU)."""


def dense_rows(total_m: int, n: int) -> bool:
    """Whether :func:`critic_q` sums the chosen rows by a one-hot matmul (mean m_i <= ``DENSE_ROWS_MAX_MEAN_M``)."""
    return total_m <= DENSE_ROWS_MAX_MEAN_M * n


def critic_q(
    h_KBH: torch.Tensor, out_w_KSH: torch.Tensor, out_b_K1S: torch.Tensor, cols_BN: torch.Tensor
) -> torch.Tensor:
    """``(h @ W^T + b).gather(-1, cols).sum(-1)`` [K, B] without forming the [K, B, sum m_i] output.

    Sums the output-layer rows of the chosen sub-actions and dots them with the last hidden layer, so the
    cost does not grow with the cardinalities (38 x 30 for dog: 1140 outputs, 38 of them read). The rows
    are summed by one ``embedding_bag`` over the out-major weights ([K, sum m_i, h], each row contiguous);
    with small cardinalities (mean m_i <= ``DENSE_ROWS_MAX_MEAN_M``) by one matmul of the actions' one-hot
    [B, sum m_i] instead: ``embedding_bag``'s sort-based backward costs more there than the few FLOPs it
    saves (crossover measured by ``benchmarks/critic_rows.py``); on CUDA always (cheap, and deterministic:
    ``embedding_bag`` uses atomics).
    """
    K, B, H = h_KBH.shape
    S = out_w_KSH.shape[1]
    if dense_rows(S, cols_BN.shape[1]) or h_KBH.is_cuda:
        onehot_BS = torch.zeros(B, S, dtype=h_KBH.dtype, device=h_KBH.device)
        onehot_BS.scatter_(1, cols_BN, 1.0)
        w_KBH = torch.matmul(onehot_BS, out_w_KSH)
        b_KB = torch.matmul(onehot_BS, out_b_K1S.view(K, -1, 1)).squeeze(-1)
    else:
        member_rows_K11 = (torch.arange(K, device=cols_BN.device) * S).view(K, 1, 1)
        rows = (cols_BN.unsqueeze(0) + member_rows_K11).view(K * B, -1)  # rows of [K * sum m, h]
        w_KBH = F.embedding_bag(rows, out_w_KSH.view(-1, H), mode="sum").view(K, B, H)
        b_KB = out_b_K1S.view(-1).index_select(0, rows.view(-1)).view(K, B, -1).sum(-1)
    return (h_KBH * w_KBH).sum(-1) + b_KB


class OutMajor(nn.Module):
    """Holds the critic's output weights out-major, [K, sum m_i, h], for :func:`critic_q`'s row gather.

    A child module (not a parameter of the critic itself) so that ``parameters()`` keeps the order of
    checkpoints and optimizer states written before this layout.
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)


def upgrade_in_major_output(module: Any, state_dict: dict, prefix: str, *args: Any) -> None:
    """Critic load pre-hook: files from before the out-major layout hold ``weights.2`` [K, h, sum m] instead."""
    old = state_dict.pop(prefix + f"weights.{len(module.weights)}", None)
    if old is not None and prefix + "output.weight" not in state_dict:
        state_dict[prefix + "output.weight"] = old.transpose(1, 2).contiguous()


def upgrade_in_major_moments(opt: torch.optim.Optimizer) -> None:
    """Resuming a run saved before the critic stored its output layer out-major: Adam's moments of that
    parameter still have the old [K, h, sum m] shape (the weights themselves are upgraded by the critic)."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, t in state.items():
                if torch.is_tensor(t) and t.dim() == 3 and t.shape != p.shape and t.transpose(1, 2).shape == p.shape:
                    state[key] = t.transpose(1, 2).contiguous()
