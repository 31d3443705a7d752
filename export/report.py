"""report.json, report.md and the console table of a run."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never a truncated file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _speedup(teacher_ms: float, ms: float) -> str:
    return f"{teacher_ms / ms:.1f}x" if ms else "-"


def rows(report: dict) -> list[list[str]]:
    """One row per model: the teacher first, then every checkpoint in each format."""
    teacher = report["teacher"]
    t_ms = teacher["latency_ms"]["pytorch_fp32"]["p50"]
    out = [[
        "teacher", "pytorch_fp32", "1.000", f"{teacher['params'] / 1e6:.1f}", _fmt_pct(teacher["accuracy"]),
        f"{t_ms:.2f}", f"{teacher['latency_ms']['pytorch_fp32']['p95']:.2f}", "1.0x", "-",
    ]]
    for ckpt in report["checkpoints"]:
        for fmt in ("pytorch_fp32", "onnx_fp32", "onnx_int8"):
            lat = ckpt["latency_ms"][fmt]
            size = ckpt["size_mb"].get(fmt.replace("pytorch_", "onnx_") if fmt != "pytorch_fp32" else "", None)
            out.append([
                ckpt["name"], fmt, f"{ckpt['density']:.3f}", f"{ckpt['params'] / 1e6:.1f}",
                _fmt_pct(ckpt["accuracy"][fmt]), f"{lat['p50']:.2f}", f"{lat['p95']:.2f}",
                _speedup(t_ms, lat["p50"]), "-" if size is None else f"{size:.1f}",
            ])
    return out


HEADER = ["model", "format", "density", "params M", "test acc %", "p50 ms", "p95 ms", "p50 speedup", "size MB"]


def to_markdown(report: dict) -> str:
    setup = report["latency_setup"]
    machine = report["machine"]
    lines = [
        f"# distilprune report: {report['recipe']['name']}",
        "",
        f"Run directory: `{report['run_dir']}`  ",
        f"Data: {report['data']['source']} (test rows: {report['data']['rows']['test']})  ",
        f"Machine: {machine['cpu']} ({', '.join(machine['instruction_sets']) or 'ISA unknown'}), "
        f"{machine['threads']} threads; torch {machine['torch']}, onnxruntime {machine['onnxruntime']}  ",
        f"Latency: batch {setup['batch_size']}, sequence {setup['seq_len']}, {setup['warmup']} warmup + "
        f"{setup['runs']} timed runs, same process, p50/p95 in milliseconds.  ",
        *([f"Teacher: {setup['teacher_forward']}; students: {setup['student_forward']}.  "]
          if "student_forward" in setup else []),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines.append("")
    for ckpt in report["checkpoints"]:
        lines.append(
            f"- `{ckpt['name']}`: ONNX fp32 vs PyTorch max |logit diff| = {ckpt['onnx_max_abs_diff']:.2e}; "
            f"fused ops {ckpt.get('fused_ops', {})}; bundle `{ckpt['bundle']}`"
        )
    lines += _grid_section(report) + _int8_section(report) + _verification_section(report)
    selected = report.get("selected")
    budget = report.get("export", {}).get("latency_budget")
    if "selected" in report:
        lines += ["", "## Selected bundle", ""]
        if selected:
            lines.append(f"{selected['reason']} Copied to `bundles/selected`.")
        else:
            lines.append(f"No checkpoint meets the latency budget {budget}; nothing was selected.")
    return "\n".join(lines) + "\n"


def _grid_section(report: dict) -> list[str]:
    if not any("latency_grid" in c for c in report["checkpoints"]):
        return []
    lines = ["", f"## Latency grid (ONNX Runtime, {report['machine']['threads']} threads, p50 / p95 ms)", "",
             "| checkpoint | format | batch | seq | p50 | p95 | p99 |", "|---|---|---|---|---|---|---|"]
    for ckpt in report["checkpoints"]:
        for fmt, cells in ckpt.get("latency_grid", {}).items():
            for c in cells:
                lines.append(f"| {ckpt['name']} | {fmt} | {c['batch_size']} | {c['seq_len']} | {c['p50']:.2f} | "
                             f"{c['p95']:.2f} | {c['p99']:.2f} |")
    return lines


def _int8_section(report: dict) -> list[str]:
    if not any("int8" in c for c in report["checkpoints"]):
        return []
    drop = report.get("export", {}).get("int8_max_drop")
    batch = report.get("export", {}).get("int8_eval_batch_size")
    per_call = f"; INT8 accuracy measured {batch} sentence(s) per call" if batch else ""
    lines = ["", f"## INT8 accuracy gate (allowed drop vs ONNX fp32: {drop}{per_call})", "",
             "| checkpoint | attempt | accuracy % | drop (points) | p50 ms | passed | shipped |", "|---|---|---|---|---|---|---|"]
    for ckpt in report["checkpoints"]:
        gate = ckpt.get("int8", {})
        for a in gate.get("attempts", []):
            lines.append(
                f"| {ckpt['name']} | {a['method']} | {_fmt_pct(a.get('accuracy'))} | "
                f"{100 * a['drop']:.2f} | {a.get('p50_ms', float('nan')):.2f} | {'yes' if a['passed'] else 'no'} | "
                f"{'yes' if a['method'] == gate.get('shipped') else ''} |"
            )
        if gate.get("verdict"):
            lines.append(f"| {ckpt['name']} | verdict: {gate['verdict']} | | | | | |")
    return lines


def _verification_section(report: dict) -> list[str]:
    if not any("verification" in c for c in report["checkpoints"]):
        return []
    lines = ["", "## Bundle verification", ""]
    for ckpt in report["checkpoints"]:
        v = ckpt.get("verification", {})
        failed = [c["name"] for c in v.get("checks", []) if not c["ok"]]
        lines.append(f"- `{ckpt['name']}`: {'PASS' if v.get('ok') else 'FAIL ' + ', '.join(failed)} "
                     f"({len(v.get('checks', []))} checks); GPU: {ckpt.get('gpu', {}).get('status', ckpt.get('gpu'))}")
    return lines


def save_report(report: dict, directory: Path) -> tuple[Path, Path]:
    json_path, md_path = directory / "report.json", directory / "report.md"
    write_atomic(json_path, json.dumps(report, indent=2))
    write_atomic(md_path, to_markdown(report))
    return json_path, md_path


def print_report(report: dict, json_path: Path, console: Console | None = None, pareto_md: Path | None = None) -> None:
    console = console or Console(width=max(Console().width, 110))
    setup = report["latency_setup"]
    table = Table(
        title=f"{report['recipe']['name']}: test accuracy and latency "
        f"(batch {setup['batch_size']}, seq {setup['seq_len']}, {report['machine']['threads']} threads)"
    )
    for name in HEADER:
        table.add_column(name, justify="left" if name in ("model", "format") else "right")
    for row in rows(report):
        table.add_row(*row)
    console.print(table)
    if pareto_md is not None and pareto_md.is_file():
        console.print(pareto_md.read_text(), markup=False, highlight=False)
        console.print(f"Pareto plot: {pareto_md.with_suffix('.png')}")
    if report.get("selected"):
        console.print(f"Selected bundle: {Path(json_path).parent / 'bundles' / 'selected'}  ({report['selected']['reason']})")
    console.print(f"Report: {json_path}")
