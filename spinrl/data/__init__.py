"""Offline datasets: one format, read and written by every part of spinrl."""

from spinrl.data.dataset import (
    SCHEMA_VERSION,
    OfflineDataset,
    Summary,
    collect,
    from_arrays,
    from_episodes,
    load,
    read_meta,
    save,
)

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
