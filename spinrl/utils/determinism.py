"""A seed fixes the result on a GPU too: the CUDA settings under which torch's kernels are deterministic.

On the CPU spinrl's runs are bit-identical for a seed and thread count already (the resume tests check it);
on CUDA, cuDNN autotuning, atomics in some kernels and cuBLAS's workspace split make two runs with the same
seed differ unless these are set (torch's "Reproducibility" notes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
"""the cuBLAS workspace setting deterministic algorithms need (CUDA >= 10.2); a user's own value is kept"""


def cuda_determinism(device: torch.device | str) -> dict | None:
    """On a CUDA device, make a seed fix the result: cuDNN's deterministic kernels without autotuning,
    torch's deterministic algorithms (a warning, not a failure, for an op that has none) and
    ``CUBLAS_WORKSPACE_CONFIG`` (read when cuBLAS starts, so this runs before the first tensor reaches the GPU).

    Returns:
        The settings applied, for the run's config.json; None on another device, where nothing is changed.
    """
    import torch

    if torch.device(device).type != "cuda":
        return None
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return {
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "deterministic_algorithms": "warn_only",
        "CUBLAS_WORKSPACE_CONFIG": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }


def run_device_name(name: str, out: str | os.PathLike, resume: bool) -> str:
    """The device a run uses: ``name``, except that a resumed run with ``auto`` keeps the device its
    config.json records (``resolved.device``; runs made before ``auto`` record ``config.device``, i.e. cpu),
    since another device ends bit-identity with the uninterrupted run.
    """
    if name != "auto" or not resume:
        return name
    from spinrl.utils.outdir import _json

    rec = _json(Path(out) / "config.json")
    if isinstance(rec, dict):
        was = (rec.get("resolved") or {}).get("device") or (rec.get("config") or {}).get("device")
        if isinstance(was, str):
            return was
    return name
