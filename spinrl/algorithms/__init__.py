"""Offline RL objectives as pure loss functions (one short module each) plus the ASM objective."""

from spinrl.algorithms import awac, bcq, iql, mam
from spinrl.algorithms.awac import AWACConfig
from spinrl.algorithms.bcq import BCQConfig
from spinrl.algorithms.common import Batch, Nets, build_nets, expectile_loss, polyak
from spinrl.algorithms.iql import IQLConfig
from spinrl.algorithms.mam import MAMConfig, asm_loss, corrupt

ALGORITHMS = {"iql": iql, "awac": awac, "bcq": bcq}
"""Algorithm name -> module exposing UPDATES, TARGETS, *_loss, act and action_probs."""

CONFIGS = {"iql": IQLConfig, "awac": AWACConfig, "bcq": BCQConfig}
"""Algorithm name -> its config dataclass."""

__all__ = [
    "ALGORITHMS",
    "AWACConfig",
    "BCQConfig",
    "Batch",
    "CONFIGS",
    "IQLConfig",
    "MAMConfig",
    "Nets",
    "asm_loss",
    "awac",
    "bcq",
    "build_nets",
    "corrupt",
    "expectile_loss",
    "iql",
    "mam",
    "polyak",
]
