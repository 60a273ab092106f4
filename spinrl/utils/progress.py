"""Progress bars: tqdm on a terminal, silent otherwise (CI logs stay readable)."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool | None = None, **kw: Any):
    """A tqdm bar; ``disable=None`` shows it only when stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, disable=None if disable is None else disable, dynamic_ncols=True, **kw
    )
