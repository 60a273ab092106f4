"""Per-state feature cache for the ``spin-cached`` actor.

The frozen ASM's all-[MASK] contextual embeddings depend on the state alone, so they are computed
once per dataset observation row, stored in fp16 beside the dataset (``<dataset>.features/``) and
memory-mapped. The file name encodes the dataset's checksum and the ASM weights' hash, so a new
dataset or a new ASM never reads stale features. Above a disk budget the trainer falls back to a
no-grad forward per batch.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
import torch

from spinrl.data import OfflineDataset
from spinrl.utils.progress import progress_bar
from spinrl.utils.rundir import sha256_file


def cache_path(dataset_path: str | os.PathLike, ds: OfflineDataset, asm_dir: str | os.PathLike) -> Path:
    key = hashlib.sha256(f"{ds.meta.get('checksum')}:{sha256_file(Path(asm_dir) / 'asm.pt')}".encode()).hexdigest()[:20]
    root = Path(str(dataset_path).rstrip("/") + ".features")
    return root / f"spin-{key}.npy"


def cache_bytes(ds: OfflineDataset, d_model: int) -> int:
    return int(ds.observations.shape[0]) * len(ds.nvec) * d_model * 2


def build_feature_cache(
    actor, ds: OfflineDataset, path: Path, device: torch.device, batch: int = 4096, progress: bool = True
) -> np.ndarray:
    """Compute (or reuse) the fp16 feature array [rows, N, d] and return it memory-mapped."""
    rows = int(ds.observations.shape[0])
    d = actor.cfg.d_model
    if path.exists():
        try:  # a damaged (truncated, overwritten) cache is rebuilt, not trusted or fatal for every later run
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (rows, len(ds.nvec), d) and arr.dtype == np.float16:
                return arr
        except (ValueError, OSError, EOFError):
            pass
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(rows, len(ds.nvec), d))
        bar = progress_bar(total=rows, desc="spin-cached features", unit="state", disable=None if progress else True)
        was = actor.training
        actor.eval()
        with torch.no_grad():
            for lo in range(0, rows, batch):
                obs = torch.from_numpy(np.array(ds.observations[lo : lo + batch], dtype=np.float32)).to(device)
                out[lo : lo + batch] = actor.features(obs.reshape(obs.shape[0], -1)).to(torch.float16).cpu().numpy()
                bar.update(obs.shape[0])
        actor.train(was)
        bar.close()
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return np.load(path, mmap_mode="r")
