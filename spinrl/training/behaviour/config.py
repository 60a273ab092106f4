"""Behaviour training's settings: ``BehaviourConfig`` (the CLI flags, the API argument and the run's
config.json), the fields that define a run (what a resume or a continue must repeat) and the helpers that
read a saved run's config (changed flags, the divergence warning)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np

from spinrl.errors import ConfigError
from spinrl.utils.loggers import parse_loggers
from spinrl.utils.rundir import check_same

EVAL_SEED = 2_000_000_000
"""Evaluation episode k is reset with seed EVAL_SEED + k (the same episodes at every evaluation)."""
EXPLORE_MODES = ("joint", "per-dimension", "temporal")
TEMPORAL_MAX_HOLD = 100
"""--explore temporal: the longest a random action is held (env steps)"""
REPLAY_MODES = ("uniform", "prioritized")
SHAPINGS = ("none", "head-height")
STAND_HEIGHT = 1.4
"""dm_control humanoid's head height of a standing body (``humanoid._STAND_HEIGHT``): --shaping head-height's cap"""
METRIC_FIELDS = (
    "env_step",
    "wall_seconds",
    "eval_return_mean",
    "eval_return_std",
    "epsilon",
    "loss",
    "q_mean",
    "updates",
    "episodes",
    "train_return_mean",
    "train_reward_return_mean",
)
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
    """Train an online DecQN behaviour agent (docs/benchmarks.md s.1) on a discretized DM Control task."""

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
    level; with it one stood up: the committed expert, 800.5 on 50 fresh greedy episodes at 4.25M); the bonus
    is largest when standing, so it points where the task's reward does"""
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
    loggers: tuple[str, ...] = ()
    """optional loggers beside metrics.csv (always written): any of tensorboard, wandb, mlflow (each its own
    extra), e.g. --loggers tensorboard,wandb; W&B honours WANDB_MODE/WANDB_PROJECT, MLflow MLFLOW_TRACKING_URI
    (default: OUT/mlruns)"""
    progress: bool = True
    """progress bar on a terminal"""

    def validate(self) -> None:
        if not isinstance(self.env, str) or not self.env.startswith("dmc:"):
            raise ConfigError(
                f"env {self.env!r}: behaviour training is for DM Control "
                "tasks; use dmc:<domain>-<task> (e.g. dmc:cheetah-run)"
            )
        from spinrl.envs.dmc import observation_slices, parse_task

        parse_task(self.env)  # raises naming the valid tasks
        if int(self.bins) < 2:
            raise ConfigError(f"--bins {self.bins}: need at least 2 bins per action dimension")
        if not self.out:
            raise ConfigError("--out is required: the run directory")
        for name in (
            "env_steps",
            "hidden",
            "batch_size",
            "n_step",
            "replay_capacity",
            "update_every",
            "num_envs",
            "eval_every",
            "checkpoint_every",
            "eval_episodes",
            "threads",
        ):
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
            raise ConfigError(
                f"--shaping head-height: {self.env}'s observation has no head_height (humanoid tasks "
                "have it); drop --shaping"
            )
        parse_loggers(self.loggers)
        from spinrl.models.decqn import OBS_TRANSFORMS  # here, not at the top: the CLI parser imports no torch

        if self.obs_transform not in OBS_TRANSFORMS:
            raise ConfigError(f"--obs-transform {self.obs_transform!r}: choose one of {', '.join(OBS_TRANSFORMS)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup}: must be >= 0")
        if self.refill is not None and (not isinstance(self.refill, (int, np.integer)) or self.refill < 0):
            raise ConfigError(f"--refill {self.refill!r}: must be an integer >= 0")
        if self.refill is not None and not self.continue_from:
            raise ConfigError(
                "--refill is for --continue-from CARRY (a run's own --resume keeps its replay); drop --refill"
            )
        if self.continue_from is not None and not self.resume and not (Path(self.continue_from) / CARRY_FILE).exists():
            raise ConfigError(
                f"--continue-from {self.continue_from}: no {CARRY_FILE} there; pass a folder written by "
                "`spinrl behaviour carry RUN --out DIR`"
            )
        if not (0 < self.eps_decay <= 1 and 0 <= self.eps_min <= self.eps_start <= 1):
            raise ConfigError(
                "--eps-start/--eps-min/--eps-decay: need 0 <= eps-min <= eps-start <= 1 and 0 < eps-decay <= 1"
            )


DEFAULT_REFILL = 100_000
"""Carried-policy transitions that refill a continued run's replay unless --refill says otherwise (see its help)."""

# Fields that define the run: a resume with different values would not continue the same experiment.
_IDENTITY = (
    "env",
    "bins",
    "hidden",
    "obs_transform",
    "seed",
    "lr",
    "grad_clip",
    "batch_size",
    "n_step",
    "gamma",
    "tau",
    "warmup",
    "update_every",
    "eps_start",
    "eps_min",
    "eps_decay",
    "explore",
    "replay",
    "priority_exponent",
    "importance_exponent",
    "shaping",
    "shaping_scale",
    "num_envs",
    "eval_episodes",
)


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


_ADDED_LATER = {
    "obs_transform": "none",
    "explore": "joint",
    "replay": "uniform",
    "priority_exponent": 0.6,
    "importance_exponent": 0.2,
    "shaping": "none",
    "shaping_scale": 0.5,
}
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


def q_divergence(
    q_mean: float | None, gamma: float, r_max: float = 1.0, train_return: float | None = None, episode_steps: int = 1000
) -> str | None:
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
            return (
                f"mean Q {q_mean:.1f} is over {DIVERGENCE_RATIO:g}x the {supported:.1f} that the training "
                f"episodes' return {train_return:.1f} supports"
            )
    return None


def _check_identity(saved: dict, cfg: BehaviourConfig, where: str, verb: str) -> None:
    """Refuse to resume (``verb``) or continue the run in ``where`` with other learner settings."""
    check_same(
        saved,
        asdict(cfg),
        _IDENTITY,
        _ADDED_LATER,
        lambda name, now, was: (
            f"--{name.replace('_', '-')} {now!r} differs from the run in {where} ({was!r}); "
            f"{verb} with the same value or choose another --out"
        ),
    )
