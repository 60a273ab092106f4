"""Checkpoints: atomic writes, ``weights_only`` loads (no code runs on load), full RNG state."""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from spinrl.errors import CheckpointError

if TYPE_CHECKING:
    import torch
# torch is imported inside the functions that use it: text files and one-line errors load without it.

CHECKPOINT_SCHEMA = 1


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary sibling, fsync, then rename: a crash never leaves a partial file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str | bytes) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_safetensors(obj: dict, path: str | os.PathLike) -> None:
    """``obj`` (a policy or ASM file's dict) as safetensors, for sharing weights that load without pickle: each
    state-dict field's tensors under ``field/name``, every other field as JSON in the header."""
    import torch
    from safetensors.torch import save

    tensors, header = {}, {}
    for k, v in obj.items():
        if isinstance(v, dict) and v and all(torch.is_tensor(t) for t in v.values()):
            tensors.update({f"{k}/{n}": t.detach().cpu().clone().contiguous() for n, t in v.items()})
        else:
            header[k] = v
    write_text_atomic(path, save(tensors, metadata={"spinrl": json.dumps(header)}))


def _load_safetensors(path: Path, what: str) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            obj = json.loads((f.metadata() or {}).get("spinrl", "null"))
            if not isinstance(obj, dict):
                raise CheckpointError(
                    f"{what} {path} is a safetensors file without spinrl's header; save it with spinrl"
                )
            for key in f.keys():
                field, _, name = key.partition("/")
                obj.setdefault(field, {})[name] = f.get_tensor(key)
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(
            f"{what} {path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})"
        ) from None
    return obj


_NUM = (int, float)
# The fields a resume reads, per kind, with their types: a corrupted or hand-edited field is one line, not a
# TypeError deep in the loop.
_FIELDS: dict[str, dict[str, type | tuple]] = {
    "train": {
        "config": dict,
        "step": int,
        "elapsed": _NUM,
        "rows": list,
        "rng": dict,
        "nets": dict,
        "optimizers": dict,
    },
    "asm_pretrain": {"config": dict, "model": dict, "optimizer": dict, "rng": dict, "state": dict, "rows": list},
    "asm": {"model": dict},
}
_STATE_FIELDS: dict[str, type | tuple] = {
    "epoch": int,
    "step": int,
    "best": _NUM,
    "best_epoch": int,
    "bad": int,
    "elapsed": _NUM,
}


def _check_fields(obj: dict, kind: str, what: str, path: Path) -> None:
    def bad(name: str, want, got) -> CheckpointError:
        names = want.__name__ if isinstance(want, type) else " or ".join(t.__name__ for t in want)
        return CheckpointError(
            f"{what} {path} field {name!r} is corrupted "
            f"(expected {names}, got {type(got).__name__}); "
            "delete the file or start a fresh --out"
        )

    for name, want in _FIELDS.get(kind, {}).items():
        v = obj.get(name)
        if not isinstance(v, want) or isinstance(v, bool):
            raise bad(name, want, v)
    if kind == "asm_pretrain":
        for name, want in _STATE_FIELDS.items():
            v = obj["state"].get(name)
            if name in obj["state"] and (not isinstance(v, want) or isinstance(v, bool)):
                raise bad(f"state.{name}", want, v)


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", kind: str | None = None) -> dict:
    """Load with ``weights_only=True`` (or a ``.safetensors`` file: no pickle at all); any problem becomes a
    one-line CheckpointError.

    Args:
        kind: when given, the file's ``kind`` field must equal it (a policy is not a training checkpoint).
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist; check the path")
    try:
        if path.suffix == ".safetensors":
            obj = _load_safetensors(path, what)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # torch raises many types for corrupt or hostile files
        text = str(e).strip()
        if "Weights only load failed" in text:
            glob = re.search(r"GLOBAL (\S+)", text)
            detail = f"it references {glob.group(1)}" if glob else "it holds objects other than tensors and containers"
            raise CheckpointError(
                f"{what} {path} was refused for safety: {detail} (weights-only loading runs no code; nothing was "
                "executed); use files from a source you trust"
            ) from None
        first = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(
            f"{what} {path} cannot be loaded safely ({first[:160]}); it is corrupted or not a spinrl file"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} is not a spinrl checkpoint (expected a dict)")
    schema = obj.get("schema", None)
    if not isinstance(schema, int):
        raise CheckpointError(f"{what} {path} has no schema version; it is not a spinrl file")
    if schema > CHECKPOINT_SCHEMA:
        raise CheckpointError(
            f"{what} {path} has schema {schema}, newer than this spinrl supports ({CHECKPOINT_SCHEMA}); upgrade spinrl"
        )
    if kind is not None and obj.get("kind") != kind:
        raise CheckpointError(
            f"{what} {path} holds a {obj.get('kind')!r} file, not a {kind!r} one; pass the right file"
        )
    if kind is not None:
        _check_fields(obj, kind, what, path)
    return obj


def capture_rng(np_rng: np.random.Generator, torch_gen: torch.Generator | None = None) -> dict:
    """Every random stream a run draws from, so a resume continues them exactly."""
    import torch

    state = {
        "python": random.getstate(),
        "numpy_global": _np_global_state(),
        "sampler": np_rng.bit_generator.state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch_gen is not None:
        state["torch_gen"] = torch_gen.get_state()
    return state


def restore_rng(state: dict, np_rng: np.random.Generator, torch_gen: torch.Generator | None = None) -> None:
    import torch

    random.setstate(_tuplify(state["python"]))
    g = state["numpy_global"]
    np.random.set_state(
        (g["bit_generator"], g["key"].numpy().astype(np.uint32), g["pos"], g["has_gauss"], g["cached_gaussian"])
    )
    np_rng.bit_generator.state = state["sampler"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if torch_gen is not None and "torch_gen" in state:
        torch_gen.set_state(state["torch_gen"])


def _np_global_state() -> dict:
    """The legacy global numpy stream, with its key as a tensor so ``weights_only`` loading accepts it."""
    import torch

    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))  # MT19937: a tuple
    name, key, pos, has_gauss, cached = legacy
    return {
        "bit_generator": name,
        "key": torch.from_numpy(key.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _tuplify(o: Any) -> Any:
    if isinstance(o, list):
        return tuple(_tuplify(v) for v in o)
    if isinstance(o, tuple):
        return tuple(_tuplify(v) for v in o)
    return o


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CheckpointError(f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        from spinrl.errors import ConfigError

        raise ConfigError(f"--device {name} requested but CUDA is not available; use --device cpu")
    return dev
