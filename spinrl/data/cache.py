"""Where generated datasets live: ``$SPINRL_DATA``, default ``~/.cache/spinrl/data`` (never in git)."""

from __future__ import annotations

import os
import re
from pathlib import Path


def data_dir() -> Path:
    root = os.environ.get("SPINRL_DATA")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spinrl" / "data"


def dataset_name(env_id: str, env_kwargs: dict, level: str, size: str, seed: int) -> str:
    """A readable, filesystem-safe name that encodes everything that defines the dataset."""
    kw = "-".join(f"{k}{v}" for k, v in sorted(env_kwargs.items()))
    raw = "_".join(p for p in (env_id, kw, level, size, f"seed{seed}") if p)
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", raw) + ".d"
