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


def test_auto_threads_takes_the_idle_cores_at_most_torchs_count(monkeypatch):
    """--threads auto (the default of train and pretrain): idle cores at start, at least one, at most torch's count
    (so an idle machine keeps torch's default and its results)."""
    from spinrl.utils import hardware

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    for cores, busy, want in ((2, 1.0, 1), (2, 0.0, 2), (8, 0.0, 2), (2, 5.0, 1), (8, 6.6, 1)):
        monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        monkeypatch.setattr(hardware, "_busy_cores", lambda b=busy: b)
        assert hardware.auto_threads() == want, (cores, busy)
        assert hardware.resolve_threads("auto") == want
    assert hardware.resolve_threads(3) == 3 and hardware.resolve_threads(None) is None


def test_threads_auto_is_the_default_and_resolves_to_a_number():
    """train and pretrain: `--threads auto` parses, is the default, and validation turns it into the number the run
    uses and writes into its config.json; an explicit count stays as given."""
    import argparse

    from spinrl.cli.args import add_config_args
    from spinrl.training.config import PretrainConfig, TrainConfig

    for cls in (TrainConfig, PretrainConfig):
        ap = argparse.ArgumentParser()
        add_config_args(ap, cls, positional=("dataset",), skip=("algo_kwargs", "model_kwargs"))
        assert ap.parse_args(["d"]).threads == "auto" and ap.parse_args(["d", "--threads", "2"]).threads == 2
        cfg = cls(dataset="d", out="o")
        cfg.validate()
        assert isinstance(cfg.threads, int) and 1 <= cfg.threads <= torch.get_num_threads()
        explicit = cls(dataset="d", out="o", threads=1)
        explicit.validate()
        assert explicit.threads == 1
