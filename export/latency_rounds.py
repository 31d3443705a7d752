"""Every model of a run timed in one clean process, in alternating rounds.

    python -m distilprune.export.latency_rounds JOB.json OUT.json

The export writes a job (models, cells, threads, rounds) and runs this module as a child process once
training is over, so nothing else of the run competes with the timed model: no Lightning, W&B or
DataLoader threads, no PyTorch thread pool from the training loop, no idle ONNX Runtime session of
the accuracy passes. That child drives two timing processes of its own: the ONNX models are timed
in one that imports only numpy and onnxruntime (this module and :mod:`distilprune.export.runtime`),
as a serving process would; the PyTorch models (teacher, students) in another, with PyTorch's
thread count set before the first forward. The two are kept apart so that the ONNX numbers come
from the process a server runs and neither model's threads are alive while the other is timed.
(The "PyTorch process times ONNX Runtime a third faster" effect once blamed for this was the
machine changing speed between measurements; docs/results.md, "This machine runs at two speeds".)

Cell by cell (the headline cell first), each round times every model of the cell once
(``runs_per_round`` timed calls after a warmup), model after model, so a burst of load from elsewhere
on the machine hits all models of that round alike instead of one model's whole measurement. Per model and cell the result is the median of
the round medians (p50), the min and max of the round medians (spread), and p95/p99 over all samples
of all rounds. A ratio between two models is the median over rounds of the per-round ratio.

With more than one thread, a probe runs before and after each round of each cell
(:class:`~distilprune.export.runtime.ParallelProbe`: the first checkpoint's INT8 model on 1 thread and
on all threads); at the headline cell the round's own samples of that model count as a third probe
(its 1-thread time right after them against their median), and a round's speedup is the smallest.
A shared host sometimes stops running one session's threads in parallel for seconds to minutes;
rounds whose speedup is far below the cell's best (:func:`~distilprune.export.runtime.kept_rounds`)
are left out for every model of that cell alike, so ratios compare the same rounds, and ``rounds`` /
``rounds_timed`` say how many were kept. When no headline round ran in parallel, more headline rounds
are timed for up to the job's ``extra_headline_seconds`` (export.parallel_wait_seconds) until some do.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distilprune.export.runtime import (
    MIN_WARMUP_SECONDS, PARALLEL_MIN_SPEEDUP, PARALLEL_RELATIVE, PARALLEL_WAIT_SECONDS, ParallelProbe, kept_rounds,
    machine_info, make_session, more_rounds_wanted, nearest_rank, random_inputs, session_feed, time_samples, write_atomic,
)

DEFAULT_ROUNDS = 5
# Timed calls per round at least: a round median of fewer calls is itself noise.
MIN_RUNS_PER_ROUND = 10
# Untimed calls before a model's turn in rounds after the first: wakes its thread pool and caches.
# Two at the headline cell (milliseconds each), one at the grid's larger cells (one call fills the caches),
# and in every case for at least REWARM_SECONDS: the previous model's thread pool keeps spinning for a
# while after its last call (ONNX Runtime and OpenMP both spin before they sleep), and timing through
# that competes with it for the cores.
REWARM_CALLS = 2
REWARM_SECONDS = MIN_WARMUP_SECONDS
# The grid's other cells (every cell but the headline): at most this many untimed calls before a model's
# first round, and timed calls per model and round stop once they took GRID_ROUND_SECONDS (at least
# GRID_MIN_RUNS of them). At 1 thread a 4-layer student in fp32 takes 0.3-0.5 s a call at batch 32 x
# sequence 128, so the full warmup and split of latency_runs made those cells most of the timing.
GRID_WARMUP_CALLS = 2
GRID_ROUND_SECONDS = 0.3
GRID_MIN_RUNS = 2
# A measurement whose round medians spread over more than this fraction of their median is flagged.
NOISY_SPREAD = 0.20
HEAVY_MODULES = ("torch", "lightning", "wandb", "transformers")


def runs_per_round(runs: int, rounds: int, headline: bool = True) -> int:
    """Timed calls per model and cell in each round: ``runs`` split over the rounds, so the grid costs
    about what ``runs`` calls per cell cost in one pass; at the headline cell (cheap, and the one every
    ratio and the selection read) at least ``min(runs, 10)``, so each round median stands on its own."""
    split = math.ceil(runs / max(1, rounds))
    return max(split, min(runs, MIN_RUNS_PER_ROUND)) if headline else max(1, split)


def summarize(round_samples: list[list[float]], keep: list[int] | None = None) -> dict:
    """p50 = median of round medians; spread = [min, max] of round medians; p95/p99 over all samples (ms).

    ``keep``: the rounds to summarize (:func:`distilprune.export.runtime.kept_rounds`), default all;
    ``rounds_timed`` counts every round.
    """
    keep = list(range(len(round_samples))) if keep is None else keep
    kept = [round_samples[i] for i in keep]
    medians = [statistics.median(s) for s in kept]
    pooled = sorted(x for s in kept for x in s)
    p50 = statistics.median(medians)
    spread = [min(medians), max(medians)]
    return {
        "p50": round(p50, 3), "p95": round(nearest_rank(pooled, 0.95), 3), "p99": round(nearest_rank(pooled, 0.99), 3),
        "runs": len(pooled), "rounds": len(medians), "rounds_timed": len(round_samples),
        "round_p50s": [round(m, 3) for m in medians],
        "spread": [round(v, 3) for v in spread], "noisy": (spread[1] - spread[0]) > NOISY_SPREAD * p50,
    }


def ratio(numerator: dict, denominator: dict) -> float | None:
    """Median over rounds of numerator p50 / denominator p50 (two summaries of the same rounds)."""
    pairs = list(zip(numerator["round_p50s"], denominator["round_p50s"]))
    return round(statistics.median(a / b for a, b in pairs), 3) if pairs else None


# --------------------------------------------------------------------------------------------
# the child


def _onnx_runner(model: dict, threads: int, vocab_size: int):
    session = make_session(Path(model["path"]), threads)

    def runner(batch_size: int, seq_len: int):
        ids, mask = random_inputs(batch_size, seq_len, vocab_size)
        feed = session_feed(session, ids, mask)
        return lambda: session.run(None, feed)

    return runner, {}


def _pytorch_runner(model: dict, threads: int, vocab_size: int):
    import torch  # only here: a job of ONNX models never loads PyTorch

    torch.set_num_threads(threads)
    details = {}
    if model["kind"] == "hf":
        from transformers import AutoModelForSequenceClassification

        try:  # SDPA attention, PyTorch's fastest, so a speedup over the teacher is not inflated
            net = AutoModelForSequenceClassification.from_pretrained(model["path"], attn_implementation="sdpa")
            details["attention"] = "sdpa"
        except (ValueError, ImportError):  # a model without SDPA support runs eager attention
            net = AutoModelForSequenceClassification.from_pretrained(model["path"], attn_implementation="eager")
            details["attention"] = "eager"
    else:
        from distilprune.students import DistilBertStudent

        net = DistilBertStudent.load(Path(model["path"]))
    net.eval()

    def runner(batch_size: int, seq_len: int):
        ids, mask = (torch.from_numpy(a) for a in random_inputs(batch_size, seq_len, vocab_size))

        def call():
            with torch.inference_mode():
                net(input_ids=ids, attention_mask=mask)

        return call

    return runner, details


def _worker(job: dict) -> None:
    """One timing process: build its models' runners, then per stdin line ``{"cell", "rewarm", "runs"}``
    time each of its models at that cell and answer one JSON line of samples (ms); to ``{"probe": true}``
    answer the :class:`~distilprune.export.runtime.ParallelProbe` speedup (null without a probe)."""
    threads, vocab_size = int(job["threads"]), int(job["vocab_size"])
    runners, details, calls = {}, {}, {}
    probe = None
    if job.get("probe") and threads > 1:
        probe = ParallelProbe(Path(job["probe"]["path"]), threads, *random_inputs(*job["probe"]["cell"], vocab_size))
    for model in job["models"]:
        build = _onnx_runner if model["kind"] == "onnx" else _pytorch_runner
        runners[model["key"]], details[model["key"]] = build(model, threads, vocab_size)
    print(json.dumps({"details": details}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("stop"):
            print(json.dumps({"heavy_modules_loaded": sorted(n for n in HEAVY_MODULES if n in sys.modules),
                              "machine": machine_info(threads)}), flush=True)
            return
        if request.get("probe"):
            print(json.dumps({"speedup": probe.speedup() if probe else None}), flush=True)
            continue
        cell, samples = tuple(request["cell"]), {}
        for model in job["models"]:
            if list(cell) in [list(c) for c in model["cells"]]:
                key = (model["key"], cell)
                if key not in calls:
                    calls[key] = runners[model["key"]](*cell)
                samples[model["key"]] = time_samples(calls[key], max(1, request["rewarm"]), request["runs"],
                                                     request.get("max_seconds"), GRID_MIN_RUNS)
        answer = {"samples": samples}
        if probe and cell == probe.cell and job["probe"]["key"] in samples:  # the round's own speedup
            answer["own_speedup"] = probe.speedup_of(samples[job["probe"]["key"]])
        print(json.dumps(answer), flush=True)


class _Worker:
    """A timing process for one group of models, driven line by line; idle (blocked on stdin) between turns."""

    def __init__(self, group: str, job: dict, tmp: Path):
        path = tmp / f"{group}.json"
        path.write_text(json.dumps(job))
        self.group = group
        self.process = subprocess.Popen([sys.executable, "-m", "distilprune.export.latency_rounds", "--worker", str(path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.details: dict = {}

    def ready(self) -> None:
        """Wait for the process to have built its models (both start together: nothing is timed yet)."""
        self.details = self.ask(None)["details"]

    def ask(self, request: dict | None) -> dict:
        if request is not None:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.kill()
            raise RuntimeError(f"the {self.group} latency process exited with status {self.process.wait()}: "
                               f"{self.process.stderr.read().strip()[-2000:]}")
        return json.loads(line)

    def stop(self) -> dict:
        final = self.ask({"stop": True})
        self.process.wait(timeout=60)
        return final


def run_job(job: dict, tmp: Path) -> dict:
    """Time every model of ``job`` at its cells in alternating rounds; see the module docstring.

    ONNX models are timed in a process that imports only numpy and onnxruntime, as a server's would;
    PyTorch models (teacher, students) in a second process. Both stay alive; each round asks one, then
    the other, so every model of a round is timed seconds apart while the other process waits idle.
    """
    started = time.perf_counter()
    rounds, warmup = int(job["rounds"]), int(job["warmup"])
    headline = tuple(job["headline"])
    per_round = {True: runs_per_round(int(job["runs"]), rounds), False: runs_per_round(int(job["runs"]), rounds, False)}
    groups = {"onnx": [m for m in job["models"] if m["kind"] == "onnx"],
              "pytorch": [m for m in job["models"] if m["kind"] != "onnx"]}
    workers = [_Worker(name, {**job, "models": models}, tmp) for name, models in groups.items() if models]
    try:
        for worker in workers:
            worker.ready()
        started_timing = time.perf_counter()
        cells = list(dict.fromkeys(tuple(cell) for m in job["models"] for cell in m["cells"]))
        samples: dict[tuple, list[list[float]]] = {}
        speedups: dict[tuple, list[float]] = {}
        prober = next((w for w in workers if w.group == "onnx"), None) if job.get("probe") else None
        # The headline cell's rounds first, then each other cell's: rounds of the headline interleaved
        # with the grid's large batches ran 30% slower after the first round (2026-11-30, 2 cores).
        probed = prober.ask({"probe": True})["speedup"] if prober else None

        def one_round(cell: tuple, rewarm: int) -> None:
            nonlocal probed
            measured = [probed]  # the probe before the round, the round's own samples, the probe after it
            for worker in workers:
                answer = worker.ask({"cell": list(cell), "rewarm": rewarm, "runs": per_round[cell == headline],
                                     "max_seconds": None if cell == headline else GRID_ROUND_SECONDS})
                for key, values in answer["samples"].items():
                    samples.setdefault((key, cell), []).append(values)
                measured.append(answer.get("own_speedup"))
            if prober:  # the probe after a round is the next round's probe before it
                probed = prober.ask({"probe": True})["speedup"]
                measured.append(probed)
                if None not in (measured[0], probed):  # a round's speedup: the smallest measured
                    speedups.setdefault(cell, []).append(min(v for v in measured if v is not None))

        for cell in sorted(cells, key=lambda c: c != headline):
            for index in range(rounds):
                first = warmup if cell == headline else min(warmup, GRID_WARMUP_CALLS)
                one_round(cell, first if index == 0 else REWARM_CALLS if cell == headline else 1)
        # No headline round ran with the threads in parallel: the host held them back throughout. Time
        # more headline rounds (every model of the cell, probed alike) for up to the job's
        # extra_headline_seconds, until some do; the headline is what every ratio and the selection read.
        extra_rounds, extra_started = 0, time.perf_counter()
        extra_seconds = float(job.get("extra_headline_seconds", PARALLEL_WAIT_SECONDS))
        headline_speedups = speedups.get(headline, [])
        while (more_rounds_wanted(headline_speedups[:rounds], headline_speedups)
               and time.perf_counter() - extra_started < extra_seconds):
            one_round(headline, REWARM_CALLS)
            extra_rounds += 1
        finals = {worker.group: worker.stop() for worker in workers}
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
    details = {key: value for worker in workers for key, value in worker.details.items()}
    models = {m["key"]: {"details": details.get(m["key"], {}), "cells": []} for m in job["models"]}
    for (key, cell), rounds_of_samples in samples.items():
        keep = kept_rounds(len(rounds_of_samples), speedups.get(cell))
        models[key]["cells"].append({"batch_size": cell[0], "seq_len": cell[1], **summarize(rounds_of_samples, keep)})
    probe = None
    if speedups:
        probe = {"model": job["probe"]["key"], "cell": job["probe"]["cell"], "min_speedup": PARALLEL_MIN_SPEEDUP,
                 "relative": PARALLEL_RELATIVE, "extra_headline_rounds": extra_rounds,
                 "cells": [{"batch_size": c[0], "seq_len": c[1], "speedups": [round(v, 3) for v in values],
                            "kept_rounds": kept_rounds(len(values), values)} for c, values in speedups.items()]}
    return {
        "parallel_probe": probe,
        "machine": finals.get("onnx", next(iter(finals.values())))["machine"], "rounds": rounds, "warmup": warmup,
        "runs_per_round": per_round[True], "runs_per_round_elsewhere": per_round[False], "rewarm_calls": REWARM_CALLS,
        "rewarm_seconds": REWARM_SECONDS, "grid_round_seconds": GRID_ROUND_SECONDS, "grid_min_runs": GRID_MIN_RUNS,
        "grid_warmup_calls": GRID_WARMUP_CALLS, "models": models, "seconds": round(time.perf_counter() - started, 1),
        "startup_seconds": round(started_timing - started, 1),
        # per process: the ONNX process must show none (numpy and onnxruntime only)
        "heavy_modules_loaded": {group: final["heavy_modules_loaded"] for group, final in finals.items()},
    }


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    if argv[:1] == ["--worker"]:
        _worker(json.loads(Path(argv[1]).read_text()))
        return 0
    job_path, out_path = argv[:2]
    with tempfile.TemporaryDirectory(prefix="distilprune-latency-") as tmp:
        write_atomic(Path(out_path), json.dumps(run_job(json.loads(Path(job_path).read_text()), Path(tmp)), indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# the parent side


def measure_in_child(job: dict, timeout_s: float = 3600) -> dict:
    """Run ``job`` from a fresh Python process (this module), which drives the timing processes.

    Raises:
        RuntimeError: a timing process failed; the message holds the end of its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="distilprune-latency-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        done = subprocess.run([sys.executable, "-m", "distilprune.export.latency_rounds", str(job_path), str(out_path)],
                              capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0 or not out_path.is_file():
            raise RuntimeError(f"the latency process exited with status {done.returncode}: {done.stderr.strip()[-2000:]}")
        return json.loads(out_path.read_text())


if __name__ == "__main__":
    sys.exit(main())
