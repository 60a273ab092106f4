"""CoNE, combinatorial navigation (docs/benchmarks.md section 3): a D-dimensional grid, 2 bits per dimension.

Structure: for dimension i the pair (b_2i, b_2i+1) moves +1 for (1,0), -1 for (0,1) and stays for
(0,0) or (1,1), an XOR-like code that independent per-bit choices cannot represent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from spinrl.errors import SpinError

MAX_STEPS = 100
CLUSTER = 3  # pit cells per cluster
GOAL_REWARD = 10.0
MAX_EXPERT_TABLE = 10_000_000  # S^D * 3^D entries of the expert's neighbour table


def check_cone_kwargs(dims: int, size: int, n_pits: int | None) -> int:
    """Validate sizes; return the resolved number of pit cells."""
    if int(dims) < 1:
        raise SpinError(f"cone dims = {dims}: need dims >= 1")
    if int(size) < 3:
        raise SpinError(f"cone size = {size}: need size >= 3 so pits fit between start and goal")
    if float(size) ** dims >= 2.0**62:
        raise SpinError(f"cone size**dims = {size}**{dims} overflows int64 cell indices; use a smaller grid")
    n = 2 * int(dims) if n_pits is None else int(n_pits)
    if n < 0:
        raise SpinError(f"cone n_pits = {n_pits}: need n_pits >= 0")
    return n


def place_pits(dims: int, size: int, n_pits: int, pit_seed: int) -> np.ndarray:
    """Pit cells [P, D] clustered around the start-goal diagonal.

    Pits never sit on the start, the goal, or the 'edge staircase' (walk dimension 0 to the far side,
    then dimension 1, ...), so that staircase is a pit-free path: the goal is always reachable.
    """
    rng = np.random.default_rng(pit_seed)
    pits: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    centre = np.zeros(dims, dtype=np.int64)
    tries = 0
    while len(pits) < n_pits and tries < 1000 * max(n_pits, 1):
        if tries % CLUSTER == 0:  # a new cluster centred on the diagonal, which it blocks
            centre = np.full(dims, int(round(rng.uniform(0.2, 0.8) * (size - 1))), dtype=np.int64)
            cell = centre
        else:
            cell = np.clip(centre + rng.choice([-1, 0, 0, 1], size=dims), 0, size - 1)
        tries += 1
        key = tuple(int(c) for c in cell)
        on_stair = any(np.all(cell[:k] == size - 1) and np.all(cell[k + 1 :] == 0) for k in range(dims))
        if key in seen or on_stair:
            continue
        seen.add(key)
        pits.append(key)
    return np.array(pits, dtype=np.int64).reshape(-1, dims)


class ConeCore:
    """Vectorized CoNE dynamics over B envs (deterministic; seeds are accepted for the contract)."""

    max_steps = MAX_STEPS

    def __init__(
        self,
        num_envs: int,
        dims: int = 5,
        size: int = 5,
        pit_seed: int = 0,
        n_pits: int | None = None,
        include_distances: bool = True,
    ):
        n = check_cone_kwargs(dims, size, n_pits)
        self.dims, self.size, self.include_distances = int(dims), int(size), bool(include_distances)
        self.nvec = np.full(2 * self.dims, 2, dtype=np.int64)
        self.goal = np.full(self.dims, self.size - 1, dtype=np.int64)
        self.pits = place_pits(self.dims, self.size, n, pit_seed)
        self.radix = self.size ** np.arange(self.dims, dtype=np.int64)
        self.pit_flat = np.sort(self.pits @ self.radix)
        self.pit_reward = -10.0 * float(np.linalg.norm(self.goal))
        self.terminals = np.concatenate([self.goal[None], self.pits]).astype(np.float64)
        self.observation_dim = self.dims + (len(self.terminals) if self.include_distances else 0)
        self.pos = np.zeros((num_envs, self.dims), dtype=np.int64)

    def reset(self, seeds: Sequence[int]) -> None:
        self.pos = np.zeros((len(seeds), self.dims), dtype=np.int64)

    def step(self, actions: np.ndarray, alive: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        move = actions[:, 0::2] - actions[:, 1::2]  # (1,0)->+1, (0,1)->-1, (0,0)/(1,1)->0
        new = np.clip(self.pos + move, 0, self.size - 1)
        self.pos = np.where(alive[:, None], new, self.pos)
        at_goal = (self.pos == self.goal).all(1)
        in_pit = np.isin(self.pos @ self.radix, self.pit_flat)
        dist = np.linalg.norm(self.pos - self.goal, axis=1)
        reward = np.where(at_goal, GOAL_REWARD, np.where(in_pit, self.pit_reward, -dist))
        return reward, at_goal | in_pit

    def observe(self) -> np.ndarray:
        coords = self.pos.astype(np.float32)
        if not self.include_distances:
            return coords
        d = np.linalg.norm(self.pos[:, None, :] - self.terminals[None], axis=2)
        return np.concatenate([coords, d.astype(np.float32)], axis=1)


# ---------------------------------------------------------------- scripted policies


def _offsets(dims: int) -> np.ndarray:
    """All moves in {-1, 0, 1}^D, shape [3^D, D]."""
    idx = np.arange(3**dims)
    return (idx[:, None] // 3 ** np.arange(dims) % 3 - 1).astype(np.int64)


def encode_moves(move: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Moves [B, D] in {-1,0,1} to bit pairs [B, 2D]; a stay is (0,0) or (1,1) with equal probability."""
    stay_bit = rng.random(move.shape) < 0.5
    a = np.empty((move.shape[0], 2 * move.shape[1]), dtype=np.int64)
    a[:, 0::2] = np.where(move == 0, stay_bit, move == 1)
    a[:, 1::2] = np.where(move == 0, stay_bit, move == -1)
    return a


