"""The ASM directory contract: ``asm.pt`` (weights of the chosen epoch) + ``asm.json`` (signature,
chosen epoch, stopping record, wall time). SPIN loads it strictly: another task, other cardinalities or
another observation shape is an error, never a silent fallback to training from scratch."""

from __future__ import annotations

import json
from pathlib import Path

from spinrl.errors import CheckpointError
from spinrl.models import ActionStructureModel, ModelConfig
from spinrl.utils.checkpoint import load_checkpoint


def read_asm_info(path: str | Path) -> dict:
    path = Path(path)
    if not (path / "asm.json").exists() or not (path / "asm.pt").exists():
        raise CheckpointError(
            f"--asm {path} is not a finished ASM directory (needs asm.json "
            f"and asm.pt); run `spinrl pretrain DATASET --out {path}`"
        )
    try:
        info = json.loads((path / "asm.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"--asm {path}/asm.json is corrupted; pretrain again") from None
    if not isinstance(info, dict) or not isinstance(info.get("signature"), dict):
        raise CheckpointError(f"--asm {path}/asm.json has no signature object; pretrain again")
    return info


def check_signature(asm_sig: dict, data_sig: dict, where: str) -> None:
    """Raise naming the first field where the ASM's dataset signature differs from the dataset's."""
    for key in ("env_id", "env_kwargs", "nvec", "observation_shape"):
        a, d = asm_sig.get(key), data_sig.get(key)
        if key == "env_kwargs":
            a, d = a or {}, d or {}
        if a != d:
            raise CheckpointError(
                f"{where} was pretrained on {key}={a!r} but the dataset "
                f"has {key}={d!r}; pretrain an ASM on this dataset's task"
            )


def load_asm(path: str | Path, data_signature: dict | None = None) -> tuple[ActionStructureModel, dict]:
    """Load an ASM directory, checking it against ``data_signature`` when given."""
    info = read_asm_info(path)
    if data_signature is not None:
        check_signature(info.get("signature", {}), data_signature, f"--asm {path}")
    ck = load_checkpoint(Path(path) / "asm.pt", "ASM weights", kind="asm")
    try:
        sig = info["signature"]
        cfg = ModelConfig(**info["model"])
        obs_dim = 1
        for s in sig["observation_shape"]:
            obs_dim *= int(s)
        asm = ActionStructureModel(obs_dim, sig["nvec"], cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"--asm {path}/asm.json is incomplete or from another version ({e.__class__.__name__}: {e}); pretrain again"
        ) from None
    try:
        asm.load_state_dict(ck["model"], strict=True)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"--asm {path}/asm.pt does not match its asm.json ({str(e).splitlines()[0][:120]}); pretrain again"
        ) from None
    return asm, info
