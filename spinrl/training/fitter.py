"""The generators of the long jobs, made hard to misuse.

``spinrl.fitter(cfg)`` (``train``), ``spinrl.fitter_asm(cfg)`` (``pretrain_iter``) and ``train_behaviour``
yield a metrics row at a time (d3rlpy's ``fitter``): a generator runs nothing until it is iterated, so
``spinrl.train(cfg)`` alone used to return silently having trained nothing. They now return a ``Fitter``:
the same generator, which warns (``RuntimeWarning``, as Python does for a coroutine never awaited) when it
is dropped before its first row. ``spinrl.fit(cfg)`` / ``spinrl.fit_asm(cfg)`` run to completion.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from typing import Any


class Fitter(Generator):
    """A generator of metric rows that warns if it is garbage-collected without having been started.

    Args:
        rows: the job's generator.
        call: how the user called it (``spinrl.train(cfg)``), for the warning.
        instead: the call that runs to completion (``spinrl.fit(cfg)``).
    """

    def __init__(self, rows: Generator, call: str, instead: str):
        self._rows, self._call, self._instead, self._started = rows, call, instead, False

    def send(self, value: Any) -> dict:
        self._started = True
        return self._rows.send(value)

    def throw(self, typ, val=None, tb=None):  # the generator protocol
        self._started = True
        if val is None and tb is None:
            return self._rows.throw(typ)
        return self._rows.throw(typ, val, tb)

    def close(self) -> None:
        self._started = True
        self._rows.close()

    def __del__(self) -> None:
        if not getattr(self, "_started", True):
            warnings.warn(
                f"{self._call} returned a generator that was never iterated, so nothing ran: loop over it "
                f"(for row in {self._call}: ...) or call {self._instead} to run to completion",
                RuntimeWarning,
                stacklevel=2,
            )
