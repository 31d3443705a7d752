"""Pareto report of accuracy against p95 latency for one or several runs, and the select step.

``python -m distilprune.export.pareto RUN_OR_REPORT [RUN_OR_REPORT ...] [--max-p95-ms X] [--out DIR]``
reads each run's newest report, writes ``pareto.json``, ``pareto.md`` and ``pareto.png`` into a new
directory (default ``runs/pareto/<YYYYmmdd-HHMMSS>``) and copies the selected bundle to
``<out>/bundles/selected`` with the reason beside it (``<out>/bundles/SELECTED.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from distilprune.errors import DistilpruneError, ExportError
from distilprune.export.runtime import replacing, threads_text, write_atomic

FORMAT_NAMES = {"onnx_int8": "ONNX INT8", "onnx_fp32": "ONNX fp32", "pytorch_fp32": "PyTorch fp32"}


def _run_label(report: dict) -> str:
    run_dir = Path(report.get("run_dir", "") or "run")
    return f"{report.get('recipe', {}).get('name', 'run')}/{run_dir.name}"


def _grid_p95(entry: dict, fmt: str, batch_size: int, seq_len: int) -> float | None:
    for cell in entry.get("latency_grid", {}).get(fmt, []):
        if cell.get("batch_size") == batch_size and cell.get("seq_len") == seq_len:
            return float(cell["p95"])
    return None


def points(
    report: dict, fmt: str = "onnx_int8", batch_size: int = 1, seq_len: int = 128, label: str | None = None
) -> list[dict]:
    """One point per checkpoint of ``report`` in format ``fmt``, then the teacher as a reference.

    p95 (ms) comes from the latency grid cell (batch_size, seq_len); a report without a grid falls
    back to ``latency_ms[fmt]`` measured at the report's ``latency_setup`` (recorded in the point's
    ``batch_size``/``seq_len``). The teacher point (PyTorch fp32, ``teacher: True``) has no bundle
    and is never selected or part of the front. Accuracies are fractions in [0, 1].
    """
    run = label or _run_label(report)
    setup = report.get("latency_setup", {})
    metric = report.get("task", {}).get("metric_label", "accuracy")  # what "accuracy" holds: the task's metric
    try:
        out = []
        for entry in report["checkpoints"]:
            grid = entry.get("latency_grid", {}).get(fmt)
            p95 = _grid_p95(entry, fmt, batch_size, seq_len)
            at = (batch_size, seq_len)
            if p95 is None and grid:
                cells = sorted({(c["batch_size"], c["seq_len"]) for c in grid})
                raise ExportError(
                    f"Checkpoint {entry['name']} of run {run} has no {fmt} latency at batch {batch_size}, "
                    f"sequence {seq_len}; its grid has (batch, seq) {cells}. Pick one of those with "
                    f"--batch-size/--seq-len, or re-export the run with that cell in export.grid_batch_sizes "
                    f"and export.grid_seq_lens."
                )
            if p95 is None:
                p95 = float(entry["latency_ms"][fmt]["p95"])
                at = (setup.get("batch_size", batch_size), setup.get("seq_len", seq_len))
            sizes = entry.get("size_mb", {})
            out.append({
                "run": run, "name": entry["name"], "teacher": False, "format": fmt,
                "density": entry.get("density"), "params": entry.get("params"),
                "accuracy": float(entry["accuracy"][fmt]), "p95_ms": p95,
                "batch_size": at[0], "seq_len": at[1],
                "size_mb": sizes.get(fmt), "int8_size_mb": sizes.get("onnx_int8"),
                "bundle": entry.get("bundle"), "threads": report.get("machine", {}).get("threads"),
                "metric": metric,
            })
        teacher = report["teacher"]
        out.append({
            "run": run, "name": "teacher", "teacher": True, "format": "pytorch_fp32",
            "density": 1.0, "params": teacher.get("params"), "accuracy": float(teacher["accuracy"]),
            "p95_ms": float(teacher["latency_ms"]["pytorch_fp32"]["p95"]),
            "batch_size": setup.get("batch_size"), "seq_len": setup.get("seq_len"),
            "size_mb": None, "int8_size_mb": None, "bundle": None,
            "threads": report.get("machine", {}).get("threads"), "metric": metric,
        })
    except (KeyError, TypeError) as error:
        raise ExportError(
            f"Report of run {run} is missing {error} (or it has the wrong type), so it is not a complete "
            f"distilprune report. Point at a report.json written by a finished run or by "
            f"`python -m distilprune.export.cli <run>`."
        ) from None
    return out


def pareto_front(pts: list[dict]) -> list[bool]:
    """True where no other student point has accuracy >= and p95 <= with at least one strictly better.

    Teacher (reference) points are never on the front and do not dominate: they are not shippable.
    Two identical points are both on the front (neither is strictly better).
    """
    candidates = [i for i, p in enumerate(pts) if not p.get("teacher") and p["accuracy"] is not None and p["p95_ms"] is not None]
    flags = [False] * len(pts)
    for i in candidates:
        a, t = pts[i]["accuracy"], pts[i]["p95_ms"]
        flags[i] = not any(
            pts[j]["accuracy"] >= a and pts[j]["p95_ms"] <= t and (pts[j]["accuracy"] > a or pts[j]["p95_ms"] < t)
            for j in candidates if j != i
        )
    return flags


def _metric(pts: list[dict]) -> str:
    """The metric the points' "accuracy" holds (runs of one task share it; mixed tasks say "score")."""
    names = {p.get("metric", "accuracy") for p in pts}
    return names.pop() if len(names) == 1 else "score"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _threads(pts: list[dict]) -> str:
    """'1 thread', '2 threads', or '1/2 threads' when the runs compared were timed differently."""
    values = sorted({p["threads"] for p in pts if p.get("threads") is not None})
    return threads_text(values[0] if len(values) == 1 else "/".join(str(v) for v in values) or "?")


