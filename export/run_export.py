"""Export, quantize and verify every kept checkpoint of a run, and write its report.

Called at the end of training, and standalone on an existing run directory
(``python -m distilprune.export.cli runs/<recipe>/<time>``), which writes into a new
``reexports/<time>/`` directory so nothing from the training run is overwritten.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from distilprune.errors import ExportError
from distilprune.export import latency_rounds, measure, run_timing
from distilprune.export.onnx_export import export_student, file_mb, ort_session
from distilprune.export.report import save_report
from distilprune.students import DistilBertStudent
from distilprune.tasks import Task, TaskData, default_task, model_inputs

CHECKPOINT_INFO = "checkpoint_info.json"


@dataclass
class ExportResult:
    report: dict
    json_path: Path
    images: dict[str, Path] = field(default_factory=dict)  # W&B key -> PNG
    bundles: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # loud failures raised after everything is written
    pareto_md: Path | None = None

    def raise_if_failed(self) -> None:
        if self.failures:
            raise ExportError(" ".join(self.failures))


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories under ``run_dir/checkpoints`` in the order they were kept."""
    root = run_dir / "checkpoints"
    # Names starting with "." are staging directories of an interrupted write, or superseded copies.
    found = [p for p in root.iterdir() if not p.name.startswith(".") and (p / CHECKPOINT_INFO).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: json.loads((p / CHECKPOINT_INFO).read_text()).get("order", 0))


def _test_loader(task: Task, test_split, tokenizer, batch_size: int) -> DataLoader:
    """Batches of the tokenized test split (``task.tokenize``), in split order."""
    return DataLoader(test_split, batch_size=batch_size, collate_fn=partial(task.collate, pad_token_id=tokenizer.pad_token_id or 0))


def _calibration_feeds(task: Task, data: TaskData, tokenizer, max_seq_len: int, count: int,
                       batch_size: int = 16) -> list[dict]:
    """Tokenized training examples (never test data) as ONNX Runtime feeds for static INT8
    calibration: input_ids, attention_mask and, for text pairs, token_type_ids, (batch, seq) int64."""
    split = task.tokenize(data.train, tokenizer, max_seq_len)
    indices = list(range(min(count, len(split))))
    feeds = []
    for start in range(0, len(indices), batch_size):
        batch = task.collate([split[i] for i in indices[start:start + batch_size]], pad_token_id=tokenizer.pad_token_id or 0)
        feeds.append({name: value.numpy() for name, value in model_inputs(batch).items()})
    return feeds


def _budget(cfg) -> dict | None:
    if cfg.latency_budget_ms is None:
        return None
    return {"p95_ms": cfg.latency_budget_ms, "batch_size": cfg.budget_batch_size, "seq_len": cfg.budget_seq_len}


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "lightning", "onnx", "onnxruntime", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class _Context:
    """What every step of one export shares."""

    run_dir: Path
    out_dir: Path
    recipe: object
    tokenizer: object
    data: TaskData
    task: Task
    console: Console
    loader: DataLoader
    int8_loader: DataLoader  # INT8 accuracy one request at a time (by default): dynamic INT8's scales span the batch
    val_loader: DataLoader | None  # validation batches, for a task that calibrates (QA's null threshold)
    int8_val_loader: DataLoader | None
    calibration: list[dict]
    budget: dict | None
    rounds: int

    @property
    def cfg(self):
        return self.recipe.export


BATCHED_INT8 = "model.int8.batched.onnx"  # per-token INT8 for servers that batch, beside the shipped INT8


@dataclass
class _Exported:
    """One checkpoint between its export (files, accuracies, gate) and its bundle."""

    entry: dict
    checkpoint_dir: Path
    student_config: object
    fp32_path: Path
    int8_path: Path
    staging: Path  # the bundle is built here and renamed to final when complete
    final: Path
    units: dict[str, np.ndarray]  # format -> (test examples, k) metric units, for the paired intervals


