"""Per-token INT8 (export/batch_invariant.py) on a tiny exported student (hidden 64, 2 layers, 2 heads of 32).

A sentence's logits are computed alone (its own length, no padding) and inside random batches of
2-32 sentences padded to the batch's longest plus a few extra pad tokens; the per-token model must
give the same logits both ways, where per-channel dynamic INT8 does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import VOCAB, tiny_bert
from distilprune.errors import ExportError
from distilprune.export.batch_invariant import quantize_per_token
from distilprune.export.onnx_export import count_ops, export_student, ort_session, quantize_int8
from distilprune.students import student_from_teacher

# Largest |logit(alone) - logit(batched)| accepted; the per-token graph measures 0.0 here.
INVARIANCE_ATOL = 1e-5


def _sentences(count: int, seed: int, max_len: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(count):
        ids = rng.integers(5, len(VOCAB), int(rng.integers(3, max_len))).astype(np.int64)
        ids[0] = 2  # [CLS]
        sentences.append(ids)
    return sentences


def _alone(session, sentences: list[np.ndarray]) -> np.ndarray:
    """(count, labels) logits, one sentence per call at its own length."""
    return np.concatenate([
        session.run(None, {"input_ids": ids[None], "attention_mask": np.ones((1, len(ids)), np.int64)})[0]
        for ids in sentences
    ])


def _batched(session, sentences: list[np.ndarray], seed: int, max_batch: int = 32) -> np.ndarray:
    """The same logits from random batches of 2..max_batch, right-padded with [PAD] (id 0) to the
    batch's longest sentence plus 0-4 extra positions."""
    rng = np.random.default_rng(seed)
    order, logits, start = rng.permutation(len(sentences)), np.zeros((len(sentences), 2), np.float32), 0
    while start < len(order):
        rows = order[start:start + int(rng.integers(2, max_batch + 1))]
        start += len(rows)
        width = max(len(sentences[i]) for i in rows) + int(rng.integers(0, 5))
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for row, index in enumerate(rows):
            ids[row, :len(sentences[index])] = sentences[index]
            mask[row, :len(sentences[index])] = 1
        logits[rows] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return logits


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"fp32", "dynamic", "per_token"}: paths of one tiny student's models."""
    directory = tmp_path_factory.mktemp("per_token")
    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    fp32 = export_student(student, directory, quantize=False).fp32_path
    quantize_int8(fp32, directory / "dynamic.onnx", per_channel=True)
    quantize_per_token(fp32, directory / "per_token.onnx")
    return {"fp32": fp32, "dynamic": directory / "dynamic.onnx", "per_token": directory / "per_token.onnx"}


def test_logits_are_the_same_alone_and_in_padded_batches(models):
    sentences = _sentences(96, seed=0)
    gaps = {}
    for name in ("per_token", "dynamic"):
        session = ort_session(models[name], threads=1)
        alone = _alone(session, sentences)
        for seed in (1, 2):  # two different batchings of the same sentences
            batched = _batched(session, sentences, seed)
            gaps[name, seed] = float(np.abs(alone - batched).max())
            if name == "per_token":
                assert (alone.argmax(-1) == batched.argmax(-1)).all()
    assert max(gaps["per_token", s] for s in (1, 2)) <= INVARIANCE_ATOL, gaps
    # The same check on dynamic INT8 sees the batch: the check can fail.
    assert min(gaps["dynamic", s] for s in (1, 2)) > 10 * INVARIANCE_ATOL, gaps


def test_graph_has_per_token_int8_and_no_batch_wide_quantization(models):
    fp32_ops = count_ops(models["fp32"])
    ops = count_ops(models["per_token"])
    weight_matmuls = fp32_ops["MatMul"] - 2  # the last block's two attention products have no weights
    # One integer MatMul per Linear: Q, K and V of each fused attention, the other MatMuls, the two head
    # Gemms; one row-wise quantization per distinct input (Q, K and V share theirs).
    integer = ops["MatMulIntegerToFloat"]
    assert integer == 3 * fp32_ops["Attention"] + weight_matmuls + fp32_ops["Gemm"] == 14
    assert ops["QuantizeLinear"] == ops["ReduceMax"] == integer - 2 * fp32_ops["Attention"]
    # the FFN output projections read BiasGelu (bounded below): their row scale needs no Abs pass
    assert ops["Abs"] == ops["ReduceMax"] - fp32_ops["BiasGelu"] and fp32_ops["BiasGelu"] == 2
    assert ops.get("DynamicQuantizeLinear", 0) == 0 and ops.get("QAttention", 0) == 0
    assert ops["MultiHeadAttention"] == fp32_ops["Attention"] == 1 and ops.get("Attention", 0) == 0
    assert ops["QEmbedLayerNormalization"] == 1 and ops.get("EmbedLayerNormalization", 0) == 0
    matrices = [init for init in onnx.load(str(models["per_token"])).graph.initializer if len(init.dims) == 2]
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    assert len(matrices) == integer + 2 and all(init.data_type in eight_bit for init in matrices)  # + 2 tables


