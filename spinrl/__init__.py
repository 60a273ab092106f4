"""spinrl: offline RL in large factored discrete action spaces (SPIN and baselines).

The Python API mirrors the CLI verb for verb::

    import spinrl
    path = spinrl.make_dataset(spinrl.DataMakeConfig("maze", env_kwargs={"actuators": 12}, transitions=50_000))
    spinrl.fit_asm(spinrl.PretrainConfig(dataset=str(path), out="asm"))        # stage 1, to completion
    for row in spinrl.fitter(spinrl.TrainConfig(dataset=str(path), actor="spin", asm="asm", out="run")):
        print(row["step"], row.get("normalized_score"))                          # stage 2, row by row
    policy = spinrl.Policy.load("run/policy.pt")

``fit``/``fit_asm`` run to completion and return a summary; ``fitter``/``fitter_asm`` yield metric rows
(``train`` and ``pretrain`` are the earlier names: a generator and a call that returns the ASM directory).
"""

__version__ = "0.1.0"

_LAZY = {
    "OfflineDataset": ("spinrl.data", "OfflineDataset"),
    "load_dataset": ("spinrl.data", "load"),
    "from_arrays": ("spinrl.data", "from_arrays"),
    "collect": ("spinrl.envs.collect", "collect"),
    "DataMakeConfig": ("spinrl.experiments.datasets", "DataMakeConfig"),
    "make_dataset": ("spinrl.experiments.datasets", "make_dataset"),
    "TrainConfig": ("spinrl.training.config", "TrainConfig"),
    "PretrainConfig": ("spinrl.training.config", "PretrainConfig"),
    "train": ("spinrl.training.trainer", "train"),
    "fit": ("spinrl.training.trainer", "fit"),
    "fitter": ("spinrl.training.trainer", "fitter"),
    "pretrain": ("spinrl.training.pretrain", "pretrain"),
    "fit_asm": ("spinrl.training.pretrain", "fit_asm"),
    "fitter_asm": ("spinrl.training.pretrain", "fitter_asm"),
    "evaluate": ("spinrl.evaluation.evaluate", "evaluate"),
    "Policy": ("spinrl.evaluation.policy", "Policy"),
    "time_to_target": ("spinrl.evaluation.targets", "time_to_target"),
    "DemoConfig": ("spinrl.experiments.demo", "DemoConfig"),
    "demo": ("spinrl.experiments.demo", "demo"),
}

__all__ = ["__version__", *_LAZY]

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:  # the names _LAZY loads on first use, for type checkers and editors ("X as X": re-exported)
    from spinrl.data import OfflineDataset as OfflineDataset
    from spinrl.data import from_arrays as from_arrays
    from spinrl.data import load as load_dataset  # noqa: F401 (in __all__ through _LAZY)
    from spinrl.envs.collect import collect as collect
    from spinrl.evaluation.evaluate import evaluate as evaluate
    from spinrl.evaluation.policy import Policy as Policy
    from spinrl.evaluation.targets import time_to_target as time_to_target
    from spinrl.experiments.datasets import DataMakeConfig as DataMakeConfig
    from spinrl.experiments.datasets import make_dataset as make_dataset
    from spinrl.experiments.demo import DemoConfig as DemoConfig
    from spinrl.experiments.demo import demo as demo
    from spinrl.training.config import PretrainConfig as PretrainConfig
    from spinrl.training.config import TrainConfig as TrainConfig
    from spinrl.training.pretrain import fit_asm as fit_asm
    from spinrl.training.pretrain import fitter_asm as fitter_asm
    from spinrl.training.pretrain import pretrain as pretrain
    from spinrl.training.trainer import fit as fit
    from spinrl.training.trainer import fitter as fitter
    from spinrl.training.trainer import train as train

from spinrl.envs.registration import register_envs as _register_envs  # noqa: E402

_register_envs()  # gymnasium.make("spinrl/Maze-v0", actuators=12) after `import spinrl`; imports no simulator


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'spinrl' has no attribute {name!r}")