def _chosen_checkpoints(run_dir: Path, only: list[str] | None) -> list[Path]:
    checkpoints = kept_checkpoints(run_dir)
    if not checkpoints:
        raise ExportError(
            f"{run_dir} has no kept checkpoints (expected checkpoints/<name>/{CHECKPOINT_INFO}). "
            f"Was the training run interrupted before it finished? Resume it with "
            f"python train/distill.py resume={run_dir}."
        )
    if only:
        unknown = sorted(set(only) - {c.name for c in checkpoints})
        if unknown:
            raise ExportError(
                f"{run_dir} has no checkpoint named {', '.join(unknown)}; its checkpoints are "
                f"{', '.join(c.name for c in checkpoints)}. Pass one of those with --checkpoint."
            )
        checkpoints = [c for c in checkpoints if c.name in only]
    return checkpoints


def _context(run_dir, out_dir, recipe, tokenizer, data, task, console, rounds) -> _Context:
    cfg, max_len = recipe.export, recipe.data.max_seq_len
    test_split = task.tokenize(data.test, tokenizer, max_len)  # tokenized once, batched two ways
    val_split = task.tokenize(data.validation, tokenizer, max_len) if task.calibrates else None
    return _Context(
        run_dir=run_dir, out_dir=out_dir, recipe=recipe, tokenizer=tokenizer, data=data, task=task, console=console,
        loader=_test_loader(task, test_split, tokenizer, recipe.data.eval_batch_size),
        int8_loader=_test_loader(task, test_split, tokenizer, cfg.int8_eval_batch_size),
        val_loader=_test_loader(task, val_split, tokenizer, recipe.data.eval_batch_size) if val_split is not None else None,
        int8_val_loader=_test_loader(task, val_split, tokenizer, cfg.int8_eval_batch_size) if val_split is not None else None,
        calibration=_calibration_feeds(task, data, tokenizer, max_len, cfg.calibration_examples),
        budget=_budget(cfg), rounds=rounds or cfg.latency_rounds,
    )


def _score(ctx: _Context, rows_of, int8: bool = False):
    """One model's test metric and its test rows; ``rows_of(loader)`` gives the model's rows on a loader.

    A task that calibrates (question answering: the "no answer" threshold) first calibrates on the
    model's own validation rows, and the test score applies what it chose."""
    task = ctx.task
    calibration = None
    if task.calibrates:
        calibration = task.calibrate(rows_of(ctx.int8_val_loader if int8 else ctx.val_loader), ctx.data.validation)
    rows = rows_of(ctx.int8_loader if int8 else ctx.loader)
    return task.score(rows, ctx.data.test, calibration), rows


def _start_report(ctx: _Context, teacher, extra: dict | None) -> tuple[dict, np.ndarray]:
    """The report without checkpoints, and the teacher's per-example metric units on the test split."""
    cfg, task = ctx.cfg, ctx.task
    ctx.console.print(f"[bold]Export[/bold]: measuring the teacher on {len(ctx.data.test)} test examples ...")
    teacher_scored, _ = _score(ctx, lambda loader: measure.rows_pytorch(teacher, loader, task, hf=True))
    report = {
        "recipe": {"name": ctx.recipe.name, "path": str(ctx.run_dir / "recipe.yaml")},
        "run_dir": str(ctx.run_dir),
        "machine": measure.machine_info(cfg.threads),
        "libraries": _library_versions(),
        "latency_setup": {
            "batch_size": cfg.latency_batch_size, "seq_len": cfg.latency_seq_len,
            "warmup": cfg.latency_warmup, "runs": cfg.latency_runs, "threads": cfg.threads,
            "inputs": "random token ids, full attention mask",
            "grid": {"batch_sizes": cfg.grid_batch_sizes, "seq_lens": cfg.grid_seq_lens},
            # What each side computes, so a speedup is read for what it is (DistilBertStudent).
            "teacher_forward": "Hugging Face model as shipped, PyTorch fp32: every layer over every token",
            "student_forward": ("last layer for the [CLS] row only (exact: the classifier reads nothing else)"
                                if task.head == "sequence" else "every layer over every token"),
        },
        "task": {"name": task.name, "metric": task.metric, "metric_label": task.metric_label},
        "export": {"latency_budget": ctx.budget, "int8_method": cfg.int8_method, "int8_max_drop": cfg.int8_max_drop,
                   "int8_fallbacks": cfg.int8_fallbacks, "int8_eval_batch_size": cfg.int8_eval_batch_size},
        "data": ctx.data.info,
        "teacher": {
            "model": ctx.recipe.teacher.model,
            "accuracy": teacher_scored.value,  # the task's metric (report["task"]["metric"])
            "metrics": teacher_scored.details,
            "params": sum(p.numel() for p in teacher.parameters()),
            "latency_ms": {},  # filled by the timing rounds
        },
        "checkpoints": [],
    }
    if extra:
        report.update(extra)
    return report, teacher_scored.units


