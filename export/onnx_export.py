"""PyTorch student -> ONNX fp32 (graph-optimized, fused attention) -> ONNX INT8 (dynamic).

:func:`check_fusion` fails the export loudly when attention did not fuse; the INT8 accuracy gate with
its fallbacks lives in :mod:`distilprune.export.quantize`.

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
from distilprune.export.layer_norm import lower_layer_norms
from distilprune.export.runtime import make_session, replacing, run_logits, session_feed

INPUT_NAMES = ["input_ids", "attention_mask"]  # + "token_type_ids" for a student with segment embeddings
OUTPUT_NAMES = ["logits"]  # sequence and token heads; the span head has start_logits and end_logits
SPAN_OUTPUT_NAMES = ["start_logits", "end_logits"]
DYNAMIC_AXES = {  # inputs; the logits' axes depend on the head (LOGITS_AXES)
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "token_type_ids": {0: "batch", 1: "sequence"},
}
# logits axes per student head: (batch, labels) or (batch, sequence, labels)
LOGITS_AXES = {"sequence": {0: "batch"}, "token": {0: "batch", 1: "sequence"}, "span": {0: "batch", 1: "sequence"}}


def output_names(config) -> list[str]:
    """The ONNX outputs of a student with ``config``: logits, or start_logits and end_logits
    (each (batch, sequence)) for the span head of question answering."""
    return SPAN_OUTPUT_NAMES if getattr(config, "head", "sequence") == "span" else OUTPUT_NAMES


def input_names(config) -> list[str]:
    """The ONNX inputs of a student with ``config``: token_type_ids only with segment embeddings."""
    return INPUT_NAMES + (["token_type_ids"] if getattr(config, "type_vocab_size", 0) else [])


def dynamic_axes(config) -> dict[str, dict[int, str]]:
    """Dynamic axes of every input and of the logits of a student with ``config``."""
    axes = {name: DYNAMIC_AXES[name] for name in input_names(config)}
    for name in output_names(config):
        axes[name] = LOGITS_AXES[getattr(config, "head", "sequence")]
    return axes


class _ExportedForward(nn.Module):
    """``model(input_ids, attention_mask[, token_type_ids])`` positionally, for the exporter; the span
    head's (batch, seq, 2) logits leave as two outputs, start and end (batch, seq)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.split_span = getattr(model.config, "head", "sequence") == "span"

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        logits = self.model(input_ids, attention_mask, token_type_ids=token_type_ids)
        if self.split_span:
            start, end = logits.unbind(dim=-1)
            return start, end
        return logits
FUSED_OPS = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu")


@dataclass
class ExportedModel:
    fp32_path: Path  # graph-optimized fp32
    int8_path: Path
    fused_ops: dict[str, int]  # fused node counts in the optimized fp32 graph
    quantized_ops: dict[str, int]  # MatMulInteger / DynamicQuantizeLinear counts in the INT8 graph
    lowered_layer_norms: int = 0  # SkipLayerNormalization nodes rewritten as centred RMS norms (layer_norm.py)


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
    """Export ``model(input_ids, attention_mask[, token_type_ids]) -> logits`` with dynamic batch
    and sequence axes (:func:`input_names`, :func:`dynamic_axes`)."""
    was_training = model.training
    model.eval()
    vocab_size = model.get_submodule("distilbert.embeddings.word_embeddings").num_embeddings
    dummy_ids = torch.randint(0, vocab_size, (2, 16), dtype=torch.long)
    dummy_mask = torch.ones_like(dummy_ids)
    dummy_mask[1, 12:] = 0
    names = input_names(model.config)
    exported, args = model, (dummy_ids, dummy_mask)
    if "token_type_ids" in names:
        dummy_types = torch.zeros_like(dummy_ids)
        dummy_types[:, 8:] = 1
        args = (dummy_ids, dummy_mask, dummy_types)
    if "token_type_ids" in names or getattr(model.config, "head", "sequence") == "span":
        exported = _ExportedForward(model)  # positional segments, two outputs; node names gain a "/model" prefix
    try:
        with replacing(path) as tmp, _quiet(), torch.no_grad():
            torch.onnx.export(
                exported, args, str(tmp), input_names=names,
                output_names=output_names(model.config), dynamic_axes=dynamic_axes(model.config), opset_version=opset,
                dynamo=False,
            )
    except OSError as error:
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
        with replacing(out_path) as tmp:
            optimized.save_model_to_file(str(tmp))
    return count_ops(out_path, FUSED_OPS)


