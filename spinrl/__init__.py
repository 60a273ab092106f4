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

from spinrl.envs.registration import register_envs as _register_envs  # noqa: E402

_register_envs()  # gymnasium.make("spinrl/Maze-v0", actuators=12) after `import spinrl`; imports no simulator


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'spinrl' has no attribute {name!r}")
