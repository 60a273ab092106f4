"""ms per replay draw of the DecQN behaviour learner: uniform against prioritized (``--replay prioritized``).

Each learner update draws one batch of 256 from the replay; with prioritized replay it also walks the
``SumTree`` down for the draw, computes importance weights and writes the batch's new priorities back
(``Replay.update_priorities``). This times exactly those calls on a full replay of the size the carried runs
use (1M transitions), at the humanoid-stand (3 bins) and dog-trot (3 bins) shapes, in alternating blocks so
that both modes see the same load, and puts them beside one learner update (``decqn_update.update_fn``) at
the same shape, so the overhead reads as a fraction of an update. One JSON line per shape.

    python benchmarks/replay_sampling.py [--capacity 1000000] [--draws 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from spinrl.training.behaviour import BehaviourConfig, Replay

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decqn_update import SHAPES as UPDATE_SHAPES  # noqa: E402  (beside this file: the carried runs' shapes)
from decqn_update import update_fn  # noqa: E402  (one learner update at a shape)

SHAPES = {k: UPDATE_SHAPES[k] for k in ("humanoid-stand-3", "dog-trot-3")}  # 3 bins: the prioritized attempts'


def filled(capacity: int, obs_dim: int, n_sub: int, prioritized: bool, rng: np.random.Generator) -> Replay:
    """A full replay of random transitions, added in chunks as the learner adds rounds."""
    r = Replay(capacity, obs_dim, n_sub, prioritized=prioritized)
    chunk = 50_000
    for lo in range(0, capacity, chunk):
        n = min(chunk, capacity - lo)
        obs = rng.standard_normal((n, obs_dim), dtype=np.float32)
        r.add(obs, rng.integers(0, 3, (n, n_sub)), rng.random(n, dtype=np.float32), obs, np.full(n, 0.97, np.float32))
    if prioritized:  # spread priorities as a trained run has them, not all equal
        r.tree.rebuild(rng.exponential(1.0, capacity) + Replay.PRIORITY_FLOOR)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capacity", type=int, default=1_000_000, help="replay size (full) (default 1M)")
    ap.add_argument("--draws", type=int, default=300, help="timed draws per mode (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the learner's default is 1)")
    args = ap.parse_args()
    if args.capacity < 256 or args.draws < 10 or args.threads < 1:
        ap.error("--capacity >= 256 (one batch), --draws >= 10 and --threads >= 1")
    torch.set_num_threads(args.threads)
    cfg = BehaviourConfig()
    for name, (obs_dim, nvec, transform) in SHAPES.items():
        rng = np.random.default_rng(0)
        uni = filled(args.capacity, obs_dim, len(nvec), False, rng)
        per = filled(args.capacity, obs_dim, len(nvec), True, rng)
        td = np.abs(rng.standard_normal(cfg.batch_size))

        def draw_uniform():
            uni.sample(rng, cfg.batch_size)

        def draw_prioritized():
            _, slots, _ = per.sample_prioritized(rng, cfg.batch_size, cfg.importance_exponent)
            per.update_priorities(slots, td, cfg.priority_exponent)

        update = update_fn(obs_dim, nvec, transform, fused=True)
        times = {"uniform": [], "prioritized": [], "update": []}
        fns = {"uniform": draw_uniform, "prioritized": draw_prioritized, "update": update}
        for f in fns.values():  # warm-up
            for _ in range(5):
                f()
        block = 10
        for _ in range(max(1, args.draws // block)):
            for key, f in fns.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    f()
                    times[key].append(time.perf_counter() - t0)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(json.dumps({
            "shape": name, "capacity": args.capacity, "batch": cfg.batch_size, "threads": args.threads,
            "uniform_ms": round(ms["uniform"], 3), "prioritized_ms": round(ms["prioritized"], 3),
            "update_ms": round(ms["update"], 3),
            "prioritized_over_uniform": round(ms["prioritized"] / ms["uniform"], 2),
            "extra_per_update_pct": round(100 * (ms["prioritized"] - ms["uniform"]) / (ms["update"] + ms["uniform"]), 1),
            "loadavg": round(os.getloadavg()[0], 2)}), flush=True)
        del uni, per


if __name__ == "__main__":
    main()
