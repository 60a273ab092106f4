"""What random exploration alone reaches on a DM Control task: does it ever find reward after the start?

The humanoid-stand behaviour runs stayed flat (greedy return ~8, random ~4.5) for millions of env steps:
their reward comes in the first ~50 steps while the body falls, and the learner has to find getting up on
its own. This rolls out the exploration schemes of ``spinrl behaviour train`` with no learning at all:
uniform random sub-actions every step (``joint`` exploration at epsilon 1), all-zero torques, and random
actions *held* for zipf(2) steps (``--explore temporal``) or a fixed number of steps, and prints, per
scheme, the highest head height after step ``--after`` (mean and max over episodes), the mean head
height after it and the return collected after it. One JSON line per scheme. ``--policies`` adds greedy
behaviour policies (``policies/step_*.pt`` of a run) as schemes, to see where a learner holds the head
before the task's reward shows it (``--shaping head-height`` against the runs without it).

    python benchmarks/exploration_probe.py [--task humanoid-stand] [--bins 3] [--episodes 8] [--after 100]
        [--policies RUN/policies/step_0375000.pt ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spinrl.envs.dmc import DMCEnv, bin_values
from spinrl.training.behaviour import TEMPORAL_MAX_HOLD, load_policy


def rollout(env, values: np.ndarray, scheme: str, rng: np.random.Generator, after: int,
            greedy=None) -> tuple[float, float, float]:
    """(highest head height after step ``after``, mean head height after it, return after it) of one
    episode under ``scheme`` (or the greedy policy ``greedy``: flat observation -> sub-actions)."""
    n, bins = values.shape
    ts = env.reset()
    left, held, head, ret, heads = 0, np.zeros(n, np.int64), 0.0, 0.0, []
    for t in range(1000):
        if greedy is not None:
            a = greedy(DMCEnv._flat(ts.observation))  # the flat observation the policy was trained on
        elif scheme == "uniform":
            a = rng.integers(0, bins, n)
        elif scheme == "zero":
            a = np.full(n, bins // 2)  # the middle bin: 0 torque at odd bins
        else:
            if left == 0:
                held = rng.integers(0, bins, n)
                left = min(int(rng.zipf(2.0)), TEMPORAL_MAX_HOLD) if scheme == "zipf" else int(scheme.split("-")[1])
            a, left = held, left - 1
        ts = env.step(values[np.arange(n), a])
        if t >= after:
            h = float(env.physics.head_height())
            head, ret = max(head, h), ret + float(ts.reward)
            heads.append(h)
    return head, float(np.mean(heads)), ret


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="humanoid-stand", help="a humanoid task (humanoid-stand, -walk, -run)")
    p.add_argument("--bins", type=int, default=3)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--after", type=int, default=100, help="count head height and reward from this step on")
    p.add_argument("--schemes", nargs="+", default=["uniform", "zero", "zipf", "hold-10", "hold-30"])
    p.add_argument("--policies", nargs="*", default=[], help="greedy DecQN policy files (a run's policies/step_*.pt)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    domain, _, task = args.task.partition("-")
    if domain != "humanoid" or not task:
        p.error(f"--task {args.task!r}: the probe measures head height, so it needs humanoid-<task> (e.g. humanoid-stand)")
    held = lambda s: s.startswith("hold-") and s[5:].isdigit() and int(s[5:]) > 0  # noqa: E731
    bad = [s for s in args.schemes if s not in ("uniform", "zero", "zipf") and not held(s)]
    if bad:
        p.error(f"--schemes {' '.join(bad)}: use uniform, zero, zipf or hold-K with K a positive number of steps")
    if args.bins < 2 or args.episodes < 1 or not 0 <= args.after < 1000:
        p.error("--bins >= 2, --episodes >= 1 and 0 <= --after < 1000 (episodes last 1000 steps)")
    missing = [f for f in args.policies if not Path(f).is_file()]
    if missing:
        p.error(f"--policies {' '.join(missing)}: no such file; pass policy files such as RUN/policies/step_0375000.pt")
    from dm_control import suite

    torch.set_num_threads(1)
    env = suite.load(domain, task, task_kwargs={"random": args.seed})
    spec = env.action_spec()
    values = np.stack(bin_values(args.bins, spec.minimum, spec.maximum))  # [N, bins]: the dmc: environments' values
    greedy = {s: None for s in args.schemes}
    for f in args.policies:
        net, meta = load_policy(f)
        if list(meta["nvec"]) != [args.bins] * values.shape[0]:
            p.error(f"--policies {f}: a policy for nvec {meta['nvec']}, not {args.task} at --bins {args.bins}")
        greedy[f] = lambda obs, net=net: net.greedy(torch.from_numpy(obs[None])).numpy()[0]
    for scheme, act in greedy.items():
        rng, t0 = np.random.default_rng(args.seed), time.perf_counter()
        heads, means, rets = zip(*(rollout(env, values, scheme, rng, args.after, act) for _ in range(args.episodes)))
        print(json.dumps({"task": args.task, "bins": args.bins, "scheme": scheme, "episodes": args.episodes,
                          "after_step": args.after, "head_height_max_mean": round(float(np.mean(heads)), 3),
                          "head_height_max_max": round(float(np.max(heads)), 3),
                          "head_height_mean": round(float(np.mean(means)), 3),
                          "return_after_mean": round(float(np.mean(rets)), 4),
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
