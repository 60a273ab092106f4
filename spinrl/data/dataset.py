"""The one offline dataset format every part of spinrl reads and writes: :class:`OfflineDataset`.

Layout in memory: transitions are grouped into episodes. Each episode of length L stores L + 1
observations (the last one is the final next-observation), so ``next_observations`` are derived by
index arithmetic, never stored twice. On disk a dataset is a directory of ``.npy`` files (no
pickle, memory-mappable) plus ``meta.json`` holding the metadata and a SHA-256 per array; it is
written to a temporary directory and renamed into place, so a failed or interrupted write leaves the
previous dataset intact.

By idea: this class; ``validation.py`` (checks on construction and of metadata names), ``storage.py``
(atomic save, verified load), ``constructors.py`` (``from_arrays``, ``from_episodes``), ``summary.py``
(``spinrl data info``); ``spinrl.envs.collect`` rolls an environment out into a dataset.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from spinrl.errors import DatasetError
from spinrl.spaces import FactoredSpace

if TYPE_CHECKING:
    from spinrl.data.summary import Summary

SCHEMA_VERSION = 1
ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations", "episode_lengths")


def _spinrl_version() -> str:
    from spinrl import __version__

    return __version__


class OfflineDataset:
    """Episodic offline data with factored integer actions.

    Args:
        observations: [T + E, *obs_shape] float32; episode e's L_e + 1 observations are contiguous.
        actions: [T, N] integers with 0 <= a_i < nvec[i].
        rewards: [T]; terminations, truncations: [T] bool (at most one true, only at episode ends).
        episode_lengths: [E] positive lengths summing to T.
        meta: metadata dict (env_id, env_kwargs, nvec, level, behaviour, generator, reference, ...).
    """

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminations: np.ndarray,
        truncations: np.ndarray,
        episode_lengths: np.ndarray,
        meta: dict,
        validate: bool = True,
    ):
        self.observations = observations
        self.actions = actions
        self.rewards = rewards
        self.terminations = terminations
        self.truncations = truncations
        self.episode_lengths = episode_lengths
        self.meta = meta
        if validate:
            self.validate()
        lengths = np.asarray(self.episode_lengths, dtype=np.int64)
        # obs row of transition t = t + (episode index of t); next obs = that + 1.
        self._episode_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        self._obs_index = np.arange(len(self._episode_of), dtype=np.int64) + self._episode_of
        self._episode_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    # ------------------------------------------------------------------ properties
    @property
    def nvec(self) -> tuple[int, ...]:
        return tuple(int(m) for m in self.meta["nvec"])

    @property
    def space(self) -> FactoredSpace:
        return FactoredSpace(self.nvec)

    @property
    def observation_dim(self) -> int:
        return int(np.prod(self.observations.shape[1:]))

    @property
    def num_transitions(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(len(self.episode_lengths))

    def __len__(self) -> int:
        return self.num_transitions

    @property
    def env_id(self) -> str | None:
        return self.meta.get("env_id")

    @property
    def env_kwargs(self) -> dict:
        return dict(self.meta.get("env_kwargs") or {})

    @property
    def signature(self) -> dict:
        """What a model trained on this data must agree with (env, nvec, observation shape)."""
        return {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "nvec": list(self.nvec),
            "observation_shape": list(self.observations.shape[1:]),
        }

    @property
    def next_observations(self) -> np.ndarray:
        return self.observations[self._obs_index + 1]

    @property
    def transition_observations(self) -> np.ndarray:
        return self.observations[self._obs_index]

    def episode_returns(self) -> np.ndarray:
        r = np.asarray(self.rewards, dtype=np.float64)
        return np.add.reduceat(r, self._episode_starts) if len(r) else np.zeros(0)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Loud, early checks of shapes, dtypes, ranges, finiteness and episode structure (``validation.py``)."""
        from spinrl.data.validation import validate

        validate(self)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, rng: np.random.Generator, device: Any = None):
        """Uniform minibatch ``(s, a, r, s', terminated)`` as torch tensors; one fancy index per array.

        Truncated steps bootstrap (terminated = 0), as a time limit is not a true end.
        """
        return self.batch_at(self.sample_indices(batch_size, rng), device=device)

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform transition indices (what :meth:`sample` draws)."""
        return rng.integers(0, self.num_transitions, size=batch_size)

    def observation_rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows of ``observations`` holding the states of transitions ``idx`` (next state: row + 1)."""
        return self._obs_index[idx]

    def batch_at(self, idx: np.ndarray, device: Any = None):
        import torch

        oi = self._obs_index[idx]
        s = torch.from_numpy(np.ascontiguousarray(self.observations[oi], dtype=np.float32))
        s2 = torch.from_numpy(np.ascontiguousarray(self.observations[oi + 1], dtype=np.float32))
        a = torch.from_numpy(np.asarray(self.actions[idx], dtype=np.int64))
        r = torch.from_numpy(np.asarray(self.rewards[idx], dtype=np.float32))
        d = torch.from_numpy(np.asarray(self.terminations[idx], dtype=np.float32))
        out = (s.reshape(len(idx), -1), a, r, s2.reshape(len(idx), -1), d)
        if device is not None:
            return tuple(t.to(device, non_blocking=True) for t in out)
        return out

    # ------------------------------------------------------------------ subsets
    def select_episodes(self, episodes: Sequence[int] | np.ndarray) -> "OfflineDataset":
        """A new in-memory dataset holding the given episodes, in the given order."""
        ep = np.asarray(episodes, dtype=np.int64)
        if ep.size == 0:
            raise DatasetError("cannot select zero episodes")
        lengths = np.asarray(self.episode_lengths, dtype=np.int64)
        starts = self._episode_starts
        t_idx = np.concatenate([np.arange(starts[e], starts[e] + lengths[e]) for e in ep])
        o_idx = np.concatenate([np.arange(starts[e] + e, starts[e] + e + lengths[e] + 1) for e in ep])
        meta = copy.deepcopy(self.meta)
        meta.pop("checksum", None)
        meta.pop("checksums", None)
        return OfflineDataset(
            np.asarray(self.observations[o_idx]),
            np.asarray(self.actions[t_idx]),
            np.asarray(self.rewards[t_idx]),
            np.asarray(self.terminations[t_idx]),
            np.asarray(self.truncations[t_idx]),
            lengths[ep].copy(),
            meta,
            validate=False,
        )

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple["OfflineDataset", "OfflineDataset"]:
        """Train/validation split by whole episodes (no leakage of states across the split)."""
        if not 0.0 < val_fraction < 1.0:
            raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
        E = self.num_episodes
        if E < 2:
            raise DatasetError(
                f"a train/validation split needs at least 2 episodes, the dataset has {E}; collect more episodes"
            )
        perm = np.random.default_rng(seed).permutation(E)
        n_val = min(max(1, int(round(val_fraction * E))), E - 1)
        return self.select_episodes(np.sort(perm[n_val:])), self.select_episodes(np.sort(perm[:n_val]))

    # ------------------------------------------------------------------ summary
    def summary(self) -> "Summary":
        """What ``spinrl data info`` prints (``summary.py``)."""
        from spinrl.data.summary import summarize

        return summarize(self)

    # ------------------------------------------------------------------ disk
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write atomically: a temporary sibling directory, fsync, then rename over ``path`` (see ``save``)."""
        from spinrl.data.storage import save

        return save(self, path, overwrite)

    @staticmethod
    def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> "OfflineDataset":
        from spinrl.data.storage import load

        return load(path, mmap=mmap, verify=verify)
