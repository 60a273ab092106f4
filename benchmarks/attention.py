"""CPU training attention: autograd through the composition against the written-out backward (spinrl/models/fast.py).

Both compute softmax(q k^T / sqrt(dh)) with the same dropout mask, times v, from the qkv projection
[B, T, 3D] (forward and backward); the composition is what ``TransformerBlock`` ran before
``fast.DropoutAttention``. Prints ms per pass of each, median of interleaved blocks (so both see the same
load), as JSON lines, for the shapes of the ASM pretraining step (batch 1024 at the paper preset, 512
at cpu) and of SPIN's blocks (batch 256): cheetah T = 1 + 6 tokens, dog T = 1 + 38.

    python benchmarks/attention.py --threads 1 > benchmarks/results/attention_cpu.jsonl

``--softmax`` times the attention softmax alone instead, forward and backward, over [1024, T, T] weights
(batch 256 x 4 heads) for T from 3 to 39 tokens: torch's kernels against the same math written out as max,
exp, sum (``fast.softmax``, which the block uses where T is shorter than one CPU vector); then the
actors' log pi(a|s) over [256, 38, M] logits, last-dim log_softmax against the transposed view
(``fast.log_probs_each``), for M from 3 to 30 choices.

    python benchmarks/attention.py --softmax --threads 1 > benchmarks/results/softmax_cpu.jsonl

Each line carries the load average: beside other jobs the ratios move by +/- 10-20% between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spinrl.models import fast  # noqa: E402
from spinrl.models.layers import dropout  # noqa: E402
from spinrl.utils.hardware import cpu_isa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import time_interleaved  # noqa: E402  (beside this file)

# (name, batch, tokens, d_model, heads)
SHAPES = [
    ("cheetah asm paper", 1024, 7, 256, 4),
    ("cheetah asm cpu", 512, 7, 64, 4),
    ("dog asm cpu", 512, 39, 64, 4),
    ("dog spin paper", 256, 39, 256, 4),
]


def composition(qkv: torch.Tensor, heads: int, p: float) -> torch.Tensor:
    B, T, E = qkv.shape
    D = E // 3
    q, k, v = qkv.view(B, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4).unbind(0)
    w = torch.softmax((q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1), dim=-1)
    return (dropout(w, p, True) @ v).transpose(1, 2).reshape(B, T, D)


def _interleaved(fns: dict, steps: int) -> dict[str, float]:
    """Median ms of each function, timed in alternating blocks (train_step.time_interleaved)."""
    times = time_interleaved(fns, steps, warmup=3, block=5)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def softmax_rows(steps: int) -> None:
    """torch's softmax kernels against the written-out ones, per token count (``--softmax``)."""
    g = torch.Generator().manual_seed(0)
    for T in (3, 7, 13, 16, 22, 39):
        s = torch.randn(1024, T, T, generator=g)
        w, gw = torch.softmax(s, -1), torch.randn(1024, T, T, generator=g)
        torch.testing.assert_close(fast.softmax_written(s), w)  # the library's written-out path, forced
        ms = _interleaved({
            "torch_fwd": lambda: torch.softmax(s, -1),
            "written_fwd": lambda: fast.softmax_written(s),
            "torch_bwd": lambda: torch.ops.aten._softmax_backward_data(gw, w, -1, w.dtype),
            "written_bwd": lambda: fast.softmax_backward_written(gw, w)}, steps)
        print(json.dumps({"softmax_tokens": T, "rows": 1024 * T, "isa": cpu_isa(),
                          "library_writes_out": bool(fast.short_lastdim(s)), "threads": torch.get_num_threads(),
                          **{f"{k}_ms": v for k, v in ms.items()},
                          "fwd_speedup": round(ms["torch_fwd"] / ms["written_fwd"], 3),
                          "bwd_speedup": round(ms["torch_bwd"] / ms["written_bwd"], 3),
                          "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    # log pi(a|s) of a product of categoricals over [256, 38, M] (dog-like), forward + backward: the last-dim
    # log_softmax against the transposed view that models.distributions.log_prob uses for short M
    for M in (3, 8, 10, 13, 16, 30):
        x = torch.randn(256, 38, M, generator=g, requires_grad=True)
        a = torch.randint(0, M, (256, 38), generator=g)

        def last():
            torch.log_softmax(x, -1).gather(-1, a.unsqueeze(-1)).squeeze(-1).sum(-1).sum().backward()

        def transposed():
            torch.log_softmax(x.transpose(1, 2), 1).gather(1, a.unsqueeze(1)).squeeze(1).sum(-1).sum().backward()

        ms = _interleaved({"lastdim": last, "transposed": transposed}, steps)
        print(json.dumps({"log_prob_choices": M, "shape": [256, 38, M], "isa": cpu_isa(),
                          "library_transposes": bool(fast.short_lastdim(x)), "threads": torch.get_num_threads(),
                          **{f"{k}_ms": v for k, v in ms.items()},
                          "transposed_speedup": round(ms["lastdim"] / ms["transposed"], 3),
                          "loadavg": [round(v, 2) for v in os.getloadavg()]}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="timed passes of each (interleaved in blocks of 5)")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--softmax", action="store_true", help="time the attention softmax alone (see above)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.softmax:
        softmax_rows(args.steps * 3)
        return 0
    g = torch.Generator().manual_seed(0)
    for name, B, T, D, H in SHAPES:
        x0 = torch.randn(B, T, 3 * D, generator=g)
        grad = torch.randn(B, T, D, generator=g)
        fns = {"composition": lambda x: composition(x, H, args.dropout),
               "written_out": lambda x: fast.DropoutAttention.apply(x, H, args.dropout)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for k, f in fns.items():  # warm-up
            for _ in range(3):
                x = x0.clone().requires_grad_()
                f(x).backward(grad)
        while any(len(v) < args.steps for v in times.values()):
            for k, f in fns.items():
                for _ in range(5):
                    x = x0.clone().requires_grad_()
                    t = time.perf_counter()
                    f(x).backward(grad)
                    times[k].append((time.perf_counter() - t) * 1e3)
        ms = {k: round(statistics.median(v), 3) for k, v in times.items()}
        print(json.dumps({"shape": name, "batch": B, "tokens": T, "d_model": D, "heads": H, "dropout": args.dropout,
                          "threads": torch.get_num_threads(), **{f"{k}_ms": v for k, v in ms.items()},
                          "speedup": round(ms["composition"] / ms["written_out"], 3),
                          "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