def to_markdown(pts: list[dict], fmt: str, batch_size: int, seq_len: int) -> str:
    lines = [
        f"# Pareto: {_metric(pts)} vs p95 latency ({FORMAT_NAMES.get(fmt, fmt)})",
        "",
        f"Students: {FORMAT_NAMES.get(fmt, fmt)}, p95 at batch {batch_size}, sequence {seq_len}, "
        f"{_threads(pts)}. The teacher (PyTorch fp32, at its report's latency setup) is a reference, "
        f"not a candidate. Pareto-optimal: no other checkpoint is at least as accurate and at least as fast.",
        "",
        f"| run | checkpoint | density | {_metric(pts)} % | p95 ms | size MB | pareto |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in pts:
        pareto = "reference" if p["teacher"] else ("yes" if p.get("pareto") else "no")
        lines.append(
            f"| {p['run']} | {p['name']} | {_num(p['density'], 3)} | {_pct(p['accuracy'])} | "
            f"{_num(p['p95_ms'])} | {_num(p['size_mb'], 1)} | {pareto} |"
        )
    return "\n".join(lines) + "\n"


def _plot(pts: list[dict], path: Path, fmt: str, batch_size: int, seq_len: int) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or in CI
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    students = [p for p in pts if not p["teacher"]]
    runs = list(dict.fromkeys(p["run"] for p in pts))
    colours = plt.get_cmap("tab10")
    # marker area in pt^2 proportional to the INT8 file size; the largest model gets 900 pt^2
    sizes = [p["int8_size_mb"] or 0.0 for p in students]
    scale = 900.0 / max(max(sizes, default=0.0), 1e-9)

    fig, ax = plt.subplots(figsize=(9, 7), dpi=110)
    for k, run in enumerate(runs):
        mine = [p for p in students if p["run"] == run]
        if mine:
            ax.scatter(
                [p["p95_ms"] for p in mine], [100 * p["accuracy"] for p in mine],
                s=[max(25.0, (p["int8_size_mb"] or 0.0) * scale) for p in mine], color=colours(k % 10),
                alpha=0.55, edgecolors=colours(k % 10), linewidths=1.0, zorder=3,
            )
        for p in mine:
            ax.annotate(p["name"], (p["p95_ms"], 100 * p["accuracy"]), xytext=(8, 8),
                        textcoords="offset points", fontsize=8, zorder=5)
    front = sorted((p for p in students if p.get("pareto")), key=lambda p: p["p95_ms"])
    if front:
        ax.plot([p["p95_ms"] for p in front], [100 * p["accuracy"] for p in front], "--o", color="black",
                linewidth=1.2, markersize=5, zorder=4)
    # one star per distinct teacher: several runs of the same teacher share one reference point
    teachers = list({(p["accuracy"], p["p95_ms"]): p for p in pts if p["teacher"]}.values())
    for p in teachers:
        ax.scatter([p["p95_ms"]], [100 * p["accuracy"]], s=220, marker="*", color="dimgray",
                   edgecolors="black", linewidths=0.6, zorder=6)
        ax.annotate("teacher (PyTorch fp32)" if len(teachers) == 1 else f"teacher of {p['run']}",
                    (p["p95_ms"], 100 * p["accuracy"]), xytext=(-10, -14), textcoords="offset points",
                    fontsize=8, ha="right")

    ax.set_xlabel(f"p95 latency (ms), batch {batch_size}, sequence {seq_len}")
    ax.set_ylabel(f"test {_metric(pts)} (%)")
    ax.set_title(
        f"Accuracy vs p95 latency: {FORMAT_NAMES.get(fmt, fmt)} students, batch {batch_size}, "
        f"seq {seq_len}, {_threads(pts)}", fontsize=11,
    )
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.15)  # room for labels and the largest markers at the edges
    ax.set_xlim(left=0)  # latency axis from zero: distances read as ratios
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colours(k % 10), alpha=0.6, markersize=9, label=run)
        for k, run in enumerate(runs) if any(p["run"] == run for p in students)
    ]
    if front:
        handles.append(Line2D([], [], marker="o", linestyle="--", color="black", markersize=5, label="Pareto front"))
    if teachers:
        handles.append(Line2D([], [], marker="*", linestyle="", color="dimgray", markeredgecolor="black",
                              markersize=13, label="teacher (reference)"))
    biggest = max(sizes, default=0.0)
    if biggest > 0:
        handles.append(Line2D([], [], marker="o", linestyle="", color="lightgray", markeredgecolor="gray",
                              markersize=(biggest * scale) ** 0.5, label=f"area = INT8 size ({biggest:.1f} MB)"))
    # below the axes: run labels are long and must not hide points
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8,
              frameon=False, labelspacing=1.3, columnspacing=2.0, handletextpad=1.6, borderpad=1.0)
    fig.tight_layout()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _unique_labels(reports: list[dict], labels: list[str] | None) -> list[str]:
    if labels is not None and len(labels) != len(reports):
        raise ExportError(f"Got {len(labels)} labels for {len(reports)} reports; give one label per report or none.")
    out: list[str] = []
    for i, report in enumerate(reports):
        base = labels[i] if labels else _run_label(report)
        label, n = base, 2
        while label in out:  # the same run given twice still gives two readable series
            label, n = f"{base}#{n}", n + 1
        out.append(label)
    return out


