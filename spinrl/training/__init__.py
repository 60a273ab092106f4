"""The training loop (any algorithm x actor) and ASM pretraining."""

from spinrl.training.config import PRESETS, PretrainConfig, TrainConfig
from spinrl.training.pretrain import fit_asm, fitter_asm, pretrain, pretrain_iter
from spinrl.training.trainer import fit, fitter, run, train

__all__ = ["PRESETS", "PretrainConfig", "TrainConfig", "fit", "fit_asm", "fitter", "fitter_asm", "pretrain",
           "pretrain_iter", "run", "train"]
