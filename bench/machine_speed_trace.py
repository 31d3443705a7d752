"""One ONNX model called back to back for a while, its median latency printed per half second.

    python bench/machine_speed_trace.py BUNDLE [--seconds 40] [--threads 2] [--model model.int8.onnx]

Shows whether this machine's speed changes under a constant workload: on a shared host it can
switch between levels for seconds at a time (docs/results.md, "This machine runs at two speeds"),
which is why every latency in distilprune is taken in alternating rounds. Imports numpy and
onnxruntime only (through export/runtime.py). Batch 1, sequence 128, fixed random token ids.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from runtime import make_session, random_inputs, session_feed  # noqa: E402

WINDOW_S = 0.5


def trace(session, feed: dict, seconds: float) -> list[tuple[float, float, int]]:
    """(offset s, median ms, calls) per WINDOW_S window of back-to-back calls."""
    windows, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        samples, opened = [], time.perf_counter()
        while time.perf_counter() - opened < WINDOW_S:
            call = time.perf_counter()
            session.run(None, feed)
            samples.append((time.perf_counter() - call) * 1e3)
        windows.append((opened - start, statistics.median(samples), len(samples)))
    return windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="model.int8.onnx")
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args(argv)
    session = make_session(args.bundle / args.model, args.threads)
    config = json.loads((args.bundle / "config.json").read_text())  # the student's config: its vocabulary size
    input_ids, attention_mask = random_inputs(1, args.seq_len, int(config.get("vocab_size", 30522)))
    feed = session_feed(session, input_ids, attention_mask)
    for _ in range(20):
        session.run(None, feed)
    windows = trace(session, feed, args.seconds)
    medians = [m for _, m, _ in windows]
    print(f"{args.bundle / args.model}, batch 1, sequence {args.seq_len}, {args.threads} threads, "
          f"{len(windows)} windows of {WINDOW_S} s: median ms per window")
    print(" ".join(f"{t:.1f}s:{m:.2f}" for t, m, _ in windows))
    low, high = min(medians), max(medians)
    print(f"fastest window {low:.2f} ms, slowest {high:.2f} ms ({high / low:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
