"""Choosing a training precision the hardware actually accelerates.

``train.precision=auto`` resolves, in this order:

| where training runs | CUDA compute capability | precision | why |
|---|---|---|---|
| NVIDIA Ampere, Ada, Hopper, Blackwell (A100, L4, H100, B200, ...) | >= 8.0 | bf16-mixed | bf16 tensor cores; fp32's range, so no loss scaling |
| NVIDIA Volta, Turing (V100, T4) | 7.x | 16-mixed | fp16 tensor cores, no bf16; Lightning adds a gradient scaler |
| NVIDIA Pascal and older (P100, GTX 10xx) | < 7.0 | 32-true | no tensor cores: mixed precision saves little and fp16 can overflow |
| CPU with AVX-512 BF16 or AMX | - | bf16-mixed | native bf16 dot products |
| any other CPU | - | 32-true | bf16 would be emulated, slower than fp32 |
"""

from __future__ import annotations

import torch

# (minimum CUDA compute capability, precision), highest first: see the module docstring.
CUDA_PRECISION_BY_CAPABILITY: tuple[tuple[tuple[int, int], str], ...] = (
    ((8, 0), "bf16-mixed"),
    ((7, 0), "16-mixed"),
    ((0, 0), "32-true"),
)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        import cpuinfo

        flags = set(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def precision_for_cuda_capability(capability: tuple[int, int]) -> str:
    """The ``auto`` precision for a GPU of this compute capability, e.g. (9, 0) for an H100."""
    for minimum, precision in CUDA_PRECISION_BY_CAPABILITY:
        if tuple(capability) >= minimum:
            return precision
    return "32-true"


def trains_on_cuda(accelerator: str) -> bool:
    """Whether Lightning will put training on a CUDA GPU for this ``train.accelerator``."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(requested: str, accelerator: str = "auto") -> str:
    """``auto`` -> the table in the module docstring; any other value is returned as it is."""
    if requested != "auto":
        return requested
    if trains_on_cuda(accelerator):
        return precision_for_cuda_capability(torch.cuda.get_device_capability(0))
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"
