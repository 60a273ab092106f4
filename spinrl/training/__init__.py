"""The training loop (any algorithm x actor) and ASM pretraining.

The names below load on first use, so the config modules (``spinrl.training.config``, ``.launch``,
``.behaviour.config``) import no torch: the CLI builds its parsers from them before any model is needed.
"""

from typing import TYPE_CHECKING

from spinrl.utils.lazy import lazy_package

_CONFIG, _PRETRAIN, _TRAINER = "spinrl.training.config", "spinrl.training.pretrain", "spinrl.training.trainer"
lazy_package(
    __name__,
    {
        "PRESETS": _CONFIG,
        "PretrainConfig": _CONFIG,
        "TrainConfig": _CONFIG,
        "fit_asm": _PRETRAIN,
        "fitter_asm": _PRETRAIN,
        "pretrain": _PRETRAIN,
        "pretrain_iter": _PRETRAIN,
        "fit": _TRAINER,
        "fitter": _TRAINER,
        "run": _TRAINER,
        "train": _TRAINER,
    },
)

if TYPE_CHECKING:  # the same names for type checkers and editors ("X as X": re-exported)
    from spinrl.training.config import PRESETS as PRESETS
    from spinrl.training.config import PretrainConfig as PretrainConfig
    from spinrl.training.config import TrainConfig as TrainConfig
    from spinrl.training.pretrain import fit_asm as fit_asm
    from spinrl.training.pretrain import fitter_asm as fitter_asm
    from spinrl.training.pretrain import pretrain as pretrain
    from spinrl.training.pretrain import pretrain_iter as pretrain_iter
    from spinrl.training.trainer import fit as fit
    from spinrl.training.trainer import fitter as fitter
    from spinrl.training.trainer import run as run
    from spinrl.training.trainer import train as train

__all__ = [
    "PRESETS",
    "PretrainConfig",
    "TrainConfig",
    "fit",
    "fit_asm",
    "fitter",
    "fitter_asm",
    "pretrain",
    "pretrain_iter",
    "run",
    "train",
]
