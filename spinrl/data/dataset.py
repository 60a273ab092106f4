"""The one offline dataset format every part of spinrl reads and writes.

Layout in memory: transitions are grouped into episodes. Each episode of length L stores L + 1
observations (the last one is the final next-observation), so ``next_observations`` are derived by
index arithmetic, never stored twice. On disk a dataset is a directory of ``.npy`` files (no
pickle, memory-mappable) plus ``meta.json`` holding the metadata and a SHA-256 per array; it is
written to a temporary directory and renamed into place, so a failed or interrupted write leaves the
previous dataset intact.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from spinrl.errors import DatasetError
from spinrl.utils import outdir
from spinrl.spaces import FactoredSpace, as_nvec

SCHEMA_VERSION = 1
ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations", "episode_lengths")
_DTYPES = {
    "observations": np.float32,
    "actions": None,  # smallest unsigned int that holds max(nvec) - 1
    "rewards": np.float32,
    "terminations": np.bool_,
    "truncations": np.bool_,
    "episode_lengths": np.int64,
}


def _spinrl_version() -> str:
    from spinrl import __version__

    return __version__


def _action_dtype(nvec: np.ndarray) -> np.dtype:
    m = int(nvec.max())
    return np.dtype(np.uint8 if m <= 256 else np.uint16 if m <= 65536 else np.int64)


@dataclass
class Summary:
    """What ``spinrl data info`` prints; ``as_dict()`` is its ``--json`` form."""

    episodes: int
    transitions: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float
    normalized_score: float | None
    reference: dict | None
    termination_fraction: float
    truncation_fraction: float
    action_histograms: list[list[int]]
    meta: dict
    by_source: dict | None = None

    def as_dict(self) -> dict:
        return {
            "episodes": self.episodes,
            "transitions": self.transitions,
            "episode_return": {
                "mean": self.return_mean,
                "std": self.return_std,
                "min": self.return_min,
                "max": self.return_max,
            },
            "normalized_score": self.normalized_score,
            "reference_scores": self.reference,
            "termination_fraction": self.termination_fraction,
            "truncation_fraction": self.truncation_fraction,
            "action_histograms": self.action_histograms,
            "by_source": self.by_source,
            "env_id": self.meta.get("env_id"),
            "env_kwargs": self.meta.get("env_kwargs"),
            "nvec": self.meta.get("nvec"),
            "observation_shape": self.meta.get("observation_shape"),
            "level": self.meta.get("level"),
            "behaviour": self.meta.get("behaviour"),
            "generator": self.meta.get("generator"),
            "schema_version": self.meta.get("schema_version"),
            "spinrl_version": self.meta.get("spinrl_version"),
            "checksum": self.meta.get("checksum"),
        }

    def format(self) -> str:
        """Human-readable multi-line summary."""
        m = self.meta
        lines = [
            f"env            {m.get('env_id')} {m.get('env_kwargs') or ''}",
            f"level          {m.get('level')}   behaviour: {m.get('behaviour')}",
            f"nvec           {FactoredSpace(m['nvec']).describe()} (N={len(m.get('nvec', []))})",
            f"observations   shape {m.get('observation_shape')}",
            f"episodes       {self.episodes}",
            f"transitions    {self.transitions}",
            f"episode return mean {self.return_mean:.3f}  std {self.return_std:.3f}  "
            f"min {self.return_min:.3f}  max {self.return_max:.3f}",
        ]
        if self.normalized_score is not None and self.reference:
            ref = self.reference
            lines.append(
                f"normalized     {self.normalized_score:.1f}  (random {ref['random']:.2f}, expert {ref['expert']:.2f}; "
                f"source: {ref.get('source')})"
            )
        lines.append(
            f"episode ends   terminated {self.termination_fraction:.1%}  truncated {self.truncation_fraction:.1%} of episodes"
        )
        for src, b in (self.by_source or {}).items():
            norm = "" if b["normalized_score"] is None else f"  normalized {b['normalized_score']:.1f}"
            lines.append(f"  from {src:<8} {b['episodes']:>6} episodes {b['transitions']:>8} transitions  "
                         f"return {b['return_mean']:.2f} +/- {b['return_std']:.2f}{norm}")
        for i, h in enumerate(self.action_histograms[:40]):
            tot = max(sum(h), 1)
            lines.append(f"  sub-action {i:>2}: " + " ".join(f"{c / tot:.2f}" for c in h))
        if len(self.action_histograms) > 40:
            lines.append(f"  ... {len(self.action_histograms) - 40} more sub-actions")
        return "\n".join(lines)


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
        """Loud, early checks of shapes, dtypes, ranges, finiteness and episode structure."""
        meta = self.meta
        for key in ("nvec",):
            if key not in meta:
                raise DatasetError(f"metadata field '{key}' is missing; pass nvec=... when building the dataset")
        space = FactoredSpace(as_nvec(meta["nvec"], "meta.nvec"))
        check_meta_names(meta, "metadata")
        lengths = np.asarray(self.episode_lengths)
        if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
            raise DatasetError(f"episode_lengths must be a 1-D integer array, got shape {lengths.shape} dtype {lengths.dtype}")
        if len(lengths) == 0:
            raise DatasetError("dataset has no episodes; provide at least one transition")
        if np.any(lengths <= 0):
            i = int(np.argmax(lengths <= 0))
            raise DatasetError(f"episode_lengths[{i}] = {int(lengths[i])}: zero-length episodes are not allowed; drop them")
        T = int(lengths.sum())
        E = len(lengths)
        a = np.asarray(self.actions)
        if a.ndim != 2 or a.shape[0] != T:
            raise DatasetError(f"actions must have shape [{T}, {space.n}] (transitions, sub-actions), got {a.shape}")
        if a.shape[1] != space.n:
            raise DatasetError(f"actions have {a.shape[1]} columns but nvec has {space.n} sub-actions; fix nvec or the actions")
        space.validate(a, "actions")
        obs = np.asarray(self.observations)
        if obs.ndim < 2 or 0 in obs.shape[1:]:
            raise DatasetError(f"observations must have shape [rows, obs_dim] with obs_dim >= 1, got {obs.shape}")
        if obs.shape[0] != T + E:
            raise DatasetError(
                f"observations must have {T + E} rows (transitions + one final observation per episode), got shape {obs.shape}"
            )
        if not np.issubdtype(obs.dtype, np.floating):
            raise DatasetError(f"observations must be floating point, got dtype {obs.dtype}; cast with .astype(np.float32)")
        if "observation_shape" in meta and list(meta["observation_shape"]) != list(obs.shape[1:]):
            raise DatasetError(
                f"observations have shape {list(obs.shape[1:])} per step but meta.observation_shape is {meta['observation_shape']}"
            )
        for name in ("rewards", "terminations", "truncations"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (T,):
                raise DatasetError(f"{name} must have shape [{T}], got {arr.shape}")
        if not np.issubdtype(np.asarray(self.rewards).dtype, np.floating):
            raise DatasetError(f"rewards must be floating point, got dtype {np.asarray(self.rewards).dtype}")
        _check_finite(obs, "observations")
        _check_finite(np.asarray(self.rewards), "rewards")
        term = np.asarray(self.terminations).astype(bool)
        trunc = np.asarray(self.truncations).astype(bool)
        if np.any(term & trunc):
            i = int(np.argmax(term & trunc))
            raise DatasetError(f"transition {i} is both terminated and truncated; a step ends an episode one way only")
        ends = np.cumsum(lengths) - 1
        not_end = np.ones(T, dtype=bool)
        not_end[ends] = False
        if np.any((term | trunc) & not_end):
            i = int(np.argmax((term | trunc) & not_end))
            raise DatasetError(f"transition {i} is marked done but is not the last step of its episode; fix episode_lengths")

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
            out = tuple(t.to(device, non_blocking=True) for t in out)
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
    def summary(self) -> Summary:
        rets = self.episode_returns()
        ref = self.meta.get("reference")
        norm = None
        if ref and ref.get("random") is not None and ref.get("expert") is not None and ref["expert"] != ref["random"]:
            norm = float(100.0 * (rets.mean() - ref["random"]) / (ref["expert"] - ref["random"]))
        lengths = np.asarray(self.episode_lengths)
        ends = np.cumsum(lengths) - 1
        acts = np.asarray(self.actions, dtype=np.int64)
        nvec = np.asarray(self.nvec)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        counts = np.bincount((acts + offsets).ravel(), minlength=int(nvec.sum()))
        hists = [counts[o : o + m].tolist() for o, m in zip(offsets, nvec)]
        by_source = None
        sources = self.meta.get("episode_sources")
        if sources and sum(int(n) for _, n in sources) == self.num_episodes:
            by_source, lo = {}, 0
            lengths_all = np.asarray(self.episode_lengths)
            for src, n in sources:
                r = rets[lo : lo + int(n)]
                entry = by_source.setdefault(str(src), {"episodes": 0, "transitions": 0, "_r": []})
                entry["episodes"] += int(n)
                entry["transitions"] += int(lengths_all[lo : lo + int(n)].sum())
                entry["_r"].append(r)
                lo += int(n)
            for entry in by_source.values():
                r = np.concatenate(entry.pop("_r"))
                entry["return_mean"], entry["return_std"] = float(r.mean()), float(r.std())
                entry["normalized_score"] = None if norm is None else float(
                    100.0 * (r.mean() - ref["random"]) / (ref["expert"] - ref["random"]))
        return Summary(
            by_source=by_source,
            episodes=self.num_episodes,
            transitions=self.num_transitions,
            return_mean=float(rets.mean()),
            return_std=float(rets.std()),
            return_min=float(rets.min()),
            return_max=float(rets.max()),
            normalized_score=norm,
            reference=ref,
            termination_fraction=float(np.asarray(self.terminations)[ends].mean()),
            truncation_fraction=float(np.asarray(self.truncations)[ends].mean()),
            action_histograms=hists,
            meta=self.meta,
        )

    # ------------------------------------------------------------------ disk
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write atomically: a temporary sibling directory, fsync, then rename over ``path`` (see ``save``)."""
        return save(self, path, overwrite)

    @staticmethod
    def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> "OfflineDataset":
        return load(path, mmap=mmap, verify=verify)


