"""Accuracy and latency measurements, PyTorch and ONNX Runtime side by side in one process."""

from __future__ import annotations

import platform

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from distilprune.export.onnx_export import ort_logits
from distilprune.export.verify import time_ms  # one timing routine for the report and the verifier


def machine_info(threads: int) -> dict:
    """CPU model, the instruction sets that matter for INT8/bf16 kernels, and the thread count."""
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
        cpu, flags = info.get("brand_raw", platform.processor()), set(info.get("flags", []))
    except Exception:  # cpuinfo can fail in odd containers; the report still says what it knows
        cpu, flags = platform.processor() or platform.machine(), set()
    isa = [name for name, flag in (
        ("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512 VNNI", "avx512_vnni"),
        ("AVX-512 BF16", "avx512_bf16"), ("AMX", "amx_tile"),
    ) if flag in flags]
    return {
        "cpu": cpu,
        "instruction_sets": isa,
        "threads": threads,
        "logical_cores": _cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "platform": platform.platform(),
    }


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _batches(loader: DataLoader):
    for batch in loader:
        yield batch["input_ids"], batch["attention_mask"], batch["labels"]


@torch.inference_mode()
def accuracy_pytorch(model: nn.Module, loader: DataLoader, hf: bool = False) -> tuple[float, np.ndarray]:
    """(accuracy, logits (examples, labels)) of a PyTorch classifier on ``loader``."""
    model.eval()
    logits, labels = [], []
    for input_ids, attention_mask, gold in _batches(loader):
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        out = out.logits if hf else out
        logits.append(out.float().numpy())
        labels.append(gold.numpy())
    all_logits, all_labels = np.concatenate(logits), np.concatenate(labels)
    return float((all_logits.argmax(-1) == all_labels).mean()), all_logits


def accuracy_onnx(session, loader: DataLoader) -> tuple[float, np.ndarray]:
    logits, labels = [], []
    for input_ids, attention_mask, gold in _batches(loader):
        logits.append(ort_logits(session, input_ids, attention_mask))
        labels.append(gold.numpy())
    all_logits, all_labels = np.concatenate(logits), np.concatenate(labels)
    return float((all_logits.argmax(-1) == all_labels).mean()), all_logits


def latency_inputs(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (fixed seed) with a full attention mask: (batch, seq) int64 each."""
    generator = torch.Generator().manual_seed(seed)
    # Skip the first ids (special tokens in WordPiece vocabularies) where the vocabulary allows it.
    input_ids = torch.randint(min(1000, vocab_size // 2), vocab_size, (batch_size, seq_len), generator=generator)
    return input_ids, torch.ones_like(input_ids)


def latency_pytorch(model: nn.Module, inputs, threads: int, warmup: int, runs: int, hf: bool = False) -> dict[str, float]:
    torch.set_num_threads(threads)
    model.eval()
    input_ids, attention_mask = inputs

    @torch.inference_mode()
    def call():
        return model(input_ids=input_ids, attention_mask=attention_mask)

    return time_ms(call, warmup, runs)


def latency_onnx(session, inputs, warmup: int, runs: int) -> dict[str, float]:
    input_ids, attention_mask = inputs
    feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    return time_ms(lambda: session.run(None, feed), warmup, runs)
