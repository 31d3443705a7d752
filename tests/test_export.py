"""ONNX export facts on a tiny student: parity, fused attention, quantized MatMuls."""

import numpy as np
from conftest import VOCAB
import pytest
import torch

from distilprune.export.measure import latency_inputs, latency_onnx, time_ms
from distilprune.export.onnx_export import count_ops, export_student, ort_logits, ort_session
from distilprune.students import DistilBertStudent, StudentConfig, student_from_teacher


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from conftest import tiny_bert

    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    return student, export_student(student, tmp_path_factory.mktemp("bundle"))


def test_onnx_matches_pytorch_with_dynamic_batch_and_sequence(exported, batch):
    student, result = exported
    session = ort_session(result.fp32_path, threads=1)
    for input_ids, attention_mask in (batch, (batch[0][:1, :5], batch[1][:1, :5])):
        with torch.no_grad():
            expected = student(input_ids, attention_mask).numpy()
        assert np.abs(ort_logits(session, input_ids, attention_mask) - expected).max() < 1e-4


def test_optimized_graph_fuses_attention_in_every_layer_but_the_cls_only_last(exported):
    _, result = exported
    # The last block queries only [CLS] (DistilBertStudent.forward), which ORT's self-attention
    # fusion does not match: 2 layers, 1 fused Attention.
    assert result.fused_ops["Attention"] == 1
    assert result.fused_ops["SkipLayerNormalization"] == 4  # two residual LayerNorms per layer


def test_int8_graph_quantizes_every_projection(exported):
    _, result = exported
    ops = count_ops(result.int8_path)
    # first layer: one QAttention (Q, K, V packed) + MatMulInteger for attn_out, ffn_in, ffn_out;
    # last ([CLS]-only) layer: MatMulInteger for Q, K, V, attn_out, ffn_in, ffn_out, while its two
    # activation-by-activation products (scores, context) stay float MatMul; plus the
    # pre_classifier and classifier heads.
    assert ops.get("QAttention", 0) == 1
    assert ops.get("MatMulInteger", 0) + ops.get("DynamicQuantizeMatMul", 0) == 3 + 6 + 2
    assert ops.get("MatMul", 0) == 2


def test_int8_logits_stay_close_to_fp32(exported, batch):
    _, result = exported
    fp32 = ort_logits(ort_session(result.fp32_path, 1), *batch)
    int8 = ort_logits(ort_session(result.int8_path, 1), *batch)
    assert np.abs(fp32 - int8).max() < 0.1


def test_pruned_geometry_exports_and_fuses_per_layer_heads(tmp_path, batch):
    config = StudentConfig(vocab_size=80, hidden_size=64, head_dim=32, heads_per_layer=[2, 1, 0], ffn_width_per_layer=[128, 40, 0])
    student = DistilBertStudent(config).eval()
    result = export_student(student, tmp_path)
    with torch.no_grad():
        expected = student(*batch).numpy()
    assert np.abs(ort_logits(ort_session(result.fp32_path, 1), *batch) - expected).max() < 1e-4
    # layer 0 and 1 fuse; the head-less last layer has no attention at all
    assert result.fused_ops["Attention"] == 2


def test_latency_percentiles_are_ordered(exported):
    _, result = exported
    stats = latency_onnx(ort_session(result.int8_path, 1), latency_inputs(1, 16, len(VOCAB)), warmup=2, runs=20)
    assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"]
    assert time_ms(lambda: None, 0, 5)["runs"] == 5
