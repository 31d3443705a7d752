"""The GPU paths, checked wherever they can be: precision per GPU generation, the fp16 graph, IOBinding
(on the CPU provider here; bench/gpu_check.py runs the same helpers on CUDA), and the GPU check script."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import REPO, VOCAB, tiny_bert

from distilprune import precision as P
from distilprune.export import verify as V
from distilprune.export.onnx_export import export_student
from distilprune.students import student_from_teacher


@pytest.mark.parametrize("capability, expected", [
    ((9, 0), "bf16-mixed"),   # H100 / H200
    ((8, 9), "bf16-mixed"),   # L4, RTX 4090
    ((8, 0), "bf16-mixed"),   # A100
    ((7, 5), "16-mixed"),     # T4
    ((7, 0), "16-mixed"),     # V100
    ((6, 1), "32-true"),      # GTX 1080
    ((6, 0), "32-true"),      # P100
])
def test_auto_precision_for_each_gpu_generation(capability, expected):
    assert P.precision_for_cuda_capability(capability) == expected


def test_resolve_precision_asks_the_gpu_when_training_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(P, "cpu_supports_bf16", lambda: True)
    assert P.resolve_precision("auto", "auto") == "16-mixed"
    assert P.resolve_precision("auto", "gpu") == "16-mixed"
    # accelerator=cpu trains on the CPU even where a GPU exists: the CPU's rule applies
    assert P.resolve_precision("auto", "cpu") == "bf16-mixed"
    assert P.resolve_precision("32-true", "gpu") == "32-true"  # an explicit choice is kept


def test_resolve_precision_on_a_cpu_follows_its_bf16_instructions(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(P, "cpu_supports_bf16", lambda: False)
    assert P.resolve_precision("auto", "auto") == "32-true"
    monkeypatch.setattr(P, "cpu_supports_bf16", lambda: True)
    assert P.resolve_precision("auto", "auto") == "bf16-mixed"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny exported student (model.onnx as the bundle ships it) and fixed inputs with padding."""
    directory = tmp_path_factory.mktemp("gpu-paths")
    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    export_student(student, directory)
    input_ids, attention_mask = V.random_inputs(3, 16, len(VOCAB), seed=1)
    attention_mask[1, 10:] = 0
    return directory / "model.onnx", input_ids, attention_mask


def test_fp16_copy_halves_the_weights_and_keeps_the_interface(exported, tmp_path):
    model_path, _, _ = exported
    fp16_path = V.fp16_copy(model_path, tmp_path / "model.fp16.onnx")
    fp32, fp16 = onnx.load(str(model_path)), onnx.load(str(fp16_path))
    # the server feeds int64 ids and reads fp32 logits from either graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in fp16.graph.input] == \
           [(i.name, i.type.tensor_type.elem_type) for i in fp32.graph.input]
    assert [o.type.tensor_type.elem_type for o in fp16.graph.output] == [onnx.TensorProto.FLOAT]
    big = [t for t in fp16.graph.initializer if np.prod(t.dims) >= 64]  # weight matrices, not scalars
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
    assert fp16_path.stat().st_size < 0.6 * model_path.stat().st_size


def test_fp16_graph_matches_fp32_within_the_gpu_tolerance(exported, tmp_path):
    model_path, input_ids, attention_mask = exported
    fp16_path = V.fp16_copy(model_path, tmp_path / "model.fp16.onnx")
    feed = {"input_ids": input_ids, "attention_mask": attention_mask}
    expected = V.make_session(model_path, 1).run(None, feed)[0]
    try:
        got = V.make_session(fp16_path, 1).run(None, feed)[0]
    except Exception as error:  # the CPU provider lacks an fp16 kernel the CUDA provider has
        pytest.skip(f"this ONNX Runtime cannot run the fp16 graph on the CPU: {str(error)[:200]}")
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= V.GPU_FP16_ATOL
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))


def test_iobinding_runner_gives_the_plain_run_logits(exported):
    model_path, input_ids, attention_mask = exported
    session = V.make_session(model_path, 1)
    expected = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
    run, fetch = V.bound_runner(session, input_ids, attention_mask, "cpu")
    run()  # the timed call: no copy back to the host
    assert np.array_equal(fetch(), expected)
    cell = V.latency_grid(model_path, [1], [8], 1, 1, 3, len(VOCAB), "cpu")
    assert cell[0]["batch_size"] == 1 and 0 < cell[0]["p50"] <= cell[0]["p95"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, bench/gpu_check.py runs every step for real")
def test_gpu_check_reports_every_gpu_step_as_skipped_without_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--python", sys.executable, "--skip-tests",
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    steps = {step["step"]: step for step in json.loads(out.read_text())["steps"]}
    assert list(steps) == ["setup", "environment", "quickstart", "ddp", "fp16_cuda", "throughput", "tests"]
    assert steps["environment"]["status"] == "ok" and steps["environment"]["cuda_available"] is False
    assert steps["environment"]["auto_precision"] in ("bf16-mixed", "32-true")
    for name in ("quickstart", "ddp", "fp16_cuda", "throughput"):
        assert steps[name]["status"].startswith("skipped: "), steps[name]
    assert "distilprune GPU check" in result.stdout and "skipped" in result.stdout
