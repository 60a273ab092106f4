"""How ``spinrl pretrain`` spreads over processes: one process, torchrun, or Ray Train.

Imports no torch (the CLI builds the ``pretrain`` parser from :class:`DistributedConfig`); the launchers in
``spinrl.training.pretrain`` are imported when a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from spinrl.errors import ConfigError

if TYPE_CHECKING:
    from spinrl.training.config import PretrainConfig


@dataclass
class DistributedConfig:
    """Data-parallel ASM pretraining: the batch is split across ranks, rank 0 writes the ASM directory.

    ``pretrain_launch(cfg, DistributedConfig(distributed=True, dist_backend="ray", workers=4))`` is
    ``spinrl pretrain ... --distributed --dist-backend ray --workers 4``.
    """

    distributed: bool = False
    """data-parallel under torchrun (gloo on CPU, nccl on GPU): the batch is split across ranks, rank 0 writes"""
    dist_backend: Literal["torchrun", "ray"] = "torchrun"
    """with --distributed: torchrun (start with torchrun --nproc_per_node K) or ray (Ray Train TorchTrainer,
    started by this command; extra: ray)"""
    workers: int | None = None
    """with --dist-backend ray: ranks, one CPU each (default 2)"""
    ray_address: str | None = None
    """with --dist-backend ray: join this Ray cluster (default: a local one)"""

    def __post_init__(self) -> None:
        if not self.distributed and (self.dist_backend != "torchrun" or self.workers is not None):
            raise ConfigError("--dist-backend and --workers only apply with --distributed; add --distributed")
        if self.distributed and self.dist_backend == "torchrun" and self.workers is not None:
            raise ConfigError("--workers is for --dist-backend ray; under torchrun use torchrun --nproc_per_node K")


def pretrain_launch(cfg: PretrainConfig, dist: DistributedConfig) -> Path | None:
    """Pretrain ``cfg`` as ``dist`` says; returns the ASM directory (None on the ranks other than 0)."""
    from spinrl.training.pretrain import pretrain, pretrain_distributed, pretrain_ray

    if not dist.distributed:
        return pretrain(cfg)
    if dist.dist_backend == "ray":
        return pretrain_ray(
            cfg, workers=dist.workers or 2, use_gpu=cfg.device.startswith("cuda"), address=dist.ray_address
        )
    return pretrain_distributed(cfg)
