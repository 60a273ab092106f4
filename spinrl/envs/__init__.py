"""Environments with factored discrete actions, batched stepping, reference scores and scripted
behaviour policies.

Env ids: ``maze``, ``cone``, ``sepsis`` (extra ``spinrl[sepsis]``) and ``dmc:<domain>-<task>``, also
registered with Gymnasium as ``spinrl/Maze-v0`` etc. (``registration.py``), and any registered Gymnasium
id (``module:ID`` imports the module that registers ID first) whose action space is a 1-D MultiDiscrete
and whose observation space is a Box. Every env has ``action_space = MultiDiscrete(nvec)`` and a float32
Box observation.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from spinrl.data.interop import PUBLIC_REFERENCE
from spinrl.envs.core import (
    BehaviourPolicy,
    CoreEnv,
    CoreVectorEnv,
    LoopVectorEnv,
    ReferenceScores,
    VectorEnv,
    random_act,
    rollout_returns,
)
from spinrl.envs.registration import canonical, register_envs
from spinrl.errors import SpinError

__all__ = [
    "make",
    "make_vector",
    "spaces",
    "check_env",
    "wrap",
    "canonical",
    "register_envs",
    "reference_scores",
    "has_exact_return",
    "exact_return",
    "list_envs",
    "behaviour_policy",
    "ReferenceScores",
    "BehaviourPolicy",
    "VectorEnv",
    "DMC_TASKS",
    "LEVELS",
]

DEFAULTS: dict[str, dict[str, Any]] = {
    "maze": {"actuators": 12},
    "cone": {"dims": 5, "size": 5, "pit_seed": 0, "n_pits": None, "include_distances": True},
    "sepsis": {},
    "dmc": {"bins": 3},
}
DESCRIPTIONS = {
    "maze": "2-D point pushed by n binary actuators around two walls to a goal (docs/benchmarks.md s.2)",
    "cone": "D-dim grid, 2 bits per dimension (XOR-coded stay), pits on the start-goal line (docs/benchmarks.md s.3)",
    "sepsis": "ICU-Sepsis tabular MDP from MIMIC-III, fluids x vasopressors 5x5 "
    "(docs/benchmarks.md s.4; extra 'sepsis')",
    "dmc": "DM Control task, each action dimension discretized into bins (docs/benchmarks.md s.1)",
}
DMC_TASKS = ["cheetah-run", "finger-spin", "fish-swim", "quadruped-walk", "humanoid-stand", "dog-trot"]
DMC_REFERENCE = PUBLIC_REFERENCE  # (task, bins): (random, expert), docs/benchmarks.md section 1
LEVELS = ("random", "medium", "expert")
# per-step probability of a random action for "medium", tuned to ~45 normalized (see tests/test_envs.py)
MEDIUM_P = {"maze": 0.9, "cone": 0.87, "sepsis": 0.5}
PUBLIC = "public benchmark (docs/benchmarks.md)"


def _family(env_id: str) -> str:
    if not isinstance(env_id, str):
        raise SpinError(f"env_id must be a string, got {type(env_id).__name__}")
    if env_id.startswith("dmc:"):
        return "dmc"
    if env_id in ("maze", "cone", "sepsis"):
        return env_id
    if _gym_registered(env_id):
        return "gym"
    raise SpinError(
        f"env_id '{env_id}' is unknown; use maze, cone, sepsis, dmc:<domain>-<task> (e.g. dmc:cheetah-run) "
        "or a registered Gymnasium id (module:ID imports the module that registers it)"
    )


def _gym_registered(env_id: str) -> bool:
    """Whether Gymnasium knows ``env_id``; ``module:ID`` first imports ``module`` (Gymnasium's own convention)."""
    module, _, name = env_id.rpartition(":")
    if module:
        import importlib

        try:
            importlib.import_module(module)
        except ImportError as e:
            raise SpinError(
                f"env_id '{env_id}': cannot import module '{module}' ({e}); "
                "pass module:ID with an importable module that registers ID"
            ) from None
    return name in gym.registry


def _resolve(env_id: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Family and full kwargs (defaults filled in); unknown or invalid values raise SpinError."""
    fam = _family(env_id)
    if fam == "gym":  # a foreign env checks its own options when it is made
        return fam, dict(kwargs)
    allowed = DEFAULTS[fam]
    for key in kwargs:
        if key not in allowed:
            ok = ", ".join(allowed) or "none"
            raise SpinError(f"{env_id}: unknown option '{key}'; valid options: {ok}")
    kw = {**allowed, **kwargs}
    if fam == "maze" and (not isinstance(kw["actuators"], (int, np.integer)) or kw["actuators"] < 2):
        raise SpinError(
            f"maze actuators = {kw['actuators']!r}: need an integer >= 2 (reference scores for 3, 5, 7, 10, 12, 15)"
        )
    if fam == "cone":
        from spinrl.envs.cone import check_cone_kwargs

        check_cone_kwargs(kw["dims"], kw["size"], kw["n_pits"])
    if fam == "dmc":
        b = kw["bins"]
        if np.any(np.asarray(b) < 2):
            raise SpinError(f"bins = {b!r}: every action dimension needs bins >= 2")
    return fam, kw


def _core_factory(fam: str, kw: dict[str, Any]):
    if fam == "maze":
        from spinrl.envs.maze import MazeCore

        return lambda b: MazeCore(b, **kw)
    if fam == "cone":
        from spinrl.envs.cone import ConeCore

        return lambda b: ConeCore(b, **kw)
    if fam == "sepsis":
        from spinrl.envs.sepsis import SepsisCore

        return lambda b: SepsisCore(b)
    return None


def _make_gym(env_id: str, kw: dict[str, Any], render_mode: str | None = None) -> gym.Env:
    """``gymnasium.make`` with its failure as one line, and the spaces spinrl needs checked."""
    try:
        mode: dict[str, Any] = {"render_mode": render_mode} if render_mode else {}
        env = gym.make(env_id, **mode, **kw)
    except SpinError:
        raise
    except Exception as e:  # a foreign env's constructor: any error, reported in one line
        msg = (str(e).strip().splitlines() or [""])[0][:200]
        raise SpinError(f"gymnasium.make({env_id!r}, **{kw}) failed: {type(e).__name__}: {msg}") from None
    try:
        return check_env(env, env_id)
    except SpinError:
        env.close()
        raise


def check_env(env: gym.Env, name: str | None = None) -> gym.Env:
    """``env`` itself where its spaces are spinrl's (1-D MultiDiscrete actions from 0, Box observations).

    Raises:
        SpinError: another action or observation space, naming it and the fix.
    """
    name = name or getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
    act, obs = getattr(env, "action_space", None), getattr(env, "observation_space", None)
    if (
        not isinstance(act, gym.spaces.MultiDiscrete)
        or np.asarray(act.nvec).ndim != 1
        or np.any(np.asarray(act.start) != 0)
    ):
        raise SpinError(
            f"{name} has action space {act}; spinrl needs a 1-D MultiDiscrete starting at 0 "
            "(factored discrete actions): discretize or shift it in a wrapper first"
        )
    if not isinstance(obs, gym.spaces.Box):
        raise SpinError(f"{name} has observation space {obs}; spinrl needs a Box: flatten it in a wrapper first")
    return env


def wrap(env: gym.Env) -> VectorEnv:
    """A batch of one around an existing env instance (checked with :func:`check_env`); ``close`` closes it."""
    check_env(env)
    return LoopVectorEnv(lambda: env, 1)


def make(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """Create one gymnasium env.

    Args:
        env_id: ``maze``, ``cone``, ``sepsis``, ``dmc:<domain>-<task>``, or a registered Gymnasium id
            (``spinrl/Maze-v0``, ``module:MyEnv-v0``, ...).
        render_mode: ``rgb_array`` for frames from ``env.render()`` (maze, dmc, and Gymnasium envs that have it).
        **kwargs: env options (see ``list_envs()`` for defaults).

    Returns:
        An env with ``MultiDiscrete`` actions and float32 Box observations; time limits are truncations.

    Raises:
        SpinError: unknown id or option, invalid value, unsupported render mode or spaces; MissingExtraError
            for sepsis or dmc without its extra.
    """
    env_id, kwargs = canonical(env_id, kwargs)
    fam, kw = _resolve(env_id, kwargs)
    if fam == "gym":
        return _make_gym(env_id, kw, render_mode)
    factory = _core_factory(fam, kw)
    if factory is not None:
        return CoreEnv(factory, env_id, render_mode=render_mode)
    from spinrl.envs.dmc import DMCEnv

    return DMCEnv(env_id, render_mode=render_mode, **kw)


def make_vector(env_id: str, num_envs: int, **kwargs: Any) -> VectorEnv:
    """B envs stepped together; maze, cone and sepsis are vectorized in numpy, dmc and Gymnasium envs loop.

    Rows whose episode ended keep returning their done flags (reward 0) until ``reset``.
    """
    env_id, kwargs = canonical(env_id, kwargs)
    fam, kw = _resolve(env_id, kwargs)
    if fam == "gym":
        return LoopVectorEnv(lambda: _make_gym(env_id, kw), num_envs)
    factory = _core_factory(fam, kw)
    if factory is not None:
        return CoreVectorEnv(factory, num_envs)
    from spinrl.envs.dmc import DMCEnv

    return LoopVectorEnv(lambda: DMCEnv(env_id, **kw), num_envs)


def spaces(env_id: str, **kwargs: Any) -> tuple[int, list[int]]:
    """``(observation_dim, nvec)`` of an env, made once (for space checks before training or evaluation)."""
    vec = make_vector(env_id, 1, **kwargs)
    try:
        return int(vec.observation_dim), [int(m) for m in vec.nvec]
    finally:
        vec.close()


def has_exact_return(env_id: str, **kwargs: Any) -> bool:
    """Whether the env's model is known, so a policy's expected return can be computed exactly (sepsis)."""
    env_id, kwargs = canonical(env_id, kwargs)
    return _resolve(env_id, kwargs)[0] == "sepsis"


def exact_return(env_id: str, action_probs: Callable[[np.ndarray], np.ndarray], **kwargs: Any) -> float:
    """Expected return of a policy computed on the env's known model instead of sampled episodes.

    ``action_probs(obs [S, obs_dim]) -> [S, prod(nvec)]`` gives the policy's probability of every joint
    action (row-major over the sub-actions) in every state; it is called once with all states.
    """
    env_id, kwargs = canonical(env_id, kwargs)
    fam, _ = _resolve(env_id, kwargs)
    if fam != "sepsis":
        raise SpinError(f"{env_id} has no known model for exact evaluation (only sepsis has); evaluate with rollouts")
    from spinrl.envs.sepsis import all_state_observations, policy_value

    return policy_value(action_probs(all_state_observations()))


def _key(kw: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple, np.ndarray)) else v) for k, v in kw.items()))


@lru_cache(maxsize=64)
def _own_reference(env_id: str, key: tuple) -> ReferenceScores:
    """Mean returns of our uniform-random and expert policies, 200 episodes each, fixed seeds."""
    kw = dict(key)
    venv = make_vector(env_id, 200, **kw)
    seeds = list(range(10_000, 10_200))
    rnd = rollout_returns(venv, behaviour_policy(env_id, "random", **kw), seeds, np.random.default_rng(0)).mean()
    exp = rollout_returns(venv, behaviour_policy(env_id, "expert", **kw), seeds, np.random.default_rng(1)).mean()
    return ReferenceScores(
        float(rnd), float(exp), "spinrl scripted policies: uniform random and expert, 200 episodes each"
    )


def reference_scores(env_id: str, **kwargs: Any) -> ReferenceScores | None:
    """Random and expert returns for normalisation, or None where no reference exists.

    Maze and dmc use the public benchmark's constants; cone and sepsis are computed (and cached) from
    our own random and expert policies; Gymnasium envs have none.
    """
    env_id, kwargs = canonical(env_id, kwargs)
    fam, kw = _resolve(env_id, kwargs)
    if fam == "gym":
        return None
    if fam == "maze":
        from spinrl.envs.maze import REFERENCE

        ref = REFERENCE.get(int(kw["actuators"]))
        return None if ref is None else ReferenceScores(ref[0], ref[1], PUBLIC)
    if fam == "dmc":
        bins = kw["bins"]
        if not np.isscalar(bins):
            if len(set(int(b) for b in bins)) != 1:
                return None
            bins = list(bins)[0]
        ref = DMC_REFERENCE.get((env_id.split(":", 1)[1], int(bins)))
        return None if ref is None else ReferenceScores(ref[0], ref[1], PUBLIC)
    if fam == "sepsis":
        from spinrl.envs.sepsis import SEPSIS_EXACT, load_dynamics

        load_dynamics()  # raises MissingExtraError without the extra
        return ReferenceScores(
            SEPSIS_EXACT["random"],
            SEPSIS_EXACT["optimal"],
            "exact policy evaluation of the icu-sepsis MDP: uniform "
            "random and optimal (value iteration); clinicians score 0.782",
        )
    if fam == "cone":
        from spinrl.envs.cone import MAX_EXPERT_TABLE

        if kw["size"] ** kw["dims"] * 3 ** kw["dims"] > MAX_EXPERT_TABLE:
            return None
    return _own_reference(env_id, _key(kw))


@lru_cache(maxsize=32)
def _cone_expert(key: tuple):
    from spinrl.envs.cone import ConeCore, ConeExpert

    return ConeExpert(ConeCore(1, **dict(key)))


@lru_cache(maxsize=8)
def _maze_expert(actuators: int):
    from spinrl.envs.maze import MazeExpert

    return MazeExpert(actuators)


def behaviour_policy(env_id: str, level: str, p_random: float | None = None, **kwargs: Any) -> BehaviourPolicy:
    """Scripted behaviour policy for dataset generation.

    Args:
        env_id: as for :func:`make`.
        level: ``random`` (any env), ``medium`` or ``expert`` (maze, cone, sepsis).
        p_random: medium only: per-step probability of a random action (default tuned per env).
        **kwargs: the env's options.

    Returns:
        A :class:`BehaviourPolicy` with ``act(obs [B, obs_dim], rng) -> [B, N] int64``.
    """
    env_id, kwargs = canonical(env_id, kwargs)
    fam, kw = _resolve(env_id, kwargs)
    if level not in LEVELS:
        raise SpinError(f"level '{level}' is unknown; use one of {', '.join(LEVELS)}")
    if level == "random":
        if fam == "dmc":
            from dm_control import suite

            from spinrl.envs.dmc import bin_values, parse_task

            spec = suite.load(*parse_task(env_id)).action_spec()
            nvec = np.array([v.size for v in bin_values(kw["bins"], spec.minimum, spec.maximum)])
        else:
            nvec = make_vector(env_id, 1, **kw).nvec
        return BehaviourPolicy(random_act(nvec), nvec, "uniform random joint action")
    if fam == "dmc":
        raise SpinError(
            f"{env_id}: scripted '{level}' policies exist for maze, cone "
            "and sepsis only; train a DecQN behaviour agent for dmc"
        )
    if fam == "gym":
        raise SpinError(
            f"{env_id}: scripted '{level}' policies exist for "
            "maze, cone and sepsis only; use level 'random' "
            "or collect with your own policy (spinrl.collect)"
        )
    p = MEDIUM_P[fam] if p_random is None else float(p_random)
    if not 0.0 <= p <= 1.0:
        raise SpinError(f"p_random = {p}: must lie in [0, 1]")
    if fam == "maze":
        from spinrl.envs.maze import mixed_act

        ex = _maze_expert(int(kw["actuators"]))
        nvec = np.full(ex.n, 2)
        if level == "expert":
            return BehaviourPolicy(
                ex.act,
                nvec,
                "maze expert: uniform over coordinated joint actions along a "
                f"waypoint heading ({ex.counts.mean():.0f} per state on average)",
            )
        return BehaviourPolicy(
            mixed_act(ex.act, nvec, p),
            nvec,
            f"maze medium: expert, but a uniform random joint action with probability {p}",
        )
    if fam == "cone":
        from spinrl.envs.cone import cone_medium_act

        ex = _cone_expert(_key(kw))
        nvec = ex.core.nvec
        if level == "expert":
            return BehaviourPolicy(
                ex.act,
                nvec,
                "cone expert: uniform over optimal moves (value iteration), stays coded (0,0)/(1,1) at random",
            )
        return BehaviourPolicy(
            cone_medium_act(ex, p), nvec, f"cone medium: optimal move, but a random neighbour with probability {p}"
        )
    from spinrl.envs.sepsis import sepsis_policy_act

    nvec = np.array([5, 5])
    if level == "expert":
        return BehaviourPolicy(
            sepsis_policy_act(0.0), nvec, "sepsis expert: the clinicians' policy (package expert_policy)"
        )
    return BehaviourPolicy(
        sepsis_policy_act(p), nvec, f"sepsis medium: clinicians' policy, uniform random action with probability {p}"
    )


def list_envs() -> list[dict[str, Any]]:
    """Summary rows for ``spinrl envs``: id, default kwargs, obs_dim, nvec, joint size, description."""
    rows: list[dict[str, Any]] = []
    for env_id in ("maze", "cone", "sepsis"):
        row: dict[str, Any] = {"id": env_id, "kwargs": dict(DEFAULTS[env_id]), "description": DESCRIPTIONS[env_id]}
        try:
            venv = make_vector(env_id, 1)
            row.update(
                obs_dim=venv.observation_dim,
                nvec=[int(m) for m in venv.nvec],
                joint_size=int(np.prod(venv.nvec.astype(object))),
                available=True,
            )
        except SpinError as e:  # missing extra
            row.update(obs_dim=47, nvec=[5, 5], joint_size=25, available=False, note=str(e))
        rows.append(row)
    # static facts (docs/benchmarks.md section 1 table) so listing never loads MuJoCo
    dmc_shape = {
        "cheetah-run": (17, 6),
        "finger-spin": (9, 2),
        "fish-swim": (24, 5),
        "quadruped-walk": (78, 12),
        "humanoid-stand": (67, 21),
        "dog-trot": (223, 38),
    }
    for task in DMC_TASKS:
        obs_dim, n = dmc_shape[task]
        rows.append(
            {
                "id": f"dmc:{task}",
                "kwargs": {"bins": 3},
                "obs_dim": obs_dim,
                "nvec": [3] * n,
                "joint_size": 3**n,
                "available": True,
                "description": DESCRIPTIONS["dmc"],
            }
        )
    return rows


register_envs()  # idempotent; spinrl/__init__ calls it too, so `import spinrl` registers the ids
