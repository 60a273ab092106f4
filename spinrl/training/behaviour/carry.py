"""A run that outlives its machine: ``carry.pt`` is a run's last checkpoint without its replay (a few MB
instead of hundreds), plus a few policy files for the later medium choice (``spinrl behaviour carry``)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from spinrl.errors import CheckpointError
from spinrl.training.behaviour.config import CARRY_FILE, CARRY_KIND
from spinrl.utils import outdir
from spinrl.utils.checkpoint import load_checkpoint, save_atomic


def _warn_if_original_run_has_replay(carry: Path) -> None:
    """A carry holds no replay, so continuing from it refills an empty one (on dog-trot that undid what the
    agent had learned); when the run it was carried from is still on this machine, --resume is exact."""
    try:
        orig = Path(json.loads((carry / "carry.json").read_text())["run"]["config"]["out"])  # spinrl behaviour carry
    except (OSError, ValueError, KeyError, TypeError):
        return
    if (orig / "checkpoints" / "last.pt").exists() and any((orig / "checkpoints").glob("replay-*")):
        warnings.warn(
            f"--continue-from {carry}: the run it was carried from, {orig}, is on this machine with its "
            f"replay buffer; `--out {orig} --resume` continues it exactly, a carry restarts the replay empty",
            stacklevel=2,
        )


def save_carry(run_dir: str | os.PathLike, out: str | os.PathLike, policy_files: list[str]) -> Path:
    """Write ``out/carry.pt`` (``run_dir``'s last checkpoint without its replay) and copy ``policy_files``.

    Policies past the checkpoint's step are refused: the continued run redoes those steps. Of the policy files
    already in ``out`` only those an earlier carry listed in its carry.json are removed (never a user's).
    """
    run_dir, out = Path(run_dir), Path(out)
    st = load_checkpoint(run_dir / "checkpoints" / "last.pt", what="behaviour checkpoint")
    if st.get("kind") != "decqn-behaviour-run":
        raise CheckpointError(f"{run_dir}/checkpoints/last.pt is not a behaviour-run checkpoint")
    prev = outdir._json(out / "carry.json")
    owned = (
        {Path(str(c.get("file"))).name for c in prev.get("kept", []) if isinstance(c, dict)}
        if isinstance(prev, dict)
        else set()
    )
    (out / "policies").mkdir(parents=True, exist_ok=True)
    keep = set()
    for rel in policy_files:
        meta = load_checkpoint(run_dir / rel, what="DecQN policy")
        if int(meta["env_step"]) > int(st["step"]):
            continue
        shutil.copyfile(run_dir / rel, out / rel)
        keep.add(Path(rel).name)
    for old in (out / "policies").glob("step_*.pt"):  # a carry folder holds one carry
        if old.name not in keep and old.name in owned:
            old.unlink()
    carry = {k: v for k, v in st.items() if k != "replay"}
    carry["kind"] = CARRY_KIND
    carry["rows"] = json.dumps([r for r in json.loads(st["rows"]) if r["env_step"] <= st["step"]])
    save_atomic(carry, out / CARRY_FILE)
    return out
