"""What the CPU or GPU can do natively (bf16 autocast only pays where matmuls run in bf16 in hardware), and how
many torch threads the cores other jobs leave free can serve."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch
# torch is imported inside the functions: data verbs and --threads checks run without loading it.


def cpu_isa() -> str:
    """The vector instruction set torch's CPU kernels use here ("AVX2", "AVX512", ...)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where bfloat16 matmuls run in hardware: a CUDA GPU that supports bf16, or a CPU with AVX512-BF16
    or AMX. Elsewhere torch emulates them (22-77x slower than fp32 on an AVX2 EPYC: benchmarks/bf16_matmul.py)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return True  # other accelerators: no cheap check; trust the user's choice
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_warning(device: torch.device | str) -> str | None:
    """The one-line warning for ``--precision bf16`` on a device without native bf16, else None."""
    import torch

    dev = torch.device(device)
    if native_bf16(dev):
        return None
    where = f"this CPU ({cpu_isa()})" if dev.type == "cpu" else f"{dev}"
    return (
        f"--precision bf16: {where} has no native bfloat16 matmul (AVX512-BF16 or AMX), so torch emulates it "
        "(measured 22-77x slower than fp32 on an AVX2 CPU: benchmarks/bf16_matmul.py); use --precision fp32 here"
    )


def check_threads(threads: int | None) -> None:
    """One-line error for a thread count that is not a positive integer or exceeds the machine's cores (None = keep
    the process's)."""
    from spinrl.errors import ConfigError

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0):
        raise ConfigError(f"--threads must be a positive integer, got {threads!r}")
    cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        # thousands of OpenMP threads hang or crash the process (segfault at 100000), and more than the cores only stall
        raise ConfigError(
            f"--threads {threads} is more than this machine's {cores} cores; pass --threads {cores} or fewer"
        )


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: the process's own) and restore the caller's count after
    it, so that a library call (dataset rollouts, a behaviour export) does not change the thread count of the
    process that made it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(before if n is None else int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _busy_cores(samples: int = 5, every_s: float = 0.005) -> float:
    """Cores other processes keep busy now: the median over a few samples of ``/proc/loadavg``'s count of
    runnable processes, less this one (the load average would count a parent that has just gone idle, such as
    the shell or test runner that started us); the 1-minute load average where /proc is missing."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            break
        if i + 1 < samples:
            time.sleep(every_s)
    if counts:
        return float(max(0, sorted(counts)[len(counts) // 2]))
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return 0.0


def auto_threads() -> int:
    """``--threads auto``: the cores other processes leave idle at the start (at least one), at most torch's own
    count. On an idle machine that is torch's default, so results do not change; beside other jobs it is the
    count that does not stall (see :func:`threads_warning`)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), int(cores - _busy_cores() + 0.5)))


def resolve_threads(threads: int | str | None) -> int | None:
    """A config's ``threads`` as the number a run uses and records: ``"auto"`` -> :func:`auto_threads`; an int or
    None (torch's own count) unchanged."""
    return auto_threads() if threads == "auto" else threads  # type: ignore[return-value]


def threads_warning(threads: int | None, device: torch.device | str = "cpu") -> str | None:
    """The one-line warning for a CPU run whose torch thread count exceeds the cores other jobs leave free.

    torch's CPU kernels split every op across their threads and wait for the slowest; with a core taken by
    another process each op waits on a descheduled thread: a cpu-preset SPIN step ran 19x slower with 2
    threads beside one other job on 2 cores than with 1 (README, "Two jobs on one machine"). The thread
    count is not changed behind the user's back (it changes float reductions, and a resume assumes the same
    count), so this only says what to pass."""
    import torch

    if torch.device(device).type != "cpu":
        return None
    n = threads or torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = _busy_cores()
    free = max(1, int(cores - busy + 0.5))
    if n <= 1 or n <= free:
        return None
    return (
        f"--threads {n}{'' if threads else ' (torch default)'}: other jobs keep ~{busy:.1f} of {cores} cores busy, "
        f"and threads beyond the free cores stall every op (measured 19x slower beside one other job on 2 cores); "
        f"pass --threads {free}"
    )
