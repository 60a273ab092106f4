"""The run-directory contract, once, for every long job: policy training (``training/trainer.py``), ASM
pretraining (``training/pretrain.py``), behaviour training (``training/behaviour/``) and FQE
(``evaluation/offline.py``).

A run directory holds its resolved config as JSON, ``metrics.csv`` (rewritten atomically from every row so
far, so a resume that drops rows written after its checkpoint leaves no trace of them), atomic checkpoints
and figures, and names its inputs by content (sha256). A resume is refused, in one line naming the field,
when a setting that defines the computation differs from the run's. It lives in ``utils`` because FQE
(``evaluation``, below ``training`` in the pipeline) uses it too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from spinrl.errors import ConfigError
from spinrl.utils.checkpoint import save_atomic, write_text_atomic

__all__ = [
    "check_same",
    "save_atomic",
    "save_figure",
    "sha256_file",
    "write_json",
    "write_metrics_csv",
    "write_text_atomic",
]


def write_json(path: str | os.PathLike, obj: object, newline: bool = False) -> None:
    """``obj`` as indented JSON, atomically (``newline``: end the file with one, as behaviour runs do)."""
    write_text_atomic(path, json.dumps(obj, indent=2) + ("\n" if newline else ""))


def write_metrics_csv(path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> None:
    """Rewrite ``metrics.csv`` atomically from every row so far.

    Args:
        columns: the header; a row's missing or None values are empty cells and keys outside it are left out.
            Default: the first row's keys (nothing is written while there are no rows).
    """
    if columns is None:
        if not rows:
            return
        columns = list(rows[0].keys())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    write_text_atomic(path, buf.getvalue())


def _same_value(name: str, now, was) -> str:
    return f"--resume with {name}={now!r} but the run used {was!r}; use the same value"


def check_same(
    saved: Mapping,
    now: Mapping,
    names: Iterable[str],
    added: Mapping | None = None,
    message: Callable[[str, object, object], str] = _same_value,
) -> None:
    """Refuse a resume whose settings differ from the run's.

    Args:
        saved: the run's recorded config; now: the config of the resume (both as plain values).
        names: the fields that define the computation.
        added: fields added after older runs were made, with the value those runs had.
        message: ``(name, now, was) -> str``, the one-line error.

    Raises:
        ConfigError: the first field that differs.
    """
    added = added or {}
    for k in names:
        was = saved.get(k, added.get(k))
        if was != now.get(k):
            raise ConfigError(message(k, now.get(k), was))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in chunks into one reused buffer (datasets and ASMs can be GBs).

    The one file hash of the package: dataset arrays (``data/storage.py``), ASM and behaviour checkpoints,
    the feature cache's key.
    """
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, **savefig_kwargs) -> None:
    """Save a matplotlib figure under a temporary name and rename it into place (never a partial PNG), then
    close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        fig.savefig(tmp, dpi=dpi, **savefig_kwargs)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