def _check_finite(arr: np.ndarray, name: str, chunk: int = 1 << 20) -> None:
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    rows = max(1, chunk // max(flat.shape[1], 1))
    for i in range(0, flat.shape[0], rows):
        block = flat[i : i + rows]
        ok = np.isfinite(block)
        if not ok.all():
            r, c = np.argwhere(~ok)[0]
            raise DatasetError(
                f"{name}[{i + int(r)}] contains {block[r, c]} (NaN/inf); clean or drop those steps before building the dataset"
            )


def _sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(bufsize)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(ds: OfflineDataset, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``ds`` to directory ``path`` atomically; returns the path. See module docstring.

    A non-empty ``path`` must be a spinrl dataset (or ``overwrite``); files in it that spinrl did not write
    are moved into the new dataset, never deleted."""
    path = Path(path)
    outdir.check_out(path, "dataset", overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with outdir.Lock(path.parent / f".{path.name}{outdir.LOCK}", f"--out {path}"):
        return _save(ds, path)


_OWN = {f"{n}.npy" for n in ARRAYS} | {"meta.json"}


def _save(ds: OfflineDataset, path: Path) -> Path:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        nvec = np.asarray(ds.nvec)
        checksums = {}
        for name in ARRAYS:
            arr = np.asarray(getattr(ds, name))
            dtype = _action_dtype(nvec) if name == "actions" else _DTYPES[name]
            arr = np.ascontiguousarray(arr, dtype=dtype)
            fpath = tmp / f"{name}.npy"
            with open(fpath, "wb") as f:
                np.save(f, arr, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            checksums[name] = _sha256_file(fpath)
        meta = copy.deepcopy(ds.meta)
        meta["nvec"] = [int(m) for m in nvec]
        meta["observation_shape"] = list(np.asarray(ds.observations).shape[1:])
        meta["schema_version"] = SCHEMA_VERSION
        meta["spinrl_version"] = meta.get("spinrl_version") or _spinrl_version()
        meta["num_transitions"] = ds.num_transitions
        meta["num_episodes"] = ds.num_episodes
        meta["checksums"] = checksums
        meta["checksum"] = hashlib.sha256("".join(checksums[n] for n in ARRAYS).encode()).hexdigest()
        meta["meta_sha256"] = meta_digest(meta)
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        (tmp / outdir.MARKER).write_text(json.dumps({"kind": "dataset"}) + "\n")
        _fsync_dir(tmp)
        old = None
        if path.exists():
            if _exchange(tmp, path):
                # one atomic swap: at every instant `path` is either the old or the new dataset
                old = tmp
            else:
                old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(path, old)
                os.rename(tmp, path)
        else:
            os.rename(tmp, path)
        tmp = None  # from here on nothing of the user's may be removed with it
        _fsync_dir(path.parent)
        if old is not None:
            for name in outdir.remove_own(old, _OWN | {outdir.MARKER}):  # the user's own files stay, in the new dataset
                os.rename(old / name, path / name)
            old.rmdir()
        ds.meta = meta
        return path
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    return fn(AT_FDCWD, os.fsencode(str(a)), AT_FDCWD, os.fsencode(str(b)), RENAME_EXCHANGE) == 0


def _json_default(o: Any):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"metadata value of type {type(o).__name__} is not JSON-serializable")


def read_meta(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist; create it with 'spinrl data make' or check the path")
    if not path.is_dir() or not (path / "meta.json").exists():
        raise DatasetError(f"{path} is not a spinrl dataset directory (no meta.json); import foreign formats with 'spinrl data import-dmc'")
    mpath = _regular_file(path, "meta.json")
    if mpath.stat().st_size > MAX_META_BYTES:
        raise DatasetError(f"{mpath} is larger than {MAX_META_BYTES >> 20} MB, not a spinrl meta.json; regenerate the dataset")
    try:
        meta = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as e:
        raise DatasetError(f"{path}/meta.json is corrupted ({e.__class__.__name__}); regenerate the dataset") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}/meta.json must hold a JSON object; regenerate the dataset")
    version = meta.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DatasetError(f"{path}/meta.json has no integer schema_version; regenerate the dataset")
    if version > SCHEMA_VERSION:
        raise DatasetError(
            f"dataset schema_version {version} is newer than this spinrl supports ({SCHEMA_VERSION}); upgrade spinrl"
        )
    # Fields the loader indexes into must have the right JSON types, or a corrupt file fails with a TypeError.
    for key, kind, what in (("checksums", dict, "an object"), ("observation_shape", list, "a list"),
                            ("env_kwargs", (dict, type(None)), "an object")):
        if key in meta and not isinstance(meta[key], kind):
            raise DatasetError(f"{path}/meta.json field '{key}' must be {what}, got {type(meta[key]).__name__}; regenerate the dataset")
    shape = meta.get("observation_shape", [])
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise DatasetError(f"{path}/meta.json field 'observation_shape' must list non-negative integers, got {shape}; regenerate the dataset")
    if int(np.prod([float(d) for d in shape])) > MAX_ELEMENTS:
        raise DatasetError(f"{path}/meta.json field 'observation_shape' {shape[:8]} is implausibly large; regenerate the dataset")
    for key in ("num_transitions", "num_episodes"):
        v = meta.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ELEMENTS:
            raise DatasetError(f"{path}/meta.json field '{key}' must be an integer in [0, {MAX_ELEMENTS:.0e}], got {v!r}; "
                               "regenerate the dataset")
    check_meta_names(meta, f"{path}/meta.json")
    return meta


MAX_META_BYTES = 16 << 20
"""a meta.json is a few KB; a bigger one (or /dev/zero behind a symlink) is not read into memory"""
MAX_ELEMENTS = 10**12
"""largest element count of one array a dataset may declare (about 4 TB of float32)"""
_NAME_FIELDS = ("env_id", "level")


def safe_name(value: Any, field: str) -> None:
    """Metadata strings that become file names (export-dmc writes <task>-<level>) must not escape a folder:
    no path separators, no NUL, not '.' or '..', bounded length."""
    if value is None:
        return
    if not isinstance(value, str):
        raise DatasetError(f"metadata field '{field}' must be a string, got {type(value).__name__}; fix the metadata")
    if (any(c in value for c in "/\\\0") or value.split(":")[-1] in (".", "..") or value.startswith(".")
            or len(value) > 200):
        raise DatasetError(f"metadata field '{field}' = {value[:80]!r} is not a safe name (no '/', '\\', '..', leading "
                           "'.' or absolute paths); fix the metadata")


def check_meta_names(meta: dict, where: str) -> None:
    for key in _NAME_FIELDS:
        try:
            safe_name(meta.get(key), key)
        except DatasetError as e:
            raise DatasetError(f"{where}: {e}") from None


def _regular_file(root: Path, name: str) -> Path:
    """``root/name`` as a regular file inside ``root``: a symlink out of the dataset, a FIFO or a device (e.g.
    /dev/zero) would make reading it hang or fill memory, so it is refused before anything is read."""
    p = root / name
    if p.is_symlink():
        target, base = p.resolve(), root.resolve()
        if base not in target.parents:
            raise DatasetError(f"{p} is a symlink out of the dataset (to {target}); copy the real file in")
    try:
        st = p.stat()
    except OSError as e:
        raise DatasetError(f"cannot read {p} ({e.strerror}); regenerate the dataset") from None
    if not stat.S_ISREG(st.st_mode):
        raise DatasetError(f"{p} is not a regular file (a directory, FIFO or device); regenerate the dataset")
    return p


def _check_npy_size(fpath: Path, name: str) -> None:
    """The array header's declared shape must match the file size before the file is hashed or mapped."""
    try:
        with open(fpath, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f, max_header_size=10000)
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise DatasetError(f"cannot read array '{name}' from {fpath} ({str(e)[:120]}); regenerate the dataset") from None
    n = 1
    for dim in shape:
        n *= int(dim)
    if n > MAX_ELEMENTS or dtype.hasobject:
        raise DatasetError(f"cannot read array '{name}' from {fpath}: it declares shape {shape} dtype {dtype}, not a "
                           "spinrl array; regenerate the dataset")
    if offset + n * dtype.itemsize != fpath.stat().st_size:
        raise DatasetError(f"cannot read array '{name}' from {fpath}: {fpath.stat().st_size} bytes but its header declares "
                           f"{offset + n * dtype.itemsize} (shape {shape}): truncated or padded; regenerate the dataset")


def meta_digest(meta: dict) -> str:
    """SHA-256 of the metadata itself (canonical JSON, without this digest): catches edits of meta.json."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=_json_default).encode()).hexdigest()


def load(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> OfflineDataset:
    """Load a dataset directory; arrays are memory-mapped and checksums verified by default.

    Raises:
        DatasetError: missing files, checksum mismatch (truncated/edited file), bad schema, bad contents.
    """
    path = Path(path)
    meta = read_meta(path)
    if verify and "meta_sha256" in meta and meta_digest(meta) != meta["meta_sha256"]:
        raise DatasetError(
            f"checksum mismatch for meta.json in {path}: the file was corrupted or edited; regenerate or re-copy the "
            "dataset (after a deliberate edit, delete its meta_sha256 field)"
        )
    checksums = meta.get("checksums") or {}
    arrays = {}
    for name in ARRAYS:
        fpath = path / f"{name}.npy"
        if not fpath.exists():
            raise DatasetError(f"dataset {path} is missing array '{name}' ({fpath.name}); regenerate the dataset")
        _regular_file(path, fpath.name)
        if verify:
            if name not in checksums:
                raise DatasetError(f"meta.json has no checksum for '{name}'; regenerate the dataset")
            if _sha256_file(fpath) != checksums[name]:
                raise DatasetError(
                    f"checksum mismatch for '{name}' in {path}: the file was truncated or edited; regenerate or re-copy the dataset"
                )
        _check_npy_size(fpath, name)
        try:
            arrays[name] = np.load(fpath, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"cannot read array '{name}' from {fpath} ({e}); regenerate the dataset") from None
    return OfflineDataset(meta=meta, **arrays)


# ---------------------------------------------------------------------- construction
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
        raise DatasetError("no complete transition left: every episode is a single truncated step; pass next_observations")
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


def collect(
    env: Any,
    policy: Callable[[np.ndarray], Any],
    episodes: int,
    seed: int = 0,
    progress: bool = True,
    **meta: Any,
) -> OfflineDataset:
    """Roll out ``policy(obs) -> action`` in any Gymnasium env with a ``MultiDiscrete`` action space.

    Episode k is reset with seed ``seed + k``. Extra keyword arguments go into the metadata. An env made by
    ``gymnasium.make`` records its id and options (``env.spec``) as ``env_id``/``env_kwargs`` unless given,
    so training can evaluate on it (in another process, an id registered by your module is ``module:ID``).
    """
    import gymnasium as gym

    if not isinstance(env.action_space, gym.spaces.MultiDiscrete):
        raise DatasetError(
            f"collect needs a MultiDiscrete action space, the env has {type(env.action_space).__name__}; "
            "discretize it first (e.g. spinrl.envs.make('dmc:...', bins=3))"
        )
    if episodes <= 0:
        raise DatasetError(f"episodes must be positive, got {episodes}")
    nvec = np.asarray(env.action_space.nvec).reshape(-1)
    obs_l, act_l, rew_l, term_l, trunc_l, lens = [], [], [], [], [], []
    from spinrl.utils.progress import progress_bar

    bar = progress_bar(total=episodes, desc="collect", unit="ep", disable=not progress)
    for k in range(episodes):
        o, _ = env.reset(seed=seed + k)
        ep_obs = [np.asarray(o, dtype=np.float32).reshape(-1)]
        n = 0
        while True:
            a = np.asarray(policy(o)).reshape(-1)
            if not np.issubdtype(a.dtype, np.integer):  # 0.7 would be truncated to 0 without a word
                if not (np.issubdtype(a.dtype, np.number) and np.isfinite(a).all() and (a == np.round(a)).all()):
                    raise DatasetError(f"policy returned non-integer action {a.tolist()[:8]} in episode {k}; "
                                       "return sub-action indices (integers in [0, nvec))")
            o, r, te, tr, _ = env.step(a)
            ep_obs.append(np.asarray(o, dtype=np.float32).reshape(-1))
            act_l.append(a.astype(np.int64))
            rew_l.append(float(r))
            term_l.append(bool(te))
            trunc_l.append(bool(tr) and not bool(te))
            n += 1
            if te or tr:
                break
        obs_l.extend(ep_obs)
        lens.append(n)
        bar.update(1)
    bar.close()
    env_id, env_kwargs = meta.pop("env_id", None), meta.pop("env_kwargs", None)
    spec = getattr(env, "spec", None)
    if env_id is None and spec is not None:  # made by gymnasium.make: its id and options rebuild it for evaluation
        env_id = spec.id
        if env_kwargs is None:
            env_kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k != "render_mode"}
            try:
                json.dumps(env_kwargs)
            except TypeError:
                raise DatasetError(f"the env's options {sorted(env_kwargs)} are not JSON values; pass env_kwargs= "
                                   "with the JSON options that rebuild it (or env_kwargs={})") from None
    md = {
        "env_id": env_id,
        "env_kwargs": env_kwargs or {},
        "nvec": [int(m) for m in nvec],
        "generator": {"function": "spinrl.data.collect", "episodes": episodes, "seed": seed},
        **meta,
    }
    return from_episodes(np.stack(obs_l), np.stack(act_l), np.array(rew_l), np.array(term_l), np.array(trunc_l), np.array(lens), md)
