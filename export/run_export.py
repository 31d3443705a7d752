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

from distilprune.data import TextClassificationData, TokenizedSplit, collate
from distilprune.errors import ExportError
from distilprune.export import measure
from distilprune.export.onnx_export import export_student, file_mb, ort_session
from distilprune.export.report import save_report
from distilprune.students import DistilBertStudent

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


def _test_loader(data: TextClassificationData, tokenizer, max_seq_len: int, batch_size: int) -> DataLoader:
    split = TokenizedSplit(data.test, tokenizer, max_seq_len)
    return DataLoader(split, batch_size=batch_size, collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id or 0))


def _onnx_latency_alone(path: Path, inputs, threads: int, warmup: int, runs: int) -> dict:
    """Latency of ``path`` in a session of its own, which (with its thread pool) is gone when this
    returns, so the next measurement starts without it. Callers close their other sessions first."""
    return measure.latency_onnx(ort_session(path, threads), inputs, warmup, runs)


def _teacher_latency(teacher, inputs, cfg) -> tuple[dict, str]:
    """Teacher latency in its fastest PyTorch attention (SDPA) so speedups are not inflated."""
    implementation = "eager"
    try:
        teacher.set_attn_implementation("sdpa")
        implementation = "sdpa"
    except Exception:  # not every model supports SDPA; eager is then what it runs
        pass
    try:
        return measure.latency_pytorch(teacher, inputs, cfg.threads, cfg.latency_warmup, cfg.latency_runs, hf=True), implementation
    finally:
        if implementation != "eager":
            teacher.set_attn_implementation("eager")