def write_pareto(
    reports: list[dict], out_dir: Path, labels: list[str] | None = None, batch_size: int = 1,
    seq_len: int = 128, fmt: str = "onnx_int8",
) -> dict:
    """Write pareto.json, pareto.md and pareto.png for ``reports`` into ``out_dir``.

    Returns {"json", "md", "png": Path, "points": points with a "pareto" flag}.
    """
    if not reports:
        raise ExportError("No reports given to the Pareto report. Pass at least one run directory or report.json.")
    pts: list[dict] = []
    for report, label in zip(reports, _unique_labels(reports, labels), strict=True):
        pts.extend(points(report, fmt, batch_size, seq_len, label))
    for p, flag in zip(pts, pareto_front(pts), strict=True):
        p["pareto"] = flag
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "pareto.json", "md": out_dir / "pareto.md", "png": out_dir / "pareto.png"}
    write_atomic(paths["json"], json.dumps({
        "format": fmt, "batch_size": batch_size, "seq_len": seq_len,
        "runs": [r.get("run_dir") for r in reports], "points": pts,
    }, indent=2))
    write_atomic(paths["md"], to_markdown(pts, fmt, batch_size, seq_len))
    _plot(pts, paths["png"], fmt, batch_size, seq_len)
    return {**paths, "points": pts}


def select(pts: list[dict], max_p95_ms: float | None) -> dict:
    """The most accurate student point with p95 <= ``max_p95_ms`` (ties: the lower p95).

    ``None`` budget: the most accurate point overall. Raises ExportError when no point meets the budget.
    Returns {"name", "run", "bundle", "accuracy", "p95_ms", "reason"} (plus batch_size, seq_len, format).
    """
    students = [p for p in pts if not p.get("teacher") and p["accuracy"] is not None and p["p95_ms"] is not None]
    if not students:
        raise ExportError("The reports hold no measured student checkpoint to select. Export a finished run first.")
    def where(p: dict) -> str:
        return f"at batch {p['batch_size']}, sequence {p['seq_len']}"

    if max_p95_ms is None:
        pool, why = students, "no latency budget was given, so it is the most accurate of all {n} checkpoints"
    else:
        pool = [p for p in students if p["p95_ms"] <= max_p95_ms]
        if not pool:
            fastest = min(students, key=lambda p: p["p95_ms"])
            raise ExportError(
                f"No checkpoint meets the latency budget of p95 <= {max_p95_ms:g} ms {where(fastest)}: the fastest is "
                f"{fastest['name']} of {fastest['run']} at {fastest['p95_ms']:.2f} ms. Raise the budget "
                f"(--max-p95-ms / export.latency_budget_ms), or prune harder (lower pruning densities) and "
                f"export again."
            )
        why = f"it is the most accurate of the {{n}} checkpoints with p95 <= {max_p95_ms:g} ms"
    best = max(pool, key=lambda p: (p["accuracy"], -p["p95_ms"]))
    reason = (
        f"Selected {best['name']} of {best['run']} ({_pct(best['accuracy'])}% {best.get('metric', 'accuracy')}, p95 "
        f"{best['p95_ms']:.2f} ms {where(best)}) because {why.format(n=len(pool))}."
    )
    return {
        "name": best["name"], "run": best["run"], "bundle": best["bundle"], "accuracy": best["accuracy"],
        "p95_ms": best["p95_ms"], "batch_size": best["batch_size"], "seq_len": best["seq_len"],
        "format": best["format"], "budget_p95_ms": max_p95_ms, "reason": reason,
    }


