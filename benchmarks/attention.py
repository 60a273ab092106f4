"""CPU training attention: autograd through the composition against the written-out backward (layers.py).

Both compute softmax(q k^T / sqrt(dh)) with the same dropout mask, times v, from the qkv projection
[B, T, 3D] (forward and backward); the composition is what ``TransformerBlock`` ran before
``_DropoutAttention``. Prints ms per pass of each, median of interleaved blocks (so both see the same
load), as JSON lines, for the shapes of the ASM pretraining step (batch 1024 at the paper preset, 512
at cpu) and of SPIN's blocks (batch 256): cheetah T = 1 + 6 tokens, dog T = 1 + 38.

    python benchmarks/attention.py --threads 1 > benchmarks/results/attention_cpu.jsonl

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
from spinrl.models.layers import _DropoutAttention, dropout  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="timed passes of each (interleaved in blocks of 5)")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    for name, B, T, D, H in SHAPES:
        x0 = torch.randn(B, T, 3 * D, generator=g)
        grad = torch.randn(B, T, D, generator=g)
        fns = {"composition": lambda x: composition(x, H, args.dropout),
               "written_out": lambda x: _DropoutAttention.apply(x, H, args.dropout)}
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