def _load_student(ckpt_dir: Path, cfg) -> DistilBertStudent:
    student = DistilBertStudent.load(ckpt_dir)
    longest = max(cfg.grid_seq_lens + [cfg.latency_seq_len])
    if longest > student.config.max_position_embeddings:
        raise ExportError(
            f"The latency grid asks for sequences of {longest} tokens but the student has "
            f"{student.config.max_position_embeddings} positions. Lower export.grid_seq_lens / export.latency_seq_len."
        )
    return student


def _export_checkpoint(ckpt_dir: Path, ctx: _Context, result: ExportResult) -> _Exported:
    """ONNX export, parity against PyTorch and the INT8 gate of one checkpoint (no timing here)."""
    from distilprune.export.quantize import quantize_with_gate

    cfg, name, console, task = ctx.cfg, ckpt_dir.name, ctx.console, ctx.task
    key_length = ctx.recipe.data.max_seq_len  # per_token INT8 pads attention keys to the tokenizer window
    info = json.loads((ckpt_dir / CHECKPOINT_INFO).read_text())
    console.print(f"[bold]Export[/bold] {name}: PyTorch {task.metric_label} ...")
    student = _load_student(ckpt_dir, cfg)
    test = ctx.data.test
    pt, pt_rows = _score(ctx, lambda loader: measure.rows_pytorch(student, loader, task))
    final = ctx.out_dir / "bundles" / name
    if final.exists():
        raise ExportError(f"{final} already exists; exports always go to a new directory. Re-export with "
                          f"python -m distilprune.export.cli {ctx.run_dir}.")
    # Built under a staging name and renamed when complete: a kill mid-export never leaves a
    # half bundle under the final name (bundle files are relative, so the rename keeps it valid).
    staging = ctx.out_dir / "bundles" / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    console.print(f"[bold]Export[/bold] {name}: ONNX export, graph optimization (fusion check) ...")
    exported = export_student(student, staging, cfg.opset, require_attention_fusion=cfg.require_attention_fusion,
                              quantize=False, layer_norm=cfg.layer_norm)  # the INT8 gate below writes model.int8.onnx
    fp32_session = ort_session(exported.fp32_path, cfg.threads)
    fp32, fp32_rows = _score(ctx, lambda loader: measure.rows_onnx(fp32_session, loader, task))
    max_diff = measure.max_abs_diff(fp32_rows, pt_rows)
    if max_diff > cfg.parity_atol:
        raise ExportError(
            f"ONNX fp32 logits of checkpoint {name} differ from PyTorch by {max_diff:.2e} on the test "
            f"set, above export.parity_atol={cfg.parity_atol:g}. The export is wrong; the files are "
            f"in {staging} for inspection."
        )
    console.print(f"[bold]Export[/bold] {name}: INT8 quantization with the {task.metric_label} gate ...")
    int8_scored: dict[str, object] = {}  # attempt file stem (= method) -> Scored
    int8_rows: dict[str, list] = {}

    def evaluate(path: Path) -> float:
        session = ort_session(path, cfg.threads)
        int8_scored[path.stem], int8_rows[path.stem] = _score(
            ctx, lambda loader: measure.rows_onnx(session, loader, task), int8=True)
        return int8_scored[path.stem].value

    gate = quantize_with_gate(exported.fp32_path, exported.int8_path, evaluate, fp32.value, cfg.int8_max_drop,
                              cfg.int8_fallbacks, ctx.calibration, None, first=cfg.int8_method, key_length=key_length)
    if not gate["passed"]:
        result.failures.append(f"Checkpoint {name}: {gate['verdict']}")
    serving = _batched_model(exported.fp32_path, gate, evaluate, fp32.value, cfg.int8_max_drop, key_length)
    # The shipped file is the attempt the gate evaluated on int8_loader: its score, not a rerun.
    int8 = int8_scored[gate["shipped"]]
    entry = {
        "name": name, "step": info.get("step"), "density": info.get("density", 1.0),
        "params": student.num_parameters(),
        "heads_per_layer": student.config.heads_per_layer,
        "ffn_width_per_layer": student.config.ffn_width_per_layer,
        # the task's metric (report["task"]["metric"]); "metrics" has the rest (macro-F1, per class...)
        "accuracy": {"pytorch_fp32": pt.value, "onnx_fp32": fp32.value, "onnx_int8": int8.value},
        "metrics": {"pytorch_fp32": pt.details, "onnx_fp32": fp32.details, "onnx_int8": int8.details},
        "latency_ms": {}, "latency_grid": {},  # filled by the timing rounds
        "size_mb": {"onnx_fp32": round(file_mb(exported.fp32_path), 2), "onnx_int8": round(file_mb(exported.int8_path), 2)},
        "onnx_max_abs_diff": max_diff, "fused_ops": exported.fused_ops, "quantized_ops": gate["quantized_ops"],
        "layer_norm": {"form": cfg.layer_norm, "lowered": exported.lowered_layer_norms},
        # per bundle file, what calibrate() chose for it on validation (QA: its "no answer" threshold)
        "calibration": _calibrations(fp32, int8, int8_scored) if task.calibrates else {},
        # reading answers from the logits (question answering), per question, apart from the model's time
        "postprocess_ms": task.time_postprocess(int8_rows[gate["shipped"]], test, int8.calibration),
        "int8": gate, "serving": serving, "bundle": str(final),
        # compacted vs masked logits; None for a checkpoint that was never pruned (nothing compacted)
        "compaction_max_abs_diff": info.get("compaction_max_abs_diff"),
        "densities": info.get("densities", {}),
    }
    units = {"pytorch_fp32": pt.units, "onnx_fp32": fp32.units, "onnx_int8": int8.units}
    return _Exported(entry, ckpt_dir, student.config, exported.fp32_path, exported.int8_path, staging, final, units)


