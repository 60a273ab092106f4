"""The bf16 capability check against what torch reports for this CPU."""

import torch

from spinrl.utils.hardware import bf16_warning, cpu_isa, native_bf16


def test_native_bf16_follows_cpu_features():
    has = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert native_bf16("cpu") is has
    assert cpu_isa() == torch.backends.cpu.get_cpu_capability() and cpu_isa()
    msg = bf16_warning("cpu")
    assert (msg is None) is has
    if msg:
        assert "--precision fp32" in msg and cpu_isa() in msg and "\n" not in msg


def test_threads_warning_names_the_free_cores(monkeypatch):
    """More torch threads than the cores other jobs leave free: one line naming --threads and the count to pass."""
    from spinrl.utils import hardware

    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(hardware, "_busy_cores", lambda: 1.0)
    msg = hardware.threads_warning(2)
    assert msg and msg.startswith("--threads 2: other jobs keep ~1.0 of 2 cores busy") and msg.endswith("pass --threads 1")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # what torch picks on 2 cores
    assert hardware.threads_warning(None).startswith("--threads 2 (torch default): ")
    assert "\n" not in msg
    assert hardware.threads_warning(1) is None  # already fits
    assert hardware.threads_warning(2, "cuda") is None  # GPU steps do not split over CPU threads
    monkeypatch.setattr(hardware, "_busy_cores", lambda: 0.2)
    assert hardware.threads_warning(2) is None  # an idle machine
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(hardware, "_busy_cores", lambda: 3.0)
    assert hardware.threads_warning(8).endswith("pass --threads 5")


def test_busy_cores_reads_this_machine():
    from spinrl.utils.hardware import _busy_cores

    busy = _busy_cores()
    assert isinstance(busy, float) and busy >= 0.0


def test_torch_threads_restores_the_callers_count_even_on_error():
    """Library calls that pick their own thread count (data make, behaviour export) give the caller's back."""
    import pytest

    from spinrl.utils.hardware import torch_threads

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(other):
            raise RuntimeError("rollout failed")
    assert torch.get_num_threads() == before
