"""A/B of the trainer's allocator setting (`spinrl.utils.memory.keep_freed_memory`) on one step.

Each variant runs in its own process (the setting is process-wide), alternating, and prints the
median ms of a paper-preset ASM pretraining step on the cheetah-like shape:

    python benchmarks/allocator.py [--rounds 2] [--steps 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child(steps: int, threads: int) -> None:
    import torch

    from spinrl.utils.memory import keep_freed_memory

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_step import SHAPES, asm_step, synthetic

    kept = keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step, _ = asm_step(synthetic(*SHAPES["cheetah"]), "paper", "cpu")
    for _ in range(5):  # a kept heap grows to the step's working set within a few steps
        step()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    print(json.dumps({"keep_freed_memory": kept, "ms_median": round(statistics.median(times), 1),
                      "faults_per_step": round(faults)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.steps, args.threads)
        return 0
    ms: dict[bool, list[float]] = {False: [], True: []}
    faults: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for on in (False, True):
            env = dict(os.environ, SPINRL_KEEP_FREED_MEMORY="1" if on else "0")
            out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps),
                                  "--threads", str(args.threads)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            ms[r["keep_freed_memory"]].append(r["ms_median"])
            faults[r["keep_freed_memory"]].append(r["faults_per_step"])
    off, on = statistics.median(ms[False]), statistics.median(ms[True])
    print(f"ASM paper step (cheetah shape, {args.threads} thread(s)), median of {args.rounds} process(es) each: "
          f"glibc default {off:.1f} ms and {statistics.median(faults[False]):.0f} page faults per step; "
          f"freed memory kept {on:.1f} ms and {statistics.median(faults[True]):.0f} faults per step "
          f"({100 * (1 - on / off):+.1f}% time saved; compare with the run-to-run spread on a shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
