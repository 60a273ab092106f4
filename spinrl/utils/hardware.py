"""What the CPU or GPU can do natively: bf16 autocast only pays where matmuls run in bf16 in hardware."""

from __future__ import annotations

import torch


def cpu_isa() -> str:
    """The vector instruction set torch's CPU kernels use here ("AVX2", "AVX512", ...)."""
    return torch.backends.cpu.get_cpu_capability()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where bfloat16 matmuls run in hardware: a CUDA GPU that supports bf16, or a CPU with AVX512-BF16
    or AMX. Elsewhere torch emulates them (22-77x slower than fp32 on an AVX2 EPYC: benchmarks/bf16_matmul.py)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return True  # other accelerators: no cheap check; trust the user's choice
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_warning(device: torch.device | str) -> str | None:
    """The one-line warning for ``--precision bf16`` on a device without native bf16, else None."""
    dev = torch.device(device)
    if native_bf16(dev):
        return None
    where = f"this CPU ({cpu_isa()})" if dev.type == "cpu" else f"{dev}"
    return (f"--precision bf16: {where} has no native bfloat16 matmul (AVX512-BF16 or AMX), so torch emulates it "
            "(measured 22-77x slower than fp32 on an AVX2 CPU: benchmarks/bf16_matmul.py); use --precision fp32 here")
