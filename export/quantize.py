"""INT8 accuracy gate: a first method (per-channel dynamic INT8 by default), then fallbacks in a
configured order until one passes.

Every attempt is a full INT8 model written into a private temporary directory next to the shipped
file, evaluated once (the caller's ``evaluate`` runs the test split, one sentence per call by default)
and timed once. The first attempt
within the allowed drop is shipped; when none is, the most accurate one is shipped and the result says
so. The temporary directory is removed in every case, so only ``int8_path`` remains.

Methods (the names of recipe key ``export.int8_fallbacks``):

- ``dynamic``: weights QInt8 per tensor, activations quantized at run time.
- ``per_channel``: dynamic, one weight scale per output channel (helps when a few rows are large; the
  pipeline's default first method, ``export.int8_method``).
- ``reduce_range``: dynamic with 7-bit weights, which avoids the int16 accumulation saturation of
  u8s8 kernels on CPUs without VNNI.
- ``static``: activations calibrated on tokenized training samples (see :func:`quantize_static_int8`).
- ``exclude_sensitive``: dynamic, with the most sensitive layers kept in float (see
  :func:`sensitive_groups`).
- ``per_token``: batch-invariant, one activation scale per token row in every linear
  (:mod:`distilprune.export.batch_invariant`).
- ``ffn_out_per_token``: per_channel everywhere except each FFN output projection, whose input (the
  GELU output, a few tokens with large values) gets one scale per token row (see
  :func:`quantize_ffn_out_per_token`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx

from distilprune.config import INT8_METHODS, ExportConfig
from distilprune.errors import ConfigError, ExportError
from distilprune.export.batch_invariant import is_weight_matmul
from distilprune.export.onnx_export import _quiet, count_ops, file_mb, ort_session, quantize_int8
from distilprune.export.runtime import run_logits

METHODS = INT8_METHODS  # the recipe schema validates export.int8_method against the same list
# Nodes that the dynamic quantizer turns into integer kernels on a fused BERT graph; the candidates
# that exclude_sensitive may keep in float.
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Attention", "EmbedLayerNormalization")
QUANTIZED_OPS = (
    "QAttention", "MatMulInteger", "DynamicQuantizeLinear", "QEmbedLayerNormalization", "QLinearMatMul",
    "QGemm", "QuantizeLinear", "DequantizeLinear", "MatMul", "Attention", "MatMulIntegerToFloat", "MultiHeadAttention",
)
# Logit error is measured on at most this many calibration batches: enough to rank layers, and
# bounded so the sensitivity scan (one quantization + one inference per layer) stays cheap.
SENSITIVITY_BATCHES = 4


def _check_methods(fallbacks: list[str], first: str) -> list[str]:
    unknown = [name for name in [first, *fallbacks] if name not in METHODS]
    if unknown:
        raise ConfigError(
            f"Unknown INT8 method(s) {unknown} in export.int8_method / export.int8_fallbacks. Use any of "
            f"{list(METHODS)}: int8_method is tried first, then the fallbacks in their order."
        )
    ordered = [first]
    for name in fallbacks:  # keep the configured order, drop repeats (each costs an evaluation)
        if name not in ordered:
            ordered.append(name)
    return ordered


# Activations between an FFN's two linears: the MatMul that reads one of these is the FFN output
# projection (BiasGelu / Gelu / FastGelu are ONNX Runtime's fusions of the GELU pattern).
FFN_ACTIVATION_OPS = ("BiasGelu", "Gelu", "FastGelu", "QuickGelu", "Relu")


def _weight_matmuls(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's linears: MatMul nodes whose second input is a weight (an initializer)."""
    weights = {init.name for init in graph.initializer}
    return [node for node in graph.node if is_weight_matmul(node, weights)]


def weight_matmuls(fp32_path: Path) -> list[str]:
    """Names of the linears (weight MatMuls) of the model at ``fp32_path``, in graph order."""
    return [node.name for node in _weight_matmuls(onnx.load(str(fp32_path), load_external_data=False).graph)]


