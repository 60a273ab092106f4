"""Greedy and sampled returns of every finished run's final policy, written beside it as final_eval.json.

Issue #29 asks why the early-learning curves rise and then fall back. Training evaluates sampled actions (as
the paper does); this re-evaluates each final policy.pt on the same episode seeds both ways, so the page can
tell a policy whose per-sub-action distributions got broader (sampling hurts, the modes are fine) from one
whose modes got worse. The report reads final_eval.json from run directories and records.

    python benchmarks/final_eval.py /work/runs/controls [--episodes 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from spinrl.evaluation import evaluate
from spinrl.utils.checkpoint import write_text_atomic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="a sweep directory (its runs/) or any folder of run directories")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    here = Path(__file__).resolve().parent
    commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    for pol in sorted(Path(args.root).rglob("policy.pt")):
        out = pol.parent / "final_eval.json"
        if out.exists():
            continue
        rec = {"episodes": args.episodes, "seed": args.seed, "commit": commit,
               "command": f"python benchmarks/final_eval.py {args.root} --episodes {args.episodes} --seed {args.seed}"}
        t0 = time.time()
        for mode, greedy in (("greedy", True), ("sampled", False)):
            res = evaluate(str(pol), episodes=args.episodes, seed=args.seed, greedy=greedy, threads=1)
            rec[mode] = {"return_mean": res.mean, "return_std": res.std, "normalized_score": res.normalized_mean,
                         "returns": [round(float(x), 3) for x in res.returns]}
        rec["wall_seconds"] = round(time.time() - t0, 1)
        write_text_atomic(out, json.dumps(rec, indent=1) + "\n")
        print(f"{pol.parent.name}: greedy {rec['greedy']['return_mean']:.1f}, sampled {rec['sampled']['return_mean']:.1f} "
              f"({rec['wall_seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