def quantize_int8(fp32_path: Path, int8_path: Path, per_channel: bool = False, reduce_range: bool = False) -> dict[str, int]:
    """Dynamic INT8 quantization of every MatMul's weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with replacing(int8_path) as tmp, _quiet():
        quantize_dynamic(
            str(fp32_path), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
            reduce_range=reduce_range,
            # Fused graphs carry contrib ops whose output types the quantizer cannot infer.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return count_ops(int8_path, ("MatMulInteger", "DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul", "MatMul", "Attention"))


def expected_fused_attention(model: nn.Module) -> int | None:
    """How many ``Attention`` nodes ONNX Runtime should fuse in ``model``'s exported graph.

    For a DistilBertStudent (``model.config.heads_per_layer``): the layers that still have heads
    (a layer pruned to 0 heads has no attention), except, with the sequence head, the last one,
    which queries only the [CLS] row and so runs as separate MatMul/Softmax nodes (see
    ``DistilBertStudent``); the token head runs every layer over every token, so all of them fuse.
    For a Hugging Face model: ``num_hidden_layers``. None when the model says neither (the check
    is skipped).
    """
    config = getattr(model, "config", None)
    heads = getattr(config, "heads_per_layer", None)
    if heads is not None:
        fused_layers = heads[:-1] if getattr(config, "head", "sequence") == "sequence" else heads
        return sum(1 for count in fused_layers if count > 0)
    layers = getattr(config, "num_hidden_layers", None)
    return int(layers) if layers is not None else None


def check_fusion(path: Path, expected_attention: int) -> dict[str, int]:
    """Count ONNX Runtime's fused nodes in ``path``; raise when fewer than ``expected_attention``
    attentions fused (the number :func:`expected_fused_attention` gives).

    Returns the counts of :data:`FUSED_OPS`. An unfused attention runs as separate MatMul / Softmax
    nodes (slower in fp32) and cannot become ``QAttention`` in INT8, so it is an error, not a detail.
    """
    counts = count_ops(path, FUSED_OPS)
    if counts["Attention"] >= expected_attention:
        return counts
    fused = ", ".join(f"{op} x{n}" for op, n in counts.items() if n) or "nothing"
    missing = [op for op, n in counts.items() if n == 0 and op not in ("FastGelu", "Gelu", "BiasGelu")]
    gelu = counts["BiasGelu"] + counts["FastGelu"] + counts["Gelu"]
    if gelu == 0:
        missing.append("any GELU fusion (BiasGelu/FastGelu/Gelu)")
    raise ExportError(
        f"Attention fused in only {counts['Attention']} of the {expected_attention} layers expected to "
        f"fuse in {path} (fused: {fused}; not fused: {', '.join(missing) or 'everything else fused'}). "
        f"Unfused attention runs as separate MatMul/Softmax nodes, which is slower in fp32 and cannot "
        f"become QAttention in INT8. Likely causes: an opset the optimizer does not recognise (export.opset; "
        f"17 is known to fuse), a graph from the dynamo exporter instead of the TorchScript one, or an "
        f"attention written differently from matmul(q, k^T) / sqrt(d) + mask -> softmax -> matmul (for "
        f"example Einsum products, or the mask or scale applied elsewhere). The graph stays there for "
        f"inspection. Fix the export, or set export.require_attention_fusion=false to accept the slower graph."
    )


def export_student(
    model: nn.Module, directory: Path, opset: int = 17, require_attention_fusion: bool = True,
    quantize: bool = True, layer_norm: str = "centered_rms",
) -> ExportedModel:
    """Write ``model.onnx`` (optimized fp32) and ``model.int8.onnx`` into ``directory``.

    ``layer_norm="centered_rms"`` rewrites the fused LayerNorms for ONNX Runtime's faster CPU kernel
    (:mod:`distilprune.export.layer_norm`) before any quantization, so every INT8 model inherits it;
    ``"fused"`` keeps ``SkipLayerNormalization``.

    ``quantize=False`` stops after the fp32 model, for callers that quantize themselves (the run
    export's INT8 accuracy gate), so dynamic INT8 is not computed twice.

    With ``require_attention_fusion`` an optimized graph with fewer ``Attention`` nodes than
    :func:`expected_fused_attention` raises :class:`ExportError` (``model.onnx`` stays for inspection, no INT8 is written).
    """
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "model.raw.onnx"
    export_onnx(model, raw, opset)
    fp32 = directory / "model.onnx"
    fused = optimize_for_cpu(raw, fp32)
    raw.unlink()
    expected = expected_fused_attention(model)
    if require_attention_fusion and expected is not None:
        check_fusion(fp32, expected)
    lowered = lower_layer_norms(fp32) if layer_norm == "centered_rms" else 0
    int8 = directory / "model.int8.onnx"
    quantized = quantize_int8(fp32, int8) if quantize else {}
    return ExportedModel(fp32, int8, fused, quantized, lowered)


def ort_session(path: Path, threads: int):
    """A CPU ONNX Runtime session with ``threads`` intra-op threads and full graph optimization
    (the verifier's session settings, so the report and a bundle's verification measure alike)."""
    return make_session(path, threads)


def ort_logits(session, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> np.ndarray:
    feed = session_feed(session, input_ids.numpy(), attention_mask.numpy(),
                        None if token_type_ids is None else token_type_ids.numpy())
    return run_logits(session, feed)


def file_mb(path: Path) -> float:
    return os.path.getsize(path) / 2**20