def _calibrations(fp32, int8, int8_scored: dict) -> dict[str, dict]:
    """Bundle file name -> the calibration its accuracy was measured with."""
    out = {"model.onnx": fp32.calibration, "model.int8.onnx": int8.calibration}
    batched = int8_scored.get("per_token")  # batch_invariant_int8 evaluates its attempt as per_token.onnx
    if batched is not None:
        out[BATCHED_INT8] = batched.calibration
    return out


def _batched_model(fp32_path: Path, gate: dict, evaluate, fp32_accuracy: float, max_drop: float, key_length: int) -> dict:
    """The model servers batch with: the shipped INT8 when it is batch-invariant, else per-token INT8
    (``model.int8.batched.onnx``) when it passes the same accuracy gate, else fp32 ``model.onnx``."""
    from distilprune.config import BATCH_INVARIANT_INT8_METHODS
    from distilprune.export.quantize import batch_invariant_int8

    if gate["shipped"] in BATCH_INVARIANT_INT8_METHODS:
        return {"batched_model": "model.int8.onnx",
                "why": f"INT8 ({gate['shipped']}): a text's output does not depend on its batch"}
    attempt = batch_invariant_int8(fp32_path, fp32_path.with_name(BATCHED_INT8), evaluate, fp32_accuracy, max_drop,
                                   key_length)
    if attempt["passed"]:
        return {"batched_model": BATCHED_INT8, "attempt": attempt,
                "why": "per-token INT8 (one activation scale per token, attention keys padded to "
                       f"{key_length}): a text's output does not depend on its batch; model.int8.onnx "
                       f"({gate['shipped']}) scales activations over the whole batch"}
    return {"batched_model": "model.onnx", "attempt": attempt,
            "why": "fp32: per-token INT8 did not pass the accuracy gate "
                   f"({attempt.get('error') or 'drop ' + str(attempt['drop'])}), and model.int8.onnx "
                   f"({gate['shipped']}) scales activations over the whole batch"}


