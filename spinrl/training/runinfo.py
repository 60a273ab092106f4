"""What a run records about where it ran, so differences across machines can be explained."""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
import torch

from spinrl.utils.hardware import cpu_isa, native_bf16


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_commit() -> str | None:
    """The git commit of the spinrl source that ran (with "+dirty" for uncommitted changes), so every record
    names its code; None for an installed package outside a checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device | str = "cpu") -> dict:
    from spinrl import __version__

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    versions = {
        "spinrl": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    try:
        import gymnasium

        versions["gymnasium"] = gymnasium.__version__
    except ImportError:  # pragma: no cover
        pass
    return {
        "commit": source_commit(),
        "versions": versions,
        "device": {
            "type": dev.type,
            "name": name,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "cpu_isa": cpu_isa(),
            "native_bf16": native_bf16(dev),
        },
    }
