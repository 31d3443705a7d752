"""Choosing a training precision the hardware actually accelerates."""

from __future__ import annotations

import torch


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        import cpuinfo

        flags = set(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(requested: str, accelerator: str = "auto") -> str:
    """``auto`` -> bf16-mixed on bf16-capable GPUs/CPUs, 16-mixed on older GPUs, else 32-true."""
    if requested != "auto":
        return requested
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"
