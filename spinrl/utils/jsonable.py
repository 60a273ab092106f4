"""Configs as JSON: the run directory's config.json and the CLI's printed configs use the same form."""

from __future__ import annotations

import dataclasses
from typing import Any


def to_jsonable(cfg: Any) -> dict:
    """A config as a JSON-ready dict (tuples become lists)."""
    return json_ready(dataclasses.asdict(cfg))


def json_ready(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: json_ready(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_ready(v) for v in o]
    return o
