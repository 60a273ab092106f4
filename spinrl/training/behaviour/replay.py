"""The replay of n-step transitions (uniform or prioritized) and how a round's steps enter it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import torch

from spinrl.algorithms.decqn import NStepBatch
from spinrl.errors import CheckpointError
from spinrl.training.behaviour.sumtree import SumTree


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
        return NStepBatch(
            t(self.obs[i]),
            t(self.actions[i].astype(np.int64)),
            t(self.returns[i]),
            t(self.next_obs[i]),
            t(self.discount[i]),
        )

    def sample(self, rng: np.random.Generator, batch: int) -> NStepBatch:
        return self._batch(rng.integers(0, self.size, batch))

    def sample_prioritized(
        self, rng: np.random.Generator, batch: int, importance_exponent: float
    ) -> tuple[NStepBatch, np.ndarray, torch.Tensor]:
        """(batch, slots, importance weights [B]): slot i drawn with probability p_i / sum p, weighted by
        (size * P(i))^-importance_exponent / max (the bias correction of prioritized replay)."""
        assert self.tree is not None, "sample_prioritized needs Replay(prioritized=True)"
        i = self.tree.sample(rng, batch, self.size)
        prob = self.tree.tree[self.tree.width + i] / self.tree.total
        w = (self.size * prob) ** -importance_exponent
        return self._batch(i), i, torch.from_numpy((w / w.max()).astype(np.float32))

    def update_priorities(self, slots: np.ndarray, td_abs: np.ndarray, priority_exponent: float) -> None:
        assert self.tree is not None, "update_priorities needs Replay(prioritized=True)"
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


def replay_capacity(requested: int, obs_dim: int, n_sub: int) -> int:
    """The requested capacity, lowered so the buffer uses at most a quarter of the available RAM."""
    per = 2 * 4 * obs_dim + 2 * n_sub + 8
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return int(requested)
    return int(max(10_000, min(requested, avail // 4 // per)))


def _add_complete(
    replay: Replay,
    S: list,
    A: list,
    R: list,
    running: np.ndarray,
    ended: np.ndarray,
    terminated: np.ndarray,
    n: int,
    gamma: float,
) -> None:
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
        replay.add(S[t0][rows], A[t0][rows], ret, S[T][rows], np.full(rows.size, gamma**n))
    if ended.any():
        rows = np.flatnonzero(ended)
        for t in range(max(0, T - n), T):  # at most n (3) start times: a loop over the horizon only
            k = T - t
            ret = sum(gamma**j * R[t + j][rows] for j in range(k))
            disc = np.where(terminated[rows], 0.0, gamma**k)
            replay.add(S[t][rows], A[t][rows], ret, S[T][rows], disc)
