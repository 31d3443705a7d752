"""A run's latency and accuracy uncertainty: one timing of every model, and bootstrap intervals.

:func:`time_models` hands every model of a run (the teacher, each checkpoint in PyTorch, ONNX fp32
and INT8) to one clean child process (:mod:`distilprune.export.latency_rounds`) and writes its one
measurement per model and cell into the report; :func:`accuracy_intervals` adds a 95% bootstrap
interval to every accuracy and a paired interval to every difference the report makes.
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import numpy as np

from distilprune.errors import ExportError
from distilprune.export import bootstrap, latency_rounds
from distilprune.export.runtime import never_parallel

ONNX_FORMATS = ("onnx_fp32", "onnx_int8")
TEACHER_KEY = "teacher/pytorch_fp32"


def _job(report: dict, teacher_dir: Path, checkpoints: list[tuple], rounds: int, vocab_size: int,
         parallel_wait_seconds: float = latency_rounds.PARALLEL_WAIT_SECONDS) -> dict:
    setup = report["latency_setup"]
    headline = [setup["batch_size"], setup["seq_len"]]
    grid = [[b, s] for b in setup["grid"]["batch_sizes"] for s in setup["grid"]["seq_lens"]]
    onnx_cells = grid + ([headline] if headline not in grid else [])
    models = [{"key": TEACHER_KEY, "kind": "hf", "path": str(teacher_dir), "cells": [headline]}]
    for entry, checkpoint_dir, fp32_path, int8_path in checkpoints:
        models.append({"key": f"{entry['name']}/pytorch_fp32", "kind": "student", "path": str(checkpoint_dir),
                       "cells": [headline]})
        models += [{"key": f"{entry['name']}/{fmt}", "kind": "onnx", "path": str(path), "cells": onnx_cells}
                   for fmt, path in zip(ONNX_FORMATS, (fp32_path, int8_path), strict=True)]
    # the parallel-threads probe runs the first checkpoint's INT8 model
    probe = ({"key": f"{checkpoints[0][0]['name']}/onnx_int8", "path": str(checkpoints[0][3]), "cell": headline}
             if checkpoints else None)
    return {"threads": setup["threads"], "warmup": setup["warmup"], "runs": setup["runs"], "rounds": rounds,
            "vocab_size": vocab_size, "headline": headline, "models": models, "probe": probe,
            "extra_headline_seconds": parallel_wait_seconds}


def _cell(timing: dict, key: str, batch_size: int, seq_len: int) -> dict:
    return next(dict(c) for c in timing["models"][key]["cells"] if (c["batch_size"], c["seq_len"]) == (batch_size, seq_len))


def _unpruned(entries: list[dict]) -> dict | None:
    """The run's checkpoint that was never pruned (density 1), if it kept one."""
    return next((e for e in entries if e.get("density") == 1.0), None)


def _save_quietly(model, directory: str) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the run's console
    try:
        model.save_pretrained(directory)
    finally:
        hf_logging.enable_progress_bar()


def time_models(report: dict, teacher, checkpoints: list[tuple], rounds: int, vocab_size: int,
                parallel_wait_seconds: float = latency_rounds.PARALLEL_WAIT_SECONDS) -> dict:
    """Time every model in a child process and fill ``latency_ms``/``latency_grid`` of the report.

    Args:
        checkpoints: (report entry, checkpoint directory, model.onnx path, model.int8.onnx path) each.
        parallel_wait_seconds: how long to keep timing headline rounds when none ran with the threads in
            parallel (export.parallel_wait_seconds).

    Returns:
        the child's raw result (also summarized in ``report["latency_setup"]``).
    """
    setup = report["latency_setup"]
    with tempfile.TemporaryDirectory(prefix="distilprune-teacher-") as tmp:
        _save_quietly(teacher, tmp)  # the child loads it as Hugging Face ships it, in PyTorch fp32
        gc.collect()  # nothing of this process should page or collect while the child times
        try:
            timing = latency_rounds.measure_in_child(_job(report, Path(tmp), checkpoints, rounds, vocab_size,
                                                                 parallel_wait_seconds))
        except RuntimeError as error:
            raise ExportError(f"Timing the exported models failed: {error}. The exported files are in "
                              f"{Path(report['run_dir'])}; rerun the export with distilprune export {report['run_dir']}.") from None
    b, s = setup["batch_size"], setup["seq_len"]
    teacher_cell = _cell(timing, TEACHER_KEY, b, s)
    report["teacher"]["latency_ms"]["pytorch_fp32"] = teacher_cell
    report["teacher"]["attention"] = timing["models"][TEACHER_KEY]["details"].get("attention", "eager")
    entries = [c[0] for c in checkpoints]
    for entry in entries:
        for fmt in ("pytorch_fp32", *ONNX_FORMATS):
            cell = _cell(timing, f"{entry['name']}/{fmt}", b, s)
            entry["latency_ms"][fmt] = {**cell, "vs_teacher": latency_rounds.ratio(teacher_cell, cell)}
        grid_cells = [[gb, gs] for gb in setup["grid"]["batch_sizes"] for gs in setup["grid"]["seq_lens"]]
        entry["latency_grid"] = {fmt: [_cell(timing, f"{entry['name']}/{fmt}", gb, gs) for gb, gs in grid_cells]
                                 for fmt in ONNX_FORMATS}
    unpruned = _unpruned(entries)
    for entry in entries if unpruned else []:
        for fmt in ("pytorch_fp32", *ONNX_FORMATS):
            entry["latency_ms"][fmt]["vs_unpruned"] = latency_rounds.ratio(unpruned["latency_ms"][fmt], entry["latency_ms"][fmt])
    setup.update({
        "rounds": timing["rounds"], "runs_per_round": timing["runs_per_round"],
        "runs_per_round_elsewhere": timing["runs_per_round_elsewhere"], "rewarm_calls": timing["rewarm_calls"],
        "rewarm_seconds": timing["rewarm_seconds"],
        "grid_warmup_calls": timing["grid_warmup_calls"], "grid_round_seconds": timing["grid_round_seconds"],
        "grid_min_runs": timing["grid_min_runs"],
        "timing_seconds": timing["seconds"], "timing_startup_seconds": timing.get("startup_seconds"),
        "process": "two fresh processes after training, driven round by round: ONNX models in one that imports "
                   "only numpy + onnxruntime (as a server), PyTorch models (teacher, students) in the other",
        "heavy_modules_loaded": timing["heavy_modules_loaded"], "noisy_spread": latency_rounds.NOISY_SPREAD,
        "parallel_probe": timing.get("parallel_probe"),
        "p50": "median of the round medians", "spread": "min and max of the round medians",
        "p95_p99": "over the samples of all rounds", "ratios": "median over rounds of the per-round p50 ratio",
    })
    report["latency_checks"] = {"noisy": _noisy(timing), "smaller_but_slower": _order_violations(entries),
                                "threads_not_parallel": _not_parallel(timing)}
    return timing