def test_close_to_fp32(models):
    """Per-token INT8 against fp32 on the same sentences: same label for at least 95% of them and
    logits within 0.05 (the tiny model's logits are about 0.1-1 in size; measured ~1e-3)."""
    sentences = _sentences(64, seed=3)
    fp32 = _alone(ort_session(models["fp32"], threads=1), sentences)
    int8 = _alone(ort_session(models["per_token"], threads=1), sentences)
    assert np.abs(fp32 - int8).max() < 0.05
    assert (fp32.argmax(-1) == int8.argmax(-1)).mean() >= 0.95


def test_short_key_length_and_longer_inputs(models, tmp_path):
    """key_length smaller than an input: the input is neither cut nor padded, and still runs."""
    short = tmp_path / "short.onnx"
    quantize_per_token(models["fp32"], short, key_length=16)
    sentences = _sentences(24, seed=4, max_len=14)
    session = ort_session(short, threads=1)
    alone, batched = _alone(session, sentences), _batched(session, sentences, seed=5, max_batch=8)
    assert float(np.abs(alone - batched).max()) <= INVARIANCE_ATOL
    long_ids = _sentences(1, seed=6, max_len=40)[0][None]
    long_ids = np.concatenate([long_ids, np.full((1, 40 - long_ids.shape[1]), 7)], axis=1)  # 40 > 16 tokens
    logits = session.run(None, {"input_ids": long_ids, "attention_mask": np.ones_like(long_ids)})[0]
    assert logits.shape == (1, 2) and np.isfinite(logits).all()


def test_graph_without_fused_embeddings_needs_a_key_length(tmp_path):
    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    from distilprune.export.onnx_export import export_onnx

    raw = export_onnx(student, tmp_path / "raw.onnx")
    with pytest.raises(ExportError, match="key_length"):
        quantize_per_token(raw, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def _gelu_linear_model(weight: np.ndarray) -> onnx.ModelProto:
    """x (rows, 8) -> Gelu -> MatMul(weight (8, 4)): the shape of an FFN output projection."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gelu", ["x"], ["act"], name="gelu", domain="com.microsoft"),
             helper.make_node("MatMul", ["act", "w"], ["y"], name="lin2")]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    graph = helper.make_graph(nodes, "g", [value("x")], [value("y")], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=9)


def test_row_scale_after_gelu_skips_abs_and_never_clips(tmp_path, monkeypatch):
    """After GELU (>= -0.17) the row scale is max(max(x_row), 0.171) / 127: no Abs pass; the same
    scale as max|x_row| / 127 when the row's largest value is at least 0.171, and never smaller."""
    from distilprune.export import batch_invariant

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 4)).astype(np.float32)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    x[2] = np.linspace(-3.0, -0.1, 8)  # GELU output of this row lies in [-0.17, -0.05]: max < 0.171
    results = {}
    for name, lowest in (("bounded", batch_invariant.ACTIVATION_LOWEST), ("abs", {})):
        monkeypatch.setattr(batch_invariant, "ACTIVATION_LOWEST", lowest)
        model = _gelu_linear_model(weight)
        batch_invariant.rewrite_linears_per_token(model, {"lin2"})
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, str(path))
        assert count_ops(path).get("Abs", 0) == (0 if name == "bounded" else 1)
        results[name] = ort_session(path, 1).run(None, {"x": x})[0]
    fp32_path = tmp_path / "fp32.onnx"
    onnx.save(_gelu_linear_model(weight), str(fp32_path))
    exact = ort_session(fp32_path, 1).run(None, {"x": x})[0]
    assert np.array_equal(results["bounded"][:2], results["abs"][:2])  # rows whose max is >= 0.171
    # the small row: a coarser scale (0.171 instead of its max |x| of 0.17), still within one step
    # of 0.171 / 127 per input element, so nothing was clipped
    step = 0.171 / 127
    assert np.abs(results["bounded"][2] - exact[2]).max() <= step * np.abs(weight).sum(0).max()
