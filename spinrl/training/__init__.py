"""The training loop (any algorithm x actor) and ASM pretraining."""

from spinrl.training.config import PRESETS, PretrainConfig, TrainConfig
from spinrl.training.pretrain import pretrain, pretrain_iter
from spinrl.training.trainer import run, train

__all__ = ["PRESETS", "PretrainConfig", "TrainConfig", "pretrain", "pretrain_iter", "run", "train"]