def _noisy(timing: dict) -> list[str]:
    return [f"{key} at batch {c['batch_size']}, sequence {c['seq_len']}: round medians {c['spread'][0]:.2f}-"
            f"{c['spread'][1]:.2f} ms around {c['p50']:.2f} ms"
            for key, model in timing["models"].items() for c in model["cells"] if c["noisy"]]


def _not_parallel(timing: dict) -> list[str]:
    """Cells where no round's probe reached the parallel speedup (every round is then summarized)."""
    probe = timing.get("parallel_probe") or {}
    return [f"batch {c['batch_size']}, sequence {c['seq_len']}: probe speedups {min(c['speedups']):.2f}-"
            f"{max(c['speedups']):.2f}x, below {probe['min_speedup']}x in every round"
            for c in probe.get("cells", []) if never_parallel(c["speedups"], probe["min_speedup"])]


def _strictly_smaller(a: dict, b: dict) -> bool:
    """a has at most b's heads and FFN width in every layer, and fewer somewhere."""
    pairs = list(zip(a["heads_per_layer"], b["heads_per_layer"])) + list(zip(a["ffn_width_per_layer"], b["ffn_width_per_layer"]))
    return len(a["heads_per_layer"]) == len(b["heads_per_layer"]) and all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def _order_violations(entries: list[dict]) -> list[str]:
    """Checkpoints smaller than another in every layer but measured slower (a sign of a noisy measurement)."""
    out = []
    for a in entries:
        for b in entries:
            if a is not b and _strictly_smaller(a, b):
                out += [f"{a['name']} is smaller than {b['name']} in every layer but its {fmt} p50 "
                        f"{a['latency_ms'][fmt]['p50']:.2f} ms exceeds {b['latency_ms'][fmt]['p50']:.2f} ms"
                        for fmt in ONNX_FORMATS if a["latency_ms"][fmt]["p50"] > b["latency_ms"][fmt]["p50"]]
    return out


# --------------------------------------------------------------------------------------------
# accuracy


def accuracy_intervals(report: dict, teacher_correct: np.ndarray, checkpoints: list[tuple[dict, dict]],
                       statistic=bootstrap.mean_of_first) -> None:
    """95% bootstrap intervals for every value of the task's metric and paired intervals for the
    report's differences.

    Args:
        teacher_correct: (test examples, k) metric units of the teacher (1-D: correctness).
        checkpoints: (report entry, {format: units like teacher_correct}) each, examples in the same order.
        statistic: the task's ``statistic`` (mean units -> metric).
    """

    def _ci(units: np.ndarray) -> dict:
        interval = bootstrap.accuracy_interval(units, statistic=statistic)
        return {"low": round(interval["low"], 6), "high": round(interval["high"], 6)}

    def _diff(a: np.ndarray, b: np.ndarray) -> dict:
        d = bootstrap.paired_difference_interval(a, b, statistic=statistic)
        return {"difference": round(d["difference"], 6), "low": round(d["low"], 6), "high": round(d["high"], 6)}

    report["accuracy_setup"] = {
        "interval": f"{int(100 * bootstrap.LEVEL)}% percentile bootstrap over the {len(teacher_correct)} test examples",
        "differences": "paired bootstrap: both models scored on the same resampled examples",
        "resamples": bootstrap.RESAMPLES, "seed": bootstrap.SEED,
    }
    report["teacher"]["accuracy_ci"] = _ci(teacher_correct)
    unpruned = _unpruned([entry for entry, _ in checkpoints])
    base = next((correct for entry, correct in checkpoints if entry is unpruned), None)
    for entry, correct in checkpoints:
        entry["accuracy_ci"] = {fmt: _ci(c) for fmt, c in correct.items()}
        differences = {
            "onnx_int8 - onnx_fp32": _diff(correct["onnx_int8"], correct["onnx_fp32"]),
            "onnx_int8 - teacher": _diff(correct["onnx_int8"], teacher_correct),
            "pytorch_fp32 - teacher": _diff(correct["pytorch_fp32"], teacher_correct),
        }
        if base is not None and entry is not unpruned:
            differences[f"onnx_int8 - {unpruned['name']} onnx_int8"] = _diff(correct["onnx_int8"], base["onnx_int8"])
        entry["accuracy_differences"] = differences