def _write_bundle(item: _Exported, ctx: _Context, report: dict, result: ExportResult) -> None:
    """Serving files, card, verifier and manifest of one checkpoint; verify it, then rename it into place."""
    from distilprune.export import bundle as bundle_files
    from distilprune.export import verify as verifier
    from distilprune.export.runtime import available_threads
    from distilprune.export.serving import package

    cfg, entry, bundle, tokenizer = ctx.cfg, item.entry, item.staging, ctx.tokenizer
    ctx.console.print(f"[bold]Export[/bold] {entry['name']}: serving bundle (spec, parity vectors, Triton, card, manifest) ...")
    tokenizer.save_pretrained(str(bundle))
    (bundle / "config.json").write_text(item.student_config.to_json())
    grid = {"batch_sizes": cfg.grid_batch_sizes, "seq_lens": cfg.grid_seq_lens}
    task_spec = ctx.task.bundle_spec(ctx.data)
    if entry.get("calibration"):  # per model file: servers read the one of the file they run
        task_spec["calibration"] = entry["calibration"]
    bundle_files.write_input_spec(bundle, tokenizer, ctx.recipe.data.max_seq_len, item.student_config.id2label,
                                  latency_grid=grid, latency_budget=ctx.budget, task=task_spec)
    parity_texts = ctx.task.parity_texts(ctx.data)  # parity vectors: real test texts
    bundle_files.write_parity_vectors(bundle, tokenizer, parity_texts, ctx.recipe.data.max_seq_len,
                                      fp32_atol=cfg.parity_atol, int8_atol=bundle_files.PARITY_INT8_ATOL,
                                      threads=cfg.threads,
                                      doc_stride=task_spec.get("question_answering", {}).get("doc_stride"))
    model_name = f"{ctx.recipe.name}-{entry['name']}".replace("/", "-")
    serving = entry["serving"]
    # Triton batches requests from different clients: its models run the batch-invariant file
    settings = package.settings_from_grid(entry["latency_grid"].get("onnx_int8", []), cfg.threads, available_threads())
    bundle_files.write_triton_repository(bundle, model_name, onnx_file=serving["batched_model"],
                                         max_batch_size=settings["max_batch_size"],
                                         preferred_batch_sizes=settings["preferred"], instances=settings["instances"],
                                         threads=cfg.threads)
    package.write_serving(bundle, model_name, serving["batched_model"], serving["why"], settings,
                          warmup_text=parity_texts[0], task=task_spec)
    bundle_files.write_expected_predictions(bundle, serving["batched_model"], cfg.threads)
    entry["gpu"] = _gpu_status(cfg.gpu)  # the card's line; the verification below fills in measurements
    bundle_files.write_model_card(bundle, _card(report, entry, ctx.budget, model_name))
    bundle_files.copy_verifier(bundle)
    bundle_files.write_manifest(bundle)
    # The budget check reads the run's own grid: one measurement per model and cell in a run.
    verification = verifier.verify_bundle(bundle, threads=cfg.threads, grid=False, gpu=cfg.gpu != "off",
                                          measured=entry["latency_grid"])
    entry["verification"] = {"ok": verification["ok"], "checks": verification["checks"]}
    # CUDA execution provider + fp16 + IOBinding when a GPU is there; a "skipped: ..." line when not.
    if cfg.gpu == "auto" and verification.get("gpu"):
        entry["gpu"] = verification["gpu"]
    if not verification["ok"]:
        failed = [c for c in verification["checks"] if not c["ok"]]
        result.failures.append(f"Bundle {item.final} failed verification: "
                               + "; ".join(f"{c['name']}: {c['detail']}" for c in failed) + ".")
    bundle.rename(item.final)
    result.bundles.append(item.final)


