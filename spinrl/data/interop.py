"""Read and write the public factorised-DMC dataset files.

The public benchmark ships each dataset as ``<root>/<bins>_bins/<domain>-<task>-<level>`` (no
extension): a pickled Python list of ``(state, action, reward, next_state, done)`` tuples. Unpickling
runs code chosen by whoever wrote the file, so :func:`import_public_dmc` reads it with a restricted
unpickler that only resolves the handful of globals numpy arrays, numpy scalars and dtypes need;
any other global is refused *before* it is called.

Episode boundaries are not stored: an episode ends where ``done`` is set or where
``next_state[t] != state[t + 1]``. ``done`` in these files is most likely the 1000-step time limit,
i.e. a truncation (bootstrap through it); the importer reports what it saw and how it read ``done``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spinrl.data.constructors import from_arrays
from spinrl.data.dataset import OfflineDataset
from spinrl.data.validation import check_meta_names
from spinrl.errors import DatasetError

# Public benchmark reference scores (docs/benchmarks.md section 1): (domain-task, bins) -> (random, expert).
PUBLIC_REFERENCE: dict[tuple[str, int], tuple[float, float]] = {
    ("finger-spin", 3): (4.36, 853.62),
    ("fish-swim", 3): (72.32, 418.58),
    ("cheetah-run", 3): (5.39, 664.57),
    ("quadruped-walk", 3): (121.37, 781.19),
    ("humanoid-stand", 3): (4.54, 711.9),
    ("dog-trot", 3): (7.32, 724.37),
    ("dog-trot", 10): (6.48, 736.95),
    ("dog-trot", 30): (6.39, 768.24),
    ("dog-trot", 50): (6.1, 752.58),
    ("dog-trot", 75): (6.31, 803.05),
    ("dog-trot", 100): (6.14, 756.86),
}
# (N sub-actions, observation dim) of the benchmark's tasks, to catch a file/task mix-up early.
PUBLIC_SHAPES: dict[str, tuple[int, int]] = {
    "cheetah-run": (6, 17),
    "finger-spin": (2, 9),
    "fish-swim": (5, 24),
    "quadruped-walk": (12, 78),
    "humanoid-stand": (21, 67),
    "dog-trot": (38, 223),
}
DMC_TIME_LIMIT = 1000
_CHUNK = 32768  # steps converted per pass when reading a pickle (bounds the float64 temporaries)
BEHAVIOUR = "public factorised-DMC dataset"

DoneMeans = Literal["auto", "truncation", "termination"]


# ---------------------------------------------------------------------- restricted unpickler
def _allowed_globals() -> dict[tuple[str, str], Any]:
    import builtins

    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,  # ndarray(shape) allocates what it is told: bounded
        ("numpy", "dtype"): np.dtype,
        # protocol 2 pickles of bytes (numpy array payloads) go through _codecs.encode(str, "latin1")
        ("_codecs", "encode"): _encode_latin1,
    }
    # Files written under numpy 1.x name numpy.core, under numpy 2.x numpy._core: accept both, and
    # resolve them to the installed objects ourselves (never by importing the named module).
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = _bounded(_reconstruct, lambda c=None, s=0, *a: _shape_bytes(s))
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        # protocol 5 arrays; numpy's stubs leave out this private reconstructor
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    for name in ("list", "tuple", "dict", "set", "frozenset", "bytearray", "bytes", "complex", "int", "float", "bool"):
        allowed[("builtins", name)] = getattr(builtins, name)
        allowed[("__builtin__", name)] = getattr(builtins, name)  # protocol <= 2 from Python 2
    for key in [k for k in allowed if k[1] in ("bytes", "bytearray")]:  # bytes(10**12) allocates what it is told
        allowed[key] = _bounded(allowed[key], lambda x=0, *a: x if isinstance(x, int) else 0)
    return allowed


MAX_ALLOC = 1 << 28
"""largest allocation (bytes) a pickle may request by size (bytes(n), ndarray(shape)); real files never do"""


def _shape_bytes(shape: Any, dtype: Any = None) -> int:
    try:
        dims = [int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,))]
        n = int(np.dtype(dtype).itemsize) if dtype is not None else 8
    except (TypeError, ValueError):
        return 0  # not a size: the callable itself raises
    for d in dims:
        n *= max(d, 0)
    return n


def _bounded(fn: Any, size: Any) -> Any:
    """``fn`` refusing calls whose ``size(*args)`` exceeds MAX_ALLOC (a few bytes asking for terabytes)."""

    def call(*args, **kw):
        if size(*args) > MAX_ALLOC:
            raise DatasetError(
                f"the pickle asks {getattr(fn, '__name__', fn)} for more than {MAX_ALLOC >> 20} MB in "
                "one call; refused (a real public dataset never does)"
            )
        return fn(*args, **kw)

    return call


def _encode_latin1(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> Any:
    import codecs

    if encoding not in ("latin1", "latin-1"):
        raise DatasetError(
            f"the pickle calls _codecs.encode with {encoding!r}; refused (only latin1 is used for arrays)"
        )
    return codecs.encode(obj, encoding, errors)


_NDARRAY = _bounded(np.ndarray, lambda shape=0, dtype=float, *a: _shape_bytes(shape, dtype))


def _reconstruct(cls: Any, *args: Any) -> Any:
    """numpy's ``_reconstruct`` given the real ndarray class for the bounded stand-in that ``numpy.ndarray``
    resolves to."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct as rec
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as rec  # type: ignore[no-redef]
    return rec(np.ndarray if cls is _NDARRAY else cls, *args)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array/scalar/dtype globals and builtin containers.

    Any other global (``os.system``, ``builtins.eval``, a class from some package, ...) raises
    :class:`DatasetError` from ``find_class``, i.e. before the pickle can call it.
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        obj = RestrictedUnpickler._ALLOWED.get((module, name))
        if obj is None:
            raise DatasetError(
                f"the pickle references {module}.{name}, which was refused for safety (only numpy arrays, "
                "numpy scalars/dtypes and builtin containers are loaded; nothing was executed); "
                "only import files from a source you trust, or convert them to arrays yourself"
            )
        return obj


