"""ms per DecQN behaviour-learner update (``spinrl behaviour train``), with its optimizer against torch's Adam.

One update is what the learner runs every ``--update-every`` env steps: the double-Q n-step loss on a
batch of 256, backward, gradient clip, Adam step, Polyak. Timed at the shapes of the runs carried between
sessions (humanoid-stand 3 bins, dog-trot 3 and 30 bins; hidden 256), once with the learner's
``FusedAdam`` and once with ``torch.optim.Adam(foreach=True)``, which it used before, in alternating
blocks so that both see the same load. One JSON line per shape.

    python benchmarks/decqn_update.py [--steps 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

from spinrl.algorithms.common import polyak
from spinrl.algorithms.decqn import DecQNConfig, NStepBatch, q_loss
from spinrl.models.decqn import DecQNNet
from spinrl.utils.memory import keep_freed_memory
from spinrl.utils.optim import FusedAdam

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import time_interleaved  # noqa: E402  (beside this file: the same interleaved timing)

SHAPES = {"humanoid-stand-3": (67, [3] * 21, "none"), "dog-trot-3": (223, [3] * 38, "symlog"),
          "dog-trot-30": (223, [30] * 38, "symlog")}


def update_fn(obs_dim: int, nvec: list[int], transform: str, fused: bool, batch: int = 256):
    torch.manual_seed(0)
    online, target = DecQNNet(obs_dim, nvec, 256, transform), DecQNNet(obs_dim, nvec, 256, transform)
    target.load_state_dict(online.state_dict())
    opt = FusedAdam(online.parameters(), lr=1e-4) if fused else torch.optim.Adam(online.parameters(), lr=1e-4, foreach=True)
    b = NStepBatch(torch.randn(batch, obs_dim), torch.randint(0, nvec[0], (batch, len(nvec))), torch.rand(batch),
                   torch.randn(batch, obs_dim), torch.full((batch,), 0.99**3))
    cfg = DecQNConfig()

    def update():  # as the loop in spinrl.training.behaviour
        loss, _ = q_loss(online, target, b, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 40.0, foreach=True)
        opt.step()
        polyak(target, online, 0.005)

    return update


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="timed updates per optimizer (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the learner's default is 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the learner
    for name, (obs_dim, nvec, transform) in SHAPES.items():
        fns = {"fused": update_fn(obs_dim, nvec, transform, True), "foreach": update_fn(obs_dim, nvec, transform, False)}
        times = time_interleaved(fns, args.steps, warmup=20)
        fused, foreach = statistics.median(times["fused"]), statistics.median(times["foreach"])
        print(json.dumps({"shape": name, "threads": args.threads, "ms_fused_adam": round(fused, 3),
                          "ms_torch_adam_foreach": round(foreach, 3), "speedup": round(foreach / fused, 3)}), flush=True)


if __name__ == "__main__":
    main()