def _calibration_feeds(data: TextClassificationData, tokenizer, max_seq_len: int, count: int, batch_size: int = 16) -> list[dict]:
    """Tokenized training examples (never test data) as ONNX Runtime feeds for static INT8 calibration."""
    split = TokenizedSplit(data.train, tokenizer, max_seq_len)
    indices = list(range(min(count, len(split))))
    feeds = []
    for start in range(0, len(indices), batch_size):
        batch = collate([split[i] for i in indices[start:start + batch_size]], pad_token_id=tokenizer.pad_token_id or 0)
        feeds.append({"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()})
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


def export_run(
    run_dir: Path,
    out_dir: Path,
    recipe,
    teacher,
    tokenizer,
    data: TextClassificationData,
    extra: dict | None = None,
    console: Console | None = None,
    only: list[str] | None = None,
) -> ExportResult:
    """Export, gate, bundle and verify every checkpoint in ``run_dir``; write the report, the Pareto
    table/plot and ``bundles/selected`` into ``out_dir``.

    Loud failures that depend on all checkpoints (no checkpoint meets the latency budget, no INT8
    model within the allowed drop) are collected in ``ExportResult.failures`` and raised by the caller
    *after* everything is written, so the evidence is on disk.
    """
    from distilprune.export import bundle as bundle_files
    from distilprune.export import pareto
    from distilprune.export import verify as verifier
    from distilprune.export.quantize import quantize_with_gate

    console = console or Console(stderr=True)
    cfg = recipe.export
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
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = cfg.threads
    torch.set_num_threads(threads)
    loader = _test_loader(data, tokenizer, recipe.data.max_seq_len, recipe.data.eval_batch_size)
    # INT8 accuracy one request at a time (by default): dynamic INT8's activation scales span the batch.
    int8_loader = _test_loader(data, tokenizer, recipe.data.max_seq_len, cfg.int8_eval_batch_size)
    inputs = measure.latency_inputs(cfg.latency_batch_size, cfg.latency_seq_len, tokenizer.vocab_size)
    calibration = _calibration_feeds(data, tokenizer, recipe.data.max_seq_len, cfg.calibration_examples)
    budget = _budget(cfg)

    console.print(f"[bold]Export[/bold]: measuring the teacher on {len(data.test)} test examples ...")
    teacher_acc, _ = measure.accuracy_pytorch(teacher, loader, hf=True)
    teacher_latency, teacher_attention = _teacher_latency(teacher, inputs, cfg)
    report = {
        "recipe": {"name": recipe.name, "path": str(run_dir / "recipe.yaml")},
        "run_dir": str(run_dir),
        "machine": measure.machine_info(threads),
        "libraries": _library_versions(),
        "latency_setup": {
            "batch_size": cfg.latency_batch_size, "seq_len": cfg.latency_seq_len,
            "warmup": cfg.latency_warmup, "runs": cfg.latency_runs, "threads": threads,
            "inputs": "random token ids, full attention mask",
            "grid": {"batch_sizes": cfg.grid_batch_sizes, "seq_lens": cfg.grid_seq_lens},
            # What each side computes, so a speedup is read for what it is (DistilBertStudent).
            "teacher_forward": "Hugging Face model as shipped: every layer over every token",
            "student_forward": "last layer for the [CLS] row only (exact: the classifier reads nothing else)",
        },
        "export": {"latency_budget": budget, "int8_method": cfg.int8_method, "int8_max_drop": cfg.int8_max_drop,
                   "int8_fallbacks": cfg.int8_fallbacks, "int8_eval_batch_size": cfg.int8_eval_batch_size},
        "data": data.info,
        "teacher": {
            "model": recipe.teacher.model,
            "accuracy": teacher_acc,
            "params": sum(p.numel() for p in teacher.parameters()),
            "attention": teacher_attention,
            "latency_ms": {"pytorch_fp32": teacher_latency},
        },
        "checkpoints": [],
    }
    if extra:
        report.update(extra)
    result = ExportResult(report, out_dir / "report.json")
    texts = data.test.texts[:4]  # parity vectors: real test sentences

    for ckpt_dir in checkpoints:
        info = json.loads((ckpt_dir / CHECKPOINT_INFO).read_text())
        name = ckpt_dir.name
        console.print(f"[bold]Export[/bold] {name}: PyTorch accuracy and latency ...")
        student = DistilBertStudent.load(ckpt_dir)
        if max(cfg.grid_seq_lens + [cfg.latency_seq_len]) > student.config.max_position_embeddings:
            raise ExportError(
                f"The latency grid asks for sequences of {max(cfg.grid_seq_lens + [cfg.latency_seq_len])} "
                f"tokens but the student has {student.config.max_position_embeddings} positions. Lower "
                f"export.grid_seq_lens / export.latency_seq_len."
            )
        pt_acc, pt_logits = measure.accuracy_pytorch(student, loader)
        pt_latency = measure.latency_pytorch(student, inputs, threads, cfg.latency_warmup, cfg.latency_runs)

        final_bundle = out_dir / "bundles" / name
        if final_bundle.exists():
            raise ExportError(f"{final_bundle} already exists; exports always go to a new directory. Re-export with "
                              f"python -m distilprune.export.cli {run_dir}.")
        # Built under a staging name and renamed when complete: a kill mid-export never leaves a
        # half bundle under the final name (bundle files are relative, so the rename keeps it valid).
        bundle = out_dir / "bundles" / f".{name}.partial"
        shutil.rmtree(bundle, ignore_errors=True)
        console.print(f"[bold]Export[/bold] {name}: ONNX export, graph optimization (fusion check) ...")
        exported = export_student(student, bundle, cfg.opset, require_attention_fusion=cfg.require_attention_fusion,
                                  quantize=False)  # the INT8 gate below writes model.int8.onnx
        fp32_session = ort_session(exported.fp32_path, threads)
        fp32_acc, fp32_logits = measure.accuracy_onnx(fp32_session, loader)
        max_diff = float(np.abs(fp32_logits - pt_logits).max())
        if max_diff > cfg.parity_atol:
            raise ExportError(
                f"ONNX fp32 logits of checkpoint {name} differ from PyTorch by {max_diff:.2e} on the test "
                f"set, above export.parity_atol={cfg.parity_atol:g}. The export is wrong; the files are "
                f"in {bundle} for inspection."
            )

        console.print(f"[bold]Export[/bold] {name}: INT8 quantization with the accuracy gate ...")
        gate = quantize_with_gate(
            exported.fp32_path, exported.int8_path,
            evaluate=lambda path: measure.accuracy_onnx(ort_session(path, threads), int8_loader)[0],
            fp32_accuracy=fp32_acc, max_drop=cfg.int8_max_drop, fallbacks=cfg.int8_fallbacks, first=cfg.int8_method,
            calibration=calibration,
            measure_p50=lambda path: _onnx_latency_alone(path, inputs, threads, cfg.latency_warmup, cfg.latency_runs)["p50"],
        )
        if not gate["passed"]:
            result.failures.append(f"Checkpoint {name}: {gate['verdict']}")
        # The shipped file is the attempt the gate evaluated on int8_loader: its accuracy, not a rerun.
        int8_acc = next(a["accuracy"] for a in gate["attempts"] if a["method"] == gate["shipped"])
        # Closed before any timing: an ONNX Runtime session's idle threads keep spinning for a while
        # after a run, and on a 2-core machine they steal cycles from the session being timed (measured:
        # INT8 p95 5.4 ms right after the fp32 session ran, 1.4 ms with that session idle).
        del fp32_session

        console.print(f"[bold]Export[/bold] {name}: latency grid {cfg.grid_batch_sizes} x {cfg.grid_seq_lens} ...")
        grid = {
            fmt: verifier.latency_grid(path, cfg.grid_batch_sizes, cfg.grid_seq_lens, threads, cfg.latency_warmup,
                                       cfg.latency_runs, tokenizer.vocab_size)
            for fmt, path in (("onnx_fp32", exported.fp32_path), ("onnx_int8", exported.int8_path))
        }
        entry = {
            "name": name,
            "step": info.get("step"),
            "density": info.get("density", 1.0),
            "params": student.num_parameters(),
            "heads_per_layer": student.config.heads_per_layer,
            "ffn_width_per_layer": student.config.ffn_width_per_layer,
            "accuracy": {"pytorch_fp32": pt_acc, "onnx_fp32": fp32_acc, "onnx_int8": int8_acc},
            "latency_ms": {
                "pytorch_fp32": pt_latency,
                **{fmt: _onnx_latency_alone(path, inputs, threads, cfg.latency_warmup, cfg.latency_runs)
                   for fmt, path in (("onnx_fp32", exported.fp32_path), ("onnx_int8", exported.int8_path))},
            },
            "latency_grid": grid,
            "size_mb": {"onnx_fp32": round(file_mb(exported.fp32_path), 2), "onnx_int8": round(file_mb(exported.int8_path), 2)},
            "onnx_max_abs_diff": max_diff,
            "fused_ops": exported.fused_ops,
            "quantized_ops": gate["quantized_ops"],
            "int8": gate,
            "bundle": str(bundle),
            # compacted vs masked logits; None for a checkpoint that was never pruned (nothing compacted)
            "compaction_max_abs_diff": info.get("compaction_max_abs_diff"),
            "densities": info.get("densities", {}),
        }

        console.print(f"[bold]Export[/bold] {name}: serving bundle (spec, parity vectors, Triton, card, manifest) ...")
        tokenizer.save_pretrained(str(bundle))
        (bundle / "config.json").write_text(student.config.to_json())
        bundle_files.write_input_spec(bundle, tokenizer, recipe.data.max_seq_len, student.config.id2label,
                                      latency_grid={"batch_sizes": cfg.grid_batch_sizes, "seq_lens": cfg.grid_seq_lens},
                                      latency_budget=budget)
        bundle_files.write_parity_vectors(bundle, tokenizer, texts, recipe.data.max_seq_len,
                                          fp32_atol=cfg.parity_atol, int8_atol=bundle_files.PARITY_INT8_ATOL, threads=threads)
        model_name = f"{recipe.name}-{name}".replace("/", "-")
        bundle_files.write_triton_repository(bundle, model_name, max_batch_size=max(cfg.grid_batch_sizes),
                                             preferred_batch_sizes=tuple(b for b in cfg.grid_batch_sizes if b > 1),
                                             threads=threads)
        entry["gpu"] = _gpu_status(cfg.gpu)  # the card's line; the verification below fills in measurements
        bundle_files.write_model_card(bundle, _card(report, entry, budget, model_name))
        bundle_files.copy_verifier(bundle)
        bundle_files.write_manifest(bundle)
        verification = verifier.verify_bundle(bundle, threads=threads, grid=False, gpu=cfg.gpu != "off")
        entry["verification"] = {"ok": verification["ok"], "checks": verification["checks"]}
        # CUDA execution provider + fp16 + IOBinding when a GPU is there; a "skipped: ..." line when not.
        if cfg.gpu == "auto" and verification.get("gpu"):
            entry["gpu"] = verification["gpu"]
        if not verification["ok"]:
            failed = [c for c in verification["checks"] if not c["ok"]]
            result.failures.append(f"Bundle {final_bundle} failed verification: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed) + ".")
        bundle.rename(final_bundle)
        entry["bundle"] = str(final_bundle)
        result.bundles.append(final_bundle)
        report["checkpoints"].append(entry)

    json_path, _ = save_report(report, out_dir)
    result.json_path = json_path

    # The trade-off: Pareto table + plot, and the bundle to ship for the budget.
    written = pareto.write_pareto([report], out_dir, labels=[recipe.name], batch_size=cfg.budget_batch_size,
                                  seq_len=cfg.budget_seq_len)
    result.images["report/pareto"] = Path(written["png"])
    result.pareto_md = Path(written["md"])
    try:
        selection = pareto.select(pareto.points(report, "onnx_int8", cfg.budget_batch_size, cfg.budget_seq_len, label=recipe.name),
                                  cfg.latency_budget_ms)
        pareto.copy_selected(selection, out_dir / "bundles" / "selected")
        report["selected"] = selection
        console.print(f"[bold]Selected[/bold]: {selection['reason']}")
    except ExportError as error:
        report["selected"] = None
        result.failures.append(str(error))
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
        "recipe": report["recipe"],
        "teacher": report["teacher"],
        "data": report["data"],
        "checkpoint": entry,
        "machine": report["machine"],
        "libraries": report.get("libraries", {}),
        "latency_budget": budget,
        "export": report.get("export", {}),
        "training": report.get("training", {}),
        "how_to_verify": "python -m distilprune.export.verify <this directory>   (or: python verify_bundle.py .)",
    }
