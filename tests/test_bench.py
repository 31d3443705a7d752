"""The measurement logic of the bench scripts: what they compare and where they time it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(latencies: list[float], wall_s: float, errors: int = 0) -> dict:
    return {"latencies": latencies, "errors": errors, "wall_s": wall_s}


def test_serve_load_compares_servers_within_each_round():
    serve_load = _bench_module("serve_load")
    # Round 1 is a slow machine state (everything 2x), round 2 a fast one: pooled medians would mix
    # the states; per-round comparisons do not.
    rounds = [
        {"bare_batching_gain": 1.2, "bare_beside": {"reference": [8.0, 8.0, 8.0], "baseline": [9.0, 9.0, 9.0]},
         "servers": {
            "reference": {1: _run([10.0, 10.0, 10.0], 1.0), 16: _run([1.0] * 300, 1.0)},
            "baseline": {1: _run([12.0, 12.0, 12.0], 1.0), 16: _run([1.0] * 100, 1.0)}}},
        {"bare_batching_gain": 1.4, "bare_beside": {"reference": [4.0, 4.0, 4.0], "baseline": [4.0, 4.0, 4.0]},
         "servers": {
            "reference": {1: _run([5.0, 5.0, 5.0], 1.0), 16: _run([1.0] * 400, 1.0)},
            "baseline": {1: _run([6.0, 6.0, 6.0], 1.0, errors=1), 16: _run([1.0] * 200, 1.0)}}},
    ]
    memory = {name: {"rss_after_warmup_mib": 100.0, "rss_after_run_mib": 101.0} for name in ("reference", "baseline")}
    summary = serve_load.summarise({"rounds": rounds}, ["reference", "baseline"], [1, 16], memory)
    reference = summary["comparisons"]["reference"]
    # each server against the bare calls taken beside its own requests, round by round
    assert reference["c1_p50_minus_bare_ms"]["rounds"] == [2.0, 1.0]
    assert summary["comparisons"]["baseline"]["c1_p50_minus_bare_ms"]["rounds"] == [3.0, 2.0]
    assert reference["c1_p50_minus_bare_ms"]["median"] == pytest.approx(1.5)
    assert reference["c16_throughput_vs_baseline"]["rounds"] == [3.0, 2.0]
    assert "c16_throughput_vs_baseline" not in summary["comparisons"]["baseline"]
    level = summary["servers"]["reference"]["levels"][16]
    assert level["requests"] == 700 and level["throughput_rps"] == 350.0 and level["round_throughput_rps"] == [300.0, 400.0]
    assert summary["servers"]["baseline"]["levels"][1]["errors"] == 1
    assert summary["bare_onnxruntime"]["round_p50"] == [8.5, 4.0]
    assert summary["bare_onnxruntime"]["batch16_vs_batch1_texts_per_s"]["median"] == pytest.approx(1.3)


def _echo_model(path: Path) -> Path:
    """An ONNX model with a student's inputs (input_ids, attention_mask: int64 (batch, seq)) and one output."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph([helper.make_node("Add", ["input_ids", "attention_mask"], ["logits"])], "echo", [ids, mask], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_same_process_latency_times_onnx_in_a_process_without_pytorch(tmp_path):
    bench = _bench_module("same_process_latency")
    worker = bench.OnnxWorker(threads=1, batch_size=1, seq_len=8, vocab_size=100)
    try:
        p50 = worker.p50(_echo_model(tmp_path / "model.onnx"), warmup=1, runs=5)  # asserts torch was not imported
    finally:
        worker.close()
    assert np.isfinite(p50) and p50 > 0
