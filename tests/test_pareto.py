"""Pareto report and select: front facts, budgets, the PNG, copying the selected bundle, the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from distilprune.errors import ExportError
from distilprune.export.pareto import copy_selected, main, pareto_front, points, select, write_pareto

REPO = Path(__file__).resolve().parent.parent


def _pt(name: str, accuracy: float, p95: float, teacher: bool = False, run: str = "r") -> dict:
    return {"name": name, "run": run, "accuracy": accuracy, "p95_ms": p95, "teacher": teacher, "bundle": f"/b/{name}",
            "batch_size": 1, "seq_len": 128, "format": "onnx_int8"}


def _bundle(directory: Path, payload: bytes) -> Path:
    """A fake bundle: two files and a sha256 manifest of them, like the real one."""
    directory.mkdir(parents=True)
    (directory / "model.int8.onnx").write_bytes(payload)
    (directory / "config.json").write_text('{"id2label": {"0": "neg", "1": "pos"}}')
    manifest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _report(run_dir: Path, recipe: str, checkpoints: list[tuple[str, float, float, float, float]], grid: bool) -> dict:
    """checkpoints: (name, density, int8 accuracy, int8 p95 at batch 1 seq 128, int8 MB)."""
    entries = []
    for name, density, acc, p95, size in checkpoints:
        entry = {
            "name": name, "density": density, "params": int(4e6 * density),
            "accuracy": {"pytorch_fp32": acc, "onnx_fp32": acc, "onnx_int8": acc},
            "latency_ms": {fmt: {"p50": p95 * 0.9, "p95": p95, "p99": p95 * 1.1} for fmt in ("pytorch_fp32", "onnx_fp32", "onnx_int8")},
            "size_mb": {"onnx_fp32": 4 * size, "onnx_int8": size},
            "bundle": str(_bundle(run_dir / "bundles" / name, name.encode() * 10)),
        }
        if grid:
            entry["latency_grid"] = {fmt: [
                {"batch_size": b, "seq_len": s, "p50": p95 * b * s / 160, "p95": p95 * b * s / 128, "p99": p95 * b * s / 100, "runs": 20}
                for b in (1, 8) for s in (32, 128)
            ] for fmt in ("onnx_fp32", "onnx_int8")}
        entries.append(entry)
    report = {
        "recipe": {"name": recipe}, "run_dir": str(run_dir),
        "machine": {"cpu": "Test CPU", "threads": 2},
        "latency_setup": {"batch_size": 1, "seq_len": 128, "warmup": 2, "runs": 20, "threads": 2},
        "teacher": {"accuracy": 0.86, "params": 22_000_000, "latency_ms": {"pytorch_fp32": {"p50": 25.0, "p95": 27.0}}},
        "checkpoints": entries,
        "export": {"latency_budget": None},
    }
    (run_dir / "report.json").write_text(json.dumps(report))
    return report


@pytest.fixture
def two_runs(tmp_path):
    a = _report(tmp_path / "runs" / "dense" / "20260101-000000", "dense",
                [("final", 1.0, 0.84, 8.0, 18.0)], grid=True)
    b = _report(tmp_path / "runs" / "hybrid" / "20260102-000000", "hybrid",
                [("density_0.7", 0.7, 0.835, 6.0, 13.0), ("density_0.5", 0.5, 0.80, 6.5, 9.5), ("final", 0.3, 0.79, 3.5, 6.0)],
                grid=False)
    return a, b


def test_pareto_front_on_hand_made_points():
    pts = [
        _pt("fast", 0.80, 3.0),
        _pt("slow_best", 0.85, 9.0),
        _pt("middle", 0.83, 5.0),
        _pt("dominated", 0.82, 6.0),  # middle is more accurate and faster
        _pt("tie_slower", 0.83, 5.5),  # same accuracy as middle, slower: dominated
        _pt("twin", 0.83, 5.0),  # identical to middle: neither is strictly better, both stay
        _pt("teacher", 0.99, 1.0, teacher=True),  # reference only: dominates nothing, never on the front
    ]
    assert pareto_front(pts) == [True, True, True, False, False, True, False]
    assert pareto_front([]) == []


def test_points_read_grid_cell_or_fall_back(two_runs):
    a, b = two_runs
    pa = points(a, batch_size=8, seq_len=32)
    assert [p["name"] for p in pa] == ["final", "teacher"] and pa[1]["teacher"] is True
    assert pa[0]["p95_ms"] == pytest.approx(8.0 * 8 * 32 / 128) and pa[0]["batch_size"] == 8
    assert pa[0]["size_mb"] == 18.0 and pa[0]["run"] == "dense/20260101-000000"
    pb = points(b, label="hybrid")
    assert [p["p95_ms"] for p in pb[:3]] == [6.0, 6.5, 3.5] and pb[0]["run"] == "hybrid"
    with pytest.raises(ExportError, match=r"no onnx_int8 latency at batch 32, sequence 128.*\(1, 32\)"):
        points(a, batch_size=32)
    with pytest.raises(ExportError, match="missing 'teacher'"):
        points({k: v for k, v in a.items() if k != "teacher"})


def test_select_with_budget_none_and_impossible():
    pts = [_pt("a", 0.84, 8.0), _pt("b", 0.835, 6.0), _pt("c", 0.835, 5.0), _pt("d", 0.79, 3.5), _pt("t", 0.9, 1.0, teacher=True)]
    chosen = select(pts, 6.0)
    assert chosen["name"] == "c" and chosen["p95_ms"] == 5.0  # tie on accuracy: the faster one
    assert "p95 <= 6 ms" in chosen["reason"] and "of the 3 checkpoints" in chosen["reason"]
    assert select(pts, 100.0)["name"] == "a" and select(pts, 3.5)["name"] == "d"
    best = select(pts, None)
    assert best["name"] == "a" and best["bundle"] == "/b/a" and "no latency budget" in best["reason"]
    with pytest.raises(ExportError) as error:
        select(pts, 2.0)
    message = str(error.value)
    assert "p95 <= 2 ms" in message and "3.50 ms" in message and "prune harder" in message and "Raise the budget" in message


def test_write_pareto_plot_is_readable_and_not_blank(two_runs, tmp_path):
    import matplotlib.image

    written = write_pareto(list(two_runs), tmp_path / "out")
    image = matplotlib.image.imread(str(written["png"]))
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert float(image[..., :3].std()) > 0.05  # axes, markers and text, not a blank canvas
    data = json.loads(written["json"].read_text())
    on_front = {(p["run"], p["name"]) for p in data["points"] if p["pareto"]}
    # dense/final 84.0% @ 8.0 ms; hybrid 0.7 83.5% @ 6.0, 0.5 80% @ 6.5 (dominated), final 79% @ 3.5
    assert on_front == {("dense/20260101-000000", "final"), ("hybrid/20260102-000000", "density_0.7"),
                        ("hybrid/20260102-000000", "final")}
    table = written["md"].read_text()
    assert "| hybrid/20260102-000000 | density_0.5 | 0.500 | 80.00 | 6.50 | 9.5 | no |" in table
    assert "| teacher |" in table and "reference" in table
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pareto.json", "pareto.md", "pareto.png"]


def test_copy_selected_copies_and_refuses_to_overwrite(two_runs, tmp_path):
    selection = select(points(two_runs[1]), 6.0)
    source = Path(selection["bundle"])
    dest = tmp_path / "sel" / "bundles" / "selected"
    assert copy_selected(selection, dest) == dest
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {p.name: p.read_bytes() for p in source.iterdir()}
    assert "SELECTED.md" not in {p.name for p in dest.iterdir()}  # the manifest stays valid
    assert selection["reason"] in (dest.parent / "SELECTED.md").read_text()
    assert json.loads((dest.parent / "selected.json").read_text())["name"] == "density_0.7"
    (dest / "model.int8.onnx").write_bytes(b"served")
    with pytest.raises(ExportError, match="never overwritten"):
        copy_selected(select(points(two_runs[0]), None), dest)
    assert (dest / "model.int8.onnx").read_bytes() == b"served"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["SELECTED.md", "selected", "selected.json"]


def test_cli_writes_report_and_selected_bundle(two_runs, tmp_path, capsys):
    dense_dir, hybrid_report = Path(two_runs[0]["run_dir"]), Path(two_runs[1]["run_dir"]) / "report.json"
    out = tmp_path / "pareto"
    assert main([str(dense_dir), str(hybrid_report), "--max-p95-ms", "7", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"pareto.json", "pareto.md", "pareto.png", "bundles"}
    assert (out / "bundles" / "selected" / "manifest.json").is_file()
    assert "density_0.7" in (out / "bundles" / "SELECTED.md").read_text()
    printed = capsys.readouterr().out
    assert "Selected density_0.7 of hybrid/20260102-000000" in printed
    # the same --out again is refused: a Pareto report never reuses a directory
    assert main([str(dense_dir), "--out", str(out)]) == 2


def test_cli_reads_newest_reexport(two_runs, tmp_path):
    import os

    run_dir = Path(two_runs[0]["run_dir"])
    newer = dict(two_runs[0], checkpoints=[dict(two_runs[0]["checkpoints"][0], name="reexported")])
    (run_dir / "reexports" / "20260105-000000").mkdir(parents=True)
    path = run_dir / "reexports" / "20260105-000000" / "report.json"
    path.write_text(json.dumps(newer))
    os.utime(run_dir / "report.json", (1, 1))  # the run's own report is older
    out = tmp_path / "p"
    assert main([str(run_dir), "--out", str(out)]) == 0
    assert [p["name"] for p in json.loads((out / "pareto.json").read_text())["points"]] == ["reexported", "teacher"]


def test_cli_missing_path_exits_2_without_traceback(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = subprocess.run(
        [sys.executable, "-m", "distilprune.export.pareto", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(missing) in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are known to be good


def test_cli_impossible_budget_exits_2_after_writing_the_table(two_runs, tmp_path, capsys):
    out = tmp_path / "p"
    assert main([two_runs[1]["run_dir"], "--max-p95-ms", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "p95 <= 1 ms" in err and "3.50 ms" in err
    assert (out / "pareto.md").is_file() and not (out / "bundles").exists()
