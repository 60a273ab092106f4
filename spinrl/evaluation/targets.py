"""Time to target: wall-clock until a method first reaches 95% of a reference run's final return."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of a run directory's metrics.csv with numbers parsed (empty cells -> None)."""
    rows = []
    path = Path(run_dir) / "metrics.csv"
    try:
        with open(path) as f:
            for r in csv.DictReader(f):
                rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    # a hand-edited or foreign CSV: one line, not a traceback
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
        from spinrl.errors import SpinError

        raise SpinError(
            f"{path} row {len(rows) + 1} is not numeric ({str(e)[:80]}); fix or remove that run's metrics.csv"
        ) from None
    return rows


def eval_curve(run_dir: str | Path) -> list[tuple[float, float, float]]:
    """(step, wall_seconds, eval_return_mean) of every evaluated row."""
    return [
        (r["step"], r["wall_seconds"], r["eval_return_mean"])
        for r in read_metrics(run_dir)
        if r.get("eval_return_mean") is not None
    ]


def pretrain_seconds(run_dir: str | Path) -> float:
    """The ASM's pretraining wall time for a SPIN run (0 for other actors)."""
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    return float(cfg.get("asm_wall_seconds") or 0.0)


def final_return(run_dir: str | Path) -> float:
    curve = eval_curve(run_dir)
    if not curve:
        raise ValueError(f"{run_dir} has no evaluation rows")
    return curve[-1][2]


def target_value(final_return: float, fraction: float = 0.95) -> float:
    """``fraction`` of a final return; for a negative return, the same relative slack below it."""
    return fraction * final_return if final_return >= 0 else final_return / fraction


def time_to_target(
    runs: str | Path | Sequence[str | Path],
    reference: str | Path | Sequence[str | Path] | float,
    fraction: float = 0.95,
    include_pretraining: bool = True,
) -> float | None:
    """Seconds until the eval return of ``runs`` first reaches ``fraction`` x the reference's final return.

    Args:
        runs: a run directory (or several seeds: their mean curve is used, rows aligned by step).
        reference: the factored-IQL run(s) whose (mean) final return sets the target, or a number.
        include_pretraining: add the ASM's pretraining time for SPIN runs (docs/method.md, section
            "Evaluation and time to target").

    Returns:
        Seconds (mean wall time over seeds at the first step where the mean return reaches the target),
        or None if it never does.
    """
    run_list = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if isinstance(reference, (int, float)):
        target_return = float(reference)
    else:
        refs = [reference] if isinstance(reference, (str, Path)) else list(reference)
        target_return = sum(final_return(r) for r in refs) / len(refs)
    target = target_value(target_return, fraction)
    curves = [eval_curve(r) for r in run_list]
    offsets = [pretrain_seconds(r) if include_pretraining else 0.0 for r in run_list]
    n = min(len(c) for c in curves)
    for i in range(n):
        ret = sum(c[i][2] for c in curves) / len(curves)
        if ret >= target:
            return sum(c[i][1] + o for c, o in zip(curves, offsets)) / len(curves)
    return None
