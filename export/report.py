"""report.json, report.md and the console table of a run."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distilprune.export.runtime import threads_text, write_atomic


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _acc(value: float | None, ci: dict | None) -> str:
    """Accuracy in % with its 95% interval: ``85.21 [83.08, 87.32]``."""
    if value is None or not ci:
        return _fmt_pct(value)
    return f"{100 * value:.2f} [{100 * ci['low']:.2f}, {100 * ci['high']:.2f}]"


def _spread(lat: dict) -> str:
    if "spread" not in lat:
        return "-"
    return f"{lat['spread'][0]:.2f}-{lat['spread'][1]:.2f}" + (" noisy" if lat.get("noisy") else "")


def _speedup(teacher: dict, lat: dict) -> str:
    ratio = lat.get("vs_teacher")
    if ratio is None and lat.get("p50"):  # reports written before the timing rounds
        ratio = teacher["p50"] / lat["p50"]
    return "-" if ratio is None else f"{ratio:.1f}x"


def rows(report: dict) -> list[list[str]]:
    """One row per model: the teacher first, then every checkpoint in each format."""
    teacher = report["teacher"]
    t_lat = teacher["latency_ms"]["pytorch_fp32"]
    out = [[
        "teacher", "pytorch_fp32", "1.000", f"{teacher['params'] / 1e6:.1f}",
        _acc(teacher["accuracy"], teacher.get("accuracy_ci")),
        f"{t_lat['p50']:.2f}", _spread(t_lat), f"{t_lat['p95']:.2f}", "1.0x", "-",
    ]]
    for ckpt in report["checkpoints"]:
        for fmt in ("pytorch_fp32", "onnx_fp32", "onnx_int8"):
            lat = ckpt["latency_ms"][fmt]
            size = ckpt["size_mb"].get(fmt) if fmt != "pytorch_fp32" else None
            out.append([
                ckpt["name"], fmt, f"{ckpt['density']:.3f}", f"{ckpt['params'] / 1e6:.1f}",
                _acc(ckpt["accuracy"][fmt], ckpt.get("accuracy_ci", {}).get(fmt)), f"{lat['p50']:.2f}", _spread(lat),
                f"{lat['p95']:.2f}", _speedup(t_lat, lat), "-" if size is None else f"{size:.1f}",
            ])
    return out


def metric_label(report: dict) -> str:
    """How the report's metric is named in tables: "accuracy", "entity F1"..."""
    return report.get("task", {}).get("metric_label", "accuracy")


def header(report: dict) -> list[str]:
    short = {"accuracy": "acc"}.get(metric_label(report), metric_label(report))
    return ["model", "format", "density", "params M", f"test {short} % [95% CI]", *HEADER[5:]]


HEADER = ["model", "format", "density", "params M", "test acc % [95% CI]", "p50 ms", "p50 spread ms", "p95 ms",
          "p50 speedup", "size MB"]


def _latency_lines(report: dict) -> list[str]:
    setup = report["latency_setup"]
    head = f"Latency: batch {setup['batch_size']}, sequence {setup['seq_len']}, {threads_text(setup['threads'])}, ms. "
    if "rounds" not in setup:
        return [head + f"{setup['warmup']} warmup + {setup['runs']} timed runs, same process.  "]
    return [
        head + f"Every model timed in {setup['process']}: {setup['rounds']} rounds x {setup['runs_per_round']} timed "
        f"runs per model at this cell (at the other grid cells {_elsewhere(setup)}; {setup['warmup']} warmup calls before "
        f"the first round{_grid_warmup(setup)}, {setup['rewarm_calls']} (1 at the other cells), for at least {setup.get('rewarm_seconds', 0)} s, before each later one; {setup.get('timing_seconds', '?')} s in all). p50 = {setup['p50']}; spread = {setup['spread']} (\"noisy\" when it exceeds "
        f"{100 * setup['noisy_spread']:.0f}% of the p50); p95 {setup['p95_p99']}; speedups = {setup['ratios']}.  ",
        *_probe_lines(setup),
    ]


def _elsewhere(setup: dict) -> str:
    runs = setup.get("runs_per_round_elsewhere", setup["runs_per_round"])
    seconds = setup.get("grid_round_seconds")
    return f"{runs}, or fewer once they took {seconds} s, at least {setup['grid_min_runs']}" if seconds else str(runs)


