"""PyTorch student -> ONNX fp32 (graph-optimized, fused attention) -> ONNX INT8 (dynamic).

Uses the legacy TorchScript exporter (``dynamo=False``): on the student's eager attention it gives
the graph pattern that ONNX Runtime's transformer optimizer fuses into ``Attention`` nodes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from distilprune.errors import ExportError

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]
DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "logits": {0: "batch"},
}
FUSED_OPS = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu")


@dataclass
class ExportedModel:
    fp32_path: Path  # graph-optimized fp32
    int8_path: Path
    fused_ops: dict[str, int]  # fused node counts in the optimized fp32 graph
    quantized_ops: dict[str, int]  # MatMulInteger / DynamicQuantizeLinear counts in the INT8 graph


@contextlib.contextmanager
def _quiet():
    """Silence exporter/optimizer chatter (TracerWarnings, fusion logs) for a clean console."""
    loggers = [logging.getLogger(name) for name in ("onnxruntime", "onnxruntime.transformers", "fusion", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def export_onnx(model: nn.Module, path: Path, opset: int = 17) -> Path:
    """Export ``model(input_ids, attention_mask) -> logits`` with dynamic batch and sequence axes."""
    was_training = model.training
    model.eval()
    vocab_size = model.get_submodule("distilbert.embeddings.word_embeddings").num_embeddings
    dummy_ids = torch.randint(0, vocab_size, (2, 16), dtype=torch.long)
    dummy_mask = torch.ones_like(dummy_ids)
    dummy_mask[1, 12:] = 0
    tmp = path.with_name(path.name + ".tmp")
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                model, (dummy_ids, dummy_mask), str(tmp), input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES, dynamic_axes=DYNAMIC_AXES, opset_version=opset, dynamo=False,
            )
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise ExportError(
            f"Could not write {path} ({error.strerror or error}). Free disk space or choose a writable "
            f"output directory; nothing that was already there was changed."
        ) from None
    finally:
        model.train(was_training)  # export restores train mode on wrappers; keep the caller's mode
    return path


def count_ops(path: Path, ops: tuple[str, ...] | None = None) -> dict[str, int]:
    graph = onnx.load(str(path), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts if ops is None else {op: counts.get(op, 0) for op in ops}


def optimize_for_cpu(raw_path: Path, out_path: Path) -> dict[str, int]:
    """Fuse attention, LayerNorm and GELU with ONNX Runtime's transformer optimizer.

    ``num_heads=0, hidden_size=0`` lets the optimizer read each layer's head count from the graph,
    which is what makes layers with different (pruned) head counts fuse.
    """
    from onnxruntime.transformers import optimizer

    with _quiet():
        optimized = optimizer.optimize_model(
            str(raw_path), model_type="bert", num_heads=0, hidden_size=0, opt_level=0
        )
        tmp = out_path.with_name(out_path.name + ".tmp")
        optimized.save_model_to_file(str(tmp))
        tmp.replace(out_path)
    return count_ops(out_path, FUSED_OPS)


def quantize_int8(fp32_path: Path, int8_path: Path, per_channel: bool = False, reduce_range: bool = False) -> dict[str, int]:
    """Dynamic INT8 quantization of every MatMul's weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = int8_path.with_name(int8_path.name + ".tmp")
    with _quiet():
        quantize_dynamic(
            str(fp32_path), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
            reduce_range=reduce_range,
            # Fused graphs carry contrib ops whose output types the quantizer cannot infer.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    tmp.replace(int8_path)
    return count_ops(int8_path, ("MatMulInteger", "DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul", "MatMul", "Attention"))


def export_student(model: nn.Module, directory: Path, opset: int = 17) -> ExportedModel:
    """Write ``model.onnx`` (optimized fp32) and ``model.int8.onnx`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "model.raw.onnx"
    export_onnx(model, raw, opset)
    fp32 = directory / "model.onnx"
    fused = optimize_for_cpu(raw, fp32)
    raw.unlink()
    int8 = directory / "model.int8.onnx"
    quantized = quantize_int8(fp32, int8)
    return ExportedModel(fp32, int8, fused, quantized)


def ort_session(path: Path, threads: int):
    """A CPU ONNX Runtime session with ``threads`` intra-op threads and full graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_logits(session, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
    return session.run(
        OUTPUT_NAMES, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    )[0]


def file_mb(path: Path) -> float:
    return os.path.getsize(path) / 2**20
