"""Shared machinery: a batched-environment contract, counter-based randomness, and the gymnasium
adapter that runs a batched core with B=1 so every env has exactly one implementation of its dynamics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, cast

import gymnasium as gym
import numpy as np

from spinrl.errors import SpinError
from spinrl.spaces import FactoredSpace

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a cheap, high-quality hash."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def seed_keys(seeds: Sequence[int]) -> np.ndarray:
    """Per-env 64-bit keys from integer seeds."""
    arr = np.array([int(s) & 0xFFFFFFFFFFFFFFFF for s in seeds], dtype=np.uint64)
    return splitmix64(splitmix64(arr))


def counter_uniform(keys: np.ndarray, counter: np.ndarray | int, stream: int) -> np.ndarray:
    """Uniform [0, 1) numbers indexed by (env key, counter, stream).

    Counter-based randomness is why a batched env reproduces B independent single envs exactly while
    drawing every number in one vectorized call (no per-env Generator, no Python loop over envs).
    """
    c = np.asarray(counter, dtype=np.uint64) * np.uint64(64) + np.uint64(stream)
    bits = splitmix64(keys ^ splitmix64(c))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


class VectorCore(Protocol):
    """Batched dynamics. ``step`` only changes rows where ``alive``; the wrapper handles time limits."""

    nvec: np.ndarray
    observation_dim: int
    max_steps: int

    def reset(self, seeds: Sequence[int]) -> None: ...

    def step(self, actions: np.ndarray, alive: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def observe(self) -> np.ndarray: ...


class RenderableCore(VectorCore, Protocol):
    """A core that draws frames (``render_mode="rgb_array"``)."""

    def render_rgb(self, i: int = 0) -> np.ndarray: ...


class VectorEnv:
    """B environments stepped together (Python API: ``reset(seeds)``, ``step(actions)``).

    After a row's episode ends (terminated or truncated), that row is frozen: further ``step`` calls
    return its last observation, reward 0 and the same done flags until the next ``reset``. Callers
    track which rows are active. ``observation_dim`` and ``nvec`` describe the spaces.
    """

    num_envs: int
    observation_dim: int
    nvec: np.ndarray

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _check(self, actions: np.ndarray) -> np.ndarray:
        a = FactoredSpace(self.nvec).validate(actions)
        if a.shape != (self.num_envs, len(self.nvec)):
            raise SpinError(f"actions must have shape [{self.num_envs}, {len(self.nvec)}], got {a.shape}")
        return a

    def _check_seeds(self, seeds: Sequence[int]) -> list[int]:
        seeds = [int(s) for s in seeds]
        if len(seeds) != self.num_envs:
            raise SpinError(f"seeds: need one seed per env ({self.num_envs}), got {len(seeds)}")
        return seeds

    def close(self) -> None:
        """Release simulator resources (a no-op for numpy cores)."""


class CoreVectorEnv(VectorEnv):
    """Truly vectorized batch over a :class:`VectorCore` (maze, cone, sepsis)."""

    def __init__(self, core_factory: Callable[[int], VectorCore], num_envs: int):
        if int(num_envs) < 1:
            raise SpinError(f"num_envs = {num_envs}: need at least 1 environment")
        self.num_envs = int(num_envs)
        self.core = core_factory(self.num_envs)
        self.observation_dim = int(self.core.observation_dim)
        self.nvec = np.asarray(self.core.nvec, dtype=np.int64)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._term = np.zeros(self.num_envs, dtype=bool)
        self._trunc = np.zeros(self.num_envs, dtype=bool)
        self._ready = False

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        self.core.reset(self._check_seeds(seeds))
        self._t[:] = 0
        self._term[:] = False
        self._trunc[:] = False
        self._ready = True
        return self.core.observe()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._ready:
            raise SpinError("step called before reset; call reset(seeds) first")
        a = self._check(actions)
        alive = ~(self._term | self._trunc)
        reward, term = self.core.step(a, alive, self._t)
        reward = np.where(alive, reward, 0.0).astype(np.float64)
        term = term & alive
        self._t[alive] += 1
        trunc = alive & ~term & (self._t >= self.core.max_steps)
        self._term |= term
        self._trunc |= trunc
        return self.core.observe(), reward, self._term.copy(), self._trunc.copy()


class LoopVectorEnv(VectorEnv):
    """Fallback batch that loops over single gymnasium envs (DM Control physics cannot batch; Gymnasium
    envs are black boxes). Observations are flattened to ``[B, observation_dim]``."""

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int):
        if int(num_envs) < 1:
            raise SpinError(f"num_envs = {num_envs}: need at least 1 environment")
        self.num_envs = int(num_envs)
        self.envs = [env_fn() for _ in range(self.num_envs)]
        # a 1-D MultiDiscrete action space and a shaped observation space: check_spaces ran in the env factory
        self.nvec = np.asarray(cast(gym.spaces.MultiDiscrete, self.envs[0].action_space).nvec, dtype=np.int64)
        self.observation_dim = int(np.prod(cast(tuple[int, ...], self.envs[0].observation_space.shape)))
        self._obs = np.zeros((self.num_envs, self.observation_dim), dtype=np.float32)
        self._term = np.zeros(self.num_envs, dtype=bool)
        self._trunc = np.zeros(self.num_envs, dtype=bool)
        self._ready = False

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        for i, (env, s) in enumerate(zip(self.envs, self._check_seeds(seeds))):
            self._obs[i] = np.asarray(env.reset(seed=s)[0], dtype=np.float32).reshape(-1)
        self._term[:] = False
        self._trunc[:] = False
        self._ready = True
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._ready:
            raise SpinError("step called before reset; call reset(seeds) first")
        a = self._check(actions)
        reward = np.zeros(self.num_envs, dtype=np.float64)
        for i, env in enumerate(self.envs):
            if self._term[i] or self._trunc[i]:
                continue
            obs, r, te, tr, _ = env.step(a[i])
            self._obs[i], reward[i], self._term[i], self._trunc[i] = (
                np.asarray(obs, dtype=np.float32).reshape(-1),
                r,
                te,
                tr,
            )
        return self._obs.copy(), reward, self._term.copy(), self._trunc.copy()

    def close(self) -> None:
        for env in self.envs:
            env.close()


class CoreEnv(gym.Env):
    """Single gymnasium env running a batched core with B=1 (one implementation of the dynamics).

    ``render_mode="rgb_array"``: ``render()`` returns the core's ``render_rgb(0)`` frame (cores that have one).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}

    def __init__(self, core_factory: Callable[[int], VectorCore], spec_id: str = "", render_mode: str | None = None):
        self._vec = CoreVectorEnv(core_factory, 1)
        if render_mode is not None and (render_mode != "rgb_array" or not hasattr(self._vec.core, "render_rgb")):
            can = "rgb_array" if hasattr(self._vec.core, "render_rgb") else "none"
            raise SpinError(
                f"render_mode={render_mode!r}: {spec_id or 'this env'} renders {can}; use maze or dmc:... for videos"
            )
        self.render_mode = render_mode
        self.action_space = gym.spaces.MultiDiscrete(self._vec.nvec)
        low, high = getattr(self._vec.core, "obs_bounds", (-np.inf, np.inf))
        self.observation_space = gym.spaces.Box(low, high, (self._vec.observation_dim,), np.float32)
        self.env_id = spec_id

    @property
    def core(self) -> VectorCore:
        return self._vec.core

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None:  # draw from gymnasium's np_random so unseeded resets still differ
            seed = int(self.np_random.integers(0, 2**63 - 1))
        return self._vec.reset([seed])[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, r, te, tr = self._vec.step(np.asarray(action).reshape(1, -1))
        return obs[0], float(r[0]), bool(te[0]), bool(tr[0]), {}

    def render(self) -> np.ndarray | None:
        """An RGB frame ``[H, W, 3]`` uint8 with ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            return None
        return cast(RenderableCore, self._vec.core).render_rgb(0)  # render_mode checked in __init__


@dataclass(frozen=True)
class ReferenceScores:
    """Returns of a uniform-random and an expert policy; ``normalize`` maps them to 0 and 100."""

    random: float
    expert: float
    source: str

    def normalize(self, ret: float | np.ndarray) -> float | np.ndarray:
        """100 * (ret - random) / (expert - random)."""
        return 100.0 * (np.asarray(ret, dtype=np.float64) - self.random) / (self.expert - self.random)


class BehaviourPolicy:
    """A scripted behaviour policy: ``act(obs [B, obs_dim], rng) -> actions [B, N] int64``."""

    def __init__(
        self, act_fn: Callable[[np.ndarray, np.random.Generator], np.ndarray], nvec: np.ndarray, description: str
    ):
        self._act = act_fn
        self.nvec = np.asarray(nvec, dtype=np.int64)
        self.description = description

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.ndim != 2:
            raise SpinError(f"obs must have shape [B, obs_dim], got {obs.shape}; add a batch axis with obs[None]")
        return np.asarray(self._act(obs, rng), dtype=np.int64)

    def __repr__(self) -> str:
        return f"BehaviourPolicy({self.description!r})"


def random_act(nvec: np.ndarray) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Uniform sub-actions, independent across sub-actions (= uniform over joint actions)."""
    nv = np.asarray(nvec, dtype=np.int64)

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (rng.random((obs.shape[0], nv.size)) * nv).astype(np.int64)

    return act


def rollout_returns(
    venv: VectorEnv, policy: BehaviourPolicy, seeds: Sequence[int], rng: np.random.Generator
) -> np.ndarray:
    """Undiscounted return of one episode per seed, all episodes stepped as one batch."""
    obs = venv.reset(seeds)
    ret = np.zeros(len(seeds))
    done = np.zeros(len(seeds), dtype=bool)
    while not done.all():
        obs, r, te, tr = venv.step(policy.act(obs, rng))
        ret += r
        done = te | tr
    return ret
