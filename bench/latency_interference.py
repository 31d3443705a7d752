"""What else running in the process inflates an ONNX Runtime latency: one INT8 model timed in alternating
rounds, alone and right after the kinds of work a training process does before it measures.

    python bench/latency_interference.py BUNDLE [--rounds 7 --runs 50 --warmup 10 --threads 2]

Conditions, each timed once per round in this order (batch 1, sequence 128, ``--warmup`` untimed calls
first, as the export does):

- ``alone``: the process idle for ``--busy-s`` before timing.
- ``after PyTorch``: ``--busy-s`` of PyTorch matrix products on ``--threads`` threads (an accuracy or
  latency pass in PyTorch), then the timing at once.
- ``after ORT session``: ``--busy-s`` of another ONNX Runtime session (the bundle's fp32 model, batch 8,
  its own intra-op pool) running, then the timing at once; that session stays open, as an accuracy
  session did in the training process.
- ``Python thread``: a background thread that wakes every 10 ms and computes for 2 ms while the model
  is timed (a progress bar, a logger, a metrics thread).
- ``DataLoader workers``: two worker processes that tokenize-like busy loops (string work) while the
  model is timed, as persistent DataLoader workers prefetching do.

Prints the median over rounds of each condition's p50 and its ratio to ``alone`` (same rounds).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path


def _python_thread(stop: threading.Event) -> None:
    while not stop.is_set():
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:  # 2 ms of pure-Python work
            sum(i * i for i in range(200))
        time.sleep(0.010)


def _worker(stop) -> None:
    while not stop.is_set():
        " ".join(str(i) for i in range(2000)).split()  # tokenizer-like string work, no sleeping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--busy-s", type=float, default=0.5, help="seconds of preceding work (or idle) per condition")
    args = parser.parse_args(argv)

    import torch

    from distilprune.export.runtime import machine_info, make_session, random_inputs, time_samples

    torch.set_num_threads(args.threads)
    int8 = make_session(args.bundle / "model.int8.onnx", args.threads)
    fp32 = make_session(args.bundle / "model.onnx", args.threads)
    ids, mask = random_inputs(1, 128, 30522)
    feed = {"input_ids": ids, "attention_mask": mask}
    ids8, mask8 = random_inputs(8, 128, 30522)
    feed8 = {"input_ids": ids8, "attention_mask": mask8}
    a, b = torch.randn(512, 512), torch.randn(512, 512)

    def timed() -> float:
        return statistics.median(time_samples(lambda: int8.run(None, feed), args.warmup, args.runs))

    def for_seconds(fn) -> None:
        end = time.perf_counter() + args.busy_s
        while time.perf_counter() < end:
            fn()

    def alone() -> float:
        time.sleep(args.busy_s)
        return timed()

    def after_torch() -> float:
        for_seconds(lambda: torch.mm(a, b))
        return timed()

    def after_ort() -> float:
        for_seconds(lambda: fp32.run(None, feed8))
        return timed()

    def with_thread() -> float:
        stop = threading.Event()
        thread = threading.Thread(target=_python_thread, args=(stop,), daemon=True)
        thread.start()
        try:
            return timed()
        finally:
            stop.set()
            thread.join()

    def with_workers() -> float:
        stop = multiprocessing.Event()
        workers = [multiprocessing.Process(target=_worker, args=(stop,), daemon=True) for _ in range(2)]
        for w in workers:
            w.start()
        time.sleep(0.2)
        try:
            return timed()
        finally:
            stop.set()
            for w in workers:
                w.join()

    conditions = {"alone": alone, "after PyTorch": after_torch, "after ORT session": after_ort,
                  "Python thread": with_thread, "DataLoader workers": with_workers}
    p50s: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(args.rounds):
        for name, fn in conditions.items():
            p50s[name].append(fn())
    machine = machine_info(args.threads)
    print(f"{machine['cpu']}, {args.threads} threads; {args.bundle / 'model.int8.onnx'}, batch 1, sequence 128; "
          f"{args.rounds} alternating rounds x ({args.warmup} warmup + {args.runs} runs)")
    print(f"{'condition':<22}{'p50 ms':>9}{'vs alone':>10}  round p50s")
    for name, values in p50s.items():
        ratios = statistics.median(v / base for v, base in zip(values, p50s["alone"]))
        print(f"{name:<22}{statistics.median(values):>9.2f}{ratios:>9.2f}x  {', '.join(f'{v:.2f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