class ConeExpert:
    """Optimal policy by value iteration over the whole grid (computed once), multi-modal on ties.

    Every optimal move (several when clipping at the boundary or symmetry makes moves equivalent) is
    picked uniformly, and stays are encoded randomly as (0,0) or (1,1).
    """

    def __init__(self, core: ConeCore):
        self.core = core
        D, S = core.dims, core.size
        if S**D * 3**D > MAX_EXPERT_TABLE:
            raise SpinError(
                f"cone expert: size**dims * 3**dims = {S**D * 3**D} > "
                f"{MAX_EXPERT_TABLE}; use a smaller grid (e.g. dims <= 6 at size 5)"
            )
        self.offsets = _offsets(D)
        cells = np.arange(S**D)
        coords = cells[:, None] // core.radix % S
        nxt = np.clip(coords[:, None, :] + self.offsets[None], 0, S - 1) @ core.radix  # [S^D, 3^D]
        term = np.zeros(S**D, dtype=bool)
        term[core.pit_flat] = True
        goal = int(core.goal @ core.radix)
        term[goal] = True
        reward = -np.linalg.norm(coords - core.goal, axis=1)
        reward[core.pit_flat] = core.pit_reward
        reward[goal] = GOAL_REWARD
        v = np.zeros(S**D)
        for _ in range(10 * S * D + 100):  # undiscounted shortest-path value iteration
            q = reward[nxt] + np.where(term[nxt], 0.0, v[nxt])
            new = q.max(1)
            if np.abs(new - v).max() < 1e-10:
                break
            v = new
        best = q >= q.max(1, keepdims=True) - 1e-9
        self.counts = best.sum(1)
        order = np.argsort(~best, axis=1, kind="stable")
        self.table = order[:, : int(self.counts.max())]
        self.value = v

    def moves(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cell = np.rint(obs[:, : self.core.dims]).astype(np.int64) @ self.core.radix
        j = (rng.random(cell.size) * self.counts[cell]).astype(np.int64)
        return self.offsets[self.table[cell, j]]

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return encode_moves(self.moves(obs, rng), rng)


def cone_medium_act(expert: ConeExpert, p_random: float):
    """Benchmarks.md: the optimal move with probability 1 - p, otherwise a uniformly random neighbour."""
    D = expert.core.dims

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        m = expert.moves(obs, rng)
        r = (rng.random(m.shape[0]) * (3**D - 1)).astype(np.int64)
        nb = expert.offsets[r + (r >= (3**D - 1) // 2)]  # skip the all-zero offset (the stay)
        m = np.where((rng.random(len(m)) < p_random)[:, None], nb, m)
        return encode_moves(m, rng)

    return act
