"""Batch-invariant INT8: per-token activation scales, attention keys padded to a fixed length.

Dynamic INT8 (``quantize_dynamic``) quantizes each MatMul input with one scale taken over the whole
(batch, seq, hidden) tensor, so a sentence's logits move with whatever is batched beside it, padding
included. :func:`quantize_per_token` rewrites the fused fp32 graph so that nothing a row computes
depends on another row or on how long the batch is padded:

- Every Linear (the fused attentions' Q/K/V projection, the attention output projection, both FFN
  MatMuls, the last block's separate projections) becomes per-token INT8: ``s = max|x_row| / 127`` (ReduceMax over the hidden axis; after GELU or ReLU, whose
  outputs have a known lower bound, ``max(max(x_row), 0.171) / 127`` without the Abs pass), ``q = round(x / s) + 128`` as
  uint8 (QuantizeLinear with a fixed scale 1 and zero point 128 after dividing by ``s``), an
  integer product against int8 weights with one scale per output channel (``MatMulIntegerToFloat``:
  ``MatMulInteger`` whose output stage applies ``w_scale[channel]``), then ``* s``. Each step is
  row-wise or exact integer arithmetic.
- Padding is the other source of change: a softmax over 40 keys and one over the same 25 keys plus
  15 masked ones sum in different orders, so fp32 attention differs in the last bit, and one flipped
  rounding in a later quantization turns that into a visible logit change. The attention therefore
  always runs over ``key_length`` keys: the fused ``Attention`` becomes per-token Q/K/V projections
  plus ``MultiHeadAttention`` with keys, values and the key padding mask padded to ``key_length``,
  and the last block's separate softmax (it queries [CLS] only) and its product with the values run
  over scores and values padded the same way. Masked keys get probability exactly 0, so the padding
  adds exact zeros, and every sum over keys has P terms in the same order alone or batched.
- The word and position tables become ``QEmbedLayerNormalization`` (int8 weights, gathered per
  token: row-wise), as in dynamic INT8. The classifier head's two Gemms (one [CLS] row per sentence)
  become MatMul + Add there and are per-token INT8 like every other Linear.

Queries keep the batch's own length, so short sentences stay cheap; only the attention scores grow
to ``key_length`` columns.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distilprune.errors import ExportError
from distilprune.export.onnx_export import _quiet, count_ops

PER_TOKEN_OPS = (
    "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "ReduceMax",
    "MultiHeadAttention", "Attention", "QAttention", "QEmbedLayerNormalization", "EmbedLayerNormalization", "MatMul", "Softmax", "Gemm",
)
# Largest int8 magnitude used on both sides: symmetric, so -128 is never produced.
INT8_MAX = 127.0
# A row of zeros (max |x| = 0) would divide by zero; any positive floor gives q = 128 (zero) there.
MIN_ROW_MAX = 1e-30
# Lower bounds of activation outputs (the FFN's, read by its output projection). GELU's minimum is
# x * Phi(x) at x = -0.752, -0.16997; its tanh form (FastGelu) and QuickGelu stay above -0.171 too.
ACTIVATION_LOWEST = {"BiasGelu": -0.171, "Gelu": -0.171, "FastGelu": -0.171, "QuickGelu": -0.171, "Relu": 0.0}


class _Builder:
    """Appends nodes and initializers under unique names; keeps new nodes in topological order."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.inits = {init.name: init for init in self.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []  # emitted in order; spliced in place of the node replaced
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"pt/{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def op(
        self, op_type: str, inputs: list[str], stem: str, outputs: int | list[str] = 1, domain: str = "", **attrs
    ) -> list[str]:
        """Append one node; ``outputs`` is a count (fresh names) or the output names to write."""
        names = outputs if isinstance(outputs, list) else [self.name(f"{stem}_out{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.name(stem), domain=domain, **attrs))
        return names

    def weight(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name]).astype(np.float32)


def _quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight (in, out) fp32 -> (int8 (in, out), scale (out,) fp32): symmetric, one scale per output column."""
    scale = np.abs(weight).max(axis=0) / INT8_MAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(weight / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, scale


def _quantize_rows(b: _Builder, x: str, stem: str, lowest: float | None = None) -> tuple[str, str]:
    """x (..., in) fp32 -> (uint8 (..., in) = round(x / s) + 128, s (..., 1) fp32 = max|x_row| / 127).

    ``lowest``: a known lower bound (<= 0) of every value of x (an activation's output). Then
    max(max(x_row), -lowest) bounds max|x_row| from above, so s comes from one ReduceMax without
    the Abs pass; it equals max|x_row| whenever the row's largest value is at least -lowest, and is
    never smaller (nothing is clipped)."""
    if lowest is None:
        (absx,) = b.op("Abs", [x], f"{stem}/abs")
        floor = MIN_ROW_MAX
    else:
        absx, floor = x, max(-lowest, MIN_ROW_MAX)
    (row_max,) = b.op("ReduceMax", [absx], f"{stem}/rowmax", axes=[-1], keepdims=1)  # (..., 1)
    (row_max,) = b.op("Max", [row_max, b.const("floor", np.array(floor, np.float32))], f"{stem}/floor")
    (inv,) = b.op("Div", [b.const("qmax", np.array(INT8_MAX, np.float32)), row_max], f"{stem}/inv")
    (scaled,) = b.op("Mul", [x, inv], f"{stem}/scaled")  # every row now spans [-127, 127]
    (x_u8,) = b.op(
        "QuantizeLinear", [scaled, b.const("one", np.array(1.0, np.float32)), b.const("zp", np.array(128, np.uint8))],
        f"{stem}/quant",
    )
    return x_u8, row_max


def _integer_linear(
    b: _Builder, x_u8: str, row_max: str, weight: np.ndarray, stem: str, output: str | None = None
) -> str:
    """``(x_u8 - 128) @ int8(weight) * w_scale[col] * row_max / 127``: (..., in) -> (..., out) fp32, no bias."""
    w_int8, w_scale = _quantize_weight(weight)
    # MatMulIntegerToFloat applies the per-column weight scale in the GEMM's output stage; its
    # activation scale must be a scalar, so it is 1 here and the row scale follows in one Mul.
    (acc,) = b.op(
        "MatMulIntegerToFloat",
        [x_u8, b.const("w", w_int8), b.const("one", np.array(1.0, np.float32)),
         b.const("wscale", w_scale / INT8_MAX), b.const("zp", np.array(128, np.uint8))],
        f"{stem}/mmi", domain="com.microsoft",
    )
    return b.op("Mul", [acc, row_max], f"{stem}/rowscale", outputs=[output] if output else 1)[0]


def _per_token_linear(b: _Builder, x: str, weight: np.ndarray, stem: str, output: str | None = None,
                      lowest: float | None = None) -> str:
    """Emit ``x @ weight`` with per-row activation scales, written to ``output`` (fresh name when None).
    The fused graph adds every bias later (SkipLayerNormalization, BiasGelu, Add). ``lowest``: see
    :func:`_quantize_rows`."""
    x_u8, row_max = _quantize_rows(b, x, stem, lowest)
    return _integer_linear(b, x_u8, row_max, weight, stem, output)


def _input_lower_bound(graph: onnx.GraphProto) -> dict[str, float]:
    """Tensor name -> known lower bound, for the outputs of activations in :data:`ACTIVATION_LOWEST`."""
    return {out: ACTIVATION_LOWEST[node.op_type] for node in graph.node if node.op_type in ACTIVATION_LOWEST
            for out in node.output[:1]}


class _KeyPadding:
    """Shared tensors for padding the key axis from the batch's length S to ``key_length``."""

    def __init__(self, b: _Builder, key_length: int) -> None:
        i64 = lambda values: np.array(values, np.int64)  # noqa: E731
        (seq,) = b.op("Shape", ["attention_mask"], "keys/seq", start=1, end=2)  # (1,) = S
        (extra,) = b.op("Sub", [b.const("keylen", i64([key_length])), seq], "keys/extra")
        # Longer inputs than key_length are not padded (and not cut): Max(P - S, 0).
        (extra,) = b.op("Max", [extra, b.const("zero", i64([0]))], "keys/extra_pos")
        zeros = lambda n: b.const("zeros", i64([0] * n))  # noqa: E731
        (self.pads_rank2,) = b.op("Concat", [zeros(3), extra], "keys/pads2", axis=0)
        (self.pads_rank3,) = b.op("Concat", [zeros(4), extra, zeros(1)], "keys/pads3", axis=0)
        (self.pads_rank4,) = b.op("Concat", [zeros(7), extra], "keys/pads4", axis=0)  # last axis
        (self.pads_rank4_rows,) = b.op("Concat", [zeros(6), extra, zeros(1)], "keys/pads4_rows", axis=0)
        (mask,) = b.op("Pad", ["attention_mask", self.pads_rank2], "keys/mask_pad")
        (self.mask_int32,) = b.op("Cast", [mask], "keys/mask_i32", to=TensorProto.INT32)  # (B, P)
        self.builder = b
        self.key_length = key_length


def _replace_attention(b: _Builder, node: onnx.NodeProto, keys: _KeyPadding) -> None:
    """Fused ``Attention`` (x, qkv weight (in, 3*inner), qkv bias, mask) -> per-token QKV + MultiHeadAttention."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("unidirectional") or (len(node.input) > 4 and any(node.input[4:])):
        raise ExportError(
            f"Attention node {node.name} uses a causal mask or extra inputs; the per-token INT8 rewrite "
            f"handles encoder self-attention only. Quantize this model with another INT8 method."
        )
    weight, bias = b.weight(node.input[1]), b.weight(node.input[2])
    sizes = list(attrs.get("qkv_hidden_sizes", [weight.shape[1] // 3] * 3))
    stem = f"{node.name}/qkv"
    x_u8, row_max = _quantize_rows(b, node.input[0], stem)  # one quantization feeds Q, K and V
    bounds = np.cumsum([0, *sizes])
    query, key, value = (
        _integer_linear(b, x_u8, row_max, weight[:, bounds[i]:bounds[i + 1]], f"{stem}/{part}")
        for i, part in enumerate(("q", "k", "v"))
    )
    (key,) = b.op("Pad", [key, keys.pads_rank3], f"{node.name}/key_pad")  # (B, P, k)
    (value,) = b.op("Pad", [value, keys.pads_rank3], f"{node.name}/value_pad")
    mha_attrs = {"num_heads": attrs["num_heads"]}
    if "scale" in attrs:
        mha_attrs["scale"] = attrs["scale"]
    if "mask_filter_value" in attrs:
        mha_attrs["mask_filter_value"] = attrs["mask_filter_value"]
    # The Q/K/V bias is added inside the kernel; a padded key row then holds the bias, which its
    # mask makes irrelevant (probability exactly 0).
    b.op("MultiHeadAttention", [query, key, value, b.const("qkv_bias", bias), keys.mask_int32], f"{node.name}/mha",
         outputs=[node.output[0]], domain="com.microsoft", **mha_attrs)


def _pad_softmax(b: _Builder, node: onnx.NodeProto, keys: _KeyPadding) -> None:
    """Softmax over the last axis of scores (B, heads, q, S), padded to P columns with the lowest
    float: the padded columns get probability exactly 0 and the sum runs over P terms in every batch."""
    (padded,) = b.op(
        "Pad", [node.input[0], keys.pads_rank4, b.const("lowest", np.array(np.finfo(np.float32).min, np.float32))],
        f"{node.name}/pad",
    )
    b.op("Softmax", [padded], f"{node.name}/softmax", outputs=[node.output[0]], axis=-1)


def _pad_values(b: _Builder, node: onnx.NodeProto, keys: _KeyPadding) -> None:
    """probs (B, heads, q, P) @ values (B, heads, S, d): values padded to P rows with zeros, so the
    product sums P terms (the padded ones exactly 0) whatever the batch's length."""
    (values,) = b.op("Pad", [node.input[1], keys.pads_rank4_rows], f"{node.name}/pad")
    b.op("MatMul", [node.input[0], values], f"{node.name}/matmul", outputs=[node.output[0]])


def _key_length(graph: onnx.GraphProto, key_length: int | None) -> int:
    """``key_length`` when given, else the position table's rows (no input can be longer)."""
    if key_length is not None:
        return key_length
    for node in graph.node:
        if node.op_type in ("EmbedLayerNormalization", "QEmbedLayerNormalization"):
            for init in graph.initializer:
                if init.name == node.input[3]:
                    return int(init.dims[0])
    raise ExportError(
        "The graph has no fused EmbedLayerNormalization to read the longest input from; pass key_length "
        "(the tokenizer's max_seq_len) to quantize_per_token."
    )


def rewrite_linears_per_token(model: onnx.ModelProto, node_names: set[str]) -> None:
    """Rewrite the weight ``MatMul`` nodes named in ``node_names`` into per-token INT8 linears, in place
    (same output names, so every consumer is unchanged); every other node is left as it is."""
    b = _Builder(model)
    lowest = _input_lower_bound(model.graph)

    def replace(node: onnx.NodeProto) -> bool:
        if node.name in node_names and is_weight_matmul(node, b.inits):
            _replace_linear(b, node, lowest)
            return True
        return False

    _rewrite_nodes(model, b, replace)


def is_weight_matmul(node: onnx.NodeProto, initializers) -> bool:
    """Whether ``node`` is a linear: a MatMul whose second input is a weight (a name in ``initializers``)."""
    return node.op_type == "MatMul" and node.input[1] in initializers


def _replace_linear(b: _Builder, node: onnx.NodeProto, lowest: dict[str, float]) -> None:
    """A weight MatMul -> a per-token INT8 linear writing the same output."""
    _per_token_linear(b, node.input[0], b.weight(node.input[1]), node.name, node.output[0], lowest.get(node.input[0]))


def _rewrite_nodes(model: onnx.ModelProto, b: _Builder, replace) -> None:
    """Walk the graph's nodes in order: ``replace(node)`` emits a node's replacement into ``b.nodes`` and
    returns True, or returns False to keep the node. Then installs the new nodes (after any that ``b``
    emitted before the walk) and drops what the old nodes alone used."""
    new_nodes = list(b.nodes)
    for node in model.graph.node:
        b.nodes = []
        if not replace(node):
            b.nodes = [node]
        new_nodes.extend(b.nodes)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    del model.graph.value_info[:]  # recorded shapes of the old graph (a softmax's S columns are now P)
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]  # drop the replaced fp32 weights
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _rewrite(model: onnx.ModelProto, key_length: int) -> None:
    """Replace Attention, attention Softmax and weight MatMul nodes in place, in topological order."""
    b = _Builder(model)
    keys = _KeyPadding(b, key_length)  # its shared nodes come first
    lowest = _input_lower_bound(model.graph)
    probabilities: set[str] = set()  # outputs of the attention softmaxes

    def replace(node: onnx.NodeProto) -> bool:
        if node.op_type == "Attention" and node.domain == "com.microsoft":
            _replace_attention(b, node, keys)
        elif node.op_type == "Softmax":
            _pad_softmax(b, node, keys)
            probabilities.add(node.output[0])
        elif node.op_type == "MatMul" and node.input[0] in probabilities:
            _pad_values(b, node, keys)
        elif is_weight_matmul(node, b.inits):
            _replace_linear(b, node, lowest)
        else:
            return False
        return True

    _rewrite_nodes(model, b, replace)


def quantize_per_token(fp32_path: Path, out_path: Path, key_length: int | None = None) -> dict[str, int]:
    """Write a batch-invariant INT8 model of the fused fp32 graph ``fp32_path`` to ``out_path``.

    Args:
        fp32_path: the graph-optimized fp32 model (``export_student``'s ``model.onnx``).
        out_path: where the INT8 model goes (written under a temporary name, then renamed).
        key_length: the attention's fixed key count P; default the position table's rows. The
            tokenizer's ``max_seq_len`` is enough and makes the attention scores smaller.

    Returns:
        Node counts of :data:`PER_TOKEN_OPS` in the written graph.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir = out_path.parent
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".per-token-") as work:
        embed = Path(work) / "embed.onnx"
        with _quiet():  # only the embedding tables: weight-only int8, gathered per token
            quantize_dynamic(
                str(fp32_path), str(embed), weight_type=QuantType.QInt8,
                op_types_to_quantize=["EmbedLayerNormalization"],
                extra_options={"DefaultTensorType": TensorProto.FLOAT},
            )
        model = onnx.load(str(embed))
        _rewrite(model, _key_length(model.graph, key_length))
        tmp = Path(work) / "per_token.onnx"
        onnx.save(model, str(tmp))
        tmp.replace(out_path)
    return count_ops(out_path, PER_TOKEN_OPS)