def ffn_output_linears(fp32_path: Path) -> list[str]:
    """Names of the weight MatMuls whose input is an FFN activation: the FFN output projections
    (one per block that has FFN rows), found from the graph's structure, not from module names."""
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    activations = {out for node in graph.node if node.op_type in FFN_ACTIVATION_OPS for out in node.output}
    return [node.name for node in _weight_matmuls(graph) if node.input[0] in activations]


def quantize_ffn_out_per_token(fp32_path: Path, out_path: Path) -> list[str]:
    """per_channel dynamic INT8, except the FFN output projections: per-token activation scales there.
    Returns the names of the nodes made per-token.

    Why: a per-tensor activation scale is set by the tensor's largest value. After GELU a few tokens
    carry values many times larger than the rest, so one scale over the (batch, seq, ffn) tensor leaves
    most tokens only a few integer levels; one scale per token row keeps each token's resolution.
    Measured on the extractive-QA student in docs/tasks.md (``bench/int8_methods.py``).
    """
    names = ffn_output_linears(fp32_path)
    if not names:
        raise ExportError(
            f"{fp32_path} has no FFN output projection (a weight MatMul reading one of "
            f"{', '.join(FFN_ACTIVATION_OPS)}), so ffn_out_per_token has nothing to keep per token. "
            f"Export with export_student (its graph optimization fuses GELU) or use per_channel / per_token."
        )
    quantize_per_channel_with_per_token(fp32_path, out_path, names)
    return names


def quantize_per_channel_with_per_token(fp32_path: Path, out_path: Path, per_token_nodes: list[str]) -> dict[str, int]:
    """per_channel dynamic INT8 of ``fp32_path``, except the weight MatMuls named in ``per_token_nodes``,
    which become per-token INT8 linears (one activation scale per token row, :mod:`batch_invariant`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from distilprune.export.batch_invariant import rewrite_linears_per_token

    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".per-token-sites-") as work:
        model = onnx.load(str(fp32_path))
        rewrite_linears_per_token(model, set(per_token_nodes))
        rewritten, quantized = Path(work) / "rewritten.onnx", Path(work) / "quantized.onnx"
        onnx.save(model, str(rewritten))
        with _quiet():  # the rest exactly as per_channel (the rewritten MatMuls are integer kernels already)
            quantize_dynamic(
                str(rewritten), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        quantized.replace(out_path)
    return count_ops(out_path, QUANTIZED_OPS)


def _reader(feeds: list[dict[str, np.ndarray]]):
    """An onnxruntime CalibrationDataReader over feeds {input name: (batch, seq) int64}."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

    return Reader()


def quantize_static_int8(fp32_path: Path, out_path: Path, calibration: list[dict[str, np.ndarray]]) -> dict[str, int]:
    """Static INT8 (QOperator, u8 activations x s8 weights) of the fused graph, calibrated on ``calibration``.

    Why these choices (measured with onnxruntime 1.31 on the fused student graph):

    - ``quantize_static`` straight on the fused graph fails: ONNX shape inference does not know the
      contrib ops (Attention, SkipLayerNormalization, BiasGelu), so every tensor after the first one has
      no type, the quantizer skips it, and then finds no scale for the classifier's input. Running ORT's
      symbolic shape inference first (``quant_pre_process`` with ``skip_optimization=True``, which keeps
      the fused nodes) gives every tensor a type, and static quantization then works on the fused graph.
    - Quantizing the pre-fusion (raw) graph also works, but the Q/DQ pairs between the attention
      MatMuls stop the later attention fusion, so it runs slower than even the fp32 fused graph.
    - ORT has no static QAttention: fused Attention stays fp32 while the out-projection, FFN, heads
      (QLinearMatMul / QGemm) and the embedding table (QEmbedLayerNormalization) become INT8.
    - QOperator with u8 activations uses the u8s8 kernels that are fast on x86; QDQ with s8 activations
      was as accurate but no faster than fp32 here.
    """
    if not calibration:
        raise ExportError(
            "Static INT8 quantization needs calibration samples and none were given. Pass tokenized "
            "training batches (export.calibration_examples > 0) or remove 'static' from export.int8_fallbacks."
        )
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".static-") as work:
        typed = Path(work) / "typed.onnx"
        with _quiet():
            quant_pre_process(str(fp32_path), str(typed), skip_optimization=True)
            quantize_static(
                str(typed), str(Path(work) / "static.onnx"), _reader(calibration),
                quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "EmbedLayerNormalization"],
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        (Path(work) / "static.onnx").replace(out_path)
    return count_ops(out_path, QUANTIZED_OPS)


