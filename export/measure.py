"""Accuracy and latency measurements, PyTorch and ONNX Runtime side by side in one process."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from distilprune.export.onnx_export import ort_logits
from distilprune.export.runtime import machine_info, random_inputs, time_ms  # noqa: F401  (machine_info: one source, re-exported)


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
    """:func:`distilprune.export.runtime.random_inputs` as torch tensors: (batch, seq) int64 each."""
    input_ids, attention_mask = random_inputs(batch_size, seq_len, vocab_size, seed)
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


def labels(loader: DataLoader) -> np.ndarray:
    """Gold labels of ``loader`` in iteration order: (examples,) int64."""
    return np.concatenate([batch["labels"].numpy() for batch in loader])


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