class _HashingReader:
    """File wrapper that feeds everything read through SHA-256 (provenance without a second pass)."""

    def __init__(self, f):
        self._f = f
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self.sha256.update(b)
        return b

    def readline(self) -> bytes:
        b = self._f.readline()
        self.sha256.update(b)
        return b

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        self.sha256.update(memoryview(buf)[:n])
        return n


def restricted_load(path: str | os.PathLike) -> tuple[Any, str]:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; returns ``(object, sha256 of the file)``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            reader = _HashingReader(f)
            obj = RestrictedUnpickler(reader).load()
            reader.sha256.update(f.read())  # trailing bytes after STOP, if any
    except DatasetError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        RecursionError,
        OverflowError,
    ) as e:
        raise DatasetError(
            f"{path} is not a readable pickle ({e.__class__.__name__}: {e}); the file is truncated, corrupted or not "
            "a public factorised-DMC dataset"
        ) from None
    return obj, reader.sha256.hexdigest()


# ---------------------------------------------------------------------- paths
_BINS_DIR = re.compile(r"^(\d+)_bins$")


def parse_public_path(
    path: str | os.PathLike, env_id: str | None = None, bins: int | None = None, level: str | None = None
) -> tuple[str, int | None, str]:
    """``(env_id, bins, level)`` from ``<root>/<bins>_bins/<domain>-<task>-<level>``; explicit args win."""
    path = Path(path)
    name = path.name
    if bins is None:
        m = _BINS_DIR.match(path.parent.name)
        bins = int(m.group(1)) if m else None
    if env_id is None:
        parts = name.split("-")
        if len(parts) < 3 or not all(parts[:3]):
            raise DatasetError(
                f"cannot infer the task from the file name '{name}' (expected <domain>-<task>-<level>, "
                "e.g. cheetah-run-medium-expert); pass env_id='dmc:<domain>-<task>' and level=..."
            )
        env_id = f"dmc:{parts[0]}-{parts[1]}"
        if level is None:
            level = "-".join(parts[2:])
    elif level is None:
        task = env_id.split(":", 1)[-1]
        if name.startswith(task + "-") and len(name) > len(task) + 1:
            level = name[len(task) + 1 :]
        else:
            raise DatasetError(
                f"cannot infer the level from the file name '{name}' for env {env_id}; pass level=... "
                "(e.g. medium, expert, medium-expert, random-medium-expert)"
            )
    return env_id, bins, level


