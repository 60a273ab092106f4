"""Milliseconds per gradient step for every algorithm x actor x preset, and per ASM step.

Runs the library's own ``gradient_step`` and ``asm_loss`` (no re-implementation) on synthetic data
of a given shape, and prints one JSON line per measurement plus a table at the end.

    python benchmarks/train_step.py                       # cheetah shape (17-dim state, 6 x 3), both presets
    python benchmarks/train_step.py --shape dog --presets paper --algos iql --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from spinrl.algorithms.common import Batch
from spinrl.algorithms.mam import MAMConfig, asm_loss
from spinrl.data import from_arrays
from spinrl.models import ActionStructureModel, ModelConfig
from spinrl.training.config import PRESETS, TrainConfig
from spinrl.training.runinfo import environment_info
from spinrl.training.trainer import build, gradient_step

SHAPES = {"cheetah": (17, [3] * 6), "dog": (223, [3] * 38), "dog30": (223, [30] * 38), "maze": (2, [2] * 12)}


def synthetic(obs_dim: int, nvec: list[int], n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = (rng.random((n, len(nvec))) * np.asarray(nvec)).astype(np.int64)
    trunc = np.zeros(n, bool)
    trunc[999::1000] = True
    return from_arrays(obs, act, rng.normal(size=n), np.zeros(n, bool), trunc, nvec=nvec,
                       next_observations=np.roll(obs, -1, 0))


def time_it(fn, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def bench_train(ds, algo: str, actor: str, preset: str, asm_dir: str | None, steps: int, warmup: int, device: str) -> dict:
    cfg = TrainConfig(dataset="<synthetic>", out="<none>", algo=algo, actor=actor, preset=preset, asm=asm_dir,
                      eval_every=0, device=device)
    s = build(cfg, dataset=ds)
    rng = np.random.default_rng(0)
    B = cfg.resolved()["batch_size"]

    def step():
        gradient_step(s, Batch(*ds.sample(B, rng, device=s.device)))
        if s.device.type == "cuda":
            torch.cuda.synchronize()

    ms = time_it(step, steps, warmup)
    med = statistics.median(ms)
    return {"kind": "train_step", "algo": algo, "actor": actor, "preset": preset, "batch": B,
            "ms_median": round(med, 3), "grad_steps_per_s": round(1000 / med, 2), "n": steps}


def make_asm_dir(ds, preset: str, tmp: str) -> str:
    """A (randomly initialized) ASM directory with the right signature, so `spin` can be timed."""
    import os

    from spinrl.training.checkpoint import CHECKPOINT_SCHEMA, save_atomic

    model = ModelConfig(**{**PRESETS[preset]["model"].__dict__})
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, model)
    d = os.path.join(tmp, f"asm_{preset}")
    os.makedirs(d, exist_ok=True)
    save_atomic({"schema": CHECKPOINT_SCHEMA, "kind": "asm", "model": asm.state_dict()}, os.path.join(d, "asm.pt"))
    with open(os.path.join(d, "asm.json"), "w") as f:
        json.dump({"signature": ds.signature, "model": model.__dict__, "wall_seconds": 0.0, "chosen_epoch": 0}, f)
    return d


def bench_asm(ds, preset: str, steps: int, warmup: int, device: str) -> dict:
    p = PRESETS[preset]
    dev = torch.device(device)
    asm = ActionStructureModel(ds.observation_dim, ds.nvec, p["model"]).to(dev)
    opt = torch.optim.Adam(asm.parameters(), lr=p["asm_lr"])
    rng = np.random.default_rng(0)
    B = p["asm_batch_size"]
    mam = MAMConfig()

    def step():
        s, a, _, _, _ = ds.sample(B, rng, device=dev)
        loss, _ = asm_loss(asm, s, a, mam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(asm.parameters(), 1.0)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    ms = time_it(step, steps, warmup)
    med = statistics.median(ms)
    return {"kind": "asm_step", "preset": preset, "batch": B, "ms_median": round(med, 3),
            "samples_per_s": round(B * 1000 / med, 1), "n": steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="cheetah")
    ap.add_argument("--presets", default="cpu,paper")
    ap.add_argument("--algos", default="iql,awac,bcq")
    ap.add_argument("--actors", default="factored,autoregressive,saint,spin")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--asm-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import tempfile

    obs_dim, nvec = SHAPES[args.shape]
    ds = synthetic(obs_dim, nvec)
    head = {"kind": "setup", "shape": args.shape, "obs_dim": obs_dim, "nvec": f"{nvec[0]}x{len(nvec)}",
            "threads": torch.get_num_threads(), **environment_info(args.device)}
    print(json.dumps(head), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            asm_dir = make_asm_dir(ds, preset, tmp) if "spin" in args.actors.split(",") else None
            for algo in args.algos.split(","):
                for actor in args.actors.split(","):
                    r = {"shape": args.shape, **bench_train(ds, algo, actor, preset, asm_dir if actor == "spin" else None,
                                                            args.steps, args.warmup, args.device)}
                    print(json.dumps(r), flush=True)
                    results.append(r)
            r = {"shape": args.shape, **bench_asm(ds, preset, args.asm_steps, 2, args.device)}
            print(json.dumps(r), flush=True)
            results.append(r)
    print(f"\n{'preset':<7} {'algo':<5} {'actor':<15} {'ms/step':>9} {'steps/s':>9}", file=sys.stderr)
    for r in results:
        if r["kind"] == "train_step":
            print(f"{r['preset']:<7} {r['algo']:<5} {r['actor']:<15} {r['ms_median']:>9.1f} {r['grad_steps_per_s']:>9.1f}", file=sys.stderr)
        else:
            print(f"{r['preset']:<7} ASM step (batch {r['batch']}): {r['ms_median']:.1f} ms, {r['samples_per_s']:.0f} samples/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
