"""INT8 accuracy gate and fusion check on a tiny exported student (hidden 64, 2 layers, 2 heads of 32).

"Accuracy" here is agreement with the fp32 model's own predictions on 48 random sentences, so the
fp32 accuracy is 1.0 by construction and an INT8 model's accuracy is its argmax agreement with fp32.
"""

from __future__ import annotations

import inspect

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import VOCAB, tiny_bert
from distilprune.errors import ConfigError, ExportError
from distilprune.export.onnx_export import check_fusion, count_ops, export_student, ort_session
from distilprune.export import quantize as quantize_module
from distilprune.export.quantize import (
    METHODS,
    ffn_output_linears,
    quantizable_groups,
    quantize_static_int8,
    quantize_with_gate,
    sensitive_groups,
    weight_matmuls,
)
from distilprune.students import student_from_teacher
from distilprune.students.distilbert import MultiHeadSelfAttention


def _feeds(batches: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(batches):
        ids = rng.integers(5, len(VOCAB), (16, 16)).astype(np.int64)
        ids[:, 0] = 2  # [CLS]
        mask = np.ones_like(ids)
        mask[::3, 10:] = 0  # some padded rows, as in real batches
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def _predict(path: Path, feeds) -> np.ndarray:
    session = ort_session(path, threads=1)
    return np.concatenate([session.run(None, feed)[0] for feed in feeds]).argmax(-1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(fp32 path, evaluate, test feeds, calibration feeds); evaluate = agreement with fp32 argmax."""
    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    exported = export_student(student, tmp_path_factory.mktemp("fp32"))
    test_feeds, calibration = _feeds(3, seed=1), _feeds(4, seed=2)
    labels = _predict(exported.fp32_path, test_feeds)

    def evaluate(path: Path) -> float:
        return float((_predict(path, test_feeds) == labels).mean())

    return exported.fp32_path, evaluate, test_feeds, calibration


def _p50(path: Path) -> float:
    from distilprune.export.measure import time_ms

    session = ort_session(path, threads=1)
    feed = _feeds(1, seed=3)[0]
    return time_ms(lambda: session.run(None, feed), warmup=1, runs=3)["p50"]


def _float_nodes(path: Path) -> dict[str, str]:
    return {node.name: node.op_type for node in onnx.load(str(path)).graph.node}


def test_dynamic_first_passes_and_ships_alone(setup, tmp_path):
    fp32, evaluate, _, calibration = setup
    int8 = tmp_path / "model.int8.onnx"
    result = quantize_with_gate(fp32, int8, evaluate, 1.0, 0.5, list(METHODS[1:]), calibration, _p50, first="dynamic")
    assert [a["method"] for a in result["attempts"]] == ["dynamic"]
    assert result["shipped"] == "dynamic" and result["passed"] is True
    attempt = result["attempts"][0]
    assert attempt["accuracy"] >= 0.5 and attempt["drop"] == pytest.approx(1.0 - attempt["accuracy"])
    assert attempt["p50_ms"] > 0 and 0 < attempt["size_mb"] < 1
    assert result["quantized_ops"]["QAttention"] == 1  # the [CLS]-only last layer is not fused
    assert result["verdict"].startswith("INT8 dynamic passed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]  # no attempt files left


def test_nothing_passes_every_attempt_in_configured_order(setup, tmp_path):
    fp32, evaluate, _, calibration = setup
    calls: list[Path] = []

    def halved(path: Path) -> float:  # every variant loses at least half: nothing can pass 1 point
        calls.append(path)
        return 0.5 * evaluate(path)

    order = ["reduce_range", "static", "per_channel", "exclude_sensitive"]
    int8 = tmp_path / "model.int8.onnx"
    result = quantize_with_gate(fp32, int8, halved, 1.0, 0.01, order, calibration, _p50, first="dynamic")
    assert [a["method"] for a in result["attempts"]] == ["dynamic", *order]
    assert len(calls) == 5  # one evaluation per attempt
    assert all(a["accuracy"] is not None and a["passed"] is False for a in result["attempts"])
    assert all(a["drop"] >= 0.5 for a in result["attempts"])
    best = max(a["accuracy"] for a in result["attempts"])
    shipped = next(a for a in result["attempts"] if a["method"] == result["shipped"])
    assert result["passed"] is False and shipped["accuracy"] == best
    assert "No INT8 variant" in result["verdict"] and result["shipped"] in result["verdict"]
    assert int8.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]


def test_stops_at_first_passing_fallback_and_ships_it(setup, tmp_path):
    fp32, evaluate, _, calibration = setup
    scores = iter([0.2, 1.0])  # dynamic fails, per_channel passes; reduce_range is never tried
    int8 = tmp_path / "model.int8.onnx"
    result = quantize_with_gate(
        fp32, int8, lambda path: next(scores), 1.0, 0.01, ["per_channel", "reduce_range"], calibration, _p50,
        first="dynamic",
    )
    assert [a["method"] for a in result["attempts"]] == ["dynamic", "per_channel"]
    assert result["shipped"] == "per_channel" and result["passed"] is True
    assert "per_channel" in result["verdict"]
    # per-channel weights: the shipped file carries weight scales with one entry per output channel
    scales = [init for init in onnx.load(str(int8)).graph.initializer if init.name.endswith("_scale")]
    assert any(len(init.dims) == 1 and init.dims[0] > 1 for init in scales)


def test_static_int8_runs_and_agrees_with_fp32(setup, tmp_path):
    fp32, evaluate, test_feeds, calibration = setup
    out = tmp_path / "static.onnx"
    ops = quantize_static_int8(fp32, out, calibration)
    assert ops["QLinearMatMul"] > 0 and ops["QGemm"] > 0
    assert ops["Attention"] == 1  # ORT has no static QAttention; fused attention stays fp32
    assert evaluate(out) >= 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static.onnx"]


def test_exclude_sensitive_keeps_the_top_layers_float(setup, tmp_path):
    fp32, _, _, calibration = setup
    groups = quantizable_groups(fp32)
    assert set(groups) == {"embeddings", "layer 0", "layer 1", "head"}
    assert "Attention_0" in groups["layer 0"] and "/layer.1/ffn/lin2/MatMul" in groups["layer 1"]
    ranked = sensitive_groups(fp32, tmp_path, calibration)
    assert [g for g, _, _ in ranked] and sorted(g for g, _, _ in ranked) == sorted(groups)
    assert ranked[0][1] >= ranked[-1][1]

    scores = iter([0.0, 1.0])  # force the fallback
    int8 = tmp_path / "model.int8.onnx"
    result = quantize_with_gate(fp32, int8, lambda p: next(scores), 1.0, 0.01, ["exclude_sensitive"], calibration, _p50,
                                first="dynamic")
    attempt = result["attempts"][1]
    assert result["shipped"] == "exclude_sensitive" and len(attempt["excluded_groups"]) == 2
    nodes = _float_nodes(int8)
    kept = [name for name in attempt["excluded_nodes"] if name in nodes]
    assert kept  # the excluded nodes are still in the graph under their own names ...
    assert all(nodes[name] in ("MatMul", "Attention", "EmbedLayerNormalization") for name in kept)  # ... in float
    assert not any(name + "_quant" in nodes for name in attempt["excluded_nodes"])
    assert count_ops(int8)["MatMulInteger"] > 0  # the other layers are still INT8


def test_missing_calibration_is_recorded_not_fatal(setup, tmp_path):
    fp32, evaluate, _, _ = setup
    scores = iter([0.0, 0.0])
    result = quantize_with_gate(
        fp32, tmp_path / "m.onnx", lambda p: next(scores), 1.0, 0.01, ["static", "per_channel"], None, _p50,
        first="dynamic",
    )
    static = result["attempts"][1]
    assert static["method"] == "static" and static["accuracy"] is None and "calibration" in static["error"]
    assert result["attempts"][2]["method"] == "per_channel" and result["passed"] is False


def test_unknown_fallback_is_a_config_error(setup, tmp_path):
    fp32, evaluate, _, _ = setup
    with pytest.raises(ConfigError, match="per_chanel"):
        quantize_with_gate(fp32, tmp_path / "m.onnx", evaluate, 1.0, 0.01, ["per_chanel"], None, _p50)
    assert list(tmp_path.iterdir()) == []


# ---- fusion check (export/onnx_export.py) ----

def test_fusion_check_counts_fused_nodes(setup):
    fp32, *_ = setup
    counts = check_fusion(fp32, expected_attention=1)
    # the 4 fused SkipLayerNormalization are rewritten as centred RMS norms (tests/test_layer_norm.py)
    assert counts["Attention"] == 1 and counts["SkipLayerNormalization"] == 0
    assert counts["EmbedLayerNormalization"] == 1 and counts["BiasGelu"] == 2
    with pytest.raises(ExportError, match="Attention fused in only 1 of the 2 layers"):
        check_fusion(fp32, expected_attention=2)


def _einsum_forward(self, hidden, mask_bias, queries=None):
    """Same maths as MultiHeadSelfAttention.forward with the products as Einsum nodes, which the
    ORT optimizer's attention pattern (MatMul -> Div -> Add -> Softmax -> MatMul) does not match."""
    queries = hidden if queries is None else queries
    query = self._split_heads(self.q_lin(queries))
    key, value = self._split_heads(self.k_lin(hidden)), self._split_heads(self.v_lin(hidden))
    scores = torch.einsum("bhqd,bhkd->bhqk", query, key) / math.sqrt(self.head_dim)
    context = torch.einsum("bhqk,bhkd->bqhd", torch.softmax(scores + mask_bias, dim=-1), value)
    batch, seq = context.size(0), context.size(1)
    return self.out_lin(context.reshape(batch, seq, self.num_heads * self.head_dim))


def test_unfused_attention_fails_loudly_unless_accepted(tmp_path, monkeypatch, batch):
    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    with torch.no_grad():
        expected = student(*batch)
    monkeypatch.setattr(MultiHeadSelfAttention, "forward", _einsum_forward)
    with torch.no_grad():  # the altered model computes the same logits: only the graph pattern differs
        assert torch.allclose(student(*batch), expected, atol=1e-5)
    with pytest.raises(ExportError) as error:
        export_student(student, tmp_path / "strict")
    message = str(error.value)
    assert "Attention fused in only 0 of the 1 layers" in message
    assert "SkipLayerNormalization x" in message  # says what did fuse
    assert "export.require_attention_fusion=false" in message and "\n" not in message
    assert not (tmp_path / "strict" / "model.int8.onnx").exists()

    accepted = export_student(student, tmp_path / "accepted", require_attention_fusion=False)
    assert accepted.fused_ops["Attention"] == 0 and accepted.int8_path.is_file()


def test_layers_without_heads_need_no_attention(setup):
    fp32, *_ = setup
    assert check_fusion(fp32, expected_attention=0)["Attention"] == 1


def test_dynamic_int8_logits_depend_on_the_batch_but_fp32_logits_do_not(setup, tmp_path):
    """Why INT8 accuracy is measured one sentence per call (export.int8_eval_batch_size=1): dynamic
    INT8 takes one activation scale over the whole input tensor, so a sentence's INT8 logits change
    when other sentences (or padding) are batched with it; fp32 logits do not."""
    fp32, _, test_feeds, _ = setup
    int8 = tmp_path / "model.int8.onnx"
    quantize_with_gate(fp32, int8, lambda path: 1.0, 1.0, 0.01, [], None, _p50)
    feed = test_feeds[0]
    sessions = {name: ort_session(path, threads=1) for name, path in (("fp32", fp32), ("int8", int8))}
    gaps = {}
    for name, session in sessions.items():
        batched = session.run(None, feed)[0]
        alone = np.concatenate([
            session.run(None, {k: v[i:i + 1, : int(feed["attention_mask"][i].sum())] for k, v in feed.items()})[0]
            for i in range(len(feed["input_ids"]))
        ])
        gaps[name] = float(np.abs(batched - alone).max())
    # fp32: float rounding only (~1e-7); INT8: quantization steps of the activations (~1e-4 and up here)
    assert gaps["fp32"] < 1e-5 and gaps["int8"] > 100 * max(gaps["fp32"], 1e-7), gaps


def test_gate_default_first_method_is_the_recipe_default():
    from distilprune.config import ExportConfig

    default = inspect.signature(quantize_with_gate).parameters["first"].default
    assert default == ExportConfig().int8_method and default in METHODS


def test_untimed_gate_ships_without_latency(setup, tmp_path):
    fp32, evaluate, _, calibration = setup
    result = quantize_with_gate(fp32, tmp_path / "m.onnx", evaluate, 1.0, 0.5, [], calibration, None, first="dynamic")
    assert result["attempts"][0]["p50_ms"] is None and result["shipped"] == "dynamic"


def test_first_method_is_configurable_and_checked(setup, tmp_path):
    fp32, evaluate, _, calibration = setup
    result = quantize_with_gate(fp32, tmp_path / "m.onnx", evaluate, 1.0, 0.5, ["dynamic"], calibration, _p50,
                                first="per_channel")
    assert [a["method"] for a in result["attempts"]] == ["per_channel"] and result["shipped"] == "per_channel"
    with pytest.raises(ConfigError, match="Unknown INT8 method"):
        quantize_with_gate(fp32, tmp_path / "n.onnx", evaluate, 1.0, 0.5, [], None, _p50, first="per_chanel")


# ---- ffn_out_per_token ----

def test_ffn_out_per_token_quantizes_only_the_ffn_outputs_per_token(setup, tmp_path):
    fp32, evaluate, test_feeds, calibration = setup
    names = ffn_output_linears(fp32)
    # found from the graph (the MatMul reading BiasGelu), one per block; the module names agree
    assert names == ["/layer.0/ffn/lin2/MatMul", "/layer.1/ffn/lin2/MatMul"]
    int8 = tmp_path / "model.int8.onnx"
    result = quantize_with_gate(fp32, int8, evaluate, 1.0, 0.1, [], calibration, None, first="ffn_out_per_token")
    attempt = result["attempts"][0]
    assert result["shipped"] == "ffn_out_per_token" and attempt["per_token_nodes"] == names
    ops = count_ops(int8, ("MatMulIntegerToFloat", "ReduceMax", "MatMulInteger", "QAttention", "QEmbedLayerNormalization"))
    assert ops["MatMulIntegerToFloat"] == 2 and ops["ReduceMax"] == 2  # one per-token linear per FFN output
    assert count_ops(int8).get("Abs", 0) == 0  # their inputs come from GELU: row scales without an Abs pass
    assert ops["QAttention"] == 1 and ops["QEmbedLayerNormalization"] == 1  # the rest as per_channel
    assert ops["MatMulInteger"] >= 4  # out_lin, lin1 of both blocks, the last block's projections, the head
    assert weight_matmuls(int8) == []  # no linear is left in float
    assert attempt["accuracy"] >= 0.9


def test_ffn_out_per_token_without_ffn_activation_is_a_recorded_failure(setup, tmp_path, monkeypatch):
    fp32, evaluate, _, calibration = setup
    monkeypatch.setattr(quantize_module, "FFN_ACTIVATION_OPS", ("NoSuchActivation",))
    assert ffn_output_linears(fp32) == []
    int8 = tmp_path / "model.int8.onnx"
    result = quantize_with_gate(fp32, int8, evaluate, 1.0, 0.5, ["per_channel"], calibration, None,
                                first="ffn_out_per_token")
    failed, shipped = result["attempts"]
    assert failed["accuracy"] is None and "no FFN output projection" in failed["error"]
    assert "per_channel / per_token" in failed["error"]
    assert shipped["method"] == "per_channel" and result["shipped"] == "per_channel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]