# ---------------------------------------------------------------------- import
def _column(data: list, j: int, t0: int, t1: int, what: str) -> np.ndarray:
    try:
        return np.stack([np.asarray(data[t][j]) for t in range(t0, t1)])
    except ValueError as e:
        raise DatasetError(
            f"{what} in steps {t0}..{t1 - 1} have inconsistent shapes ({e}); the file is malformed"
        ) from None


def _decode_actions(raw: np.ndarray, bins: int | None) -> tuple[np.ndarray, str, int]:
    """Integer sub-action indices [T, N] from indices, bin-grid values or one-hot; returns (idx, encoding, bins)."""
    a = np.asarray(raw)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim == 3:
        if not (np.isin(a, (0, 1)).all() and (a.sum(-1) == 1).all()):
            raise DatasetError(
                f"actions have shape {a.shape[1:]} per step but are not one-hot over the last axis; "
                "expected [N] indices, [N] bin values or [N, bins] one-hot"
            )
        if bins is not None and a.shape[2] != bins:
            raise DatasetError(f"one-hot actions have {a.shape[2]} bins but bins={bins}; pass the right bins")
        return a.argmax(-1).astype(np.int64), "one-hot [N, bins]", int(a.shape[2])
    if a.ndim != 2:
        raise DatasetError(f"actions must be [N] per step (or [N, bins] one-hot), got shape {a.shape[1:]} per step")
    if bins is None:
        raise DatasetError(
            "cannot tell the number of bins: the file is not inside a '<bins>_bins' folder and the actions are "
            "not one-hot; pass bins=..."
        )
    if np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_):
        idx = a.astype(np.int64)
        encoding = "integer indices"
    else:
        if not np.issubdtype(a.dtype, np.floating):
            raise DatasetError(f"actions must be numeric, got dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise DatasetError("actions contain NaN/inf; the file is corrupted")
        if a.size and np.all(a == np.round(a)) and a.min() >= 0 and a.max() <= bins - 1:
            # Non-negative whole numbers: indices. (The grid is symmetric, so data on it would show -1.)
            return a.astype(np.int64), "integer indices (stored as floats)", bins
        grid = np.linspace(-1.0, 1.0, bins)
        idx = np.clip(np.rint((a + 1.0) / 2.0 * (bins - 1)), 0, bins - 1).astype(np.int64)
        err = np.abs(grid[idx] - a)
        tol = 1e-3 * (2.0 / (bins - 1))
        if (err > tol).any():
            t, i = (int(v) for v in np.argwhere(err > tol)[0])
            raise DatasetError(
                f"action value {float(a[t, i]):.6g} (step {t}, sub-action {i}) is not on the bin grid "
                f"linspace(-1, 1, {bins}) (nearest {grid[idx[t, i]]:.6g}); pass the right bins"
            )
        encoding = f"continuous values on linspace(-1, 1, {bins})"
    if idx.size and (idx.min() < 0 or idx.max() >= bins):
        raise DatasetError(
            f"action index {int(idx.min() if idx.min() < 0 else idx.max())} is outside [0, {bins}); pass the right bins"
        )
    return idx, encoding, bins


_SCALARS = (int, float, bool, np.number, np.bool_)


def _size(x: Any, depth: int, limit: int) -> int:
    """Elements in a numeric vector (ndarray or flat list of numbers, nested ``depth`` more levels at most);
    -1 if ``x`` is anything else, ``limit + 1`` as soon as it is known to hold more than ``limit``."""
    if isinstance(x, np.ndarray):
        return x.size if x.ndim <= depth + 1 and (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) else -1
    if not isinstance(x, (list, tuple)):
        return -1
    if len(x) > limit:
        return limit + 1
    if all(isinstance(v, _SCALARS) for v in x):
        return len(x)
    if depth == 0:
        return -1
    n = 0
    for v in x:
        k = _size(v, depth - 1, limit - n)
        if k < 0 or n + k > limit:
            return k if k < 0 else limit + 1
        n += k
    return n


def check_items(data: list, path: Path, budget: int) -> None:
    """Every item is (state, action, reward, next_state, done) of numbers, vectors at most one level nested
    (one-hot actions), and the elements of all items together stay within ``budget`` (about one per byte of
    the file): pickle memo references let a few KB name the same nested list 10**10 times, and converting
    that would never finish. Checked before anything is converted."""
    total = 0
    for t, item in enumerate(data):
        if not isinstance(item, (tuple, list)) or len(item) != 5:
            raise DatasetError(
                f"item {t} of {path} is a {type(item).__name__}"
                f"{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}; "
                "expected (state, action, reward, next_state, done)"
            )
        for j, (what, depth) in enumerate((("state", 0), ("action", 1), ("reward", 0), ("next_state", 0), ("done", 0))):
            x = item[j]
            n = 1 if isinstance(x, _SCALARS) else _size(x, depth, budget - total)
            if n < 0 or (j in (2, 4) and n != 1):
                raise DatasetError(
                    f"item {t} of {path}: {what} is a {type(x).__name__} that is not "
                    f"{'a number' if j in (2, 4) else 'a numeric vector'}; the file is malformed"
                )
            total += n
        if total > budget:
            raise DatasetError(
                f"{path} expands to more than {budget} numbers by item {t} (repeated references to the "
                "same objects); refused, the file is malformed or hostile"
            )


def _describe_lengths(lengths: np.ndarray, limit: int = 6) -> str:
    vals, counts = np.unique(lengths, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    parts = [f"{int(vals[k])} x{int(counts[k])}" for k in order]
    more = f", ... ({len(vals) - limit} more distinct lengths)" if len(vals) > limit else ""
    return ", ".join(parts) + more


def import_public_dmc(
    path: str | os.PathLike,
    env_id: str | None = None,
    bins: int | None = None,
    level: str | None = None,
    done_means: DoneMeans = "auto",
    time_limit: int | None = None,
) -> tuple[OfflineDataset, str]:
    """Import a public factorised-DMC pickle file into an :class:`OfflineDataset`.

    Args:
        path: ``<root>/<bins>_bins/<domain>-<task>-<level>``.
        env_id: e.g. ``"dmc:cheetah-run"``; default inferred from the file name.
        bins: bins per action dimension; default from the ``<bins>_bins`` folder (or one-hot width).
        level: dataset level; default inferred from the file name (may contain dashes).
        done_means: how a set ``done`` flag is read. ``"auto"``: a done that ends an episode of exactly
            ``time_limit`` steps is the time limit (truncation, bootstrap through it), any other done is
            a termination. ``"truncation"``/``"termination"`` force one reading.
        time_limit: episode cap used by ``"auto"``; default 1000 for ``dmc:`` envs, else none (every
            done is then a termination).

    Returns:
        ``(dataset, report)``; the report says how actions were encoded, how many done flags there were,
        the episode lengths seen and how done was interpreted.

    Raises:
        DatasetError: unsafe or malformed pickle, unknown bins/task, actions off the bin grid, shape
            mismatch with the task, NaN/inf.
    """
    if done_means not in ("auto", "truncation", "termination"):
        raise DatasetError(f"done_means must be 'auto', 'truncation' or 'termination', got {done_means!r}")
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist or is not a file; expected <root>/<bins>_bins/<domain>-<task>-<level>"
        )
    env_id, bins, level = parse_public_path(path, env_id, bins, level)
    task = env_id.split(":", 1)[-1]
    if time_limit is None and env_id.startswith("dmc:"):
        time_limit = DMC_TIME_LIMIT

    data, sha = restricted_load(path)
    if isinstance(data, tuple):
        data = list(data)
    if not isinstance(data, list) or not data:
        raise DatasetError(
            f"{path} holds a {type(data).__name__}{' (empty)' if isinstance(data, (list, tuple)) else ''}; "
            "expected a non-empty list of (state, action, reward, next_state, done) tuples"
        )
    check_items(data, path, budget=path.stat().st_size + 10**6)
    T = len(data)

    # One chunked pass: float32 outputs, boundary test in the file's own precision.
    s0 = np.asarray(data[0][0])
    if s0.ndim != 1 or not np.issubdtype(s0.dtype, np.number):
        raise DatasetError(f"states must be 1-D numeric vectors, got shape {s0.shape} dtype {s0.dtype} at step 0")
    obs = np.empty((T, s0.shape[0]), dtype=np.float32)
    nxt = np.empty((T, s0.shape[0]), dtype=np.float32)
    state_break = np.zeros(T, dtype=bool)
    chunk = _CHUNK
    prev_next = None  # next_state of the last step of the previous chunk
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        s = _column(data, 0, t0, t1, "states")
        ns = _column(data, 3, t0, t1, "next_states")
        if s.shape[1:] != s0.shape or ns.shape[1:] != s0.shape:
            raise DatasetError(f"states/next_states in steps {t0}..{t1 - 1} do not have shape {s0.shape}")
        obs[t0:t1] = s
        nxt[t0:t1] = ns
        if prev_next is not None:
            state_break[t0 - 1] = not np.array_equal(prev_next, s[0])
        state_break[t0 : t1 - 1] = np.any(ns[:-1] != s[1:], axis=1)
        prev_next = ns[-1]
    actions_raw = np.stack([np.asarray(data[t][1]) for t in range(T)]) if T else np.zeros((0,))
    try:
        rewards = np.asarray([np.asarray(data[t][2], dtype=np.float64).reshape(()) for t in range(T)])
        done_raw = np.asarray([np.asarray(data[t][4]).reshape(()) for t in range(T)])
    except (ValueError, TypeError) as e:
        raise DatasetError(f"rewards and done flags must be scalars per step ({e})") from None
    del data
    is_binary = np.issubdtype(done_raw.dtype, np.number) and np.isin(done_raw, (0, 1)).all()
    if not (done_raw.dtype == np.bool_ or is_binary):
        raise DatasetError(f"done flags must be booleans or 0/1, got dtype {done_raw.dtype} with other values")
    done = done_raw.astype(bool)

    actions, encoding, bins = _decode_actions(actions_raw, bins)
    N = actions.shape[1]
    if task in PUBLIC_SHAPES and env_id.startswith("dmc:"):
        n_exp, d_exp = PUBLIC_SHAPES[task]
        if (N, obs.shape[1]) != (n_exp, d_exp):
            raise DatasetError(
                f"{path.name}: {N} sub-actions and {obs.shape[1]}-dim states, but {env_id} has {n_exp} sub-actions "
                f"and {d_exp}-dim observations; the file belongs to another task, pass the right env_id"
            )

    # Episode structure: ends at done or at a state discontinuity; the last step always ends one.
    ends_mask = done | state_break
    ends_mask[-1] = True
    ends = np.flatnonzero(ends_mask)
    lengths = np.diff(np.concatenate([[-1], ends]))
    done_end = done[ends]
    if done_means == "truncation":
        as_trunc = done_end.copy()
    elif done_means == "termination":
        as_trunc = np.zeros_like(done_end)
    else:
        as_trunc = done_end & (lengths == time_limit) if time_limit else np.zeros_like(done_end)
    term = np.zeros(T, dtype=bool)
    trunc = np.zeros(T, dtype=bool)
    term[ends[done_end & ~as_trunc]] = True
    # A cut without done (state jump, end of file) has a known successor: keep it as a truncation.
    trunc[ends[as_trunc | ~done_end]] = True

    reference = None
    if (task, bins) in PUBLIC_REFERENCE and env_id.startswith("dmc:"):
        random_score, expert_score = PUBLIC_REFERENCE[(task, bins)]
        reference = {"random": random_score, "expert": expert_score, "source": "public benchmark"}
    n_done = int(done.sum())
    n_term = int(term.sum())
    n_trunc_done = int((done_end & as_trunc).sum())
    generator = {
        "imported_from": str(path),
        "function": "spinrl.data.interop.import_public_dmc",
        "sha256": sha,
        "action_encoding": encoding,
        "done_means": done_means,
        "time_limit": time_limit,
        "done_flags": n_done,
        "done_as_truncation": n_trunc_done,
        "done_as_termination": n_term,
    }
    ds = from_arrays(
        obs,
        actions,
        rewards,
        term,
        trunc,
        nvec=[bins] * N,
        next_observations=nxt,
        env_id=env_id,
        env_kwargs={"bins": bins},
        level=level,
        behaviour=BEHAVIOUR,
        generator=generator,
        reference=reference,
    )

    E = len(lengths)
    frac_done = float(done_end.mean())
    if done_means == "auto":
        if n_done == 0:
            how = "no done flags: every episode end was found by a state discontinuity (or the end of the file)"
        elif n_term == 0:
            how = (
                f"every done ends a {time_limit}-step episode: done is the time-limit flag, imported as truncations "
                "(bootstrap through it)"
            )
        elif n_trunc_done == 0:
            how = (
                f"no done ends a {time_limit}-step episode: done imported as terminations (no bootstrap)"
                if time_limit
                else "no time limit known for this env: done imported as terminations (no bootstrap)"
            )
        else:
            how = (
                f"{n_trunc_done} dones end {time_limit}-step episodes (truncations), {n_term} end shorter or longer "
                "ones (terminations); pass done_means= to force one reading"
            )
        if n_term and env_id.startswith("dmc:"):
            how += "; note: DMC tasks never terminate, so done_means='truncation' may be what you want"
    else:
        how = f"done_means='{done_means}': every done imported as a {done_means}"
    n_breaks = int((state_break & ~done).sum())
    report = "\n".join(
        [
            f"imported {path} (restricted unpickler: only numpy arrays, numpy scalars/dtypes and builtin containers)",
            f"env {env_id}  bins {bins}  level {level}  sub-actions {N}  obs dim {obs.shape[1]}",
            f"actions        {encoding}",
            f"transitions    {T}   episodes {E}",
            f"done flags     {n_done} ({n_done / T:.3%} of steps); {frac_done:.1%} of episodes end with done",
            f"state jumps    {n_breaks} episode ends without done "
            "(next_state[t] != state[t+1]); last step ends the file",
            f"episode length {_describe_lengths(lengths)}",
            f"done read as   {how}",
            "reference      "
            + (
                f"random {reference['random']}, expert {reference['expert']} (public benchmark)"
                if reference
                else "none known"
            ),
        ]
    )
    return ds, report


# ---------------------------------------------------------------------- export
def export_public_dmc(ds: OfflineDataset, root: str | os.PathLike) -> Path:
    """Write ``ds`` as ``<root>/<bins>_bins/<domain>-<task>-<level>`` in the public pickle layout.

    Each transition becomes ``(state float32 [D], action int64 indices [N], reward float, next_state
    float32 [D], done bool)`` with ``done = terminated or truncated``. The file is written to a
    temporary sibling and renamed into place. :func:`import_public_dmc` reads it back with the same
    arrays and episode lengths; which flag ``done`` becomes follows its ``done_means`` (the format
    has one flag, so a dataset mixing terminations and truncations cannot round-trip both).

    Raises:
        DatasetError: the dataset is not a ``dmc:`` dataset with ``bins`` and a level.
    """
    env_id = ds.env_id or ""
    if not env_id.startswith("dmc:") or env_id.count("-") < 1:
        raise DatasetError(f"export-dmc needs a 'dmc:<domain>-<task>' dataset, this one has env_id {ds.env_id!r}")
    bins = ds.env_kwargs.get("bins")
    if not isinstance(bins, int) or any(m != bins for m in ds.nvec):
        raise DatasetError(
            f"export-dmc needs env_kwargs.bins equal to every nvec entry; got bins={bins!r}, nvec={list(ds.nvec)[:8]}"
        )
    level = ds.meta.get("level")
    if not level or "/" in str(level):
        raise DatasetError(f"export-dmc needs a level in the metadata (e.g. medium) for the file name, got {level!r}")
    task = env_id.split(":", 1)[1]
    check_meta_names(ds.meta, "export-dmc")
    out = Path(root) / f"{bins}_bins" / f"{task}-{level}"
    if Path(root).resolve() not in out.resolve().parents:  # never write outside --root, whatever the metadata says
        raise DatasetError(
            f"export-dmc: the file name from env_id {env_id!r} and level {level!r} leaves --root; fix the metadata"
        )
    out.parent.mkdir(parents=True, exist_ok=True)

    obs = ds.observations
    oi = ds._obs_index
    acts = np.asarray(ds.actions, dtype=np.int64)
    rew = np.asarray(ds.rewards, dtype=np.float32)
    done = np.asarray(ds.terminations, dtype=bool) | np.asarray(ds.truncations, dtype=bool)
    obs32 = np.asarray(obs, dtype=np.float32).reshape(obs.shape[0], -1)
    # Rows are views (no per-step copies); each is serialised as its own array, as the public files are.
    data = [(obs32[oi[t]], acts[t], float(rew[t]), obs32[oi[t] + 1], bool(done[t])) for t in range(ds.num_transitions)]
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=4)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
