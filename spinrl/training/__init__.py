"""The training loop (any algorithm x actor) and ASM pretraining.

The names below load on first use, so the config modules (``spinrl.training.config``, ``.launch``,
``.behaviour.config``) import no torch: the CLI builds its parsers from them before any model is needed.
"""

from spinrl.utils.lazy import lazy_package

_CONFIG, _PRETRAIN, _TRAINER = "spinrl.training.config", "spinrl.training.pretrain", "spinrl.training.trainer"
lazy_package(__name__, {"PRESETS": _CONFIG, "PretrainConfig": _CONFIG, "TrainConfig": _CONFIG,
                        "fit_asm": _PRETRAIN, "fitter_asm": _PRETRAIN, "pretrain": _PRETRAIN,
                        "pretrain_iter": _PRETRAIN, "fit": _TRAINER, "fitter": _TRAINER, "run": _TRAINER,
                        "train": _TRAINER})

__all__ = ["PRESETS", "PretrainConfig", "TrainConfig", "fit", "fit_asm", "fitter", "fitter_asm", "pretrain",
           "pretrain_iter", "run", "train"]
