"""``spinrl behaviour train``: online DecQN behaviour agents for the discretized DM Control datasets.

Modules: ``config`` (the settings and what defines a run), ``replay`` (n-step replay, uniform or
prioritized over ``sumtree``), ``loop`` (the training loop, checkpoints, policies), ``carry`` (a run
without its replay, to continue elsewhere).

Settings follow docs/benchmarks.md section 1. The loop runs in *rounds*: all ``num_envs`` envs are
reset together with seeds derived from (seed, round) and stepped until every episode has ended (DMC episodes
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

from typing import TYPE_CHECKING

from spinrl.training.behaviour.config import (
    CARRY_FILE,
    CARRY_KIND,
    DEFAULT_REFILL,
    DIVERGENCE_RATIO,
    DIVERGING,
    EVAL_SEED,
    EXPLORE_MODES,
    METRIC_FIELDS,
    POLICY_KIND,
    REPLAY_MODES,
    SHAPINGS,
    STAND_HEIGHT,
    TEMPORAL_MAX_HOLD,
    TIMING_FIELDS,
    BehaviourConfig,
    changed_flags,
    q_divergence,
    resume_config,
    reward_max,
    training_return,
)
from spinrl.utils.lazy import lazy_package

lazy_package(
    __name__,
    {
        name: f"spinrl.training.behaviour.{module}"
        for name, module in {
            "save_carry": "carry",
            "epsilon_greedy": "loop",
            "greedy_returns": "loop",
            "load_policy": "loop",
            "train_behaviour": "loop",
            "Replay": "replay",
            "replay_capacity": "replay",
            "SumTree": "sumtree",
        }.items()
    },
)
# (loaded on first use: the settings above import no torch, and the CLI parser reads them)

if TYPE_CHECKING:  # the same names for type checkers and editors ("X as X": re-exported)
    from spinrl.training.behaviour.carry import save_carry as save_carry
    from spinrl.training.behaviour.loop import epsilon_greedy as epsilon_greedy
    from spinrl.training.behaviour.loop import greedy_returns as greedy_returns
    from spinrl.training.behaviour.loop import load_policy as load_policy
    from spinrl.training.behaviour.loop import train_behaviour as train_behaviour
    from spinrl.training.behaviour.replay import Replay as Replay
    from spinrl.training.behaviour.replay import replay_capacity as replay_capacity
    from spinrl.training.behaviour.sumtree import SumTree as SumTree

__all__ = [
    "CARRY_FILE",
    "CARRY_KIND",
    "DEFAULT_REFILL",
    "DIVERGENCE_RATIO",
    "DIVERGING",
    "EVAL_SEED",
    "EXPLORE_MODES",
    "METRIC_FIELDS",
    "POLICY_KIND",
    "REPLAY_MODES",
    "SHAPINGS",
    "STAND_HEIGHT",
    "TEMPORAL_MAX_HOLD",
    "TIMING_FIELDS",
    "BehaviourConfig",
    "Replay",
    "SumTree",
    "changed_flags",
    "epsilon_greedy",
    "greedy_returns",
    "load_policy",
    "q_divergence",
    "replay_capacity",
    "resume_config",
    "reward_max",
    "save_carry",
    "train_behaviour",
    "training_return",
]
