"""export.layer_norm=centered_rms: fused LayerNorms rewritten as centred RMS norms compute the same
logits, stay unfused in ONNX Runtime's optimized graph, and every INT8 method quantizes the result."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import tiny_bert
from distilprune.export.layer_norm import lower_layer_norms
from distilprune.export.onnx_export import count_ops, export_student, ort_logits, ort_session
from distilprune.students import student_from_teacher


def _span_student():
    from transformers import BertForQuestionAnswering

    torch.manual_seed(0)
    teacher = BertForQuestionAnswering(tiny_bert(num_layers=3).config).eval()
    return student_from_teacher(teacher, num_layers=2, init_layers=[0, 2], head="span").eval()


STUDENTS = {
    "sequence": lambda: student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval(),
    "token": lambda: student_from_teacher(tiny_bert(num_layers=3, num_labels=5), num_layers=2, head="token").eval(),
    "span": _span_student,
}


@pytest.mark.parametrize("head,opset", [("sequence", 17), ("token", 17), ("span", 17), ("sequence", 18)])
def test_rewritten_layer_norms_give_the_fused_graphs_logits(tmp_path, batch, head, opset):
    student = STUDENTS[head]()
    fused = export_student(student, tmp_path / "fused", opset=opset, quantize=False, layer_norm="fused")
    lowered = export_student(student, tmp_path / "lowered", opset=opset, quantize=False)
    assert lowered.lowered_layer_norms == fused.fused_ops["SkipLayerNormalization"] == 4  # 2 per layer
    ops = count_ops(lowered.fp32_path)
    assert ops.get("SkipLayerNormalization", 0) == 0 and ops["SimplifiedLayerNormalization"] == 4
    assert count_ops(fused.fp32_path)["SkipLayerNormalization"] == 4
    for ids, mask in (batch, (batch[0][:1, :5], batch[1][:1, :5])):  # padded batch; one short sentence
        expected = ort_logits(ort_session(fused.fp32_path, 1), ids, mask)
        got = ort_logits(ort_session(lowered.fp32_path, 1), ids, mask)
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5
        with torch.no_grad():
            reference = student(ids, mask).numpy()
        if head == "span":
            reference = np.stack([reference[..., 0], reference[..., 1]], axis=-1)
        assert np.abs(got.reshape(reference.shape) - reference).max() < 1e-4


def test_recipe_choices_are_the_rewrites_choices():
    from distilprune.config.schema import CHOICES, ExportConfig
    from distilprune.export.layer_norm import LAYER_NORM_CHOICES

    assert CHOICES["export.layer_norm"] == LAYER_NORM_CHOICES and ExportConfig().layer_norm == LAYER_NORM_CHOICES[0]


def test_onnx_runtime_does_not_fuse_the_rewrite_back(tmp_path):
    """The speed comes from running SimplifiedLayerNormalization instead of a LayerNorm kernel: the
    session's own graph optimizations (all levels) must leave it so."""
    exported = export_student(STUDENTS["sequence"](), tmp_path, quantize=False)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "as_run.onnx")
    ort.InferenceSession(str(exported.fp32_path), options, providers=["CPUExecutionProvider"])
    ops = count_ops(tmp_path / "as_run.onnx")
    assert ops["SimplifiedLayerNormalization"] == 4
    assert not any(ops.get(op) for op in ("LayerNormalization", "SkipLayerNormalization"))


def test_bias_add_folds_into_the_int8_products(tmp_path):
    """The rewrite adds each linear's bias to its output first, so ONNX Runtime folds that Add into the
    per_channel INT8 product before it: no add_bias node is left in the session's graph."""
    from distilprune.export.quantize import build_int8

    fp32 = export_student(STUDENTS["token"](), tmp_path, quantize=False).fp32_path
    int8 = tmp_path / "per_channel.onnx"
    build_int8("per_channel", fp32, int8, tmp_path, None, exclude_top=1)
    written = [node.name for node in onnx.load(str(int8)).graph.node if node.name.endswith("/add_bias")]
    assert len(written) == 4  # one per rewritten LayerNorm, in the file
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "as_run.onnx")
    ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    run = onnx.load(str(tmp_path / "as_run.onnx")).graph.node
    assert not [node.name for node in run if node.name.endswith("/add_bias")]
    assert sum(node.op_type == "DynamicQuantizeMatMul" and len(node.input) > 4 and bool(node.input[4]) for node in run) >= 4


def _skip_layer_norm_model(read_mean: bool) -> onnx.ModelProto:
    hidden = 8
    consts = [numpy_helper.from_array(np.linspace(0.5, 1.5, hidden, dtype=np.float32), "gamma"),
              numpy_helper.from_array(np.linspace(-1, 1, hidden, dtype=np.float32), "beta"),
              numpy_helper.from_array(np.full(hidden, 0.25, np.float32), "bias")]
    outputs = ["y", "mean"] if read_mean else ["y"]
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], outputs,
                            name="layer.0/sln", domain="com.microsoft", epsilon=1e-5)
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    graph = helper.make_graph([node], "g", [value("x"), value("skip")], [value(name) for name in outputs], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=9)


def test_bias_input_is_kept_and_a_node_whose_mean_is_read_stays_fused(tmp_path):
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(2, 3, 8)).astype(np.float32), "skip": rng.normal(size=(2, 3, 8)).astype(np.float32)}
    path = tmp_path / "sln.onnx"
    onnx.save(_skip_layer_norm_model(read_mean=False), str(path))
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert lower_layer_norms(path) == 1
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.abs(got - expected).max() < 1e-5  # bias, gamma, beta and epsilon all carried over
    summed = feed["x"] + feed["skip"] + 0.25
    by_hand = (summed - summed.mean(-1, keepdims=True)) / np.sqrt(summed.var(-1, keepdims=True) + 1e-5)
    assert np.abs(got - (by_hand * np.linspace(0.5, 1.5, 8) + np.linspace(-1, 1, 8))).max() < 1e-5

    onnx.save(_skip_layer_norm_model(read_mean=True), str(path))
    assert lower_layer_norms(path) == 0 and count_ops(path)["SkipLayerNormalization"] == 1


@pytest.mark.parametrize("method", ["per_channel", "per_token", "static", "exclude_sensitive"])
def test_every_int8_method_quantizes_the_rewritten_graph(tmp_path, method):
    from distilprune.export.quantize import build_int8

    student = STUDENTS["sequence"]()
    fp32 = export_student(student, tmp_path, quantize=False).fp32_path
    rng = np.random.default_rng(1)
    calibration = [{"input_ids": rng.integers(5, 40, (4, 12)).astype(np.int64),
                    "attention_mask": np.ones((4, 12), np.int64)} for _ in range(3)]
    out = tmp_path / f"{method}.onnx"
    build_int8(method, fp32, out, tmp_path, calibration, exclude_top=1, key_length=16)
    ops = count_ops(out)
    assert ops["SimplifiedLayerNormalization"] == 4
    assert ops.get("MatMulInteger", 0) + ops.get("MatMulIntegerToFloat", 0) + ops.get("QLinearMatMul", 0) > 0
    feed = calibration[0]
    int8 = ort_session(out, 1).run(None, feed)[0]
    reference = ort_session(fp32, 1).run(None, feed)[0]
    assert int8.shape == reference.shape and np.abs(int8 - reference).max() < 0.5