def _select(ctx: _Context, report: dict, result: ExportResult) -> None:
    """The Pareto table and plot, and the bundle to ship for the budget (bundles/selected)."""
    from distilprune.export import pareto

    cfg = ctx.cfg
    written = pareto.write_pareto([report], ctx.out_dir, labels=[ctx.recipe.name], batch_size=cfg.budget_batch_size,
                                  seq_len=cfg.budget_seq_len)
    result.images["report/pareto"] = Path(written["png"])
    result.pareto_md = Path(written["md"])
    try:
        selection = pareto.select(pareto.points(report, "onnx_int8", cfg.budget_batch_size, cfg.budget_seq_len,
                                                label=ctx.recipe.name), cfg.latency_budget_ms)
        pareto.copy_selected(selection, ctx.out_dir / "bundles" / "selected")
        report["selected"] = selection
        ctx.console.print(f"[bold]Selected[/bold]: {selection['reason']}")
    except ExportError as error:
        report["selected"] = None
        result.failures.append(str(error))


def export_run(
    run_dir: Path,
    out_dir: Path,
    recipe,
    teacher,
    tokenizer,
    data: TaskData,
    extra: dict | None = None,
    console: Console | None = None,
    only: list[str] | None = None,
    rounds: int | None = None,
    task: Task | None = None,
) -> ExportResult:
    """Export, gate, time, bundle and verify every checkpoint in ``run_dir``; write the report, the
    Pareto table/plot and ``bundles/selected`` into ``out_dir``.

    Every model (teacher, each checkpoint in PyTorch, ONNX fp32 and INT8) is timed once, in one clean
    child process, in ``rounds`` alternating rounds (:mod:`distilprune.export.latency_rounds`; default
    ``export.latency_rounds`` where the recipe has it, else 5); that one measurement feeds every table,
    card, the Pareto front and the selection. Loud failures that depend on all checkpoints (no
    checkpoint meets the latency budget, no INT8 model within the allowed drop) are collected in
    ``ExportResult.failures`` and raised by the caller *after* everything is written.
    """
    checkpoints = _chosen_checkpoints(run_dir, only)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.export.threads)
    ctx = _context(run_dir, out_dir, recipe, tokenizer, data, task or default_task(), console or Console(stderr=True),
                   rounds)
    report, teacher_units = _start_report(ctx, teacher, extra)
    result = ExportResult(report, out_dir / "report.json")
    exported = [_export_checkpoint(ckpt_dir, ctx, result) for ckpt_dir in checkpoints]
    report["checkpoints"] = [item.entry for item in exported]
    ctx.console.print(f"[bold]Export[/bold]: timing the teacher and {len(exported)} checkpoint(s) in "
                      f"{ctx.rounds} alternating rounds, in a process of their own ...")
    run_timing.time_models(report, teacher, [(item.entry, item.checkpoint_dir, item.fp32_path, item.int8_path)
                                             for item in exported], ctx.rounds, tokenizer.vocab_size,
                           parallel_wait_seconds=ctx.cfg.parallel_wait_seconds)
    run_timing.accuracy_intervals(report, teacher_units, [(item.entry, item.units) for item in exported],
                                  ctx.task.statistic)
    for item in exported:
        _write_bundle(item, ctx, report, result)
    result.json_path, _ = save_report(report, out_dir)
    _select(ctx, report, result)
    save_report(report, out_dir)
    return result


def _gpu_status(setting: str) -> dict:
    import onnxruntime as ort

    if setting == "off":
        return {"status": "skipped: export.gpu=off"}
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return {"status": f"skipped: CUDA execution provider not available (providers: {', '.join(providers)})"}
    return {"status": "CUDA available: fp16 + IOBinding measured by the bundle verification (report.json)"}


def _card(report: dict, entry: dict, budget: dict | None, model_name: str) -> dict:
    return {
        "name": model_name,
        "task": report.get("task"),
        "recipe": report["recipe"],
        "teacher": report["teacher"],
        "data": report["data"],
        "checkpoint": entry,
        "machine": report["machine"],
        "libraries": report.get("libraries", {}),
        "latency_budget": budget,
        "latency_setup": report.get("latency_setup", {}),
        "export": report.get("export", {}),
        "training": report.get("training", {}),
        "how_to_verify": "python -m distilprune.export.verify <this directory>   (or: python verify_bundle.py .)",
    }
