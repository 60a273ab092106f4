"""Actuator maze (docs/benchmarks.md section 2): n binary actuators push a point around two walls.

Structure: opposite actuators cancel and many joint actions give near-identical motions, so a good
policy is a *set* of coordinated joint actions, not independent per-actuator choices.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from spinrl.envs.core import counter_uniform, seed_keys
from spinrl.errors import SpinError

START = np.array([0.25, 0.1])
WALLS = np.array([[0.0, 0.25, 0.5, 0.3], [0.5, 0.25, 0.55, 0.8]])  # (x0, y0, x1, y1)
GOAL = np.array([0.25, 0.45, 0.30, 0.5])
GOAL_CENTRE = np.array([0.275, 0.475])
SUBSTEPS = 4
STEP = 0.045
NOISE_PROB = 0.1
STEP_REWARD = -0.05
GOAL_REWARD = 100.0
MAX_STEPS = 150
MAX_ENUM = 15  # enumerate all 2^n joint actions up to this many actuators
REFERENCE = {
    3: (-1.76, 99.22),
    5: (-5.62, 99.34),
    7: (-6.85, 99.38),
    10: (-7.45, 99.37),
    12: (-7.45, 99.2),
    15: (-7.45, 99.33),
}


def actuator_vectors(n: int) -> np.ndarray:
    """Unit push of actuator i along angle 2*pi*i/n, shape [n, 2]."""
    ang = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(ang), np.sin(ang)], axis=1)


def max_motion_norm(units: np.ndarray) -> float:
    """max over subsets S of |sum_{i in S} u_i|, exactly, in O(n^2).

    The best subset for direction w is {i : u_i . w > 0}; it only changes when w crosses a
    direction perpendicular to some u_i, so one w strictly between each pair of consecutive critical
    angles covers every candidate subset.
    """
    phi = np.arctan2(units[:, 1], units[:, 0])
    crit = np.sort(np.mod(np.concatenate([phi + np.pi / 2, phi - np.pi / 2]), 2 * np.pi))
    nxt = np.concatenate([crit[1:], crit[:1] + 2 * np.pi])
    mids = (crit + nxt) / 2
    w = np.stack([np.cos(mids), np.sin(mids)], axis=1)
    members = (w @ units.T) > 0  # [2n, n]
    return float(np.linalg.norm(members.astype(np.float64) @ units, axis=1).max())


def all_joint_actions(n: int) -> np.ndarray:
    """Every binary joint action, shape [2^n, n] (actuator 0 most significant)."""
    idx = np.arange(2**n, dtype=np.int64)
    return ((idx[:, None] >> np.arange(n - 1, -1, -1)) & 1).astype(np.int8)


def _in_rects(pos: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """[B] True where pos [B, 2] lies inside any rectangle (closed)."""
    x, y = pos[:, 0:1], pos[:, 1:2]
    return np.asarray(((x >= rects[:, 0]) & (x <= rects[:, 2]) & (y >= rects[:, 1]) & (y <= rects[:, 3])).any(axis=1))


class MazeCore:
    """Vectorized maze dynamics over B envs; randomness is counter-based per env (see core.py)."""

    max_steps = MAX_STEPS
    obs_bounds = (0.0, 1.0)

    def __init__(self, num_envs: int, actuators: int = 12):
        self.n = int(actuators)
        self.nvec = np.full(self.n, 2, dtype=np.int64)
        self.observation_dim = 2
        units = actuator_vectors(self.n)
        self.motion_matrix = units / max_motion_norm(units)  # [n, 2]: motion = a @ motion_matrix
        self.pos = np.tile(START, (num_envs, 1))
        self.keys = seed_keys([0] * num_envs)

    def reset(self, seeds: Sequence[int]) -> None:
        self.keys = seed_keys(seeds)
        self.pos = np.tile(START, (len(seeds), 1))

    def step(self, actions: np.ndarray, alive: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        delta = (actions.astype(np.float64) @ self.motion_matrix) * STEP  # [B, 2]
        moving = alive.copy()
        reached = np.zeros_like(alive)
        for k in range(SUBSTEPS):  # loop over the 4 sub-steps, never over envs
            ctr = t * SUBSTEPS + k
            noisy = counter_uniform(self.keys, ctr, 0) < NOISE_PROB
            uniform = np.stack([counter_uniform(self.keys, ctr, 1), counter_uniform(self.keys, ctr, 2)], 1)
            noise = uniform**2 / 1.415 * STEP
            cand = self.pos + np.where(noisy[:, None], noise, delta)
            ok = (cand >= 0).all(1) & (cand <= 1).all(1) & ~_in_rects(cand, WALLS)
            moving &= ok  # a sub-step into a wall or out of bounds ends the whole step
            self.pos = np.where(moving[:, None], cand, self.pos)
            hit = moving & _in_rects(self.pos, GOAL[None])
            reached |= hit
            moving &= ~hit
        reward = STEP_REWARD + GOAL_REWARD * reached
        return reward, reached

    def observe(self) -> np.ndarray:
        return self.pos.astype(np.float32)

    def render_rgb(self, i: int = 0, size: int = 256) -> np.ndarray:
        """Env ``i`` drawn from above as ``[size, size, 3]`` uint8: walls grey, goal green, the point red."""
        c = (np.arange(size) + 0.5) / size
        x, y = np.meshgrid(c, 1.0 - c)  # image rows run top-down, y up
        img = np.full((size, size, 3), 245, dtype=np.uint8)

        def rect(r: np.ndarray) -> np.ndarray:
            return (x >= r[0]) & (x <= r[2]) & (y >= r[1]) & (y <= r[3])

        img[rect(GOAL)] = (60, 170, 75)
        for w in WALLS:
            img[rect(w)] = (70, 70, 70)
        px, py = self.pos[i]
        img[(x - px) ** 2 + (y - py) ** 2 <= (0.02) ** 2] = (215, 40, 40)
        return img


# ---------------------------------------------------------------- scripted policies

_WAYPOINTS = np.array([[0.60, 0.20], [0.60, 0.86], [0.47, 0.85], GOAL_CENTRE])
_MARGIN = 0.02


def _segment_hits(p: np.ndarray, q: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """[B] True where segment p->q ([B, 2] each) meets any rectangle (slab test)."""
    d = q - p
    hit = np.zeros(p.shape[0], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in rects:  # two walls: a loop over rectangles, not envs
            t0 = np.zeros(p.shape[0])
            t1 = np.ones(p.shape[0])
            for ax, (lo, hi) in enumerate(((r[0], r[2]), (r[1], r[3]))):
                a = (lo - p[:, ax]) / d[:, ax]
                b = (hi - p[:, ax]) / d[:, ax]
                inside = (p[:, ax] >= lo) & (p[:, ax] <= hi)
                par = d[:, ax] == 0
                t0 = np.where(par, np.where(inside, t0, 2.0), np.maximum(t0, np.minimum(a, b)))
                t1 = np.where(par, np.where(inside, t1, -1.0), np.minimum(t1, np.maximum(a, b)))
            hit |= t0 <= t1
    return hit


def desired_heading(pos: np.ndarray) -> np.ndarray:
    """Unit direction [B, 2] toward the furthest route waypoint in sight (a taut path around the walls)."""
    pos = np.asarray(pos, dtype=np.float64)
    target = np.tile(_WAYPOINTS[0], (pos.shape[0], 1))
    found = np.zeros(pos.shape[0], dtype=bool)
    for rects in (WALLS + np.array([-_MARGIN, -_MARGIN, _MARGIN, _MARGIN]), WALLS):
        for w in _WAYPOINTS[::-1]:  # furthest first
            vis = ~found & ~_segment_hits(pos, np.broadcast_to(w, pos.shape), rects)
            target[vis] = w
            found |= vis
    d = target - pos
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)


class MazeExpert:
    """Near-optimal and deliberately multi-modal in joint actions.

    For each of ``bins`` heading directions, the candidate set is every joint action whose motion has
    cosine >= ``min_cos`` with the heading and length >= ``min_len`` (x the max). The expert picks
    uniformly inside the set, so per-actuator marginals mix several coordinated combinations.
    """

    def __init__(self, actuators: int, min_cos: float = 0.95, min_len: float = 0.75, bins: int = 360):
        self.n = int(actuators)
        if self.n > MAX_ENUM:
            raise SpinError(
                f"actuators = {self.n}: the maze expert enumerates 2^n joint actions; use actuators <= {MAX_ENUM}"
            )
        units = actuator_vectors(self.n)
        self.combos = all_joint_actions(self.n)
        motion = self.combos.astype(np.float64) @ (units / max_motion_norm(units))
        length = np.linalg.norm(motion, axis=1)
        ang = 2 * np.pi * np.arange(bins) / bins
        dirs = np.stack([np.cos(ang), np.sin(ang)], 1)
        cos = (motion @ dirs.T) / np.maximum(length, 1e-12)[:, None]  # [2^n, bins]
        ok = (cos >= min_cos) & (length[:, None] >= min_len)
        # few actuators: a heading may have no combo inside the cone; fall back to the best-aligned ones
        proj = np.where(length[:, None] >= min_len, cos, -2.0)
        ok |= ~ok.any(0, keepdims=True) & (proj >= proj.max(0, keepdims=True) - 1e-9)
        self.counts = ok.sum(0)
        self.table = np.zeros((bins, int(self.counts.max())), dtype=np.int64)
        for b in range(bins):  # construction only
            idx = np.flatnonzero(ok[:, b])
            self.table[b, : idx.size] = idx
        self.bins = bins

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h = desired_heading(obs[:, :2])
        b = np.round(np.arctan2(h[:, 1], h[:, 0]) / (2 * np.pi) * self.bins).astype(np.int64) % self.bins
        j = (rng.random(b.size) * self.counts[b]).astype(np.int64)
        return self.combos[self.table[b, j]].astype(np.int64)


def mixed_act(expert_act, nvec: np.ndarray, p_random: float):
    """With probability ``p_random`` per step a uniformly random joint action, else the expert's."""
    nv = np.asarray(nvec)

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = expert_act(obs, rng)
        rand = (rng.random(a.shape) * nv).astype(np.int64)
        return np.where((rng.random(a.shape[0]) < p_random)[:, None], rand, a)

    return act
