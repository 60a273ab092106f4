"""Factored discrete action spaces: an action is a vector of N sub-actions, sub-action i in [0, m_i).

The joint space has prod(m_i) members and is never enumerated by the library, except by
``flatten``/``unflatten`` on small spaces (joint size <= 2**20), e.g. for tests and tabular tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spinrl.errors import SpinError

MAX_FLAT_JOINT = 2**20
MAX_SUB_ACTIONS = 2**16
MAX_CHOICES = 2**20


def as_nvec(nvec: Sequence[int] | np.ndarray, field: str = "nvec") -> np.ndarray:
    """Validate and return cardinalities as an int64 array of shape [N]."""
    arr = np.asarray(nvec)
    if arr.ndim != 1 or arr.size == 0:
        raise SpinError(f"{field} must be a non-empty 1-D list of cardinalities, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0) and np.all(np.abs(arr) <= 2**62):
            arr = arr.astype(np.int64)
        else:
            raise SpinError(f"{field} must hold integers, got dtype {arr.dtype}")
    if np.any(arr < 2):
        bad = int(np.argmin(arr))
        raise SpinError(f"{field}[{bad}] = {int(arr[bad])}: every sub-action needs at least 2 choices")
    if arr.size > MAX_SUB_ACTIONS or np.any(arr > MAX_CHOICES):
        # heads, embeddings and one-hot buffers scale with these: 10**15 choices would fail far from the cause
        bad = int(np.argmax(arr))
        raise SpinError(
            f"{field} has {arr.size} sub-actions, {field}[{bad}] "
            f"= {int(arr[bad])}: at most {MAX_SUB_ACTIONS} "
            f"sub-actions of at most {MAX_CHOICES} choices each are supported"
        )
    return arr.astype(np.int64)


@dataclass(frozen=True)
class FactoredSpace:
    """N sub-actions with cardinalities ``nvec``; mirrors ``gymnasium.spaces.MultiDiscrete``."""

    nvec: tuple[int, ...]

    def __init__(self, nvec: Sequence[int] | np.ndarray):
        object.__setattr__(self, "nvec", tuple(int(m) for m in as_nvec(nvec)))

    @property
    def n(self) -> int:
        """Number of sub-actions N."""
        return len(self.nvec)

    @property
    def max_m(self) -> int:
        return max(self.nvec)

    @property
    def offsets(self) -> np.ndarray:
        """Start of each sub-action's block in a concatenated [sum(m_i)] vector."""
        return np.concatenate([[0], np.cumsum(self.nvec)[:-1]]).astype(np.int64)

    def describe(self) -> str:
        """Short form for logs and summaries: ``[3]*38, 1.35e+18 joint actions`` (exact below 10^6)."""
        if self.n <= 8:
            shape = str(list(self.nvec))
        elif len(set(self.nvec)) == 1:
            shape = f"[{self.nvec[0]}]*{self.n}"
        else:
            shape = f"{self.n} sub-actions, m {min(self.nvec)}-{self.max_m}"
        js = self.joint_size
        return f"{shape}, {js if js < 10**6 else f'{float(js):.3g}'} joint actions"

    @property
    def joint_size(self) -> int:
        """prod(m_i) as an exact Python int (may be astronomically large)."""
        size = 1
        for m in self.nvec:
            size *= m
        return size

    def validate(self, actions: np.ndarray, field: str = "actions") -> np.ndarray:
        """Check shape [..., N], integer dtype and 0 <= a_i < m_i; return the array as int64."""
        a = np.asarray(actions)
        if a.ndim < 1 or a.shape[-1] != self.n:
            raise SpinError(f"{field} must have shape [..., {self.n}] (one column per sub-action), got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise SpinError(
                f"{field} must be integers (sub-action indices), got dtype {a.dtype}; cast with .astype(int)"
            )
        if a.size:
            nv = np.asarray(self.nvec)
            bad = (a < 0) | (a >= nv)
            if bad.any():
                flat = np.argwhere(bad)[0]
                col = int(flat[-1])
                raise SpinError(
                    f"{field}[{', '.join(str(int(i)) for i in flat)}] = "
                    f"{int(a[tuple(flat)])} is outside [0, {self.nvec[col]}) "
                    f"for sub-action {col}; fix the data or nvec"
                )
        return a.astype(np.int64, copy=False)

    def _check_flat(self) -> None:
        if self.joint_size > MAX_FLAT_JOINT:
            raise SpinError(
                f"joint action space has {self.joint_size} members (> 2^20 = {MAX_FLAT_JOINT}); "
                "flatten/unflatten are for small spaces only, keep actions factored"
            )

    def flatten(self, actions: np.ndarray) -> np.ndarray:
        """Mixed-radix index of each action (sub-action 0 most significant)."""
        self._check_flat()
        a = self.validate(actions)
        radix = np.cumprod((self.nvec[1:] + (1,))[::-1])[::-1].astype(np.int64)
        return (a * radix).sum(-1)

    def unflatten(self, index: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`flatten`."""
        self._check_flat()
        idx = np.asarray(index, dtype=np.int64)
        if np.any(idx < 0) or np.any(idx >= self.joint_size):
            raise SpinError(f"flat index outside [0, {self.joint_size})")
        out = np.empty(idx.shape + (self.n,), dtype=np.int64)
        rem = idx.copy()
        for i in range(self.n - 1, -1, -1):  # tiny spaces only; not hot code
            out[..., i] = rem % self.nvec[i]
            rem //= self.nvec[i]
        return out

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...] = ()) -> np.ndarray:
        """Uniform random actions, shape [*size, N]."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        return (rng.random(shape + (self.n,)) * np.asarray(self.nvec)).astype(np.int64)
