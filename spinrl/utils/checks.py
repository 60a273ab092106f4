"""Bounds on numbers a user or a file hands us, checked before they size an allocation or seed a generator:
a value out of range becomes a one-line ConfigError instead of a traceback, a hang or a silent NaN run."""

from __future__ import annotations

import math
from typing import Any

from spinrl.errors import ConfigError

MAX_COUNT = 10**12
"""largest step, transition or episode count (far beyond any run; 1e20 would overflow or loop for ever)"""
MAX_BATCH = 2**24
"""largest minibatch (a batch of 1e11 asks for terabytes)"""
MAX_EPISODES = 10**7
"""largest evaluation episode count"""
MAX_SEED = 2**63 - 1
"""torch and numpy both take seeds in [0, 2**63)"""


def check_int(value: Any, flag: str, hi: int = MAX_COUNT, lo: int = 1, none_ok: bool = False) -> None:
    """``value`` is an integer in [lo, hi] (or None where ``none_ok``)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        raise ConfigError(f"{flag} must be {what} of at most {hi:.3g}, got {value!r}")


def check_seed(value: Any, flag: str = "--seed") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{flag} must be an integer in [0, 2**63), got {value!r}")


def check_finite(value: Any, flag: str, none_ok: bool = True) -> None:
    """A float hyper-parameter is a finite number (inf or NaN trains to NaN losses without a word)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value!r}")
