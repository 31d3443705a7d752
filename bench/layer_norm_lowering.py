"""Fused SkipLayerNormalization against its centred-RMS rewrite (export.layer_norm), side by side.

    python bench/layer_norm_lowering.py MODEL_OR_BUNDLE [...] [--seq-len 128 --batch-size 1]
                                        [--rounds 10 --runs 20 --threads 2]

Each argument is an ONNX model with fused ``SkipLayerNormalization`` nodes (a bundle exported with
``export.layer_norm=fused``, or by a distilprune version before the rewrite), or a bundle directory
(its ``model.int8.onnx``). A copy is rewritten with :func:`distilprune.export.layer_norm.lower_layer_norms`
(the function the export runs on the fp32 graph before quantization; the quantizers leave LayerNorms
alone, so rewriting a quantized model gives the graph a centred_rms export quantizes to). Both run in
this process (numpy, onnx and onnxruntime; no PyTorch) in alternating rounds on the same fixed
inputs. Printed per model: the fused and rewritten p50 (median of round medians), the speed-up as the
median of the per-round ratios with its range, and the largest |logit| difference between the two.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from distilprune.export.layer_norm import lower_layer_norms  # imports onnx and numpy, not torch
from distilprune.export.runtime import make_session, random_inputs, run_logits, session_feed, time_samples


def _lower(path: Path, out: Path) -> int:
    """``path`` copied to ``out`` and rewritten; the number of nodes rewritten."""
    shutil.copyfile(path, out)
    return lower_layer_norms(out)


def _model_path(argument: str) -> Path:
    path = Path(argument)
    if path.is_dir():
        path = path / "model.int8.onnx"
    if not path.is_file():
        sys.exit(f"{argument}: no ONNX model there (give a model file or a bundle directory with model.int8.onnx).")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="ONNX models with fused LayerNorms, or bundle directories")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=30522)
    args = parser.parse_args(argv)

    ids, mask = random_inputs(args.batch_size, args.seq_len, args.vocab_size)
    print(f"batch {args.batch_size}, sequence {args.seq_len}, {args.threads} threads, {args.rounds} rounds x "
          f"{args.runs} calls per model")
    print("| model | rewritten | fused p50 ms | centred-RMS p50 ms | speed-up (range over rounds) | max abs logit diff |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="layer-norm-bench-") as work:
        for index, argument in enumerate(args.models):
            fused_path = _model_path(argument)
            lowered_path = Path(work) / f"{index}.onnx"
            rewritten = _lower(fused_path, lowered_path)
            if not rewritten:
                print(f"| {argument} | 0 | - | - | no fused SkipLayerNormalization (already rewritten?) | - |")
                continue
            sessions = [make_session(fused_path, args.threads), make_session(lowered_path, args.threads)]
            feeds = [session_feed(session, ids, mask) for session in sessions]
            diff = float(np.abs(run_logits(sessions[0], feeds[0]) - run_logits(sessions[1], feeds[1])).max())
            medians: list[list[float]] = [[], []]
            for round_index in range(args.rounds):
                for which in (0, 1) if round_index % 2 == 0 else (1, 0):  # alternate who goes first
                    session, feed = sessions[which], feeds[which]
                    samples = time_samples(lambda: session.run(None, feed), warmup=3, runs=args.runs)
                    medians[which].append(statistics.median(samples))
            ratios = [fused / lowered for fused, lowered in zip(*medians)]
            print(f"| {argument} | {rewritten} | {statistics.median(medians[0]):.3f} | {statistics.median(medians[1]):.3f} | "
                  f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {diff:.2e} |")


if __name__ == "__main__":
    main()