def _grid_warmup(setup: dict) -> str:
    calls = setup.get("grid_warmup_calls")
    return f" (at most {calls} at the other cells)" if calls is not None else ""


def _probe_lines(setup: dict) -> list[str]:
    """What the parallel-threads probe saw at the headline cell, and which rounds it kept."""
    probe = setup.get("parallel_probe")
    if not probe:
        return []
    cell = next((c for c in probe["cells"] if [c["batch_size"], c["seq_len"]] == [setup["batch_size"], setup["seq_len"]]),
                probe["cells"][0])
    speedups = ", ".join(f"{v:.2f}" for v in cell["speedups"])
    kept, timed = len(cell["kept_rounds"]), len(cell["speedups"])
    extra = (f" ({timed - setup['rounds']} more headline rounds were timed because the first {setup['rounds']} never "
             f"ran in parallel)") if timed > setup["rounds"] else ""
    verdict = (f"all {kept} rounds summarized" if kept == timed else
               f"{kept} of {timed} rounds kept (within {probe['relative']}x of the best round's speedup; the others "
               f"ran while the host did not run the threads in parallel)")
    return [f"Parallel-threads probe (`{probe['model']}` on 1 thread and on {setup['threads']}, before and after each "
            f"round): speedups {speedups} at this cell{extra}; {verdict}. Each grid cell keeps its rounds the same way.  "]


def _layer_norm_note(ckpt: dict) -> str:
    """Say when the fused LayerNorms were rewritten as centred RMS norms (export.layer_norm)."""
    lowered = ckpt.get("layer_norm", {}).get("lowered", 0)
    return f"; {lowered} SkipLayerNormalization rewritten as centred RMS norms (export.layer_norm)" if lowered else ""


def _check_lines(report: dict) -> list[str]:
    checks = report.get("latency_checks") or {}
    found = list(checks.get("noisy", [])) + list(checks.get("smaller_but_slower", []))
    rounds = 2 * report["latency_setup"].get("rounds", 5)
    lines = []
    if found:
        lines += ["", f"**Noisy latency**: rerun with `distilprune export {report['run_dir']} --rounds {rounds}` "
                  f"(something else ran on this machine while it was timed).", ""] + [f"- {line}" for line in found]
    if checks.get("threads_not_parallel"):
        lines += ["", f"**Threads not in parallel**: the probe never reached its parallel speedup at these cells, so "
                  f"their latencies may be those of a host that ran the threads one after the other (or of a model "
                  f"too small to gain from a second thread). Rerun later with `distilprune export {report['run_dir']} "
                  f"--rounds {rounds}`.", ""] + [f"- {line}" for line in checks["threads_not_parallel"]]
    return lines


def _difference_lines(report: dict) -> list[str]:
    if not any("accuracy_differences" in c for c in report["checkpoints"]):
        return []
    lines = ["", f"## Accuracy differences ({report['accuracy_setup']['differences']}, 95% interval, points)", "",
             "| checkpoint | difference | points | 95% interval |", "|---|---|---|---|"]
    for ckpt in report["checkpoints"]:
        for name, d in ckpt.get("accuracy_differences", {}).items():
            lines.append(f"| {ckpt['name']} | {name} | {100 * d['difference']:+.2f} | "
                         f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] |")
    return lines