def _layer_key(text: str) -> str | None:
    match = re.search(r"layer[./_](\d+)", text)
    return f"layer {match.group(1)}" if match else None


def quantizable_groups(fp32_path: Path) -> dict[str, list[str]]:
    """Quantizable node names of the graph, grouped by layer: {"embeddings"|"layer N"|"head": [names]}.

    The exporter names nodes after the module path (``/layer.0/ffn/lin1/MatMul``); fused nodes
    (``Attention_0``) lose it, so they take the layer of the node that consumes their output.
    A Gemm appears twice because the dynamic quantizer first rewrites it as ``<name>_MatMul`` + Add,
    and ``nodes_to_exclude`` must name the rewritten node to keep it in float.
    """
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in QUANTIZABLE_OPS or not node.name:
            continue
        key = _layer_key(node.name)
        for output in node.output:
            for consumer in consumers.get(output, []):
                key = key or _layer_key(consumer)
        if key is None:
            key = "embeddings" if node.op_type == "EmbedLayerNormalization" or "embed" in node.name.lower() else "head"
        names = [node.name, f"{node.name}_MatMul"] if node.op_type == "Gemm" else [node.name]
        groups.setdefault(key, []).extend(names)
    return groups


def _logits(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The model's logits on each feed (shapes differ between feeds of token and span models)."""
    session = ort_session(path, threads=1)
    return [run_logits(session, feed) for feed in feeds]


def _mean_abs_error(logits: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean |logit - reference| over every element of every feed."""
    total = sum(float(np.abs(a - b).sum()) for a, b in zip(logits, reference, strict=True))
    return total / max(1, sum(a.size for a in reference))


def sensitive_groups(
    fp32_path: Path, work_dir: Path, calibration: list[dict[str, np.ndarray]]
) -> list[tuple[str, float, list[str]]]:
    """Rank layers by how much INT8 logit error goes away when that layer alone stays float.

    For each group of :func:`quantizable_groups`, quantize dynamically with that group excluded and
    measure the mean |logit - fp32 logit| on the first calibration batches. Returns
    ``[(group, error removed, node names)]``, most sensitive first. Costs one quantization and one
    small inference per group (about six for a 4-layer student).
    """
    feeds = calibration[:SENSITIVITY_BATCHES]
    reference = _logits(fp32_path, feeds)
    probe = work_dir / "probe.onnx"
    quantize_int8(fp32_path, probe)
    base_error = _mean_abs_error(_logits(probe, feeds), reference)
    ranked = []
    for group, names in quantizable_groups(fp32_path).items():
        _quantize_dynamic(fp32_path, probe, exclude=names)
        error = _mean_abs_error(_logits(probe, feeds), reference)
        ranked.append((group, base_error - error, names))
    probe.unlink(missing_ok=True)
    return sorted(ranked, key=lambda item: item[1], reverse=True)


def _quantize_dynamic(fp32_path: Path, out_path: Path, exclude: list[str]) -> None:
    """Dynamic QInt8 per-tensor, like :func:`quantize_int8`, keeping the ``exclude`` nodes in float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(fp32_path), str(out_path), weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def build_int8(
    method: str, fp32_path: Path, out_path: Path, work_dir: Path,
    calibration: list[dict[str, np.ndarray]] | None, exclude_top: int, key_length: int | None = None,
) -> dict:
    """Write ``method``'s INT8 model to ``out_path``; return what to record besides the measurements."""
    if method == "per_token":
        from distilprune.export.batch_invariant import quantize_per_token

        quantize_per_token(fp32_path, out_path, key_length=key_length)
        return {"key_length": key_length}
    if method == "dynamic":
        quantize_int8(fp32_path, out_path)
    elif method == "per_channel":
        quantize_int8(fp32_path, out_path, per_channel=True)
    elif method == "ffn_out_per_token":
        return {"per_token_nodes": quantize_ffn_out_per_token(fp32_path, out_path)}
    elif method == "reduce_range":
        quantize_int8(fp32_path, out_path, reduce_range=True)
    elif method == "static":
        quantize_static_int8(fp32_path, out_path, calibration or [])
        return {"calibration_batches": len(calibration or [])}
    elif method == "exclude_sensitive":
        if not calibration:
            raise ExportError(
                "Finding the sensitive layers needs calibration samples and none were given. Pass tokenized "
                "training batches or remove 'exclude_sensitive' from export.int8_fallbacks."
            )
        ranked = sensitive_groups(fp32_path, work_dir, calibration)
        chosen = ranked[:exclude_top]
        excluded = [name for _, _, names in chosen for name in names]
        _quantize_dynamic(fp32_path, out_path, exclude=excluded)
        return {
            "excluded_groups": [group for group, _, _ in chosen],
            "excluded_nodes": excluded,
            "sensitivity": {group: round(gain, 6) for group, gain, _ in ranked},
        }
    return {}


def _attempt(method: str, fp32_path: Path, path: Path, work: Path, calibration, exclude_top: int, evaluate,
             fp32_accuracy: float, max_drop: float, measure_p50, key_length: int | None = None) -> dict:
    """Quantize with ``method`` into ``path`` and score it; a failed quantization is recorded, not raised."""
    try:
        details = build_int8(method, fp32_path, path, work, calibration, exclude_top, key_length)
    except ExportError as error:
        return _failed(method, str(error))
    except Exception as error:  # an ORT quantizer bug must not hide the other attempts' results
        return _failed(method, f"{type(error).__name__}: {error}")
    accuracy = float(evaluate(path))
    drop = fp32_accuracy - accuracy
    # 1e-9: accuracies are ratios of counts; equal counts must not fail by float rounding
    passed = drop <= max_drop + 1e-9
    return {
        "method": method, "accuracy": accuracy, "drop": round(drop, 6),
        "p50_ms": round(float(measure_p50(path)), 3) if measure_p50 else None, "passed": passed,
        "size_mb": round(file_mb(path), 2), **details,
    }


def quantize_with_gate(
    fp32_path: Path,
    int8_path: Path,
    evaluate: Callable[[Path], float],
    fp32_accuracy: float,
    max_drop: float,
    fallbacks: list[str],
    calibration: list[dict[str, np.ndarray]] | None,
    measure_p50: Callable[[Path], float] | None = None,
    *,
    first: str = ExportConfig.int8_method,
    exclude_top: int = 2,
    key_length: int | None = None,
) -> dict:
    """Quantize ``fp32_path`` to ``int8_path``, trying fallbacks until accuracy is within ``max_drop``.

    Args:
        fp32_path: the graph-optimized fp32 model.
        int8_path: where the shipped INT8 model goes (written atomically, by rename).
        evaluate: model path -> accuracy in [0, 1] (one pass over the test split).
        fp32_accuracy: accuracy of ``fp32_path`` by the same ``evaluate``.
        max_drop: largest allowed ``fp32_accuracy - accuracy`` (0.01 = one point).
        fallbacks: methods of :data:`METHODS` tried in this order after ``first``.
        calibration: feeds {"input_ids", "attention_mask": (batch, seq) int64} from training
            samples, for ``static`` and ``exclude_sensitive``; those are recorded as failed without it.
        measure_p50: model path -> p50 latency in ms, or None: the attempts are not timed here (the
            export times the shipped file with every other model, in one clean process).
        first: the method tried first (default: the recipe default of ``export.int8_method``).
        exclude_top: how many of the most sensitive layers ``exclude_sensitive`` keeps in float.
        key_length: ``per_token``'s fixed attention key count (the tokenizer's max_seq_len).

    Returns:
        {"attempts": [{"method", "accuracy", "drop", "p50_ms", "passed", "size_mb", ...}],
        "shipped": method, "passed": bool, "verdict": one sentence, "quantized_ops": counts}.
        An attempt whose quantization itself failed has accuracy None and an "error" text.
    """
    methods = _check_methods(fallbacks, first)
    if max_drop < 0:
        raise ConfigError(
            f"export.int8_max_drop={max_drop:g} is negative; it is the largest allowed accuracy loss of "
            f"INT8 against fp32 (0.01 = one point). Use 0 or a positive value."
        )
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    attempts: list[dict] = []
    files: dict[str, Path] = {}
    work = Path(tempfile.mkdtemp(dir=int8_path.parent, prefix=f".{int8_path.stem}.attempts-"))
    try:
        for method in methods:
            path = work / f"{method}.onnx"
            attempts.append(_attempt(method, fp32_path, path, work, calibration, exclude_top, evaluate,
                                     fp32_accuracy, max_drop, measure_p50, key_length))
            if attempts[-1]["accuracy"] is not None:
                files[method] = path
            if attempts[-1]["passed"]:
                break
        if not files:
            raise ExportError(
                f"Every INT8 quantization of {fp32_path} failed ({'; '.join(a['method'] + ': ' + a['error'] for a in attempts)}). "
                f"Check that the file is a valid ONNX model from export_student, or turn INT8 off for this run."
            )
        shipped = _choose(attempts)
        files[shipped["method"]].replace(int8_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "attempts": attempts,
        "shipped": shipped["method"],
        "passed": shipped["passed"],
        "verdict": _verdict(attempts, shipped, fp32_accuracy, max_drop),
        "quantized_ops": count_ops(int8_path, QUANTIZED_OPS),
    }


def _failed(method: str, error: str) -> dict:
    return {"method": method, "accuracy": None, "drop": None, "p50_ms": None, "passed": False, "size_mb": None, "error": error}


def _choose(attempts: list[dict]) -> dict:
    """The passing attempt (there is at most one: the loop stops there), else the most accurate one
    (ties: the faster p50)."""
    measured = [a for a in attempts if a["accuracy"] is not None]
    passing = [a for a in measured if a["passed"]]
    if passing:
        return passing[0]
    # ties: the faster p50 where attempts were timed, else the smaller file
    return max(measured, key=lambda a: (a["accuracy"], -(a["p50_ms"] if a["p50_ms"] is not None else a["size_mb"])))


def _pts(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def _verdict(attempts: list[dict], shipped: dict, fp32_accuracy: float, max_drop: float) -> str:
    allowed = f"{_pts(max_drop)} points allowed"
    if shipped["passed"] and shipped is attempts[0]:
        return (
            f"INT8 {shipped['method']} passed: {_pts(shipped['accuracy'])}% against {_pts(fp32_accuracy)}% fp32 "
            f"({_pts(shipped['drop'])} points lost, {allowed}); shipped {shipped['method']}."
        )
    tried = ", ".join(
        f"{a['method']} ({'failed to quantize' if a['accuracy'] is None else _pts(a['drop']) + ' pts'})"
        for a in attempts
    )
    if shipped["passed"]:
        return (
            f"Shipped {shipped['method']}, the first INT8 variant within the allowed drop ({allowed}): "
            f"{_pts(shipped['accuracy'])}% against {_pts(fp32_accuracy)}% fp32; tried in order {tried}."
        )
    return (
        f"No INT8 variant stayed within {allowed} of {_pts(fp32_accuracy)}% fp32 (tried {tried}); shipped the "
        f"most accurate, {shipped['method']} at {_pts(shipped['accuracy'])}%. Raise export.int8_max_drop, "
        f"add fallbacks to export.int8_fallbacks, or serve the fp32 model."
    )


def batch_invariant_int8(fp32_path: Path, out_path: Path, evaluate: Callable[[Path], float], fp32_accuracy: float,
                         max_drop: float, key_length: int) -> dict:
    """``per_token`` INT8 of ``fp32_path`` into ``out_path`` through the same accuracy gate, for servers
    that batch; returns the attempt record (``passed`` False, or ``accuracy`` None on failure: then
    ``out_path`` is not written)."""
    work = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.stem}.attempt-"))
    try:
        attempt = _attempt("per_token", fp32_path, work / "per_token.onnx", work, None, 0, evaluate,
                           fp32_accuracy, max_drop, None, key_length)
        if attempt["passed"]:
            (work / "per_token.onnx").replace(out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return attempt
