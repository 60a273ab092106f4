"""Output directories spinrl owns: a marker of their kind, refusal of anything else in the way, one writer.

Why: a user's folder that happens to hold a ``meta.json`` or ``config.json`` must never be replaced or
written into, and two processes writing one run directory mix their files. Every directory spinrl makes
(dataset, run, asm, behaviour, carry) holds ``.spinrl`` naming its kind; a non-empty directory without it
is refused unless ``--overwrite`` is given. Directories written before markers existed are recognised by
content only spinrl writes (a dataset's ``meta.json`` with schema_version and checksums, a run's
``config.json`` with config and resolved, ...). A ``.spinrl.lock`` (pid and host) keeps one writer; a lock
whose pid is dead on this host is stale and taken over.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from spinrl.errors import ConfigError

MARKER = ".spinrl"
LOCK = ".spinrl.lock"
_SMALL = 1 << 20  # legacy metadata read for recognition is at most this big (never a FIFO or /dev/zero)


def _json(path: Path):
    try:
        if not path.is_file() or path.stat().st_size > _SMALL:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def read_kind(path: str | os.PathLike) -> str | None:
    """The kind of spinrl directory ``path`` is (marker, else legacy content), or None if not spinrl's."""
    p = Path(path)
    m = _json(p / MARKER)
    if isinstance(m, dict) and isinstance(m.get("kind"), str):
        return m["kind"]
    meta = _json(p / "meta.json")
    if (
        isinstance(meta, dict)
        and isinstance(meta.get("schema_version"), int)
        and isinstance(meta.get("checksums"), dict)
    ):
        return "dataset"
    c = _json(p / "config.json")
    if isinstance(c, dict) and isinstance(c.get("config"), dict) and "resolved" in c:
        return "asm" if "mask_prob" in c["config"] else "run"
    if isinstance(c, dict) and "env" in c and "replay_capacity_resolved" in c:
        return "behaviour"
    carry = _json(p / "carry.json")
    if isinstance(carry, dict) and "kept" in carry and (p / "carry.pt").is_file():
        return "carry"
    return None


def check_out(path: str | os.PathLike, kind: str, overwrite: bool = False) -> bool:
    """Refuse an output path that is a file, or a non-empty directory that is not spinrl's ``kind``
    (any directory with ``overwrite``); creates nothing. Returns whether a non-empty directory is there."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p} is a file, not a directory; choose a fresh path")
    if not p.is_dir() or not any(e.name != LOCK for e in p.iterdir()):
        return False
    if overwrite:
        return True
    k = read_kind(p)
    if k is None:
        raise ConfigError(
            f"--out {p} is not a spinrl {kind} (a non-empty directory spinrl did not write); choose a "
            "fresh path or pass --overwrite to write into it"
        )
    if k != kind:
        raise ConfigError(f"--out {p} holds a spinrl {k}, not a {kind}; choose a fresh path or pass --overwrite")
    return True


def mark(path: str | os.PathLike, kind: str) -> None:
    """Record that spinrl wrote ``path`` as a ``kind`` directory."""
    from spinrl.utils.checkpoint import write_text_atomic

    p = Path(path) / MARKER
    if read_kind(path) != kind or not p.exists():
        write_text_atomic(p, json.dumps({"kind": kind}) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """An exclusive lock file holding the writer's pid and host; stale (dead pid, same host) locks are taken over."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what, self.held = Path(path), what, False

    def acquire(self) -> "Lock":
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _json(self.path)
                if isinstance(owner, dict) and isinstance(owner.get("pid"), int):
                    mine = owner.get("host") == me["host"]
                    if not mine or (owner["pid"] != me["pid"] and _alive(owner["pid"])):
                        raise ConfigError(
                            f"{self.what} is being written by pid {owner['pid']} on {owner.get('host')}; wait for it, "
                            f"or delete {self.path} if that process is gone"
                        ) from None
                else:  # being written right now, or left empty by a crash: stale after a few seconds
                    try:
                        if time.time() - self.path.stat().st_mtime < 5:
                            raise ConfigError(
                                f"{self.what} is locked ({self.path}); "
                                "wait for the other writer, or delete "
                                "the lock file if none runs"
                            ) from None
                    except FileNotFoundError:
                        continue
                self.path.unlink(missing_ok=True)  # stale or our own process's: take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return self
        raise ConfigError(f"{self.what}: could not take the lock {self.path}; retry")

    def release(self) -> None:
        if self.held:
            self.held = False
            owner = _json(self.path)
            if isinstance(owner, dict) and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_HELD: dict[Path, Lock] = {}


def hold(path: str | os.PathLike, kind: str) -> Lock:
    """Create ``path``, lock it for this process (released at exit or by ``release(path)``) and mark it ``kind``."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    lock = _HELD[p.resolve()] = Lock(p / LOCK, f"--out {p}").acquire()
    mark(p, kind)
    return lock


def release(path: str | os.PathLike) -> None:
    """Release the lock ``hold`` took on ``path`` (a no-op when there is none)."""
    lock = _HELD.pop(Path(path).resolve(), None)
    if lock is not None:
        lock.release()


def remove_own(path: str | os.PathLike, names: set[str]) -> list[str]:
    """Delete only ``names`` (spinrl's own files and folders) from ``path``; returns what else is there."""
    import shutil

    p = Path(path)
    for n in names:
        q = p / n
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q, ignore_errors=True)
        elif q.exists() or q.is_symlink():
            q.unlink(missing_ok=True)
    return sorted(e.name for e in p.iterdir()) if p.is_dir() else []
