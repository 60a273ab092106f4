"""Packages whose names load on first use, so that importing a config module does not load torch."""

from __future__ import annotations

import importlib
import sys
import types


def lazy_package(package: str, names: dict[str, str]) -> None:
    """Give ``package`` a module ``__getattr__`` that imports ``names[name]`` (a module path) on first use.

    A name that is also a submodule's name (``spinrl.training.pretrain``, ``spinrl.evaluation.evaluate``) stays
    the function: the import system binds a submodule on its package once loaded, which would shadow it.
    """
    mod = sys.modules[package]

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    mod.__dict__["__getattr__"] = __getattr__  # PEP 562: consulted when a name is not found
    shadowed = frozenset(n for n, m in names.items() if m == f"{package}.{n}")
    if shadowed:
        mod.__class__ = type("LazyPackage", (types.ModuleType,), {"__setattr__": _keep(shadowed)})


def _keep(shadowed: frozenset[str]):
    def __setattr__(self, name: str, value) -> None:
        if name in shadowed and isinstance(value, types.ModuleType):
            return
        types.ModuleType.__setattr__(self, name, value)

    return __setattr__