def to_markdown(report: dict) -> str:
    setup = report["latency_setup"]
    machine = report["machine"]
    lines = [
        f"# distilprune report: {report['recipe']['name']}",
        "",
        f"Run directory: `{report['run_dir']}`  ",
        f"Data: {report['data']['source']} (test rows: {report['data']['rows']['test']})  ",
        f"Machine: {machine['cpu']} ({', '.join(machine['instruction_sets']) or 'ISA unknown'}), "
        f"{threads_text(machine['threads'])}; torch {machine['torch']}, onnxruntime {machine['onnxruntime']}  ",
        *_latency_lines(report),
        *([f"Teacher: {setup['teacher_forward']}; students: {setup['student_forward']}.  "]
          if "student_forward" in setup else []),
        *([f"Task: {report['task']['name']}; metric: {metric_label(report)}.  "] if "task" in report else []),
        *([f"{metric_label(report).capitalize()}: {report['accuracy_setup']['interval']}.  "]
          if "accuracy_setup" in report else []),
        *_duplicates_line(report),
        "",
        "| " + " | ".join(header(report)) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += _check_lines(report)
    lines.append("")
    for ckpt in report["checkpoints"]:
        lines.append(
            f"- `{ckpt['name']}`: ONNX fp32 vs PyTorch max |logit diff| = {ckpt['onnx_max_abs_diff']:.2e}; "
            f"fused ops {ckpt.get('fused_ops', {})}{_layer_norm_note(ckpt)}; bundle `{ckpt['bundle']}`"
        )
    lines += (_difference_lines(report) + _metric_details(report) + _squad_details(report) + _grid_section(report)
              + _int8_section(report)
              + _verification_section(report))
    selected = report.get("selected")
    budget = report.get("export", {}).get("latency_budget")
    if "selected" in report:
        lines += ["", "## Selected bundle", ""]
        if selected:
            lines.append(f"{selected['reason']} Copied to `bundles/selected`.")
        else:
            lines.append(f"No checkpoint meets the latency budget {budget}; nothing was selected.")
    return "\n".join(lines) + "\n"


def _duplicates_line(report: dict) -> list[str]:
    found = report.get("data", {}).get("duplicates")
    if not found:
        return []
    removed = ", ".join(f"{n} from {split}" for split, n in found.get("removed", {}).items() if n) or "none removed"
    shared = sum(found.get("shared_keys", {}).values())
    return [f"Cross-split duplicates (data.dedupe={found.get('mode')}): {shared} found ({removed}); "
            f"{found.get('cross_split_after', 0)} left in more than one split.  "]


def squad_table(models: list[tuple[str, dict]]) -> list[str]:
    """Markdown rows of exact match and F1 (overall, HasAns, NoAns) and the "no answer" threshold of
    question-answering models: ``models`` = [(name, Scored.details)]; [] when none has them."""
    models = [(name, d) for name, d in models if isinstance(d, dict) and "exact_match" in d]
    if not models:
        return []

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    lines = ["| model | EM % | F1 % | HasAns EM / F1 % | NoAns EM / F1 % | questions | null threshold |",
             "|---|---|---|---|---|---|---|"]
    for name, d in models:
        has, no = d.get("breakdown", {}).get("HasAns", {}), d.get("breakdown", {}).get("NoAns", {})
        threshold = d.get("null_threshold")
        lines.append(
            f"| {name} | {pct(d['exact_match'])} | {pct(d['f1'])} | "
            f"{pct(has.get('exact_match'))} / {pct(has.get('f1'))} ({has.get('total', 0)}) | "
            f"{pct(no.get('exact_match'))} / {pct(no.get('f1'))} ({no.get('total', 0)}) | {d.get('questions', '-')} | "
            f"{'none (v1.1: always answer)' if threshold is None else f'{threshold:.3f}'} |")
    return lines


def _squad_details(report: dict) -> list[str]:
    """Question answering: EM / F1 with the HasAns / NoAns breakdown for every model of the run."""
    models = [("teacher (PyTorch fp32)", report["teacher"].get("metrics") or {})]
    for ckpt in report["checkpoints"]:
        for fmt, title in (("pytorch_fp32", "PyTorch fp32"), ("onnx_fp32", "ONNX fp32"), ("onnx_int8", "ONNX INT8")):
            models.append((f"{ckpt['name']} ({title})", ckpt.get("metrics", {}).get(fmt) or {}))
    table = squad_table(models)
    if not table:
        return []
    notes = [postprocess_line(ckpt) for ckpt in report["checkpoints"] if ckpt.get("postprocess_ms")]
    return ["", "## Exact match and F1 (test split)", "",
            "The \"no answer\" threshold of each model is chosen on the validation split and applied to test "
            "(SQuAD v2.0 data); official answer normalization.", "", *table, "", *[f"- {n}" for n in notes]]


def postprocess_line(ckpt: dict) -> str:
    """Question answering: the post-processing time per question beside the INT8 model's time per
    question (batch 1 p50 at the longest sequence of the grid, times the mean windows per question)."""
    timing = ckpt["postprocess_ms"]
    line = (f"`{ckpt['name']}`: post-processing (n-best {timing['n_best']} start/end pairs over all windows) "
            f"{timing['p50']:.3f} ms per question (p50; p95 {timing['p95']:.3f} ms) over {timing['questions']} test "
            f"questions, {timing['windows_per_question']:.2f} windows per question")
    cells = [c for c in ckpt.get("latency_grid", {}).get("onnx_int8", []) if c.get("batch_size") == 1]
    if cells:
        cell = max(cells, key=lambda c: c["seq_len"])
        model_ms = cell["p50"] * timing["windows_per_question"]
        line += (f"; the INT8 model takes {model_ms:.2f} ms per question at sequence {cell['seq_len']} "
                 f"({cell['p50']:.2f} ms per window), so post-processing is {100 * timing['p50'] / model_ms:.1f}% of it")
    return line + "."


def _per_label_rows(details: dict) -> tuple[str, list[dict]] | None:
    if details.get("per_class"):
        return "class", [{"name": r["label"], **r} for r in details["per_class"]]
    if details.get("per_type"):
        return "entity type", [{"name": r["type"], **r} for r in details["per_type"]]
    return None


def _metric_details(report: dict) -> list[str]:
    """Macro-F1 and the per-class table (and the F1 of label 1 with two classes), or precision, recall and the
    per-entity-type table (token classification), for the teacher and each checkpoint's INT8 model."""
    sources = [("teacher (PyTorch fp32)", report["teacher"].get("metrics") or {})]
    sources += [(f"{c['name']} (ONNX INT8)", c.get("metrics", {}).get("onnx_int8") or {}) for c in report["checkpoints"]]
    if not any(_per_label_rows(details) for _, details in sources):
        return []
    lines = ["", f"## {metric_label(report).capitalize()} by class (test split)", ""]
    for name, details in sources:
        table = _per_label_rows(details)
        if table is None:
            continue
        kind, rows_ = table
        binary = f"F1 of {rows_[1]['name']!r} {100 * details['f1']:.2f}, " if "f1" in details else ""
        summary = (f"{binary}macro-F1 {100 * details['macro_f1']:.2f}" if "macro_f1" in details else
                   f"precision {100 * details.get('precision', 0):.2f}, recall {100 * details.get('recall', 0):.2f}, "
                   f"{details.get('entities', 0)} gold entities")
        lines += [f"**{name}**: {summary}", "", f"| {kind} | precision % | recall % | F1 % | support |", "|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {100 * r['precision']:.2f} | {100 * r['recall']:.2f} | {100 * r['f1']:.2f} | "
                  f"{r['support']} |" for r in rows_]
        lines.append("")
    return lines


def _grid_section(report: dict) -> list[str]:
    if not any("latency_grid" in c for c in report["checkpoints"]):
        return []
    lines = ["", f"## Latency grid (ONNX Runtime, {threads_text(report['machine']['threads'])}, ms)", "",
             "| checkpoint | format | batch | seq | p50 | p50 spread | p95 | p99 |", "|---|---|---|---|---|---|---|---|"]
    for ckpt in report["checkpoints"]:
        for fmt, cells in ckpt.get("latency_grid", {}).items():
            for c in cells:
                lines.append(f"| {ckpt['name']} | {fmt} | {c['batch_size']} | {c['seq_len']} | {c['p50']:.2f} | "
                             f"{_spread(c)} | {c['p95']:.2f} | {c['p99']:.2f} |")
    return lines


def _num(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{scale * value:.2f}"


def _int8_section(report: dict) -> list[str]:
    if not any("int8" in c for c in report["checkpoints"]):
        return []
    drop = report.get("export", {}).get("int8_max_drop")
    batch = report.get("export", {}).get("int8_eval_batch_size")
    per_call = f"; INT8 accuracy measured {batch} sentence(s) per call" if batch else ""
    lines = ["", f"## INT8 accuracy gate (allowed drop vs ONNX fp32: {drop}{per_call})", "",
             "| checkpoint | attempt | accuracy % | drop (points) | passed | shipped |", "|---|---|---|---|---|---|"]
    for ckpt in report["checkpoints"]:
        gate = ckpt.get("int8", {})
        for a in gate.get("attempts", []):
            lines.append(
                f"| {ckpt['name']} | {a['method']} | {_fmt_pct(a.get('accuracy'))} | {_num(a.get('drop'), 100)} | "
                f"{'yes' if a['passed'] else 'no'} | {'yes' if a['method'] == gate.get('shipped') else ''} |"
            )
        if gate.get("verdict"):
            lines.append(f"| {ckpt['name']} | verdict: {gate['verdict']} | | | | |")
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
        title=f"{report['recipe']['name']}: test {metric_label(report)} and latency "
        f"(batch {setup['batch_size']}, seq {setup['seq_len']}, {threads_text(report['machine']['threads'])})"
    )
    for name in header(report):
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
