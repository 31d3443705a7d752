"""The real entry point, as a user runs it.

One end-to-end run on the real shipped assets (MiniLM-L6 teacher, Rotten Tomatoes snippets) with a
tiny budget, and one on a tiny local teacher directory. The bad-input catalogue (each mistake exits
with code 2 and one paragraph naming the problem and the fix) is in test_bad_inputs.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from conftest import run_entry, save_tiny_teacher, write_sentiment_csv

from distilprune.export.runtime import cuda_execution_provider_available

CUDA_EP = cuda_execution_provider_available()

TINY_BUDGET = [
    "data.train_examples=256", "data.eval_examples=64", "teacher.epochs=1", "train.epochs=1",
    "export.latency_runs=5", "export.latency_warmup=2", "export.latency_rounds=2", "train.progress_bar=false",
    "export.parallel_wait_seconds=0",
]


@pytest.mark.e2e
def test_quickstart_end_to_end_on_real_assets(tmp_path, launch):
    # batch 32 left out of the grid (8 s of timing); every cell is timed by the same code
    result = launch("recipe=quickstart", f"output_dir={tmp_path}", *TINY_BUDGET, "export.grid_batch_sizes=[1,8]",
                    timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("Report: ")
    report_path = Path(result.stdout.strip().splitlines()[-1].removeprefix("Report: "))
    run_dir = report_path.parent
    assert run_dir.parent == tmp_path / "quickstart"
    report = json.loads(report_path.read_text())

    for key in ("recipe", "machine", "latency_setup", "teacher", "checkpoints"):
        assert key in report
    assert report["latency_setup"]["batch_size"] == 1 and report["latency_setup"]["seq_len"] == 128
    assert set(report["machine"]) >= {"cpu", "threads"}
    assert 0 <= report["teacher"]["accuracy"] <= 1
    kept, ckpt = report["checkpoints"]  # quickstart prunes: one checkpoint at density 0.7, then final
    assert kept["name"] == "density-0.70" and 0.6 < kept["density"] <= 0.7
    assert ckpt["name"] == "final" and ckpt["density"] < kept["density"]
    for entry in (kept, ckpt):
        assert entry["compaction_max_abs_diff"] < 1e-4
        assert len(entry["heads_per_layer"]) == len(entry["ffn_width_per_layer"]) == 4
    # topk keeps 30% of each layer's 1536 FFN rows; compaction removed the rest
    assert ckpt["ffn_width_per_layer"] == [461] * 4
    assert ckpt["params"] < kept["params"] < 19_200_000
    assert ckpt["onnx_max_abs_diff"] < 1e-4
    for fmt in ("pytorch_fp32", "onnx_fp32", "onnx_int8"):
        assert 0 <= ckpt["accuracy"][fmt] <= 1
        assert 0 < ckpt["latency_ms"][fmt]["p50"] <= ckpt["latency_ms"][fmt]["p95"]
    assert ckpt["size_mb"]["onnx_int8"] < ckpt["size_mb"]["onnx_fp32"] / 2
    # every layer with heads fuses its attention except the last, which queries only [CLS]
    assert ckpt["fused_ops"]["Attention"] == sum(1 for heads in ckpt["heads_per_layer"][:-1] if heads)
    bundle = Path(ckpt["bundle"])
    assert {"model.onnx", "model.int8.onnx", "config.json", "tokenizer.json"} <= {p.name for p in bundle.iterdir()}
    assert (run_dir / "report.md").read_text().startswith("# distilprune report: quickstart")

    # Every bundle is complete and verified, the grid and the INT8 gate are reported, and the
    # run ends with the Pareto table, the plot and a selected bundle.
    for entry in (kept, ckpt):
        assert entry["verification"]["ok"], entry["verification"]
        # a measured fp16 CUDA run where the CUDA execution provider works, else a clear skip line
        assert entry["gpu"]["status"] == "measured" if CUDA_EP else entry["gpu"]["status"].startswith("skipped: CUDA")
        cells = {(c["batch_size"], c["seq_len"]) for c in entry["latency_grid"]["onnx_int8"]}
        assert cells == {(b, s) for b in (1, 8) for s in (32, 128)}
        assert entry["int8"]["attempts"][0]["method"] == "per_channel" and entry["int8"]["shipped"]
        files = {p.relative_to(Path(entry["bundle"])).as_posix() for p in Path(entry["bundle"]).rglob("*") if p.is_file()}
        assert {"input_spec.json", "parity.json", "manifest.json", "README.md", "verify_bundle.py",
                f"triton/quickstart-{entry['name']}/config.pbtxt", f"triton/quickstart-{entry['name']}/1/model.onnx",
                "serving.json", "serving_runtime.py", f"triton/quickstart-{entry['name']}-text/1/model.py",
                f"triton/quickstart-{entry['name']}-ensemble/config.pbtxt"} <= files
        # servers batch with a batch-invariant model: per-token INT8 when it passes the gate, else fp32
        serving = json.loads((Path(entry["bundle"]) / "serving.json").read_text())
        assert serving["batched_model"] == entry["serving"]["batched_model"]
        assert serving["batched_model"] == ("model.int8.batched.onnx" if entry["serving"]["attempt"]["passed"] else "model.onnx")
    assert "| run | checkpoint |" in result.stdout and "Selected bundle:" in result.stdout
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    selected = run_dir / "bundles" / "selected"
    assert report["selected"]["name"] in ("density-0.70", "final")
    assert (selected / "manifest.json").read_text() == (Path(report["selected"]["bundle"]) / "manifest.json").read_text()
    verified = subprocess.run([sys.executable, str(selected / "verify_bundle.py"), str(selected), "--runs", "3",
                               "--warmup", "1", "--no-grid"], capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]

    # The checkpoint holds the student alone: 4 layers, no teacher tensors.
    with safe_open(str(run_dir / "checkpoints" / "final" / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert not any(k.startswith("bert.") for k in keys)
    assert {k.split(".")[3] for k in keys if ".transformer.layer." in k} == {"0", "1", "2", "3"}

    # Tracking: a CSV of metrics and an offline W&B run in the run directory.
    assert list((run_dir / "metrics").rglob("metrics.csv"))
    assert list((run_dir / "wandb").glob("offline-run-*"))

    # Replaying the saved recipe makes a new run directory and reuses the cached teacher.
    again = launch(f"recipe={run_dir / 'recipe.yaml'}", "export.enabled=false", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing fine-tuned teacher from cache" in again.stderr
    assert len(list((tmp_path / "quickstart").iterdir())) == 2
    assert json.loads(report_path.read_text()) == report  # the first run's report is untouched


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "tiny-bert", num_layers=3)


def tiny_local_run(tmp_path: Path, teacher_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """The quickstart recipe on the tiny local teacher and a 120-row csv (latency sizes within its 64 positions)."""
    data = write_sentiment_csv(tmp_path / "data.csv", rows=120)
    return run_entry(
        "recipe=quickstart", f"output_dir={tmp_path}", f"teacher.model={teacher_dir}", f"data.dataset={data}",
        "data.text_column=sentence", "data.max_seq_len=32", "student.num_layers=2", "student.init_layers=[0,2]",
        "teacher.epochs=1", "train.epochs=1", "export.latency_runs=3", "export.latency_seq_len=32",
        "export.budget_seq_len=32", "export.latency_rounds=2", "export.parallel_wait_seconds=0", "tracking.wandb=false",
        "train.progress_bar=false",
        *extra, timeout=900,
    )


def test_local_tiny_teacher_runs_end_to_end_on_text_pairs(tmp_path, tiny_teacher_dir, capsys):
    """The local-directory path a hub user takes (bert-base-uncased etc.), on a tiny local config and a
    pair task whose student keeps segment embeddings: token_type_ids is an ONNX input, the bundles
    verify (parity, and the pairs' predictions through serving_runtime.py), and the run re-exports,
    there with an impossible latency budget, which fails loudly after writing the evidence."""
    rows = ["sentence,second,label"] + [
        f"{'good great' if i % 2 else 'bad awful'} w{i % 59},movie w{(i * 7) % 59} plot,{i % 2}" for i in range(120)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    result = tiny_local_run(tmp_path, tiny_teacher_dir, "export.grid_seq_lens=[16,32]", "export.grid_batch_sizes=[1,4]",
                            f"data.dataset={tmp_path / 'pairs.csv'}", "data.text_pair_column=second",
                            "student.segment_embeddings=true")
    assert result.returncode == 0, result.stderr[-3000:]
    report_path = Path(result.stdout.strip().splitlines()[-1].removeprefix("Report: "))
    report = json.loads(report_path.read_text())
    assert report["checkpoints"][0]["heads_per_layer"] == [2, 2]
    for entry in report["checkpoints"]:
        bundle = Path(entry["bundle"])
        spec = json.loads((bundle / "input_spec.json").read_text())
        assert [i["name"] for i in spec["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
        assert spec["task"]["text_pairs"] is True and entry["onnx_max_abs_diff"] <= 1e-4
        parity = json.loads((bundle / "parity.json").read_text())
        assert max(max(row) for row in parity["inputs"]["token_type_ids"]) == 1  # segment B is marked
        assert all(isinstance(t, list) and len(t) == 2 for t in parity["predictions"]["texts"])
        checks = {c["name"]: c for c in entry["verification"]["checks"]}
        assert entry["verification"]["ok"] and checks["predictions"]["ok"] and "skipped" not in checks["predictions"]

    # Re-export through the console script's subcommand: one checkpoint, into a new directory.
    from distilprune.train.cli import main

    run_dir = report_path.parent
    # export.KEY=VALUE overrides may stand between the options, as a user types them
    capsys.readouterr()
    assert main(["export", str(run_dir), "--checkpoint", "final", "export.latency_rounds=1", "--runs", "2",
                 "export.parallel_wait_seconds=0", "export.latency_budget_ms=0.0001"]) == 2
    err = capsys.readouterr().err
    assert "0.0001" in err and "fastest" in err and "Traceback" not in err  # names the budget and what is possible
    (reexport,) = (run_dir / "reexports").iterdir()
    again = json.loads((reexport / "report.json").read_text())  # the evidence is written before the failure
    assert again["latency_setup"]["rounds"] == 1
    assert [entry["name"] for entry in again["checkpoints"]] == ["final"]
    assert again["checkpoints"][0]["params"] == report["checkpoints"][-1]["params"]
    assert again["selected"] is None and (reexport / "pareto.png").is_file()
    assert not (reexport / "bundles" / "selected").exists()
    assert json.loads(report_path.read_text()) == report  # the training run's report is untouched


def test_reexport_of_a_directory_that_is_no_finished_run_is_a_clear_error(tmp_path, capsys):
    from distilprune.train.cli import main

    assert main(["export", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is not a finished distilprune run" in err and "runs/<recipe>/<time>" in err
