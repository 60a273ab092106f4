"""Building a dataset from arrays: flat step-aligned arrays (``from_arrays``) or the native per-episode
layout (``from_episodes``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from spinrl.data.dataset import SCHEMA_VERSION, OfflineDataset, _spinrl_version
from spinrl.data.validation import _check_finite
from spinrl.errors import DatasetError
from spinrl.spaces import FactoredSpace, as_nvec


def from_arrays(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
    *,
    nvec: Sequence[int],
    next_observations: np.ndarray | None = None,
    env_id: str | None = None,
    env_kwargs: dict | None = None,
    level: str | None = None,
    behaviour: str | dict | None = None,
    generator: dict | None = None,
    reference: dict | None = None,
    **extra_meta: Any,
) -> OfflineDataset:
    """Build a dataset from flat step-aligned arrays (what most logs look like).

    Episodes are cut after every step whose termination or truncation flag is set; trailing steps
    without a flag form a final episode treated as truncated. ``next_observations`` (same shape as
    ``observations``) supplies each episode's final next-observation; without it, the final step of a
    terminated episode gets its own observation as a placeholder (never used: terminal targets do not
    bootstrap) and the final step of a truncated episode is dropped, because its successor is unknown.
    """
    obs = np.asarray(observations)
    act = np.asarray(actions)
    rew = np.asarray(rewards)
    term = np.asarray(terminations)
    trunc = np.asarray(truncations)
    space = FactoredSpace(as_nvec(nvec))
    if obs.ndim < 2 or 0 in obs.shape[1:]:
        raise DatasetError(f"observations must have shape [T, obs_dim] with obs_dim >= 1, got {obs.shape}")
    T = obs.shape[0]
    if T == 0:
        raise DatasetError("observations are empty; a dataset needs at least one transition")
    if act.ndim == 1 and space.n == 1:
        act = act[:, None]
    for name, arr in (("actions", act), ("rewards", rew), ("terminations", term), ("truncations", trunc)):
        if arr.ndim == 0:
            raise DatasetError(f"{name} must be an array with one row per step, got a scalar")
        if arr.shape[0] != T:
            raise DatasetError(f"{name} has {arr.shape[0]} rows but observations has {T}; arrays must be step-aligned")
    for name, arr in (("terminations", term), ("truncations", trunc)):
        if arr.ndim != 1:
            raise DatasetError(f"{name} must be 1-D [T], got shape {arr.shape}")
        if not (arr.dtype == np.bool_ or np.isin(arr, (0, 1)).all()):
            raise DatasetError(f"{name} must be boolean (0/1), got values outside {{0, 1}}")
    if rew.ndim != 1:
        raise DatasetError(f"rewards must be 1-D [T], got shape {rew.shape}")
    if not np.issubdtype(obs.dtype, np.number) or not np.issubdtype(rew.dtype, np.number):
        raise DatasetError("observations and rewards must be numeric arrays")
    act = space.validate(act, "actions")
    _check_finite(obs.astype(np.float32, copy=False), "observations")
    _check_finite(rew.astype(np.float64, copy=False), "rewards")
    term = term.astype(bool)
    trunc = trunc.astype(bool)
    if np.any(term & trunc):
        i = int(np.argmax(term & trunc))
        raise DatasetError(f"step {i} is both terminated and truncated; a step ends an episode one way only")
    if not (term[-1] or trunc[-1]):
        trunc = trunc.copy()
        trunc[-1] = True  # data ending mid-episode: a time limit, not a true end
    ends = np.flatnonzero(term | trunc)
    E = len(ends)
    lengths = np.diff(np.concatenate([[-1], ends]))
    ep_id = np.repeat(np.arange(E), lengths)
    keep = np.ones(T, dtype=bool)
    if next_observations is not None:
        nxt = np.asarray(next_observations)
        if nxt.shape != obs.shape:
            raise DatasetError(f"next_observations must have the shape of observations {obs.shape}, got {nxt.shape}")
        final_src = nxt[ends]
    else:
        keep[ends[trunc[ends]]] = False  # successor of a truncated final step is unknown: drop it
        final_src = obs[ends]  # terminated: unused placeholder; truncated: the dropped step's observation
    new_len = np.bincount(ep_id[keep], minlength=E)
    keep_ep = new_len > 0
    if not keep_ep.any():
        raise DatasetError(
            "no complete transition left: every episode is a single truncated step; pass next_observations"
        )
    kept = np.flatnonzero(keep)
    lens = new_len[keep_ep].astype(np.int64)
    ep_new = np.cumsum(keep_ep) - 1  # old episode -> new episode index
    out_start = np.concatenate([[0], np.cumsum(lens + 1)[:-1]])
    kept_start = np.concatenate([[0], np.cumsum(lens)[:-1]])
    e_of_kept = ep_new[ep_id[kept]]
    out_obs = np.empty((int((lens + 1).sum()),) + obs.shape[1:], dtype=np.float32)
    out_obs[out_start[e_of_kept] + np.arange(len(kept)) - kept_start[e_of_kept]] = obs[kept]
    out_obs[out_start + lens] = final_src[keep_ep]
    last = kept_start + lens - 1  # index into kept arrays of each new episode's last step
    term_out = np.zeros(len(kept), dtype=bool)
    trunc_out = np.zeros(len(kept), dtype=bool)
    term_out[last] = term[ends][keep_ep]
    trunc_out[last] = trunc[ends][keep_ep]
    meta = {
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "nvec": [int(m) for m in space.nvec],
        "observation_shape": list(obs.shape[1:]),
        "level": level,
        "behaviour": behaviour,
        "generator": generator,
        "reference": reference,
        "schema_version": SCHEMA_VERSION,
        "spinrl_version": _spinrl_version(),
        **extra_meta,
    }
    return OfflineDataset(out_obs, act[kept], rew[kept].astype(np.float32), term_out, trunc_out, lens, meta)


def from_episodes(
    episodes_obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
    episode_lengths: np.ndarray,
    meta: dict,
) -> OfflineDataset:
    """Build from the native layout (L + 1 observations per episode); used by our generators."""
    meta = dict(meta)
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta.setdefault("spinrl_version", _spinrl_version())
    meta.setdefault("observation_shape", list(np.asarray(episodes_obs).shape[1:]))
    return OfflineDataset(
        np.asarray(episodes_obs, dtype=np.float32),
        np.asarray(actions),
        np.asarray(rewards, dtype=np.float32),
        np.asarray(terminations, dtype=bool),
        np.asarray(truncations, dtype=bool),
        np.asarray(episode_lengths, dtype=np.int64),
        meta,
    )
