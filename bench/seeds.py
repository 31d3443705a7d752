"""A recipe over several seeds: mean ± sd of every headline number of its reports.

    python bench/seeds.py recipe=rotten_tomatoes/minilm6_to_distil4 --seeds 42 7 1 [key=value ...]
    python bench/seeds.py --reports runs/quickstart/*/report.json      # aggregate finished runs only

Runs ``train/distill.py recipe=... seed=S`` once per seed (one after the other, each a full run with
its own report), then writes ``seeds.json`` and ``seeds.md`` into ``runs/seeds/<time>/``: for the
teacher and every kept checkpoint (matched by name across seeds), test accuracy per format, INT8
p50/p95 at the report's latency cell, and the INT8 speedup over the teacher, each as mean ± sd (sample
standard deviation, n - 1) with the per-seed values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def headline_numbers(report: dict) -> dict[str, float]:
    """The numbers a report leads with, by a stable name (accuracies in %, latencies in ms)."""
    teacher = report["teacher"]
    out = {"teacher accuracy %": 100 * teacher["accuracy"],
           "teacher p50 ms": teacher["latency_ms"]["pytorch_fp32"]["p50"]}
    for ckpt in report["checkpoints"]:
        name = ckpt["name"]
        for fmt in ("pytorch_fp32", "onnx_fp32", "onnx_int8"):
            out[f"{name} {fmt} accuracy %"] = 100 * ckpt["accuracy"][fmt]
        int8 = ckpt["latency_ms"]["onnx_int8"]
        out[f"{name} onnx_int8 p50 ms"] = int8["p50"]
        out[f"{name} onnx_int8 p95 ms"] = int8["p95"]
        speedup = int8.get("vs_teacher") or teacher["latency_ms"]["pytorch_fp32"]["p50"] / int8["p50"]
        out[f"{name} onnx_int8 speedup vs teacher"] = speedup
    return out


def aggregate(reports: list[dict]) -> dict[str, dict]:
    """name -> {"mean", "sd", "n", "values"} over the reports that have that number (sd: n - 1; 0 for n = 1)."""
    per_report = [headline_numbers(r) for r in reports]
    names = list(dict.fromkeys(name for numbers in per_report for name in numbers))
    out = {}
    for name in names:
        values = [numbers[name] for numbers in per_report if name in numbers]
        out[name] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "n": len(values), "values": values}
    return out


def to_markdown(summary: dict[str, dict], sources: list[str], command: str) -> str:
    lines = [f"# Headline numbers over {len(sources)} run(s): mean ± sd", "", f"Command: `{command}`  ",
             f"Date: {time.strftime('%Y-%m-%d')}  ", "Reports: " + ", ".join(f"`{s}`" for s in sources), "",
             "| number | mean ± sd | n | per run |", "|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['mean']:.2f} ± {s['sd']:.2f} | {s['n']} | {', '.join(f'{v:.2f}' for v in s['values'])} |")
    return "\n".join(lines) + "\n"


def _run_seed(recipe_args: list[str], seed: int) -> Path:
    """One training run with ``seed``; returns its report.json (the newest under runs/<recipe>/)."""
    started = time.time()
    done = subprocess.run([sys.executable, str(ROOT / "train" / "distill.py"), *recipe_args, f"seed={seed}"], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the run with seed={seed} failed (exit {done.returncode}); see its output above.")
    found = [p for p in (ROOT / "runs").glob("**/report.json") if p.stat().st_mtime >= started and "reexports" not in p.parts]
    if not found:
        raise SystemExit(f"the run with seed={seed} wrote no report.json under runs/ (export disabled?).")
    return max(found, key=lambda p: p.stat().st_mtime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe_args", nargs="*", help="recipe=NAME and key=value overrides, as train/distill.py takes them")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    parser.add_argument("--reports", type=Path, nargs="+", default=None, help="aggregate these report.json files instead of running")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default runs/seeds/<time>)")
    args = parser.parse_args(argv)
    if args.reports is None and not any(a.startswith("recipe=") for a in args.recipe_args):
        parser.error("give recipe=NAME (and overrides) to run, or --reports to aggregate finished runs")
    missing = [str(p) for p in args.reports or [] if not Path(p).is_file()]
    if missing:
        parser.error(f"no such report file: {', '.join(missing)}; give the report.json of finished runs "
                     "(runs/<recipe>/<time>/report.json)")
    paths = args.reports or [_run_seed(args.recipe_args, seed) for seed in args.seeds]
    summary = aggregate([json.loads(Path(p).read_text()) for p in paths])
    out = args.out or ROOT / "runs" / "seeds" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    command = "python bench/seeds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "seeds.json").write_text(json.dumps({"command": command, "reports": [str(p) for p in paths], "numbers": summary}, indent=2))
    (out / "seeds.md").write_text(to_markdown(summary, [str(p) for p in paths], command))
    print((out / "seeds.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
