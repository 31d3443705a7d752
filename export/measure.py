"""Scored rows (what a task's metric reads) and latency, PyTorch and ONNX Runtime side by side in one process."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from distilprune.export.runtime import machine_info, random_inputs, run_logits, session_feed, time_ms  # noqa: F401  (machine_info: one source, re-exported)
from distilprune.tasks import model_inputs


def feeds(session, batch: dict) -> dict[str, np.ndarray]:
    """The ONNX Runtime feed for ``batch`` (:func:`distilprune.export.runtime.session_feed`)."""
    types = batch.get("token_type_ids")
    return session_feed(session, batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                        None if types is None else types.numpy())


@torch.inference_mode()
def rows_pytorch(model: nn.Module, loader: DataLoader, task, hf: bool = False) -> list[np.ndarray]:
    """Scored rows of every example of ``loader`` (list over examples of (rows_i, labels) float32)
    from a PyTorch model (a Hugging Face model with ``hf=True``)."""
    model.eval()
    rows: list[np.ndarray] = []
    for batch in loader:
        if hf:
            logits = task.model_logits(model(**model_inputs(batch)))
        else:
            logits = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"))
        rows.extend(r.float().numpy() for r in task.example_rows(logits, batch))
    return rows


def rows_onnx(session, loader: DataLoader, task) -> list[np.ndarray]:
    """:func:`rows_pytorch` for an ONNX Runtime session (:func:`distilprune.export.runtime.run_logits`)."""
    rows: list[np.ndarray] = []
    for batch in loader:
        logits = torch.from_numpy(run_logits(session, feeds(session, batch)))
        rows.extend(r.numpy() for r in task.example_rows(logits, batch))
    return rows


def max_abs_diff(rows_a: list[np.ndarray], rows_b: list[np.ndarray]) -> float:
    """Largest |a - b| over every scored row of two models on the same examples."""
    return float(max((np.abs(a - b).max() for a, b in zip(rows_a, rows_b, strict=True) if a.size), default=0.0))


def latency_inputs(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`distilprune.export.runtime.random_inputs` as torch tensors: (batch, seq) int64 each."""
    input_ids, attention_mask = random_inputs(batch_size, seq_len, vocab_size, seed)
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


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
    feed = session_feed(session, input_ids.numpy(), attention_mask.numpy())
    return time_ms(lambda: session.run(None, feed), warmup, runs)
