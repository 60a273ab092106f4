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
