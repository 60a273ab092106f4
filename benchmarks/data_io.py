"""Dataset I/O benchmark: save, load (+ checksum verification, mmap), peak memory, sampling throughput.

A synthetic dataset shaped like dog-trot (223-dim float32 observations, 38 sub-actions with 3 bins,
1000-step truncated episodes) is built in the native layout with ``from_episodes``. Every measurement
runs in a fresh subprocess so its peak resident memory is its own:

* ``save``: build, then time ``save`` (write + fsync + SHA-256 of every array).
* ``load``: baseline ``ru_maxrss`` after importing torch and spinrl, then ``load(verify=True, mmap=True)``
  (hashing, memory-mapping, full validation); reports the peak growth as a multiple of the array bytes
  (goal <= 1.5x). Memory-mapped pages the validation touches count as resident, so ~1.0x is the floor.
* ``sample``: ``ds.sample`` batches/s for batch 256 and 1024 (torch on one thread).

The page cache is warm (the file was just written), so load times are not cold-disk times.

    python benchmarks/data_io.py                      # 1M transitions
    python benchmarks/data_io.py --transitions 100000 --tmp /some/dir --keep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _array_bytes(path: Path) -> int:
    return sum(os.path.getsize(path / f) for f in os.listdir(path) if f.endswith(".npy"))


def child_save(args: argparse.Namespace) -> dict:
    import numpy as np

    from spinrl.data import from_episodes, save

    L, E = args.episode_len, args.transitions // args.episode_len
    if E < 1:
        raise SystemExit("--transitions must be at least --episode-len")
    T = E * L
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    obs = np.empty((T + E, args.obs_dim), dtype=np.float32)
    step = 1 << 16
    for i in range(0, T + E, step):  # chunked: never a float64 copy of the whole array
        rng.standard_normal(out=obs[i : i + step], dtype=np.float32)
    actions = rng.integers(0, args.bins, size=(T, args.sub_actions), dtype=np.uint8)
    rewards = rng.random(T, dtype=np.float32)
    terminations = np.zeros(T, dtype=bool)
    truncations = np.zeros(T, dtype=bool)
    truncations[L - 1 :: L] = True
    ds = from_episodes(
        obs, actions, rewards, terminations, truncations, np.full(E, L, dtype=np.int64),
        {"env_id": "synthetic", "nvec": [args.bins] * args.sub_actions, "level": "benchmark"},
    )
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    save(ds, args.path)
    save_s = time.perf_counter() - t0
    nbytes = _array_bytes(args.path)
    return {"stage": "save", "transitions": T, "episodes": E, "array_bytes": nbytes, "build_s": round(build_s, 3),
            "save_s": round(save_s, 3), "save_MBps": round(nbytes / save_s / 1e6, 1)}


def child_load(args: argparse.Namespace) -> dict:
    import torch  # noqa: F401  (baseline includes the interpreter and torch, as in training)

    import spinrl.data as data

    base = _maxrss_bytes()
    t0 = time.perf_counter()
    ds = data.load(args.path, mmap=True, verify=True)
    load_s = time.perf_counter() - t0
    peak = _maxrss_bytes()
    nbytes = _array_bytes(args.path)
    t0 = time.perf_counter()
    data.load(args.path, mmap=True, verify=False)
    noverify_s = time.perf_counter() - t0
    return {"stage": "load", "transitions": ds.num_transitions, "array_bytes": nbytes,
            "load_verify_s": round(load_s, 3), "load_verify_MBps": round(nbytes / load_s / 1e6, 1),
            "load_noverify_s": round(noverify_s, 3), "baseline_rss_MB": round(base / 1e6, 1),
            "peak_rss_MB": round(peak / 1e6, 1), "peak_growth_MB": round((peak - base) / 1e6, 1),
            "peak_over_arrays": round((peak - base) / nbytes, 3)}


def child_sample(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    import spinrl.data as data

    torch.set_num_threads(1)
    ds = data.load(args.path, mmap=True, verify=False)
    rng = np.random.default_rng(0)
    out = {"stage": "sample", "transitions": ds.num_transitions}
    for bs in (256, 1024):
        for _ in range(20):  # warm-up: fault the mapped pages in
            ds.sample(bs, rng)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            ds.sample(bs, rng)
            n += 1
        dt = time.perf_counter() - t0
        out[f"batch{bs}_per_s"] = round(n / dt, 1)
        out[f"batch{bs}_transitions_per_s"] = round(n * bs / dt)
    return out


def _run_child(stage: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--_child", stage, "--path", str(args.path), "--transitions", str(args.transitions),
           "--obs-dim", str(args.obs_dim), "--sub-actions", str(args.sub_actions), "--bins", str(args.bins),
           "--episode-len", str(args.episode_len), "--seconds", str(args.seconds)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{stage} subprocess failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--obs-dim", type=int, default=223)
    p.add_argument("--sub-actions", type=int, default=38)
    p.add_argument("--bins", type=int, default=3)
    p.add_argument("--episode-len", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=3.0, help="timing window per sampling batch size")
    p.add_argument("--tmp", default=None, help="directory for the dataset (default: a fresh temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the written dataset")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        fn = {"save": child_save, "load": child_load, "sample": child_sample}[args._child]
        print(json.dumps(fn(args)))
        return 0

    root = Path(tempfile.mkdtemp(prefix="spinrl-bench-", dir=args.tmp))
    args.path = root / "bench.d"
    try:
        results = [_run_child(stage, args) for stage in ("save", "load", "sample")]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for r in results:
        print(json.dumps(r))
    s, ld, sm = results
    print(
        f"\n{s['transitions']:,} transitions, {args.obs_dim}-dim obs, {args.sub_actions} sub-actions: "
        f"{s['array_bytes'] / 1e6:.0f} MB of arrays\n"
        f"  save                 {s['save_s']:.2f} s ({s['save_MBps']:.0f} MB/s incl. fsync + SHA-256)\n"
        f"  load + verify (mmap) {ld['load_verify_s']:.2f} s ({ld['load_verify_MBps']:.0f} MB/s); "
        f"without verify {ld['load_noverify_s']:.2f} s\n"
        f"  load peak memory     +{ld['peak_growth_MB']:.0f} MB over a {ld['baseline_rss_MB']:.0f} MB baseline = "
        f"{ld['peak_over_arrays']:.2f}x the array bytes (goal <= 1.5x) "
        f"{'OK' if ld['peak_over_arrays'] <= 1.5 else 'OVER'}\n"
        f"  sample               batch 256: {sm['batch256_per_s']:.0f} batches/s; "
        f"batch 1024: {sm['batch1024_per_s']:.0f} batches/s"
        + (f"\n  kept at {args.path}" if args.keep else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
