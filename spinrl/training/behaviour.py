"""``spinrl behaviour train``: online DecQN behaviour agents for the discretized DM Control datasets.

Settings follow benchmarks.md section 1. The loop runs in *rounds*: all ``num_envs`` envs are reset
together with seeds derived from (seed, round) and stepped until every episode has ended (DMC episodes
all last 1000 steps). Evaluation and checkpoints happen only between rounds, at episode boundaries, so
a checkpoint holds no environment state and no pending n-step transitions. ``checkpoints/last.pt``
holds the networks, optimizer, every RNG stream, epsilon, counters and the metrics history; the replay
buffer is written as ``.npy`` files in ``checkpoints/replay-<step>/`` *before* ``last.pt`` names it
(then older replay folders are removed), so a kill at any moment leaves a consistent pair and resume
continues bit-for-bit (same thread count assumed: ``--threads``, default 1).

A run can also outlive its machine through a *carry* (``spinrl behaviour carry``): the networks,
optimizer, RNG streams, epsilon, counters, metrics and a few policy files for the later medium choice,
a few MB without the replay buffer (hundreds of MB). ``--continue-from CARRY`` starts a new run directory
from it: env steps, wall time and metrics continue, the replay restarts empty and gradient updates
pause until ``--refill`` (default 100k) transitions of the carried epsilon-greedy policy refill it. That is *not*
bit-identical to an uninterrupted run (the replay was lost); the env steps where it happened are kept
in ``config.json`` (``continued_at``) and marked on the learning curve.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from spinrl.algorithms.common import polyak
from spinrl.algorithms.decqn import DecQNConfig, NStepBatch, q_loss
from spinrl.errors import CheckpointError, ConfigError
from spinrl.models.decqn import OBS_TRANSFORMS, DecQNNet
from spinrl.training.sumtree import SumTree
from spinrl.utils.checkpoint import (
    CHECKPOINT_SCHEMA,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_atomic,
    write_text_atomic,
)
from spinrl.utils.memory import keep_freed_memory
from spinrl.utils import outdir
from spinrl.utils.optim import FusedAdam

EVAL_SEED = 2_000_000_000
"""Evaluation episode k is reset with seed EVAL_SEED + k (the same episodes at every evaluation)."""
EXPLORE_MODES = ("joint", "per-dimension", "temporal")
TEMPORAL_MAX_HOLD = 100
"""--explore temporal: the longest a random action is held (env steps)"""
REPLAY_MODES = ("uniform", "prioritized")
SHAPINGS = ("none", "head-height")
STAND_HEIGHT = 1.4
"""dm_control humanoid's head height of a standing body (``humanoid._STAND_HEIGHT``): --shaping head-height's cap"""
METRIC_FIELDS = ("env_step", "wall_seconds", "eval_return_mean", "eval_return_std", "epsilon", "loss",
                 "q_mean", "updates", "episodes", "train_return_mean", "train_reward_return_mean")
"""``q_mean``: mean Q(s, a) of the replay batches since the last row; a steady climb with a rising loss
warns of divergence before the returns show it. ``train_return_mean``: the training episodes' task return;
``train_reward_return_mean``: their return under the reward the learner trains on (--shaping included)."""
DIVERGENCE_RATIO = 4.0
"""q_divergence: a mean Q this many times above what the training episodes' rewards support (at least 2) is
reported as diverging: the healthy committed and carried runs stay under it, and the two dog-trot 10-bin runs
that collapsed crossed it at the row where the collapse began (rows of one in tests/test_behaviour.py)"""
TIMING_FIELDS = ("wall_seconds",)
POLICY_KIND = "decqn-policy"
CARRY_KIND = "decqn-behaviour-carry"
CARRY_FILE = "carry.pt"


@dataclass
class BehaviourConfig:
    """Train an online DecQN behaviour agent (benchmarks.md s.1) on a discretized DM Control task."""

    env: str = "dmc:cheetah-run"
    """DM Control task id dmc:<domain>-<task>"""
    out: str = ""
    """run directory (config.json, metrics.csv, policies/, checkpoints/)"""
    overwrite: bool = False
    """write into --out even if spinrl did not make it as a behaviour run (files spinrl did not write are kept)"""
    bins: int = 3
    """bins per action dimension"""
    env_steps: int = 1_000_000
    """training env steps; the run stops at the first episode boundary at or after this"""
    resume: bool = False
    """continue the run in --out from checkpoints/last.pt (a larger --env-steps extends it); flags not given
    keep the run's own values (`resume_config(out)` in Python)"""
    continue_from: str | None = None
    """a carry folder (`spinrl behaviour carry`) of an earlier run, possibly from another machine: continue it
    in a new --out with an empty replay that --refill steps of the carried policy refill (not bit-identical)"""
    refill: int | None = None
    """with --continue-from: transitions of the carried policy that refill the empty replay before gradient
    updates resume (default: 100000, at most the replay capacity). dog-trot at 30 bins continued at 1.0M env
    steps with a 10k refill lost its fit (TD loss 0.07 -> 1.8, greedy return 70 -> 31 within 225k steps); with
    100k the loss stayed ~0.1 and the greedy return rose to 122 by 1.9M; a second 100k continuation at 1.975M dipped
    for 50k steps (133 -> 65 at 2.15M) and then rose past its carried best (150) to 267 by 3.075M"""
    hidden: int = 256
    """torso width (the benchmark used 512; 256 is 2-4x faster on CPU)"""
    obs_transform: Literal["none", "symlog"] = "none"
    """symlog = sign(x) log(1 + |x|) of each observation entry before the network (none = the benchmark's
    DecQN); dog-trot's touch sensors reach 5e4 unscaled, and its 10-bin run without a transform diverged"""
    seed: int = 0
    """seed of network init, exploration, replay sampling and episode resets"""
    lr: float = 1e-4
    """Adam learning rate"""
    grad_clip: float = 40.0
    """gradient-norm clip"""
    batch_size: int = 256
    """replay minibatch size"""
    n_step: int = 3
    """n-step return length"""
    gamma: float = 0.99
    """discount"""
    tau: float = 0.005
    """Polyak rate of the target network"""
    replay_capacity: int = 1_000_000
    """replay capacity in transitions (lowered to fit a quarter of the available RAM)"""
    warmup: int = 10_000
    """uniform-random env steps before learning starts"""
    update_every: int = 5
    """env steps per gradient update"""
    eps_start: float = 1.0
    """initial epsilon of epsilon-greedy exploration (after warm-up)"""
    eps_min: float = 0.05
    """epsilon floor"""
    eps_decay: float = 0.999
    """epsilon is multiplied by this after every exploratory (random) action (per-dimension: every env step)"""
    replay: Literal["uniform", "prioritized"] = "uniform"
    """uniform = the benchmark's DecQN; prioritized = proportional prioritized replay as in DecQN's original
    agent (transitions drawn in proportion to |TD error|^--priority-exponent, losses weighted by importance
    weights with --importance-exponent): rare rewarding transitions are replayed more often. Costs ~0.6-0.7 ms
    more per update than uniform on a full 1M replay, ~4-6% of an update (benchmarks/replay_sampling.py,
    benchmarks/results/replay_sampling_cpu.jsonl)"""
    priority_exponent: float = 0.6
    """with --replay prioritized: how strongly |TD error| skews sampling (0 = uniform)"""
    importance_exponent: float = 0.2
    """with --replay prioritized: strength of the importance-weight correction (1 = full)"""
    explore: Literal["joint", "per-dimension", "temporal"] = "joint"
    """joint = with probability epsilon the whole action is uniform random (the benchmark's DecQN);
    per-dimension = each sub-action independently, as epsilon-greedy over each dimension's utilities in
    DecQN's original agent: an exploratory step perturbs ~epsilon x N joints instead of all of them;
    temporal = ez-greedy (Dabney et al. 2021): a random action is held for a zipf(2)-distributed number of
    steps (at most 100), so exploration makes sustained motions instead of one-step jitter"""
    shaping: Literal["none", "head-height"] = "none"
    """training reward only (evaluations, metrics and datasets keep the task's reward): head-height adds
    --shaping-scale x min(head height / 1.4, 1) to each step's reward, for tasks whose observation has a
    head_height (humanoid). humanoid-stand's reward is ~0 until the head is above ~1 m, so from the floor
    the learner sees no signal (3 runs without it, up to 7.5M env steps, stayed at the random policy's
    level; with it one stood up: the committed expert, 800.5 on 50 fresh greedy episodes at 4.25M); the bonus is largest when standing, so it
    points where the task's reward does"""
    shaping_scale: float = 0.5
    """with --shaping head-height: the bonus of a head at standing height (the task's reward is at most 1)"""
    num_envs: int = 5
    """episodes stepped together through one batched policy call"""
    eval_every: int = 25_000
    """env steps between greedy evaluations (at the next episode boundary; each also saves policies/step_XXXXXXX.pt)"""
    checkpoint_every: int = 25_000
    """env steps between resumable checkpoints (checkpoints/last.pt)"""
    eval_episodes: int = 10
    """greedy evaluation episodes"""
    threads: int = 1
    """torch CPU threads (keep it fixed across a resume for bit-exact continuation)"""
    progress: bool = True
    """progress bar on a terminal"""

    def validate(self) -> None:
        if not isinstance(self.env, str) or not self.env.startswith("dmc:"):
            raise ConfigError(f"env {self.env!r}: behaviour training is for DM Control tasks; use dmc:<domain>-<task> (e.g. dmc:cheetah-run)")
        from spinrl.envs.dmc import observation_slices, parse_task

        parse_task(self.env)  # raises naming the valid tasks
        if int(self.bins) < 2:
            raise ConfigError(f"--bins {self.bins}: need at least 2 bins per action dimension")
        if not self.out:
            raise ConfigError("--out is required: the run directory")
        for name in ("env_steps", "hidden", "batch_size", "n_step", "replay_capacity", "update_every",
                     "num_envs", "eval_every", "checkpoint_every", "eval_episodes", "threads"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} {v!r}: must be a positive integer")
        if self.explore not in EXPLORE_MODES:
            raise ConfigError(f"--explore {self.explore!r}: choose one of {', '.join(EXPLORE_MODES)}")
        if self.replay not in REPLAY_MODES:
            raise ConfigError(f"--replay {self.replay!r}: choose one of {', '.join(REPLAY_MODES)}")
        for name in ("priority_exponent", "importance_exponent"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: must be in [0, 1]")
        if self.shaping not in SHAPINGS:
            raise ConfigError(f"--shaping {self.shaping!r}: choose one of {', '.join(SHAPINGS)}")
        if not 0 < self.shaping_scale <= 10:
            raise ConfigError(f"--shaping-scale {self.shaping_scale!r}: must be in (0, 10]")
        if self.shaping == "head-height" and "head_height" not in observation_slices(self.env):
            raise ConfigError(f"--shaping head-height: {self.env}'s observation has no head_height (humanoid tasks "
                              "have it); drop --shaping")
        if self.obs_transform not in OBS_TRANSFORMS:
            raise ConfigError(f"--obs-transform {self.obs_transform!r}: choose one of {', '.join(OBS_TRANSFORMS)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup}: must be >= 0")
        if self.refill is not None and (not isinstance(self.refill, (int, np.integer)) or self.refill < 0):
            raise ConfigError(f"--refill {self.refill!r}: must be an integer >= 0")
        if self.refill is not None and not self.continue_from:
            raise ConfigError("--refill is for --continue-from CARRY (a run's own --resume keeps its replay); drop --refill")
        if self.continue_from is not None and not self.resume and not (Path(self.continue_from) / CARRY_FILE).exists():
            raise ConfigError(f"--continue-from {self.continue_from}: no {CARRY_FILE} there; pass a folder written by "
                              "`spinrl behaviour carry RUN --out DIR`")
        if not (0 < self.eps_decay <= 1 and 0 <= self.eps_min <= self.eps_start <= 1):
            raise ConfigError("--eps-start/--eps-min/--eps-decay: need 0 <= eps-min <= eps-start <= 1 and 0 < eps-decay <= 1")


DEFAULT_REFILL = 100_000
"""Carried-policy transitions that refill a continued run's replay unless --refill says otherwise (see its help)."""

# Fields that define the run: a resume with different values would not continue the same experiment.
_IDENTITY = ("env", "bins", "hidden", "obs_transform", "seed", "lr", "grad_clip", "batch_size", "n_step", "gamma",
             "tau", "warmup", "update_every", "eps_start", "eps_min", "eps_decay", "explore", "replay",
             "priority_exponent", "importance_exponent", "shaping", "shaping_scale", "num_envs", "eval_episodes")


def changed_flags(config: dict) -> str:
    """The learner flags of a saved run config that differ from today's defaults, as CLI flags
    (``--obs-transform symlog --lr 5e-05``): what a report or a continue command must repeat."""
    default = asdict(BehaviourConfig())
    flags = []
    for name in _IDENTITY:
        if name in ("env", "bins", "hidden", "seed"):  # always spelled out where a run is named
            continue
        value = config.get(name, _ADDED_LATER.get(name, default[name]))
        if value != default[name]:
            flags.append(f"--{name.replace('_', '-')} {value}")
    return " ".join(flags)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """``arr`` as .npy, fsynced under a temporary name and then renamed: complete or absent, never partial."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Replay:
    """Replay of n-step transitions in preallocated numpy rings (no Python objects per row): uniform, or
    with a ``SumTree`` of priorities (``prioritized``)."""

    ARRAYS = ("obs", "actions", "returns", "next_obs", "discount")
    PRIORITY_FLOOR = 1e-6
    """added to |TD error| so that no transition's probability reaches 0"""

    def __init__(self, capacity: int, obs_dim: int, n_sub: int, prioritized: bool = False):
        self.capacity, self.size, self.ptr = int(capacity), 0, 0
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, n_sub), np.int16)
        self.returns = np.zeros(capacity, np.float32)
        self.discount = np.zeros(capacity, np.float32)
        self.tree = SumTree(capacity) if prioritized else None

    def add(self, obs, actions, returns, next_obs, discount) -> None:
        n = len(returns)
        idx = (self.ptr + np.arange(n)) % self.capacity
        self.obs[idx], self.actions[idx], self.returns[idx] = obs, actions, returns
        self.next_obs[idx], self.discount[idx] = next_obs, discount
        if self.tree is not None:  # new transitions are sampled at least once soon: the largest priority so far
            self.tree.set(idx, self.tree.max_priority)
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def _batch(self, i: np.ndarray) -> NStepBatch:
        t = torch.from_numpy
        return NStepBatch(t(self.obs[i]), t(self.actions[i].astype(np.int64)), t(self.returns[i]),
                          t(self.next_obs[i]), t(self.discount[i]))

    def sample(self, rng: np.random.Generator, batch: int) -> NStepBatch:
        return self._batch(rng.integers(0, self.size, batch))

    def sample_prioritized(self, rng: np.random.Generator, batch: int,
                           importance_exponent: float) -> tuple[NStepBatch, np.ndarray, torch.Tensor]:
        """(batch, slots, importance weights [B]): slot i drawn with probability p_i / sum p, weighted by
        (size * P(i))^-importance_exponent / max (the bias correction of prioritized replay)."""
        assert self.tree is not None, "sample_prioritized needs Replay(prioritized=True)"
        i = self.tree.sample(rng, batch, self.size)
        prob = self.tree.tree[self.tree.width + i] / self.tree.total
        w = (self.size * prob) ** -importance_exponent
        return self._batch(i), i, torch.from_numpy((w / w.max()).astype(np.float32))

    def update_priorities(self, slots: np.ndarray, td_abs: np.ndarray, priority_exponent: float) -> None:
        p = (np.asarray(td_abs, np.float64) + self.PRIORITY_FLOOR) ** priority_exponent
        self.tree.set(slots, p)
        self.tree.max_priority = max(self.tree.max_priority, float(p.max()))

    def save(self, folder: Path) -> dict:
        """Write each array's filled part as .npy (fsynced); returns the metadata ``last.pt`` keeps."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.ARRAYS:
            _save_npy(folder / f"{name}.npy", getattr(self, name)[: self.size])
        meta = {"folder": folder.name, "size": self.size, "ptr": self.ptr, "capacity": self.capacity}
        if self.tree is not None:
            _save_npy(folder / "priorities.npy", self.tree.leaves(self.size))
            meta["max_priority"] = self.tree.max_priority
        return meta

    def load(self, folder: Path, meta: dict) -> None:
        if int(meta["capacity"]) != self.capacity:
            raise CheckpointError(f"replay capacity {meta['capacity']} in the checkpoint differs from {self.capacity}")
        n = int(meta["size"])
        for name in self.ARRAYS:
            path = folder / f"{name}.npy"
            if not path.exists():
                raise CheckpointError(f"replay file {path} is missing; the checkpoint folder is incomplete")
            arr = np.load(path, allow_pickle=False)
            if arr.shape[0] != n or arr.shape[1:] != getattr(self, name).shape[1:]:
                raise CheckpointError(f"replay file {path} has shape {arr.shape}, expected ({n}, ...); it is corrupted")
            getattr(self, name)[:n] = arr
        self.size, self.ptr = n, int(meta["ptr"])
        if self.tree is not None:
            path = folder / "priorities.npy"
            if not path.exists() or "max_priority" not in meta:
                raise CheckpointError(f"replay priorities {path} are missing; the checkpoint folder is incomplete")
            leaves = np.load(path, allow_pickle=False)
            if leaves.shape != (n,):
                raise CheckpointError(f"replay file {path} has shape {leaves.shape}, expected ({n},); it is corrupted")
            self.tree.rebuild(leaves)
            self.tree.max_priority = float(meta["max_priority"])


def _warn_if_original_run_has_replay(carry: Path) -> None:
    """A carry holds no replay, so continuing from it refills an empty one (on dog-trot that undid what the
    agent had learned); when the run it was carried from is still on this machine, --resume is exact."""
    try:
        orig = Path(json.loads((carry / "carry.json").read_text())["run"]["config"]["out"])  # spinrl behaviour carry
    except (OSError, ValueError, KeyError, TypeError):
        return
    if (orig / "checkpoints" / "last.pt").exists() and any((orig / "checkpoints").glob("replay-*")):
        warnings.warn(f"--continue-from {carry}: the run it was carried from, {orig}, is on this machine with its "
                      f"replay buffer; `--out {orig} --resume` continues it exactly, a carry restarts the replay empty",
                      stacklevel=2)


def epsilon_greedy(rng: np.random.Generator, K: int, nvec: np.ndarray, epsilon: float | None, mode: str,
                   greedy: Callable[[], np.ndarray],
                   hold: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Actions [K, N] for K envs, and which rows count as exploratory for the epsilon decay [K].

    joint: each row is uniform random with probability epsilon, else ``greedy()`` (called only when some
    row needs it); per-dimension: each entry independently, and every row counts (epsilon decays per env
    step); temporal: ``hold`` = (steps left [K], held actions [K, N]), updated in place: a row not holding
    starts holding a uniform random action with probability epsilon, for zipf(2) steps (at most
    TEMPORAL_MAX_HOLD), and only those starts count. epsilon None = warm-up: uniform random actions, no
    uniforms drawn (the RNG stream of every run).
    """
    if mode == "temporal" and epsilon is not None:
        left, held = hold
        start = (left == 0) & (rng.random(K) < epsilon)
        if start.any():
            held[start] = rng.integers(0, nvec, size=(int(start.sum()), len(nvec)))
            left[start] = np.minimum(rng.zipf(2.0, int(start.sum())), TEMPORAL_MAX_HOLD)
        holding = left > 0
        left[holding] -= 1
        if holding.all():
            return held.copy(), start
        with torch.no_grad():
            return np.where(holding[:, None], held, greedy()), start
    if epsilon is None:
        explore = np.ones((K, 1), bool)
    elif mode == "joint":
        explore = rng.random(K)[:, None] < epsilon
    else:
        explore = rng.random((K, len(nvec))) < epsilon
    a = rng.integers(0, nvec, size=(K, len(nvec)))
    if not explore.all():
        with torch.no_grad():
            a = np.where(explore, a, greedy())
    return a, (explore[:, 0] if mode == "joint" else np.ones(K, bool))


