"""Does bf16 pay on this device? Times fp32 against bf16 matmuls of the shapes SPIN's steps use.

torch runs bf16 matmuls natively only on CPUs with AVX512-BF16 or AMX (and on GPUs); elsewhere it emulates
them, and ``--precision bf16`` then slows training down instead of speeding it up. ``spinrl train`` warns in
that case (``spinrl.utils.hardware``); this script prints the measured ratio.

    python benchmarks/bf16_matmul.py [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from spinrl.utils.hardware import cpu_isa, native_bf16  # noqa: E402

# (rows, inner, cols): critic/actor output layers (dog: 38 x 30 = 1140 outputs), hidden layers, token blocks
SHAPES = [(256, 256, 1140), (256, 256, 114), (256, 256, 256), (9728, 64, 64), (256, 1140, 256)]


def _ms(fn, reps: int, dev: torch.device) -> float:
    for _ in range(3):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(json.dumps({"kind": "setup", "device": str(dev), "cpu_isa": cpu_isa(), "native_bf16": native_bf16(dev),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))
    for m, k, n in SHAPES:
        row = {"kind": "matmul", "shape": [m, k, n]}
        for dt in (torch.float32, torch.bfloat16):
            a, b = torch.randn(m, k, dtype=dt, device=dev), torch.randn(k, n, dtype=dt, device=dev)
            row[f"{str(dt).split('.')[1]}_ms"] = round(_ms(lambda: a @ b, args.reps, dev), 3)
        row["bf16_speedup"] = round(row["float32_ms"] / row["bfloat16_ms"], 3)
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
