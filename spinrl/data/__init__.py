"""Offline datasets: one format, read and written by every part of spinrl."""

from spinrl.data.constructors import from_arrays, from_episodes
from spinrl.data.dataset import SCHEMA_VERSION, OfflineDataset
from spinrl.data.storage import load, read_meta, save
from spinrl.data.summary import Summary

__all__ = [
    "SCHEMA_VERSION",
    "OfflineDataset",
    "Summary",
    "collect",
    "from_arrays",
    "from_episodes",
    "load",
    "read_meta",
    "save",
]


def __getattr__(name: str):
    if name == "collect":  # environment rollouts live beside the environments (spinrl.envs.collect)
        from spinrl.envs.collect import collect

        return collect
    raise AttributeError(f"module 'spinrl.data' has no attribute {name!r}")