def replay_capacity(requested: int, obs_dim: int, n_sub: int) -> int:
    """The requested capacity, lowered so the buffer uses at most a quarter of the available RAM."""
    per = 2 * 4 * obs_dim + 2 * n_sub + 8
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return int(requested)
    return int(max(10_000, min(requested, avail // 4 // per)))


class _Run:
    """Mutable state of one run (what ``last.pt`` stores)."""

    def __init__(self, cfg: BehaviourConfig, obs_dim: int, nvec: np.ndarray, capacity: int):
        torch.manual_seed(cfg.seed)
        self.online = DecQNNet(obs_dim, nvec, cfg.hidden, cfg.obs_transform)
        self.target = DecQNNet(obs_dim, nvec, cfg.hidden, cfg.obs_transform)
        self.target.load_state_dict(self.online.state_dict())
        for p in self.target.parameters():
            p.requires_grad_(False)
        # as train/pretrain; 1.08x the updates/s of Adam(foreach=True) here (python benchmarks/decqn_update.py)
        self.opt = FusedAdam(self.online.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(cfg.seed)
        self.replay = Replay(capacity, obs_dim, len(nvec), prioritized=cfg.replay == "prioritized")
        self.step = 0
        self.rounds = 0
        self.updates = 0
        self.epsilon = float(cfg.eps_start)
        self.wall = 0.0
        self.rows: list[dict] = []
        self.losses: list[float] = []  # since the last metrics row
        self.q_means: list[float] = []
        self.train_returns: list[float] = []
        self.train_rewards: list[float] = []  # the same episodes' returns under the training reward
        self.next_eval = cfg.eval_every
        self.next_ckpt = cfg.checkpoint_every
        self.min_replay = cfg.batch_size  # a continued run first refills its replay to --warmup
        self.continued_at: list[int] = []  # env steps where a carry restarted the replay
        self.skipped = 0  # updates dropped while a continued run refilled its replay


def _policy_payload(cfg: BehaviourConfig, run: _Run, obs_dim: int, nvec, returns: np.ndarray) -> dict:
    return {
        "schema": CHECKPOINT_SCHEMA, "kind": POLICY_KIND, "env": cfg.env, "bins": int(cfg.bins),
        "obs_dim": int(obs_dim), "nvec": [int(m) for m in nvec], "hidden": int(cfg.hidden),
        "obs_transform": cfg.obs_transform, "env_step": int(run.step), "eval_returns": [float(r) for r in returns],
        "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
        "state_dict": run.online.state_dict(),
    }


def load_policy(path: str | os.PathLike) -> tuple[DecQNNet, dict]:
    """A saved DecQN policy file -> (network in eval mode, its metadata without the weights)."""
    obj = load_checkpoint(path, what="DecQN policy")
    if obj.get("kind") != POLICY_KIND:
        raise CheckpointError(f"{path} is not a DecQN policy file (kind {obj.get('kind')!r}); pass a policies/step_*.pt file")
    net = DecQNNet(obj["obs_dim"], obj["nvec"], obj["hidden"], obj.get("obs_transform", "none"))
    try:
        net.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the recorded shapes ({str(e).splitlines()[0][:120]})") from None
    net.eval()
    return net, {k: v for k, v in obj.items() if k != "state_dict"}


def greedy_returns(net: DecQNNet, vec, episodes: int, seed0: int = EVAL_SEED) -> np.ndarray:
    """Greedy returns of ``episodes`` episodes batched through ``vec`` (resets EVAL_SEED + k)."""
    from spinrl.evaluation.rollout import run_episodes

    def act(obs):
        return net.greedy(torch.from_numpy(obs)).numpy()

    return run_episodes(vec, act, [seed0 + k for k in range(episodes)]).returns


def _write_metrics(out: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in METRIC_FIELDS})
    write_text_atomic(out / "metrics.csv", buf.getvalue())


def _save_full(out: Path, cfg: BehaviourConfig, run: _Run) -> None:
    """Replay .npy files first, then last.pt naming them, then drop older replay folders."""
    ck = out / "checkpoints"
    meta = run.replay.save(ck / f"replay-{run.step:09d}")
    state = {
        "schema": CHECKPOINT_SCHEMA, "kind": "decqn-behaviour-run", "config": asdict(cfg),
        "online": run.online.state_dict(), "target": run.target.state_dict(), "optimizer": run.opt.state_dict(),
        "rng": capture_rng(run.rng), "replay": meta, "step": run.step, "rounds": run.rounds, "updates": run.updates,
        "epsilon": run.epsilon, "wall": run.wall, "rows": json.dumps(run.rows), "losses": list(run.losses),
        "q_means": list(run.q_means),
        "train_returns": list(run.train_returns),
        "train_rewards": list(run.train_rewards), "next_eval": run.next_eval, "next_ckpt": run.next_ckpt,
        "min_replay": run.min_replay, "continued_at": list(run.continued_at), "skipped": run.skipped,
    }
    save_atomic(state, ck / "last.pt")
    for old in ck.glob("replay-*"):
        if old.name != meta["folder"]:
            shutil.rmtree(old, ignore_errors=True)


_ADDED_LATER = {"obs_transform": "none", "explore": "joint", "replay": "uniform", "priority_exponent": 0.6,
                "importance_exponent": 0.2, "shaping": "none", "shaping_scale": 0.5}
"""Identity fields that runs saved before them lack, with the value those runs had."""


def resume_config(out: str | Path, **given) -> BehaviourConfig:
    """The config of the run in ``out`` with resume on: a resume repeats the run's own settings (config.json),
    so a caller names only what changes (a larger ``env_steps``, ``progress``); a given identity field that
    differs from the run is still refused by ``train_behaviour``."""
    path = Path(out) / "config.json"
    if not path.exists():
        raise ConfigError(f"--resume: {path} does not exist; start without --resume or point --out at a run directory")
    saved = json.loads(path.read_text())
    values = {f.name: saved[f.name] for f in fields(BehaviourConfig) if f.init and f.name in saved}
    values.update(given)
    values.update(out=str(out), resume=True)
    return BehaviourConfig(**values)


def reward_max(config: dict) -> float:
    """The largest per-step training reward of a run config: DM Control's 1, plus a --shaping bonus."""
    return 1.0 + (config.get("shaping_scale", 0.5) if config.get("shaping", "none") != "none" else 0.0)


DIVERGING = ": the Q estimates are diverging (the policies saved before it stay candidates for export)"


def training_return(row: dict, config: dict) -> float | None:
    """A metrics row's mean training-episode return under the reward the learner trains on (rows written
    before ``train_reward_return_mean`` have it only without --shaping, as ``train_return_mean``)."""
    value = row.get("train_reward_return_mean")
    if value in (None, "") and config.get("shaping", "none") == "none":
        value = row.get("train_return_mean")
    return None if value in (None, "") else float(value)


def q_divergence(q_mean: float | None, gamma: float, r_max: float = 1.0, train_return: float | None = None,
                 episode_steps: int = 1000) -> str | None:
    """A warning when the mean Q has run away: above r_max / (1 - gamma), the most that per-step rewards in
    [0, r_max] allow (dog-trot at 10 bins: 8.8 -> 2465 within 150k steps), or DIVERGENCE_RATIO times above
    the discounted value the training episodes' return supports, return / episode_steps / (1 - gamma) (a
    second dog-trot 10-bin run: Q 10 -> 42 while its return fell 95 -> 12, below the first bound).
    Returns the reason (append DIVERGING to warn), or None."""
    if q_mean is None:
        return None
    bound = r_max / (1.0 - gamma)
    if q_mean > bound:
        return f"mean Q {q_mean:.1f} is above {bound:.0f} = {r_max:g}/(1-gamma), the most [0, {r_max:g}] rewards allow"
    if train_return is not None:
        supported = train_return / episode_steps / (1.0 - gamma)
        if q_mean > DIVERGENCE_RATIO * max(supported, 2.0):
            return (f"mean Q {q_mean:.1f} is over {DIVERGENCE_RATIO:g}x the {supported:.1f} that the training "
                    f"episodes' return {train_return:.1f} supports")
    return None


def _check_identity(saved: dict, cfg: BehaviourConfig, where: str, verb: str) -> None:
    for name in _IDENTITY:
        was = saved.get(name, _ADDED_LATER.get(name))
        if was != getattr(cfg, name):
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(cfg, name)!r} differs from the run in {where} "
                              f"({was!r}); {verb} with the same value or choose another --out")


def _restore(out: Path, cfg: BehaviourConfig, run: _Run, carry: bool = False) -> None:
    """Load ``out``'s last.pt into ``run`` (replay included), or with ``carry`` a carry folder (no replay)."""
    path = out / (CARRY_FILE if carry else "checkpoints/last.pt")
    st = load_checkpoint(path, what="behaviour carry" if carry else "behaviour checkpoint")
    if st.get("kind") != (CARRY_KIND if carry else "decqn-behaviour-run"):
        raise CheckpointError(f"{path} is not a behaviour-{'carry' if carry else 'run checkpoint'} file")
    _check_identity(st["config"], cfg, str(out), "continue" if carry else "resume")
    was = st["config"].get("threads", cfg.threads)
    if not carry and was != cfg.threads:
        raise ConfigError(f"--threads {cfg.threads} differs from the run in {out} ({was}): a changed thread count ends "
                          f"bit-identity; resume with --threads {was}")
    if cfg.env_steps < int(st["step"]):
        raise ConfigError(f"--env-steps {cfg.env_steps} is below the {'carried' if carry else 'checkpointed'} step "
                          f"{int(st['step'])}; pass --env-steps {int(st['step'])} or more")
    run.online.load_state_dict(st["online"])
    run.target.load_state_dict(st["target"])
    run.opt.load_state_dict(st["optimizer"])
    if not carry:
        run.replay.load(out / "checkpoints" / st["replay"]["folder"], st["replay"])
    restore_rng(st["rng"], run.rng)
    run.step, run.rounds, run.updates = int(st["step"]), int(st["rounds"]), int(st["updates"])
    run.epsilon, run.wall = float(st["epsilon"]), float(st["wall"])
    run.rows = json.loads(st["rows"])
    run.losses, run.train_returns = list(st["losses"]), list(st["train_returns"])
    run.train_rewards = list(st.get("train_rewards", []))  # checkpoints from before the field: none
    run.q_means = list(st.get("q_means", []))  # checkpoints written before q_mean was logged have none
    run.next_eval, run.next_ckpt = int(st["next_eval"]), int(st["next_ckpt"])
    run.min_replay, run.continued_at = int(st.get("min_replay", cfg.batch_size)), list(st.get("continued_at", []))
    run.skipped = int(st.get("skipped", 0))
    if carry:  # the replay is gone: refill it before learning resumes
        refill = DEFAULT_REFILL if cfg.refill is None else cfg.refill
        run.min_replay = min(max(cfg.batch_size, refill), run.replay.capacity)
        run.continued_at.append(run.step)


def save_carry(run_dir: str | os.PathLike, out: str | os.PathLike, policy_files: list[str]) -> Path:
    """Write ``out/carry.pt`` (``run_dir``'s last checkpoint without its replay) and copy ``policy_files``.

    Policies past the checkpoint's step are refused: the continued run redoes those steps. Of the policy files
    already in ``out`` only those an earlier carry listed in its carry.json are removed (never a user's).
    """
    run_dir, out = Path(run_dir), Path(out)
    st = load_checkpoint(run_dir / "checkpoints" / "last.pt", what="behaviour checkpoint")
    if st.get("kind") != "decqn-behaviour-run":
        raise CheckpointError(f"{run_dir}/checkpoints/last.pt is not a behaviour-run checkpoint")
    prev = outdir._json(out / "carry.json")
    owned = {Path(str(c.get("file"))).name for c in prev.get("kept", []) if isinstance(c, dict)} if isinstance(prev, dict) else set()
    (out / "policies").mkdir(parents=True, exist_ok=True)
    keep = set()
    for rel in policy_files:
        meta = load_checkpoint(run_dir / rel, what="DecQN policy")
        if int(meta["env_step"]) > int(st["step"]):
            continue
        shutil.copyfile(run_dir / rel, out / rel)
        keep.add(Path(rel).name)
    for old in (out / "policies").glob("step_*.pt"):  # a carry folder holds one carry
        if old.name not in keep and old.name in owned:
            old.unlink()
    carry = {k: v for k, v in st.items() if k != "replay"}
    carry["kind"] = CARRY_KIND
    carry["rows"] = json.dumps([r for r in json.loads(st["rows"]) if r["env_step"] <= st["step"]])
    save_atomic(carry, out / CARRY_FILE)
    return out


def train_behaviour(cfg: BehaviourConfig) -> Iterator[dict]:
    """Run (or resume) DecQN training; yields one metrics row per evaluation.

    Raises:
        ConfigError: invalid flags, an existing run without --resume, or a resume with other settings.
        CheckpointError: a missing or corrupted checkpoint.
    """
    cfg.validate()
    from spinrl import envs

    keep_freed_memory()
    torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    last = out / "checkpoints" / "last.pt"
    outdir.check_out(out, "behaviour", cfg.overwrite)
    if cfg.resume and not last.exists():
        raise ConfigError(f"--resume: {last} does not exist; start without --resume")
    if not cfg.resume and (last.exists() or (out / "metrics.csv").exists()):
        raise ConfigError(f"--out {out} already holds a run; pass --resume to continue it or choose another --out")
    carry = Path(cfg.continue_from) if cfg.continue_from and not cfg.resume else None
    if carry is not None:
        _warn_if_original_run_has_replay(carry)
    vec = envs.make_vector(cfg.env, cfg.num_envs, bins=cfg.bins)
    eval_vec = envs.make_vector(cfg.env, cfg.eval_episodes, bins=cfg.bins)
    nvec, obs_dim = vec.nvec, vec.observation_dim
    saved = load_checkpoint(last, what="behaviour checkpoint") if cfg.resume else None
    if saved is not None:
        capacity = int(saved["replay"]["capacity"])
    else:
        capacity = replay_capacity(cfg.replay_capacity, obs_dim, len(nvec))
    run = _Run(cfg, obs_dim, nvec, capacity)
    out.mkdir(parents=True, exist_ok=True)
    lock = outdir.Lock(out / outdir.LOCK, f"--out {out}").acquire()  # one writer; released at exit
    if cfg.resume:
        try:
            _restore(out, cfg, run)
        except BaseException:
            lock.release()
            raise
        _write_metrics(out, run.rows)  # drop rows written after the checkpoint (they will be redone)
    outdir.mark(out, "behaviour")
    (out / "policies").mkdir(exist_ok=True)
    if carry is not None:
        _restore(carry, cfg, run, carry=True)
        for f in sorted((carry / "policies").glob("step_*.pt")):  # earlier checkpoints stay medium candidates
            shutil.copyfile(f, out / "policies" / f.name)
        _write_metrics(out, run.rows)
    resolved = {**asdict(cfg), "replay_capacity_resolved": capacity, "nvec": [int(m) for m in nvec], "obs_dim": obs_dim,
                "continued_at": run.continued_at}
    if saved is not None:  # a plain --resume keeps where the run came from (a carry's report names it)
        for name in ("continue_from", "refill"):
            resolved[name] = resolved[name] if resolved[name] is not None else saved["config"].get(name)
    del saved
    resolved.pop("resume"); resolved.pop("progress")
    write_text_atomic(out / "config.json", json.dumps(resolved, indent=2) + "\n")
    algo = DecQNConfig(gamma=cfg.gamma, n_step=cfg.n_step)
    from spinrl.utils.progress import progress_bar

    bar = progress_bar(total=cfg.env_steps, desc=f"DecQN {cfg.env} bins {cfg.bins}", unit="step",
                       disable=None if cfg.progress else True, initial=run.step)
    last_eval = run.rows[-1]["eval_return_mean"] if run.rows else None
    t_start = time.time() - run.wall
    K = cfg.num_envs
    from spinrl.envs.dmc import observation_slices

    head = observation_slices(cfg.env)["head_height"] if cfg.shaping == "head-height" else None
    while run.step < cfg.env_steps:
        # ---- one round: K whole episodes, acting through one batched policy call per step
        obs = vec.reset([(cfg.seed * 1_000_003 + run.rounds * K + i) % EVAL_SEED for i in range(K)])
        hold = (np.zeros(K, np.int64), np.zeros((K, len(nvec)), np.int64))  # --explore temporal, per episode
        O, A, R = [obs], [], []
        active = np.ones(K, bool)
        ret, ret_train = np.zeros(K), np.zeros(K)
        while active.any():
            before = run.step
            warm = run.step < cfg.warmup
            a, explored = epsilon_greedy(run.rng, K, nvec, None if warm else run.epsilon, cfg.explore,
                                         lambda: run.online.greedy(torch.from_numpy(obs)).numpy(), hold)
            if not warm:  # epsilon x decay per exploratory action (benchmarks.md s.1)
                run.epsilon = max(cfg.eps_min, run.epsilon * cfg.eps_decay ** int((explored & active).sum()))
            obs, r, te, tr = vec.step(a)
            r = np.where(active, r, 0.0)
            O.append(obs); A.append(a)
            R.append(r if head is None else r + active * cfg.shaping_scale
                     * np.clip(obs[:, head].ravel() / STAND_HEIGHT, 0.0, 1.0))  # training reward (--shaping)
            ret += r
            ret_train += R[-1]
            run.step += int(active.sum())
            ended = active & (te | tr)
            _add_complete(run.replay, O, A, R, active & ~ended, ended, te, cfg.n_step, cfg.gamma)
            active &= ~ended
            bar.update(run.step - before)
            # one gradient update per `update_every` env steps after warm-up
            due = (run.step - cfg.warmup) // cfg.update_every - run.skipped if run.step >= cfg.warmup else 0
            if run.min_replay > cfg.batch_size and run.replay.size < run.min_replay:  # refilling after a carry:
                run.skipped += max(0, due - run.updates)  # these updates are dropped, not queued for later
                due = run.updates
            while run.updates < due and run.replay.size >= run.min_replay:
                if run.replay.tree is None:
                    batch, weights = run.replay.sample(run.rng, cfg.batch_size), None
                else:
                    batch, slots, weights = run.replay.sample_prioritized(run.rng, cfg.batch_size,
                                                                          cfg.importance_exponent)
                loss, info = q_loss(run.online, run.target, batch, algo, weights)
                if weights is not None:
                    run.replay.update_priorities(slots, info["td_abs"].numpy(), cfg.priority_exponent)
                run.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(run.online.parameters(), cfg.grad_clip, foreach=True)
                run.opt.step()
                polyak(run.target, run.online, cfg.tau)
                run.losses.append(info["loss"])
                run.q_means.append(info["q_mean"])
                run.updates += 1
        run.rounds += 1
        run.train_returns.extend(ret.tolist())
        run.train_rewards.extend(ret_train.tolist())
        run.wall = time.time() - t_start
        # ---- episode boundary: evaluate, save policy, checkpoint
        finished = run.step >= cfg.env_steps
        row = None
        if run.step >= run.next_eval or finished:
            returns = greedy_returns(run.online, eval_vec, cfg.eval_episodes)
            save_atomic(_policy_payload(cfg, run, obs_dim, nvec, returns), out / "policies" / f"step_{run.step:07d}.pt")
            row = {
                "env_step": run.step, "wall_seconds": round(time.time() - t_start, 2),
                "eval_return_mean": round(float(returns.mean()), 4), "eval_return_std": round(float(returns.std()), 4),
                "epsilon": round(run.epsilon, 6), "loss": round(float(np.mean(run.losses)), 6) if run.losses else None,
                "q_mean": round(float(np.mean(run.q_means)), 6) if run.q_means else None,
                "updates": run.updates, "episodes": run.rounds * K,
                "train_return_mean": round(float(np.mean(run.train_returns)), 4) if run.train_returns else None,
                "train_reward_return_mean": round(float(np.mean(run.train_rewards)), 4) if run.train_rewards else None,
            }
            run.rows.append(row)
            run.losses, run.q_means, run.train_returns, run.train_rewards = [], [], [], []
            while run.next_eval <= run.step:
                run.next_eval += cfg.eval_every
            _write_metrics(out, run.rows)
            last_eval = row["eval_return_mean"]
            bar.set_postfix(eval=f"{last_eval:.1f}", eps=f"{run.epsilon:.3f}",
                            q="-" if row["q_mean"] is None else f"{row['q_mean']:.2f}"
                            + (" DIVERGING" if q_divergence(row["q_mean"], cfg.gamma, reward_max(asdict(cfg)),
                                                           training_return(row, asdict(cfg))) else ""))
        if run.step >= run.next_ckpt or finished:
            while run.next_ckpt <= run.step:
                run.next_ckpt += cfg.checkpoint_every
            run.wall = time.time() - t_start
            _save_full(out, cfg, run)
        if row is not None:  # after the checkpoint: a consumer that stops here loses nothing
            yield row
    bar.close()
    lock.release()


def _add_complete(replay: Replay, O: list, A: list, R: list, running: np.ndarray, ended: np.ndarray,
                  terminated: np.ndarray, n: int, gamma: float) -> None:
    """Write the n-step transitions completed by the latest step (each transition exactly once).

    After T steps, a running row completes t = T - n: R = sum_j<n gamma^j r_{t+j}, next state s_T,
    discount gamma^n. A row whose episode ended at L = T completes t = max(0, L - n) .. L - 1 with
    k = L - t rewards and discount gamma^k, or 0 if it terminated (a time-limit truncation bootstraps).
    """
    T = len(A)
    if T >= n and running.any():
        rows = np.flatnonzero(running)
        t0 = T - n
        ret = sum(gamma**j * R[t0 + j][rows] for j in range(n))
        replay.add(O[t0][rows], A[t0][rows], ret, O[T][rows], np.full(rows.size, gamma**n))
    if ended.any():
        rows = np.flatnonzero(ended)
        for t in range(max(0, T - n), T):  # at most n (3) start times: a loop over the horizon only
            k = T - t
            ret = sum(gamma**j * R[t + j][rows] for j in range(k))
            disc = np.where(terminated[rows], 0.0, gamma**k)
            replay.add(O[t][rows], A[t][rows], ret, O[T][rows], disc)