def copy_selected(selection: dict, dest: Path) -> Path:
    """Copy the selected bundle directory to ``dest`` (a temp copy, then a rename); never overwrite.

    The reason goes beside the copy, into ``dest.parent/SELECTED.md`` and ``selected.json``, not into
    the bundle: the bundle's sha256 manifest lists its files and must stay valid.
    """
    source = Path(selection["bundle"] or "")
    if not selection["bundle"] or not source.is_dir():
        raise ExportError(
            f"The selected bundle {source} of {selection['name']} ({selection['run']}) is not a directory. "
            f"The report points at a bundle that was moved or deleted; re-export the run "
            f"(python -m distilprune.export.cli <run>) and select again."
        )
    if dest.exists():
        raise ExportError(
            f"{dest} already exists; a selected bundle is never overwritten. Remove it yourself if it is "
            f"stale, or write the selection elsewhere (--out a new directory)."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        shutil.copytree(source, work / dest.name)
        try:
            # rename, not replace: os.rename onto an existing non-empty directory fails instead of merging
            os.rename(work / dest.name, dest)
        except OSError:
            raise ExportError(
                f"{dest} appeared while the bundle was being copied; a selected bundle is never overwritten. "
                f"Run the selection again into a new directory."
            ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_atomic(dest.parent / "selected.json", json.dumps({**selection, "copied_to": str(dest)}, indent=2))
    write_atomic(dest.parent / "SELECTED.md", (
        f"# Selected bundle: {dest.name}\n\n{selection['reason']}\n\n"
        f"- copied from: `{source}`\n- copy: `{dest}`\n"
        f"- accuracy: {_pct(selection['accuracy'])}% ({FORMAT_NAMES.get(selection.get('format', ''), '')})\n"
        f"- p95: {selection['p95_ms']:.2f} ms at batch {selection.get('batch_size')}, sequence {selection.get('seq_len')}\n"
        f"- latency budget: {'none' if selection.get('budget_p95_ms') is None else str(selection['budget_p95_ms']) + ' ms'}\n"
    ))
    return dest


def newest_report(path: Path) -> Path:
    """``path`` itself when it is a file; for a run directory its newest report.json (the run's own
    or one under ``reexports/*/``)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ExportError(f"{path} does not exist. Pass a run directory (runs/<recipe>/<time>) or a report.json file.")
    found = [p for p in [path / "report.json", *path.glob("reexports/*/report.json")] if p.is_file()]
    if not found:
        raise ExportError(
            f"{path} has no report.json (nor reexports/*/report.json). Was the run's export disabled or "
            f"interrupted? Export it with `python -m distilprune.export.cli {path}`."
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def load_report(path: Path) -> dict:
    report_path = newest_report(path)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"Could not read {report_path} as JSON ({error}). Point at a report.json written by a run.") from None
    if not isinstance(report, dict):
        raise ExportError(f"{report_path} holds JSON but not a report object. Point at a report.json written by a run.")
    return report


def _new_dir(out: Path | None) -> Path:
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ExportError(f"{out} already exists; the Pareto report always goes to a new directory. Choose another --out.") from None
        return out
    base = Path("runs") / "pareto" / time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):  # two reports in the same second get -1, -2 ...
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise ExportError(f"Could not create a new directory next to {base}; pass --out.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distilprune.export.pareto",
        description="Pareto table and plot of accuracy vs p95 latency for runs, and the selected bundle.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_REPORT")
    parser.add_argument("--max-p95-ms", type=float, default=None, help="latency budget; default: best accuracy")
    parser.add_argument("--out", type=Path, default=None, help="new output directory (default runs/pareto/<time>)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args(argv)
    try:
        reports = [load_report(path) for path in args.runs]
        out = _new_dir(args.out)
        written = write_pareto(reports, out, batch_size=args.batch_size, seq_len=args.seq_len)
        print(written["md"].read_text())
        print(f"Pareto: {written['md']} {written['png']}")
        selection = select(written["points"], args.max_p95_ms)
        copied = copy_selected(selection, out / "bundles" / "selected")
        print(selection["reason"])
        print(f"Selected bundle: {copied}")
    except DistilpruneError as error:
        print(f"Error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
