"""Serving bundle facts on a tiny exported student: spec, parity, Triton config, card, manifest, verifier."""

from __future__ import annotations

import ast
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB, tiny_bert

from distilprune.errors import ConfigError
from distilprune.export import bundle as B
from distilprune.export.runtime import cuda_execution_provider_available
from distilprune.export import runtime
from distilprune.export import verify as V
from distilprune.export.latency_rounds import measure_in_child
from distilprune.export.onnx_export import export_student, ort_session
from distilprune.students import student_from_teacher

GRID = {"batch_sizes": [1, 2], "seq_lens": [8, 16]}
TEXTS = ["good movie", "bad plot , awful and dull w1 w2 w3", "Great FUN"]
FAST = ["--threads", "1", "--warmup", "1", "--runs", "3"]
# Whether this machine runs the GPU path: onnxruntime-gpu installed and a CUDA device present.
CUDA_EP = cuda_execution_provider_available()


def _tokenizer(directory: Path, lowercase: bool = True):
    from transformers import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    # vocab= (a path) is what BertTokenizer reads in transformers 5; vocab_file= leaves only the specials
    tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=lowercase)
    assert len(tokenizer) == len(VOCAB)
    return tokenizer


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A complete bundle, written in the order the export uses: spec, parity, triton, card, verifier, manifest."""
    root = tmp_path_factory.mktemp("bundle")
    bundle = root / "final"
    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    export_student(student, bundle)
    tokenizer = _tokenizer(root / "tokenizer")
    tokenizer.save_pretrained(str(bundle))
    (bundle / "config.json").write_text(student.config.to_json())
    id2label = student.config.id2label or {"0": "negative", "1": "positive"}
    B.write_input_spec(bundle, tokenizer, 16, id2label, latency_grid=GRID)
    B.write_parity_vectors(bundle, tokenizer, TEXTS, 16, B.PARITY_FP32_ATOL, B.PARITY_INT8_ATOL, threads=1)
    B.write_triton_repository(bundle, "tiny student/final", threads=1)
    B.write_model_card(bundle, {"name": "final"})
    B.copy_verifier(bundle)
    B.write_manifest(bundle)
    return bundle


@pytest.fixture
def bundle(built, tmp_path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(built, tmp_path / "final"))


def _main(capsys, *args) -> tuple[int, str, str]:
    code = V.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line[4:].lstrip().startswith(name + ":"))


# ------------------------------------------------------------------ verification, good and bad


def test_verifier_names_cells_whose_rounds_ran_at_two_speeds(built, monkeypatch):
    """The machine switching speed mid-measurement shows as round medians far apart, and is named."""
    calls = {"n": 0}

    def two_speed_samples(fn, warmup, runs):  # first round of every cell 1 ms, later rounds 2 ms
        calls["n"] += 1
        return [1.0 if calls["n"] <= 8 else 2.0] * runs  # 4 grid cells x 2 models in the first round

    monkeypatch.setattr(V, "time_samples", two_speed_samples)
    result = V.verify_bundle(built, threads=1, warmup=0, runs=4, rounds=4)
    (grid,) = [c for c in result["checks"] if c["name"] == "latency grid"]
    assert grid["ok"] and "more than 1.25x apart" in grid["detail"] and "model.int8.onnx 1x8 1.00-2.00 ms" in grid["detail"]
    cell = result["latency_grid"]["onnx_int8"][0]
    assert cell["spread"] == [1.0, 2.0] and cell["p50"] == 2.0 and cell["rounds"] == 4  # median of 1, 2, 2, 2


def test_verifier_keeps_the_rounds_whose_threads_ran_in_parallel(built, monkeypatch):
    """Rounds timed while the host did not run the 2 threads in parallel (probe speedup below 1.3 before
    or after the round) are left out of a cell's p50 when other rounds did run in parallel."""
    probes = []

    class StandInProbe:  # 4 grid cells per round; rounds 0 and 2 ran in parallel, rounds 1 and 3 did not
        cell = (0, 0)  # no cell of the grid: the probes around the rounds decide alone

        def __init__(self, *args):
            pass

        def speedup(self):  # probe k runs after cell round k - 1 and before cell round k
            probes.append(1.05 if len(probes) % 8 in (5, 6, 7) else 1.8)
            return probes[-1]

    def slow_when_not_parallel(fn, warmup, runs):
        cell_round = len(probes) - 1
        return [1.0 if (cell_round // 4) % 2 == 0 else 3.0] * runs

    monkeypatch.setattr(V, "ParallelProbe", StandInProbe)
    monkeypatch.setattr(V, "time_samples", slow_when_not_parallel)
    result = V.verify_bundle(built, threads=2, warmup=0, runs=4, rounds=4)
    assert len(probes) == 17  # one before the first cell round and one after each
    for cell in result["latency_grid"]["onnx_int8"] + result["latency_grid"]["onnx_fp32"]:
        assert cell["p50"] == 1.0 and cell["rounds"] == 2 and cell["rounds_timed"] == 4 and cell["spread"] == [1.0, 1.0]
    (grid,) = [c for c in result["checks"] if c["name"] == "latency grid"]
    assert "speedups 1.05-1.80x, 8 of 16 cell rounds kept" in grid["detail"]


def test_verifier_times_more_rounds_while_no_round_ran_in_parallel(built, monkeypatch):
    """No round parallel in the first 2: more rounds until 2 cell rounds are. Probe k runs before cell round
    k (4 cells a round); probes from the 14th on see the threads in parallel, so cell rounds 13-15 are."""
    probes = []

    class StandInProbe:
        cell = (0, 0)

        def __init__(self, *args):
            pass

        def speedup(self):
            probes.append(1.0 if len(probes) < 13 else 1.7)
            return probes[-1]

    monkeypatch.setattr(V, "ParallelProbe", StandInProbe)
    monkeypatch.setattr(V, "time_samples", lambda fn, warmup, runs: [1.0] * runs)
    result = V.verify_bundle(built, threads=2, warmup=0, runs=2, rounds=2, parallel_wait=60)
    (grid,) = [c for c in result["checks"] if c["name"] == "latency grid"]
    assert "2 more rounds timed because no round of the first 2 ran the threads in parallel" in grid["detail"]
    first, second = result["latency_grid"]["onnx_int8"][:2]  # cell rounds 0, 4, 8, 12 and 1, 5, 9, 13
    assert first["rounds_timed"] == second["rounds_timed"] == 4
    assert first["rounds"] == 4 and second["rounds"] == 1  # never parallel: all kept; parallel once: that one


def _probe_at_its_cell(own_speedup):
    """A stand-in ParallelProbe: 1.8x before and after every round; ``own_speedup(samples)`` for the
    round's own samples at its cell (batch and sequence of the input it was built with)."""

    class StandInProbe:
        def __init__(self, path, threads, input_ids, attention_mask):
            self.cell = tuple(input_ids.shape)

        def speedup(self):
            return 1.8

        def speedup_of(self, samples):
            return own_speedup(samples)

    return StandInProbe


def test_verifier_drops_a_round_whose_own_samples_were_slow_between_parallel_probes(built, monkeypatch):
    """The probes before and after every round say parallel (1.8x), but the INT8 model's own samples at the
    probe's cell in round 1 ran at the 1-thread time: that cell round counts with its own speedup (1.0x)
    and is left out; the other cells, which have no own check, keep every round."""
    timed = []
    # the probes around each round: 1.8x; the own check: a 1-thread time of 3 ms against the round's samples
    StandInProbe = _probe_at_its_cell(lambda samples: 3.0 / statistics.median(samples))

    def slow_in_round_1(fn, warmup, runs):
        timed.append(fn)
        return [3.0 if 8 <= len(timed) - 1 < 16 else 1.5] * runs  # 8 calls a round: 4 cells x 2 models

    monkeypatch.setattr(V, "ParallelProbe", StandInProbe)
    monkeypatch.setattr(V, "time_samples", slow_in_round_1)
    result = V.verify_bundle(built, threads=2, warmup=0, runs=4, rounds=4)
    grid = result["latency_grid"]["onnx_int8"]
    probe_cell = max((c for c in grid if c["batch_size"] == 1 and c["seq_len"] <= 128), key=lambda c: c["seq_len"])
    assert probe_cell["rounds"] == 3 and probe_cell["rounds_timed"] == 4 and probe_cell["p50"] == 1.5
    others = [c for c in grid if c is not probe_cell]
    assert others and all(c["rounds"] == 4 and c["spread"] == [1.5, 3.0] for c in others)
    (check,) = [c for c in result["checks"] if c["name"] == "latency grid"]
    assert "speedups 1.00-1.80x, 15 of 16 cell rounds kept" in check["detail"]


def test_verifier_waits_for_its_probe_cell_and_names_a_cell_never_in_parallel(built, monkeypatch):
    """The probes around the rounds say parallel everywhere, but the INT8 model's own samples at the probe's
    cell (batch 1, the headline sequence) do not: that cell, not the grid as a whole, decides whether more
    rounds are timed, and a cell that never ran in parallel is named in the check."""
    own = []

    def own_check(samples):
        own.append(1.0 if len(own) < own_slow else 1.6)
        return own[-1]

    StandInProbe = _probe_at_its_cell(own_check)
    monkeypatch.setattr(V, "ParallelProbe", StandInProbe)
    monkeypatch.setattr(V, "time_samples", lambda fn, warmup, runs: [1.0] * runs)
    own_slow = 10**6  # never parallel at the probe's cell, and no time to wait
    result = V.verify_bundle(built, threads=2, warmup=0, runs=2, rounds=2, parallel_wait=0)
    (check,) = [c for c in result["checks"] if c["name"] == "latency grid"]
    assert re.search(r"never in parallel at 1x\d+ \(", check["detail"]) and "more rounds timed" not in check["detail"]

    own.clear()
    own_slow = 3  # parallel from the probe cell's 4th round on: 2 more rounds reach 2 parallel ones
    result = V.verify_bundle(built, threads=2, warmup=0, runs=2, rounds=2, parallel_wait=60)
    (check,) = [c for c in result["checks"] if c["name"] == "latency grid"]
    assert "3 more rounds timed because no round of the first 2 ran the threads in parallel" in check["detail"]
    assert len(own) == 5 and "never in parallel" not in check["detail"]


def test_kept_rounds_and_summaries_compare_like_with_like():
    from distilprune.export.latency_rounds import ratio, summarize
    from distilprune.config.schema import ExportConfig
    from distilprune.export.runtime import PARALLEL_WAIT_SECONDS, kept_rounds, more_rounds_wanted

    assert kept_rounds(4, [1.8, 1.0, 1.7, 1.1]) == [0, 2]  # within 1.25x of the best round's 1.8
    assert kept_rounds(3, [1.45, 0.8, 1.4]) == [0, 2]  # a smaller model gains less from a second thread
    assert kept_rounds(3, [1.5, 1.6, 1.9]) == [1, 2]
    assert kept_rounds(3, [1.0, 1.1, 1.15]) == [0, 1, 2]  # never in parallel: nothing better to keep
    assert kept_rounds(2) == [0, 1]  # no probe (one thread)
    # more rounds while no planned round ran in parallel, until 2 rounds have
    assert more_rounds_wanted([1.0, 1.1], [1.0, 1.1, 1.5]) and not more_rounds_wanted([1.0, 1.1], [1.0, 1.1, 1.5, 1.6])
    assert not more_rounds_wanted([1.0, 1.3], [1.0, 1.3]) and not more_rounds_wanted([], [])
    assert ExportConfig().parallel_wait_seconds == PARALLEL_WAIT_SECONDS == V.PARALLEL_WAIT_SECONDS
    student = summarize([[2.0, 2.0], [4.0, 4.0], [2.2, 2.2]], keep=[0, 2])
    teacher = summarize([[20.0, 20.0], [30.0, 30.0], [22.0, 22.0]], keep=[0, 2])
    assert student["rounds"] == 2 and student["rounds_timed"] == 3 and student["spread"] == [2.0, 2.2]
    assert student["p95"] <= 2.2 and ratio(teacher, student) == 10.0  # the kept rounds only, paired


def test_time_samples_stops_a_slow_cell_after_its_seconds_but_not_before_min_runs(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: clock["now"])

    def call(seconds):  # a model call that takes ``seconds`` on the fake clock
        return lambda: clock.__setitem__("now", clock["now"] + seconds)

    assert len(runtime.time_samples(call(0.25), 0, 50, max_seconds=0.6, min_runs=3)) == 3  # 0.75 s >= 0.6 s
    assert len(runtime.time_samples(call(0.25), 0, 50, max_seconds=0.1, min_runs=3)) == 3  # never under min_runs
    assert len(runtime.time_samples(call(0.1), 0, 50, max_seconds=0.6, min_runs=3)) == 6
    assert len(runtime.time_samples(call(0.001), 0, 50, max_seconds=0.6, min_runs=3)) == 50  # runs still bound it
    assert runtime.time_samples(call(0.25), 0, 4) == [250.0] * 4  # no max_seconds: exactly runs


def test_verifier_defaults_to_the_threads_the_bundle_was_measured_with(built, bundle, monkeypatch):
    assert V.measured_threads(built) == 1  # parity.json's produced_on.threads, as the export wrote it
    parity = json.loads((bundle / V.PARITY).read_text())
    parity["produced_on"]["threads"] = 2
    (bundle / V.PARITY).write_text(json.dumps(parity))
    assert V.measured_threads(bundle) == 2
    for broken in (True, 0, "2", None):
        parity["produced_on"]["threads"] = broken
        (bundle / V.PARITY).write_text(json.dumps(parity))
        assert V.measured_threads(bundle) is None
    (bundle / V.PARITY).unlink()
    assert V.measured_threads(bundle) is None
    monkeypatch.setattr(V, "available_threads", lambda: 8)
    result = V.verify_bundle(built, warmup=1, runs=2, rounds=2, gpu=False)
    assert result["latency_setup"]["threads"] == 1 and result["machine"]["threads"] == 1


def test_fresh_bundle_verifies_with_grid_and_skips_gpu_cleanly(built):
    result = V.verify_bundle(built, threads=1, warmup=1, runs=3)
    assert result["ok"], [c for c in result["checks"] if not c["ok"]]
    names = [c["name"] for c in result["checks"]]
    for name in ("manifest", "checksums", "required files", "interface model.onnx", "parity fp32", "parity int8",
                 "argmax fp32", "argmax int8", "latency grid"):
        assert name in names
    for key in ("onnx_fp32", "onnx_int8"):
        cells = result["latency_grid"][key]
        assert [(c["batch_size"], c["seq_len"]) for c in cells] == [(1, 8), (1, 16), (2, 8), (2, 16)]
        assert all(0 < c["p50"] <= c["p95"] <= c["p99"] and c["runs"] == 3 for c in cells)
        # timed in rounds over the whole grid: 3 runs = 3 rounds of 1, p50 = median of the round medians
        assert all(c["rounds"] == 3 and c["spread"][0] <= c["p50"] <= c["spread"][1] for c in cells)
    if CUDA_EP:  # the fp16 graph on the CUDA execution provider, through IOBinding
        assert result["gpu"]["status"] == "measured" and result["gpu"]["provider"] == "CUDAExecutionProvider"
        assert result["gpu"]["parity_max_abs_diff"] <= result["gpu"]["parity_atol"]
        assert [c["batch_size"] for c in result["gpu"]["latency_grid"]["onnx_fp16_cuda"]] == [1, 1, 2, 2]
    else:  # a recorded skip, not a failing check
        assert result["gpu"]["status"].startswith("skipped: CUDA execution provider not available (providers: ")
        assert "CPUExecutionProvider" in result["gpu"]["status"]
        assert not any(c["name"].startswith("gpu") for c in result["checks"])
    assert result["machine"]["threads"] == 1 and isinstance(result["machine"]["instruction_sets"], list)


def test_main_passes_and_writes_json(built, tmp_path, capsys):
    code, out, _ = _main(capsys, built, *FAST, "--json", tmp_path / "result.json")
    assert code == 0, out
    assert "PASS  checksums" in out
    assert ("PASS  gpu fp16" in out) if CUDA_EP else ("SKIP  gpu: skipped: CUDA" in out)
    assert re.search(r"onnx_int8\s+2\s+16\s+[\d.]+", out)  # a latency table row
    assert json.loads((tmp_path / "result.json").read_text())["ok"] is True


def test_tampered_model_fails_naming_file_and_checksum(bundle, capsys):
    path = bundle / "model.int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, _ = _main(capsys, bundle, *FAST, "--no-grid")
    assert code == 1
    line = _line(out, "checksums")
    assert line.startswith("FAIL") and "model.int8.onnx: sha256 mismatch, expected " in line and " actual " in line
    assert V.sha256_file(path) in line


def test_missing_tokenizer_file_fails_naming_it(bundle, capsys):
    (bundle / "tokenizer_config.json").unlink()
    code, out, _ = _main(capsys, bundle, *FAST, "--no-grid")
    assert code == 1
    assert _line(out, "checksums").startswith("FAIL  checksums: missing: tokenizer_config.json")
    assert _line(out, "required files") == "FAIL  required files: missing: tokenizer_config.json"


def test_parity_outside_tolerance_reports_max_diff(bundle, capsys):
    parity_path = bundle / "parity.json"
    parity = json.loads(parity_path.read_text())
    parity["models"]["fp32"]["logits"] = (np.asarray(parity["models"]["fp32"]["logits"]) + 1.0).tolist()
    parity_path.write_text(json.dumps(parity))
    B.write_manifest(bundle)  # a consistent manifest: only the parity check may fail
    code, out, _ = _main(capsys, bundle, *FAST, "--no-grid")
    assert code == 1
    assert _line(out, "checksums").startswith("PASS")
    assert _line(out, "parity int8").startswith("PASS")
    line = _line(out, "parity fp32")
    diff = float(re.search(r"max \|logit diff\| ([\d.e+-]+) > tolerance", line).group(1))
    assert line.startswith("FAIL") and abs(diff - 1.0) < 1e-3


def test_impossible_budget_fails(built, capsys):
    code, out, _ = _main(capsys, built, *FAST, "--no-grid", "--no-gpu", "--budget-ms", "1e-6")
    assert code == 1 and "SKIP  gpu: skipped: turned off" in out
    line = _line(out, "latency budget")
    assert line.startswith("FAIL") and "exceeds the budget of 1e-06 ms (batch 1, sequence 16, 1 thread (sequence 128 capped" in line


def test_budget_from_input_spec_is_checked_at_its_cell(bundle, tmp_path):
    tokenizer = _tokenizer(tmp_path / "tok")
    config = json.loads((bundle / "config.json").read_text())
    for p95, ok in ((1e-6, False), (1e4, True)):
        budget = {"p95_ms": p95, "batch_size": 2, "seq_len": 8}
        B.write_input_spec(bundle, tokenizer, 16, config["id2label"] or {"0": "a", "1": "b"}, GRID, budget)
        B.write_manifest(bundle)
        result = V.verify_bundle(bundle, threads=1, warmup=0, runs=2)
        check = next(c for c in result["checks"] if c["name"] == "latency budget")
        assert check["ok"] is ok and result["ok"] is ok
        assert "batch 2, sequence 8" in check["detail"]


def test_argmax_check_flags_clear_flips_and_ignores_near_ties():
    expected = np.array([[0.0, 1.0], [2.0, 0.0], [0.50, 0.51]], dtype=np.float32)
    flipped = np.array([[1.0, 0.0], [2.0, 0.0], [0.52, 0.50]], dtype=np.float32)
    checks = V._Checks()
    V._argmax_check("int8", flipped, expected, atol=0.05, checks=checks)
    V._argmax_check("int8", expected, expected, atol=0.05, checks=checks)
    assert [c["ok"] for c in checks.items] == [False, True]
    assert "rows [0]" in checks.items[0]["detail"]  # row 2 is a near-tie (margin 0.01 <= 2 x atol)
    assert "all 2 rows with a clear margin (1 near-ties" in checks.items[1]["detail"]


def test_manifest_path_outside_bundle_fails(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = {"sha256": "0" * 64, "bytes": 1}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = V.verify_bundle(bundle, threads=1, grid=False)
    check = next(c for c in result["checks"] if c["name"] == "checksums")
    assert not check["ok"] and "../outside.txt: listed path is outside the bundle" in check["detail"]


def test_gpu_path_pieces_work_on_cpu(built, tmp_path):
    """The fp16 conversion and IOBinding used with CUDA, exercised on the CPU (no GPU here)."""
    parity = json.loads((built / "parity.json").read_text())
    ids, mask = (np.asarray(parity["inputs"][k], dtype=np.int64) for k in ("input_ids", "attention_mask"))
    expected = np.asarray(parity["models"]["fp32"]["logits"], dtype=np.float32)
    fp16 = V.fp16_copy(built / "model.onnx", tmp_path / "fp16.onnx")
    session = V.make_session(fp16, 1)
    assert {i.type for i in session.get_inputs()} == {"tensor(int64)"} and session.get_outputs()[0].type == "tensor(float)"
    _, fetch = V.bound_runner(session, ids, mask, device="cpu")
    assert np.abs(fetch() - expected).max() <= V.GPU_FP16_ATOL
    fp32 = V.make_session(built / "model.onnx", 1)
    assert np.array_equal(V.bound_runner(fp32, ids, mask, device="cpu")[1](), expected)


@pytest.mark.parametrize("kind", ["empty", "missing", "file"])
def test_not_a_bundle_exits_2_with_one_paragraph(tmp_path, capsys, kind):
    target = tmp_path / "thing"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("hello")
    code, out, err = _main(capsys, target)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "Traceback" not in err
    assert err.strip().count("\n") == 0 and str(target) in err and "not a distilprune serving bundle" in err


# ------------------------------------------------------------------ the files themselves


def test_input_spec_describes_inputs_tokenizer_and_grid(built, tmp_path):
    spec = json.loads((built / "input_spec.json").read_text())
    assert [(i["name"], i["dtype"], i["shape"]) for i in spec["inputs"]] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
    assert spec["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]
    assert spec["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    assert spec["max_seq_len"] == 16 and spec["num_labels"] == 2 and len(spec["id2label"]) == 2
    tok = spec["tokenizer"]
    assert tok["lowercase"] is True and tok["truncation_side"] == "right" and tok["padding_side"] == "right"
    assert tok["pad_token_id"] == 0 and tok["vocab_size"] == len(VOCAB)
    assert "tokenizer_config.json" in tok["files"] and all((built / f).is_file() for f in tok["files"])
    assert spec["latency_grid"] == GRID and spec["latency_budget"] is None
    cased = _tokenizer(tmp_path / "cased", lowercase=False)
    copy = Path(shutil.copytree(built, tmp_path / "b"))
    spec = json.loads(B.write_input_spec(copy, cased, 8, {"0": "neg", "1": "pos"}).read_text())
    assert spec["tokenizer"]["lowercase"] is False and spec["latency_grid"] == V.DEFAULT_GRID
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        B.write_input_spec(copy, cased, 10_000, {"0": "neg", "1": "pos"})


def test_parity_vectors_pad_to_longest_and_reproduce(built):
    parity = json.loads((built / "parity.json").read_text())
    ids = np.asarray(parity["inputs"]["input_ids"])
    mask = np.asarray(parity["inputs"]["attention_mask"])
    assert parity["texts"] == TEXTS and ids.shape[0] == len(TEXTS) and ids.shape == mask.shape
    assert mask[:, -1].max() == 1 and mask.min() == 0  # padded to the longest text, not to max_seq_len
    assert ids[0, 0] == VOCAB.index("[CLS]") and VOCAB.index("good") in ids[0]  # real WordPiece ids, lower-cased
    assert VOCAB.index("great") in ids[2]
    fp32 = ort_session(built / "model.onnx", 1).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert np.array_equal(fp32.astype(np.float32), np.asarray(parity["models"]["fp32"]["logits"], dtype=np.float32))
    assert parity["models"]["fp32"]["atol"] == B.PARITY_FP32_ATOL < parity["models"]["int8"]["atol"] == B.PARITY_INT8_ATOL


def test_triton_config_parses_against_tritons_schema(built):
    from google.protobuf import text_format
    from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

    model_dir = built / "triton" / "tiny_student_final"
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), ModelConfig())
    assert config.name == "tiny_student_final" and config.backend == "onnxruntime"
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input_ids", DataType.TYPE_INT64, [-1]), ("attention_mask", DataType.TYPE_INT64, [-1])]
    (output,) = config.output
    assert (output.name, output.data_type, list(output.dims)) == ("logits", DataType.TYPE_FP32, [2])
    assert (model_dir / output.label_filename).read_text().splitlines() == ["LABEL_0", "LABEL_1"]
    assert config.HasField("dynamic_batching")
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 0  # batches form from the queue, no wait
    assert [(g.kind, g.count) for g in config.instance_group] == [(ModelInstanceGroup.KIND_CPU, 1)]
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "intra_op_thread_count": "1", "inter_op_thread_count": "1", "execution_mode": "0"}
    served = model_dir / "1" / "model.onnx"
    assert served.read_bytes() == (built / "model.int8.onnx").read_bytes()
    session = ort_session(served, 1)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]


def test_triton_names_and_arguments_are_checked(built, tmp_path):
    assert B.triton_model_name("tiny student/final") == "tiny_student_final"
    assert B.triton_model_name("..ckpt-0.5") == "ckpt-0.5"
    with pytest.raises(ConfigError):
        B.triton_model_name("///")
    with pytest.raises(ConfigError, match="preferred"):
        B.write_triton_repository(Path(shutil.copytree(built, tmp_path / "b")), "m", max_batch_size=4, preferred_batch_sizes=(8,))


def test_manifest_lists_every_file_but_itself(built):
    manifest = json.loads((built / "manifest.json").read_text())["files"]
    on_disk = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert sorted(manifest) == [p for p in on_disk if p != "manifest.json"]
    for must in ("verify_bundle.py", "README.md", "triton/tiny_student_final/config.pbtxt", "triton/tiny_student_final/1/model.onnx"):
        assert must in manifest
    assert manifest["model.onnx"]["bytes"] == (built / "model.onnx").stat().st_size
    assert not list(built.rglob("*.tmp"))


def _standalone_numbers(text: str) -> set[str]:
    """Numbers standing alone (not p95, fp32, AVX-512 or sha256), minus the template's "exit 1"."""
    return set(re.findall(r"(?<![\w.-])\d+(?:[.,]\d+)*(?!\w|[.,]\d)", text.replace("(exit 1)", "")))


def test_model_card_uses_only_given_numbers(built, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    card = B.write_model_card(empty, {"name": "final"}).read_text()
    assert "not measured" in card and "No latency budget" in card
    assert _standalone_numbers(card) == set()  # nothing measured -> no number printed
    full = {
        "name": "final",
        "recipe": {"name": "quickstart", "path": "runs/q/recipe.yaml"},
        "teacher": {"model": "minilm-l6", "accuracy": 0.8421, "latency_ms": {"pytorch_fp32": {"p50": 26.7, "p95": 29.01, "p99": 31.5}}},
        "data": {"source": "rotten-tomatoes", "rows": {"train": 8454, "validation": 1066, "test": 1057}},
        "checkpoint": {
            "density": 0.5, "heads_per_layer": [12, 11, 9, 10], "ffn_width_per_layer": [1536, 1400, 1200, 900],
            "params": 22713216, "accuracy": {"pytorch_fp32": 0.8325, "onnx_fp32": 0.8325, "onnx_int8": 0.8354},
                "accuracy_ci": {"onnx_int8": {"low": 0.8127, "high": 0.8571}},
                "accuracy_differences": {"onnx_int8 - onnx_fp32": {"difference": 0.0029, "low": -0.0038, "high": 0.0095}},
            "size_mb": {"onnx_fp32": 73.1, "onnx_int8": 18.4},
            "latency_grid": {"onnx_int8": [{"batch_size": 1, "seq_len": 128, "p50": 7.78, "p95": 8.29, "p99": 9.11}]},
            "int8": {"shipped": "dynamic", "attempts": [{"method": "dynamic", "accuracy": 0.8354, "p50_ms": 7.78, "passed": True}]},
            "gpu": {"status": "skipped: CUDA execution provider not available (providers: CPUExecutionProvider)"},
        },
        "machine": {"cpu": "Xeon", "instruction_sets": ["AVX2", "AMX"], "threads": 2},
        "latency_budget": {"p95_ms": 8.0, "batch_size": 1, "seq_len": 128},
        "how_to_verify": "python -m distilprune.export.verify <bundle>",
    }
    text = B.write_model_card(empty, full).read_text()
    for expected in ("84.21 %", "83.54 %", "18.40", "8.29", "22,713,216", "12, 11, 9, 10", "AVX2, AMX", "8454",
                     "ms: over the budget on the machine below", "skipped: CUDA execution provider not available", "| dynamic | 83.54 % | True |",
                     "83.54 % [81.27 %, 85.71 %]", "onnx_int8 - onnx_fp32 +0.29 [-0.38, +0.95]"):
        assert expected in text, expected
    allowed = {"84.21", "26.70", "29.01", "31.50", "8454", "1066", "1057", "0.5", "12", "11", "9", "10", "1536", "1400",
               "1200", "900", "4", "22,713,216",  # 4 = layers, len(heads_per_layer)
               "83.25", "83.54", "73.10", "18.40", "1", "128", "7.78", "8.29", "9.11", "2", "8",
               "95", "81.27", "85.71", "0.29", "0.38", "0.95"}  # 95: the stated interval level
    assert _standalone_numbers(text) <= allowed, _standalone_numbers(text) - allowed


# ------------------------------------------------------------------ standalone verifier


def _third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    return roots - set(sys.stdlib_module_names) - {"__future__"}


def test_verify_module_imports_only_stdlib_numpy_onnxruntime():
    # distilprune: its own base layer (export/runtime.py), which a bundle carries as verify_runtime.py;
    # serving_runtime: the bundle's post-processing, imported for the predictions check only (skipped without it)
    assert _third_party_imports(Path(V.__file__)) == {"numpy", "onnxruntime", "onnx", "distilprune", "verify_runtime",
                                                      "runtime", "serving_runtime"}
    assert _third_party_imports(Path(runtime.__file__)) == {"numpy", "onnxruntime"}


def test_latency_child_times_onnx_models_in_rounds_without_torch(built):
    job = {"threads": 1, "warmup": 1, "runs": 2, "rounds": 3, "vocab_size": len(VOCAB), "headline": [1, 8], "models": [
        {"key": f"final/{fmt}", "kind": "onnx", "path": str(built / name), "cells": [[1, 8], [2, 16]]}
        for fmt, name in (("onnx_fp32", "model.onnx"), ("onnx_int8", "model.int8.onnx"))]}
    result = measure_in_child(job, timeout_s=120)
    assert result["heavy_modules_loaded"] == {"onnx": []}  # numpy and onnxruntime only: no torch, Lightning or W&B
    assert result["rounds"] == 3 and result["runs_per_round"] == 2 and result["runs_per_round_elsewhere"] == 1
    for key in ("final/onnx_fp32", "final/onnx_int8"):
        cells = result["models"][key]["cells"]
        assert [(c["batch_size"], c["seq_len"]) for c in cells] == [(1, 8), (2, 16)]
        assert [c["runs"] for c in cells] == [6, 3]  # headline cell: min(runs, 10) per round
        for c in cells:
            assert len(c["round_p50s"]) == 3
            assert c["spread"][0] <= c["p50"] <= c["spread"][1] and 0 < c["p50"] <= c["p95"] <= c["p99"]


def test_latency_child_probes_parallel_threads_before_each_round(built):
    job = {"threads": 2, "warmup": 1, "runs": 2, "rounds": 2, "vocab_size": len(VOCAB), "headline": [1, 8],
           "probe": {"key": "final/onnx_int8", "path": str(built / "model.int8.onnx"), "cell": [1, 8]},
           "extra_headline_seconds": 0.5,
           "models": [{"key": "final/onnx_int8", "kind": "onnx", "path": str(built / "model.int8.onnx"),
                       "cells": [[1, 8], [2, 16]]}]}
    result = measure_in_child(job, timeout_s=120)
    probe = result["parallel_probe"]
    assert probe["model"] == "final/onnx_int8" and probe["min_speedup"] == 1.2 and probe["relative"] == 1.25
    assert [(c["batch_size"], c["seq_len"]) for c in probe["cells"]] == [(1, 8), (2, 16)]
    headline, other = probe["cells"]
    # a tiny model gains little from a second thread: when no headline round reached 1.2x, more headline
    # rounds were timed (for at most 0.5 s here), every one of them probed
    extra = probe["extra_headline_rounds"]
    assert (extra >= 1) == (max(headline["speedups"][:2]) < 1.2) and len(headline["speedups"]) == 2 + extra
    assert len(other["speedups"]) == 2
    for probed, timed in zip(probe["cells"], result["models"]["final/onnx_int8"]["cells"], strict=True):
        assert all(v > 0 for v in probed["speedups"])
        assert timed["rounds"] == len(probed["kept_rounds"]) and timed["rounds_timed"] == len(probed["speedups"])


def test_copied_verifier_runs_isolated_without_distilprune(built, tmp_path):
    script = built / "verify_bundle.py"
    assert script.read_text() == Path(V.__file__).read_text()
    # -I: no PYTHONPATH, no user site, no cwd on sys.path. The venv's site-packages (where distilprune
    # is installed editable) stays visible, so block distilprune/torch/transformers imports outright.
    runner = (
        "import runpy, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'distilprune', 'torch', 'transformers'}:\n"
        "            raise ImportError('blocked in this test: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = [{str(script)!r}, {str(built)!r}, '--threads', '1', '--warmup', '0', '--runs', '2', '--no-grid']\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", runner], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS  parity int8" in proc.stdout and "OK: " in proc.stdout
