"""Discretized DeepMind Control tasks (docs/benchmarks.md section 1).

Imported lazily: loading MuJoCo is slow.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence, cast

import gymnasium as gym
import numpy as np

from spinrl.errors import MissingExtraError, SpinError

os.environ.setdefault("MUJOCO_GL", "egl")  # headless offscreen rendering on the CPU (Mesa); no GLFW DISPLAY warning

try:
    from dm_control import suite  # noqa: E402
except ImportError as e:  # the core install leaves DM Control out: pip install 'spinrl[dmc]'
    raise MissingExtraError("dm-control", "dmc") from e

EPISODE_STEPS = 1000


class _QuietDeprecation:
    """Drops MuJoCo's 'settotalmass is deprecated' compiler warning, logged once per model load through absl
    (64 lines for 64 batched envs of a quadruped or dog): it concerns dm_control's XML, not our use of it."""

    def filter(self, record) -> bool:
        return "settotalmass" not in record.getMessage()


def _quiet_absl() -> None:
    import logging

    log = logging.getLogger("absl")
    if not any(isinstance(f, _QuietDeprecation) for f in log.filters):
        log.addFilter(_QuietDeprecation())


def parse_task(env_id: str) -> tuple[str, str]:
    """'dmc:cheetah-run' -> ('cheetah', 'run'); validated against the suite."""
    name = env_id.split(":", 1)[1]
    domain, _, task = name.partition("-")
    task = task.replace("-", "_")
    if (domain, task) not in suite.ALL_TASKS:
        valid = ", ".join(f"dmc:{d}-{t}" for d, t in suite.BENCHMARKING)
        raise SpinError(f"env_id '{env_id}' is not a DM Control suite task; use one of {valid}")
    return domain, task


@lru_cache(maxsize=None)
def observation_slices(env_id: str) -> dict[str, slice]:
    """Where each named observation of a task lies in DMCEnv's flat observation (e.g. humanoid's head_height)."""
    domain, task = parse_task(env_id)
    _quiet_absl()
    out, at = {}, 0
    for key, spec in suite.load(domain, task).observation_spec().items():
        size = int(np.prod(spec.shape))
        out[key] = slice(at, at + size)
        at += size
    return out


def bin_values(bins: int | Sequence[int], low: np.ndarray, high: np.ndarray) -> list[np.ndarray]:
    """Per-dimension action values: sub-action i with m_i choices -> linspace(low_i, high_i, m_i)."""
    n = low.size
    b = [int(cast(int, bins))] * n if np.isscalar(bins) else [int(x) for x in cast(Sequence[int], bins)]
    if len(b) != n:
        raise SpinError(f"bins has {len(b)} entries but the task has {n} action dimensions; pass one int or {n} ints")
    if min(b) < 2:
        raise SpinError(f"bins = {min(b)}: every action dimension needs bins >= 2")
    return [np.linspace(lo, hi, m) for lo, hi, m in zip(low, high, b)]


class DMCEnv(gym.Env):
    """A DM Control task with a MultiDiscrete action space and a flat float32 observation.

    ``render_mode="rgb_array"``: ``render()`` draws camera 0 at ``render_size`` (height, width) with MuJoCo's
    offscreen renderer (``MUJOCO_GL``: egl by default, osmesa for pure software).
    """

    metadata: dict = {"render_modes": ["rgb_array"]}
    render_size: tuple[int, int] = (240, 320)

    def __init__(self, env_id: str, bins: int | Sequence[int] = 3, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise SpinError(f"render_mode={render_mode!r}: DM Control tasks render 'rgb_array' only")
        self.render_mode = render_mode
        self.env_id = env_id
        self.domain, self.task = parse_task(env_id)
        _quiet_absl()
        self._env = suite.load(self.domain, self.task)
        spec = self._env.action_spec()
        self._values = bin_values(bins, np.asarray(spec.minimum, float), np.asarray(spec.maximum, float))
        self.action_space = gym.spaces.MultiDiscrete([v.size for v in self._values])
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": round(1.0 / self._env.control_timestep())}
        self._t = 0

    @staticmethod
    def _flat(obs: dict) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in obs.values()]).astype(np.float32)

    def continuous_action(self, action: np.ndarray) -> np.ndarray:
        """Map sub-action indices [N] to the continuous action [N]."""
        return np.array([v[int(i)] for v, i in zip(self._values, np.asarray(action))])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:  # reseed the task's RandomState so initial states are reproducible
            self._env.task._random = np.random.RandomState(seed)
        self._t = 0
        return self._flat(self._env.reset().observation), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        ts = self._env.step(self.continuous_action(action))
        self._t += 1
        terminated = bool(ts.last() and ts.discount == 0)
        truncated = not terminated and (ts.last() or self._t >= EPISODE_STEPS)
        return self._flat(ts.observation), float(ts.reward or 0.0), terminated, truncated, {}

    def render(self) -> np.ndarray | None:
        """An RGB frame ``[H, W, 3]`` uint8 with ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            return None
        try:
            return self._env.physics.render(*self.render_size, camera_id=0)
        except Exception as e:  # no GL backend: name the setting and the system packages
            gl = os.environ.get("MUJOCO_GL")
            raise SpinError(
                f"DM Control rendering failed with MUJOCO_GL={gl} "
                f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}); "
                "install Mesa's EGL (libegl1) or OSMesa (libosmesa6) "
                "and set MUJOCO_GL=egl or osmesa"
            ) from None
