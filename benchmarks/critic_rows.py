"""Where the critic's Q(s, a) should switch from a one-hot matmul to ``embedding_bag`` (spinrl/models/fast.py).

Both compute sum_i W_k[a_i] for the chosen sub-actions (forward and backward, the critic pass of an IQL
step at batch 256, hidden 256, twin members) over 38 sub-actions of m choices each; prints ms per pass of
each and the faster one, as JSON lines. ``DENSE_ROWS_MAX_MEAN_M`` in spinrl/models/fast.py is the
crossover measured here (AVX2 EPYC, 1 thread, benchmarks/results/critic_rows_cpu.jsonl: one-hot won up to
m = 8, embedding_bag from 12 on).

    python benchmarks/critic_rows.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def bench(fn, n: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cardinalities", default="2,3,5,8,12,16,20,30")
    ap.add_argument("--subactions", type=int, default=38)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    K, B, H, N = 2, args.batch, args.hidden, args.subactions
    g = torch.Generator().manual_seed(0)
    for m in (int(x) for x in args.cardinalities.split(",")):
        M = N * m
        W = torch.randn(K, M, H, generator=g, requires_grad=True)
        h = torch.randn(K, B, H, generator=g, requires_grad=True)
        cols = torch.randint(0, m, (B, N), generator=g) + torch.arange(N) * m
        rows = (cols.unsqueeze(0) + (torch.arange(K) * M).view(K, 1, 1)).view(K * B, -1)

        def embedding_bag():
            w = F.embedding_bag(rows, W.view(-1, H), mode="sum").view(K, B, H)
            (h * w).sum().backward()

        def one_hot():
            o = torch.zeros(B, M).scatter_(1, cols, 1.0)
            (h * torch.matmul(o, W)).sum().backward()

        ms = {f.__name__: round(bench(f, args.steps), 3) for f in (embedding_bag, one_hot)}
        print(json.dumps({"subactions": N, "m": m, "batch": B, "hidden": H, "threads": torch.get_num_threads(),
                          **{f"{k}_ms": v for k, v in ms.items()}, "faster": min(ms, key=ms.get)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
