"""Loud, early checks of a dataset's arrays (shapes, dtypes, 0 <= a_i < m_i, NaN/inf, terminations vs
truncations) and of the metadata strings that become file names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spinrl.errors import DatasetError
from spinrl.spaces import FactoredSpace, as_nvec

if TYPE_CHECKING:
    from spinrl.data.dataset import OfflineDataset

_NAME_FIELDS = ("env_id", "level")


def validate(ds: "OfflineDataset") -> None:
    """Loud, early checks of shapes, dtypes, ranges, finiteness and episode structure of an
    :class:`~spinrl.data.OfflineDataset` (what its constructor runs)."""
    meta = ds.meta
    for key in ("nvec",):
        if key not in meta:
            raise DatasetError(f"metadata field '{key}' is missing; pass nvec=... when building the dataset")
    space = FactoredSpace(as_nvec(meta["nvec"], "meta.nvec"))
    check_meta_names(meta, "metadata")
    lengths = np.asarray(ds.episode_lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise DatasetError(
            f"episode_lengths must be a 1-D integer array, got shape {lengths.shape} dtype {lengths.dtype}"
        )
    if len(lengths) == 0:
        raise DatasetError("dataset has no episodes; provide at least one transition")
    if np.any(lengths <= 0):
        i = int(np.argmax(lengths <= 0))
        raise DatasetError(f"episode_lengths[{i}] = {int(lengths[i])}: zero-length episodes are not allowed; drop them")
    T = int(lengths.sum())
    E = len(lengths)
    a = np.asarray(ds.actions)
    if a.ndim != 2 or a.shape[0] != T:
        raise DatasetError(f"actions must have shape [{T}, {space.n}] (transitions, sub-actions), got {a.shape}")
    if a.shape[1] != space.n:
        raise DatasetError(
            f"actions have {a.shape[1]} columns but nvec has {space.n} sub-actions; fix nvec or the actions"
        )
    space.validate(a, "actions")
    obs = np.asarray(ds.observations)
    if obs.ndim < 2 or 0 in obs.shape[1:]:
        raise DatasetError(f"observations must have shape [rows, obs_dim] with obs_dim >= 1, got {obs.shape}")
    if obs.shape[0] != T + E:
        raise DatasetError(
            f"observations must have {T + E} rows (transitions + one "
            f"final observation per episode), got shape {obs.shape}"
        )
    if not np.issubdtype(obs.dtype, np.floating):
        raise DatasetError(f"observations must be floating point, got dtype {obs.dtype}; cast with .astype(np.float32)")
    if "observation_shape" in meta and list(meta["observation_shape"]) != list(obs.shape[1:]):
        raise DatasetError(
            f"observations have shape {list(obs.shape[1:])} per step "
            f"but meta.observation_shape is {meta['observation_shape']}"
        )
    for name in ("rewards", "terminations", "truncations"):
        arr = np.asarray(getattr(ds, name))
        if arr.shape != (T,):
            raise DatasetError(f"{name} must have shape [{T}], got {arr.shape}")
    if not np.issubdtype(np.asarray(ds.rewards).dtype, np.floating):
        raise DatasetError(f"rewards must be floating point, got dtype {np.asarray(ds.rewards).dtype}")
    _check_finite(obs, "observations")
    _check_finite(np.asarray(ds.rewards), "rewards")
    term = np.asarray(ds.terminations).astype(bool)
    trunc = np.asarray(ds.truncations).astype(bool)
    if np.any(term & trunc):
        i = int(np.argmax(term & trunc))
        raise DatasetError(f"transition {i} is both terminated and truncated; a step ends an episode one way only")
    ends = np.cumsum(lengths) - 1
    not_end = np.ones(T, dtype=bool)
    not_end[ends] = False
    if np.any((term | trunc) & not_end):
        i = int(np.argmax((term | trunc) & not_end))
        raise DatasetError(
            f"transition {i} is marked done but is not the last step of its episode; fix episode_lengths"
        )


def _check_finite(arr: np.ndarray, name: str, chunk: int = 1 << 20) -> None:
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    rows = max(1, chunk // max(flat.shape[1], 1))
    for i in range(0, flat.shape[0], rows):
        block = flat[i : i + rows]
        ok = np.isfinite(block)
        if not ok.all():
            r, c = np.argwhere(~ok)[0]
            raise DatasetError(
                f"{name}[{i + int(r)}] contains {block[r, c]} (NaN/inf); "
                "clean or drop those steps before building the dataset"
            )


def safe_name(value: Any, field: str) -> None:
    """Metadata strings that become file names (export-dmc writes <task>-<level>) must not escape a folder:
    no path separators, no NUL, not '.' or '..', bounded length."""
    if value is None:
        return
    if not isinstance(value, str):
        raise DatasetError(f"metadata field '{field}' must be a string, got {type(value).__name__}; fix the metadata")
    if (
        any(c in value for c in "/\\\0")
        or value.split(":")[-1] in (".", "..")
        or value.startswith(".")
        or len(value) > 200
    ):
        raise DatasetError(
            f"metadata field '{field}' = {value[:80]!r} is not a safe name (no '/', '\\', '..', leading "
            "'.' or absolute paths); fix the metadata"
        )


def check_meta_names(meta: dict, where: str) -> None:
    for key in _NAME_FIELDS:
        try:
            safe_name(meta.get(key), key)
        except DatasetError as e:
            raise DatasetError(f"{where}: {e}") from None
