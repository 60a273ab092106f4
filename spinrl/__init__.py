"""spinrl: offline RL in large factored discrete action spaces (SPIN and baselines).

The Python API mirrors the CLI verb for verb::

    import spinrl
    path = spinrl.make_dataset(spinrl.DataMakeConfig("maze", env_kwargs={"actuators": 12}, transitions=50_000))
    asm = spinrl.pretrain(spinrl.PretrainConfig(dataset=str(path), out="asm"))
    for row in spinrl.train(spinrl.TrainConfig(dataset=str(path), actor="spin", asm="asm", out="run")):
        print(row["step"], row.get("normalized_score"))
    policy = spinrl.Policy.load("run/policy.pt")
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
    "pretrain": ("spinrl.training.pretrain", "pretrain"),
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
