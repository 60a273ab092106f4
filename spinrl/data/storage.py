"""Datasets on disk: a directory of ``.npy`` files (no pickle, memory-mappable) plus ``meta.json`` with
the metadata and a SHA-256 per array. A write goes to a temporary sibling directory, is fsynced, then
renamed (or swapped) into place, so a failed or interrupted write leaves the previous dataset intact; a load
verifies the checksums and refuses symlinks out of the dataset, devices, and arrays whose header disagrees
with the file size.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from spinrl.data.dataset import ARRAYS, SCHEMA_VERSION, OfflineDataset, _spinrl_version
from spinrl.data.validation import check_meta_names
from spinrl.errors import DatasetError
from spinrl.utils import outdir
from spinrl.utils.rundir import sha256_file

MAX_META_BYTES = 16 << 20
"""a meta.json is a few KB; a bigger one (or /dev/zero behind a symlink) is not read into memory"""
MAX_ELEMENTS = 10**12
"""largest element count of one array a dataset may declare (about 4 TB of float32)"""

_DTYPES = {
    "observations": np.float32,
    "actions": None,  # smallest unsigned int that holds max(nvec) - 1
    "rewards": np.float32,
    "terminations": np.bool_,
    "truncations": np.bool_,
    "episode_lengths": np.int64,
}


def _action_dtype(nvec: np.ndarray) -> np.dtype:
    m = int(nvec.max())
    return np.dtype(np.uint8 if m <= 256 else np.uint16 if m <= 65536 else np.int64)


_sha256_file = sha256_file  # the name tests/reliability.py and tests/test_outdir.py import


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
    swapped = False
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
            checksums[name] = sha256_file(fpath)
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
        swapped = True  # from here on nothing of the user's may be removed with tmp
        _fsync_dir(path.parent)
        if old is not None:
            for name in outdir.remove_own(old, _OWN | {outdir.MARKER}):  # the user's own files stay, in the new dataset
                os.rename(old / name, path / name)
            old.rmdir()
        ds.meta = meta
        return path
    except BaseException:
        if not swapped:
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
        raise DatasetError(
            f"{path} is not a spinrl dataset directory (no meta.json); "
            "import foreign formats with 'spinrl data import-dmc'"
        )
    mpath = _regular_file(path, "meta.json")
    if mpath.stat().st_size > MAX_META_BYTES:
        raise DatasetError(
            f"{mpath} is larger than {MAX_META_BYTES >> 20} MB, not a spinrl meta.json; regenerate the dataset"
        )
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
    for key, kind, what in (
        ("checksums", dict, "an object"),
        ("observation_shape", list, "a list"),
        ("env_kwargs", (dict, type(None)), "an object"),
    ):
        if key in meta and not isinstance(meta[key], kind):
            raise DatasetError(
                f"{path}/meta.json field '{key}' must be {what}, got {type(meta[key]).__name__}; regenerate the dataset"
            )
    shape = meta.get("observation_shape", [])
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise DatasetError(
            f"{path}/meta.json field 'observation_shape' must list "
            f"non-negative integers, got {shape}; regenerate the dataset"
        )
    if int(np.prod([float(d) for d in shape])) > MAX_ELEMENTS:
        raise DatasetError(
            f"{path}/meta.json field 'observation_shape' {shape[:8]} is implausibly large; regenerate the dataset"
        )
    for key in ("num_transitions", "num_episodes"):
        v = meta.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ELEMENTS:
            raise DatasetError(
                f"{path}/meta.json field '{key}' must be an "
                f"integer in [0, {MAX_ELEMENTS:.0e}], got {v!r}; "
                "regenerate the dataset"
            )
    check_meta_names(meta, f"{path}/meta.json")
    return meta


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
        raise DatasetError(
            f"cannot read array '{name}' from {fpath} ({str(e)[:120]}); regenerate the dataset"
        ) from None
    n = 1
    for dim in shape:
        n *= int(dim)
    if n > MAX_ELEMENTS or dtype.hasobject:
        raise DatasetError(
            f"cannot read array '{name}' from {fpath}: it declares shape {shape} dtype {dtype}, not a "
            "spinrl array; regenerate the dataset"
        )
    if offset + n * dtype.itemsize != fpath.stat().st_size:
        raise DatasetError(
            f"cannot read array '{name}' from {fpath}: "
            f"{fpath.stat().st_size} bytes but its header declares "
            f"{offset + n * dtype.itemsize} (shape {shape}): "
            "truncated or padded; regenerate the dataset"
        )


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
            if sha256_file(fpath) != checksums[name]:
                raise DatasetError(
                    f"checksum mismatch for '{name}' in {path}: the file was "
                    "truncated or edited; regenerate or re-copy the dataset"
                )
        _check_npy_size(fpath, name)
        try:
            arrays[name] = np.load(fpath, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"cannot read array '{name}' from {fpath} ({e}); regenerate the dataset") from None
    return OfflineDataset(meta=meta, **arrays)
