"""Export, quantize and verify every kept checkpoint of a run, and write its report.

Called at the end of training, and standalone on an existing run directory
(``python -m distilprune.export.cli runs/<recipe>/<time>``), which writes into a new
``reexports/<time>/`` directory so nothing from the training run is overwritten.
"""

from __future__ import annotations

import json
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


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories under ``run_dir/checkpoints`` in the order they were kept."""
    root = run_dir / "checkpoints"
    found = [p for p in root.glob("*") if (p / CHECKPOINT_INFO).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: json.loads((p / CHECKPOINT_INFO).read_text()).get("order", 0))


def _test_loader(data: TextClassificationData, tokenizer, max_seq_len: int, batch_size: int) -> DataLoader:
    split = TokenizedSplit(data.test, tokenizer, max_seq_len)
    return DataLoader(split, batch_size=batch_size, collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id or 0))


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


def export_run(
    run_dir: Path,
    out_dir: Path,
    recipe,
    teacher,
    tokenizer,
    data: TextClassificationData,
    extra: dict | None = None,
    console: Console | None = None,
) -> tuple[dict, Path]:
    """Export and measure every checkpoint in ``run_dir``; write report.json/md into ``out_dir``."""
    console = console or Console(stderr=True)
    cfg = recipe.export
    checkpoints = kept_checkpoints(run_dir)
    if not checkpoints:
        raise ExportError(
            f"{run_dir} has no kept checkpoints (expected checkpoints/<name>/{CHECKPOINT_INFO}). "
            f"Was the training run interrupted before it finished?"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = cfg.threads
    torch.set_num_threads(threads)
    loader = _test_loader(data, tokenizer, recipe.data.max_seq_len, recipe.data.eval_batch_size)
    inputs = measure.latency_inputs(cfg.latency_batch_size, cfg.latency_seq_len, tokenizer.vocab_size)

    console.print(f"[bold]Export[/bold]: measuring the teacher on {len(data.test)} test examples ...")
    teacher_acc, _ = measure.accuracy_pytorch(teacher, loader, hf=True)
    teacher_latency, teacher_attention = _teacher_latency(teacher, inputs, cfg)
    report = {
        "recipe": {"name": recipe.name, "path": str(run_dir / "recipe.yaml")},
        "run_dir": str(run_dir),
        "machine": measure.machine_info(threads),
        "latency_setup": {
            "batch_size": cfg.latency_batch_size, "seq_len": cfg.latency_seq_len,
            "warmup": cfg.latency_warmup, "runs": cfg.latency_runs, "threads": threads,
            "inputs": "random token ids, full attention mask",
        },
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

    for ckpt_dir in checkpoints:
        info = json.loads((ckpt_dir / CHECKPOINT_INFO).read_text())
        name = ckpt_dir.name
        console.print(f"[bold]Export[/bold] {name}: PyTorch accuracy and latency ...")
        student = DistilBertStudent.load(ckpt_dir)
        pt_acc, pt_logits = measure.accuracy_pytorch(student, loader)
        pt_latency = measure.latency_pytorch(student, inputs, threads, cfg.latency_warmup, cfg.latency_runs)

        bundle = out_dir / "bundles" / name
        console.print(f"[bold]Export[/bold] {name}: ONNX export, graph optimization, INT8 quantization ...")
        exported = export_student(student, bundle, cfg.opset)
        tokenizer.save_pretrained(str(bundle))
        (bundle / "config.json").write_text(student.config.to_json())
        fp32_session, int8_session = ort_session(exported.fp32_path, threads), ort_session(exported.int8_path, threads)

        console.print(f"[bold]Export[/bold] {name}: ONNX parity, accuracy and latency ...")
        fp32_acc, fp32_logits = measure.accuracy_onnx(fp32_session, loader)
        max_diff = float(np.abs(fp32_logits - pt_logits).max())
        if max_diff > cfg.parity_atol:
            raise ExportError(
                f"ONNX fp32 logits of checkpoint {name} differ from PyTorch by {max_diff:.2e} on the test "
                f"set, above export.parity_atol={cfg.parity_atol:g}. The export is wrong; the files are "
                f"in {bundle} for inspection."
            )
        int8_acc, _ = measure.accuracy_onnx(int8_session, loader)
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
                "onnx_fp32": measure.latency_onnx(fp32_session, inputs, cfg.latency_warmup, cfg.latency_runs),
                "onnx_int8": measure.latency_onnx(int8_session, inputs, cfg.latency_warmup, cfg.latency_runs),
            },
            "size_mb": {"onnx_fp32": round(file_mb(exported.fp32_path), 2), "onnx_int8": round(file_mb(exported.int8_path), 2)},
            "onnx_max_abs_diff": max_diff,
            "fused_ops": exported.fused_ops,
            "quantized_ops": exported.quantized_ops,
            "bundle": str(bundle),
        }
        # compacted vs masked logits; None for a checkpoint that was never pruned (nothing compacted)
        entry["compaction_max_abs_diff"] = info.get("compaction_max_abs_diff")
        entry["densities"] = info.get("densities", {})
        report["checkpoints"].append(entry)
    json_path, _ = save_report(report, out_dir)
    return report, json_path

