"""INT8 methods of one exported checkpoint: test metric and latency, side by side.

    python bench/int8_methods.py RUN_DIR BUNDLE [--methods per_channel ffn_out_per_token per_token]
                                 [--per-token-sites out_lin lin1 lin2] [--rounds 8 --runs 20 --threads 2]

BUNDLE is a bundle of RUN_DIR's export (its ``model.onnx``, the fp32 graph every INT8 method starts
from). Each method of ``--methods`` is built with the export's own quantizers
(:func:`distilprune.export.quantize.build_int8`). Each name of ``--per-token-sites`` adds one more
variant: per_channel everywhere except the weight MatMuls whose node name contains that name, which
get per-token activation scales (the question ``ffn_out_per_token`` answers for the FFN outputs,
asked of any other linear). Every model is scored on the run's test split as the export scores INT8
(one example per call, calibration such as the QA "no answer" threshold chosen on validation), then
all are timed in alternating rounds in one child process that imports only numpy and onnxruntime
(:mod:`distilprune.export.latency_rounds`, the export's timing, with its parallel-threads probe) at
the recipe's headline cell. Printed: metric, change against ONNX fp32, p50 (median of round
medians) with its spread, and the speed-up against the first method as the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from distilprune.config import load_recipe
from distilprune.export import measure
from distilprune.export import run_export as export
from distilprune.export.latency_rounds import measure_in_child, ratio
from distilprune.export.onnx_export import ort_session
from distilprune.export.quantize import build_int8, quantize_per_channel_with_per_token, weight_matmuls
from distilprune.tasks import task_for
from distilprune.teacher import load_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("bundle", type=Path, help="a bundle of the run's export (its model.onnx is quantized)")
    parser.add_argument("--methods", nargs="+", default=["per_channel", "ffn_out_per_token", "per_token"])
    parser.add_argument("--per-token-sites", nargs="*", default=[], metavar="NAME",
                        help="node-name fragments (out_lin, lin1, lin2, qa_outputs ...): per_token there only")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=160, help="timed calls per model, split over the rounds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    fp32 = args.bundle / "model.onnx"
    if not fp32.is_file() or not (args.run_dir / "recipe.yaml").is_file():
        sys.exit(f"Give a finished run directory and one of its bundles (with model.onnx); got {args.run_dir}, {args.bundle}.")
    recipe = load_recipe([f"recipe={args.run_dir / 'recipe.yaml'}"])
    task = task_for(recipe)
    data = task.load()
    tokenizer = load_tokenizer(str(args.run_dir / "tokenizer"), str(args.run_dir / "tokenizer"))
    console = Console(stderr=True)
    ctx = export._context(args.run_dir, args.bundle, recipe, tokenizer, data, task, console, None)
    cell = [recipe.export.latency_batch_size, recipe.export.latency_seq_len]

    with tempfile.TemporaryDirectory(prefix="int8-methods-") as work:
        models: dict[str, Path] = {}
        for method in args.methods:
            models[method] = Path(work) / f"{method}.onnx"
            build_int8(method, fp32, models[method], Path(work), ctx.calibration, 2, recipe.data.max_seq_len)
        for site in args.per_token_sites:
            nodes = [name for name in weight_matmuls(fp32) if site in name]
            if not nodes:
                sys.exit(f"No weight MatMul of {fp32} has {site!r} in its name.")
            models[f"per_channel + per_token at {site} ({len(nodes)})"] = path = Path(work) / f"site-{len(models)}.onnx"
            quantize_per_channel_with_per_token(fp32, path, nodes)

        def score(path: Path, int8: bool) -> float:
            session = ort_session(path, args.threads)
            return export._score(ctx, lambda loader: measure.rows_onnx(session, loader, task), int8=int8)[0].value

        fp32_score = score(fp32, int8=False)
        scores = {}
        for name, path in models.items():
            console.print(f"scoring {name} ...")
            scores[name] = score(path, int8=True)
        job = {"threads": args.threads, "warmup": 5, "runs": args.runs, "rounds": args.rounds,
               "vocab_size": tokenizer.vocab_size, "headline": cell, "extra_headline_seconds": 30,
               "models": [{"key": name, "kind": "onnx", "path": str(path), "cells": [cell]} for name, path in models.items()]}
        first = next(iter(models))
        if args.threads > 1:
            job["probe"] = {"key": first, "path": str(models[first]), "cell": cell}
        timing = measure_in_child(job)

    label = task.metric_label
    summary = {name: timing["models"][name]["cells"][0] for name in models}
    probe = timing.get("parallel_probe") or {}
    machine = timing["machine"]
    print(f"date {datetime.date.today()}; {machine['cpu']} ({', '.join(machine['instruction_sets'])}), {args.threads} "
          f"threads, onnxruntime {machine['onnxruntime']}; batch {cell[0]}, sequence {cell[1]}; {args.rounds} rounds x "
          f"{timing['runs_per_round']} calls per model; ONNX fp32 {label} {100 * fp32_score:.2f}")
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    if probe:
        speedups = probe["cells"][0]["speedups"]
        print(f"parallel-threads probe speedups {min(speedups):.2f}-{max(speedups):.2f}x; "
              f"{summary[first]['rounds']} of {summary[first]['rounds_timed']} rounds kept")
    print(f"| INT8 model | {label} % | vs fp32 (points) | p50 ms | spread ms | speed-up vs {first} |")
    print("|---|---|---|---|---|---|")
    for name in models:
        cell_summary = summary[name]
        print(f"| {name} | {100 * scores[name]:.2f} | {100 * (scores[name] - fp32_score):+.2f} | {cell_summary['p50']:.2f} | "
              f"{cell_summary['spread'][0]:.2f}-{cell_summary['spread'][1]:.2f} | "
              f"{ratio(summary[first], cell_summary):.2f}x |")


if __name__ == "__main__":
    main()
