"""Load test of a bundle's servers on this machine (127.0.0.1 only, bounded by count and time).

    python bench/serve_load.py <bundle> [--requests 5000] [--rounds 10] [--concurrency 1,4,16,64]
                               [--lengths 128] [--servers reference,triton,baseline] [--threads 2]
                               [--variant NAME="SERVE OPTIONS" ...]
                               [--max-seconds 1200] [--json results.json]

Servers, all started here on free ports at once, given the same texts by the same client code
(HTTP/JSON, one text per request, keep-alive connections, one client thread per concurrent request):

  reference  `distilprune serve` (FastAPI + uvicorn): dynamic batching, --max-batch 32, --max-delay-ms 5
  triton     the bundle's python-backend text model in tritonserver (nvidia-pytriton's build), its
             config.pbtxt as exported (dynamic batching, instances and threads from the latency grid)
  baseline   `distilprune serve --max-batch 1 --max-delay-ms 0`: one request per model call, the
             usual first deployment

plus the bare ONNX Runtime call (this process, the served model file) on the same token ids: one
text per call, and 16 texts per call, whose texts/s over one text per call is the model's own
batching gain and bounds what a batching server can gain at concurrency 16. Texts are real
test-split review sentences; --lengths 128 joins consecutive sentences until they fill the model's
128-token window (truncated there), so every request is batch 1, sequence 128; --lengths real
sends each sentence as it is.

Why rounds: on a small shared machine the same ONNX Runtime call moves by tens of percent between
seconds and minutes (docs/results.md, "This machine runs at two speeds"), so a server measured now
and a baseline measured a minute later give ratios that do not repeat. Each of --rounds rounds
therefore times every concurrency level against every server in turn (--requests / --rounds
requests each, after a short re-warm), the server order rotating between rounds; at concurrency 1
the requests alternate with bare calls in blocks of 20, so each server's overhead over the bare
call is taken over the same stretches of time. Per server and level the table gives p50/p95/p99
over all samples (ms, client side), throughput (requests / seconds spent sending them), errors,
and the server's resident memory (all its processes) after warm-up and at the end. The
comparisons (concurrency-1 p50 minus the bare call's p50, concurrency-16 throughput over the
baseline's, the bare model's batch-16 gain) are taken within each round and reported as the
median over rounds with their min-max.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from distilprune.export.runtime import percentiles
from distilprune.export.serving.runtime import BundleRuntime
from distilprune.export.serving.triton_local import LocalTriton, free_port

WARMUP_REQUESTS = 200
REWARM_REQUESTS = 8  # at least, per server and level (one per client thread), untimed, before each round's timed requests
BARE_CALLS = 200  # distinct texts the bare call cycles through
BATCH_CEILING = 16  # batch size of the bare model's batching gain (the concurrency of the throughput check)
BLOCK = 20  # concurrency 1: server requests and bare calls alternate in blocks of this many


def texts_for(bundle: Path, lengths: str, count: int) -> list[str]:
    from distilprune.config import DataConfig
    from distilprune.data import load_data

    sentences = list(load_data(DataConfig()).test.texts)
    if lengths == "real":
        return [sentences[i % len(sentences)] for i in range(count)]
    window = int(lengths)
    engine = BundleRuntime(bundle, load_model=False)
    engine.tokenizer.no_truncation()
    texts, start = [], 0
    while len(texts) < min(count, 500):  # 500 distinct long texts, cycled
        words, index = [], start
        while len(engine.tokenizer.encode(" ".join(words)).ids) < window:
            words.append(sentences[index % len(sentences)])
            index += 1
        texts.append(" ".join(words))
        start = index
    return [texts[i % len(texts)] for i in range(count)]


def _rss_kib(root_pid: int) -> int:
    """Resident memory of ``root_pid`` and every process in its session (Triton's python stubs), KiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != root_pid and int(entry.name) != root_pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


class Target:
    """Where requests go: host, port, path, how a text becomes a request body, and the server's process."""

    def __init__(self, port: int, path: str, body, pid: int):
        self.port, self.path, self.body, self.pid = port, path, body, pid

    def run(self, texts: list[str], concurrency: int, deadline: float) -> dict:
        """Send ``texts`` from ``concurrency`` threads; latencies (ms) in completion order, errors, wall seconds."""
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        cursor = [0]

        def worker():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            while time.monotonic() < deadline:
                with lock:
                    if cursor[0] >= len(texts):
                        break
                    text = texts[cursor[0]]
                    cursor[0] += 1
                start = time.perf_counter()
                try:
                    connection.request("POST", self.path, body=self.body(text), headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                elapsed = (time.perf_counter() - start) * 1e3
                with lock:
                    latencies.append(elapsed)
                    errors[0] += 0 if ok else 1
            connection.close()

        start = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"latencies": latencies, "errors": errors[0], "wall_s": time.perf_counter() - start}


def reference_body(text: str) -> bytes:
    return json.dumps({"texts": [text]}).encode()


def triton_body(text: str) -> bytes:
    return json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}).encode()


@contextlib.contextmanager
def http_server(bundle: Path, threads: int, extra: list[str]):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "distilprune.train.cli", "serve", str(bundle),
                                "--port", str(port), "--threads", str(threads), *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"distilprune serve exited with {process.returncode}: {process.stderr.read()[-1500:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/v1/health/ready")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield Target(port, "/v1/predict", reference_body, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextlib.contextmanager
def triton_server(bundle: Path):
    models = [p.name for p in (bundle / "triton").iterdir() if p.name.endswith("-text")]
    with LocalTriton(bundle / "triton", models) as server:
        yield Target(server.http_port, f"/v2/models/{models[0]}/infer", triton_body, server.process.pid)


SERVERS = {
    "reference": lambda bundle, args: http_server(bundle, args.threads, ["--max-batch", "32", "--max-delay-ms", "5"]),
    "triton": lambda bundle, args: triton_server(bundle),
    "baseline": lambda bundle, args: http_server(bundle, args.threads, ["--max-batch", "1", "--max-delay-ms", "0"]),
}


class BareOnnxRuntime:
    """The served model file called directly in this process, one text at a time (no HTTP, no batching)."""

    def __init__(self, bundle: Path, threads: int, texts: list[str]):
        self.engine = BundleRuntime(bundle, threads=threads)
        self.encoded = [self.engine.encode([t]) for t in texts[:BARE_CALLS]]
        self.seq_len = int(self.encoded[0].input_ids.shape[1])
        self.cursor = 0
        for item in self.encoded[:20]:
            self.engine.infer(item)

    def calls(self, count: int) -> list[float]:
        """``count`` timed one-text calls (ms), cycling through the encoded texts."""
        samples = []
        for index in range(count):
            item = self.encoded[(self.cursor + index) % len(self.encoded)]
            start = time.perf_counter()
            self.engine.infer(item)
            samples.append((time.perf_counter() - start) * 1e3)
        self.cursor += count
        return samples

    def batching_gain(self, texts: list[str], repeats: int = 5) -> float:
        """Texts/s of the bare model at BATCH_CEILING texts per call over texts/s one text per call, the two
        alternated call by call (same texts): the most a batching server can gain, before its own costs."""
        batch, singles = self.engine.encode(texts[:BATCH_CEILING]), self.encoded[:BATCH_CEILING]
        self.engine.infer(batch)
        batched = single = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            self.engine.infer(batch)
            batched += time.perf_counter() - start
            start = time.perf_counter()
            for item in singles:
                self.engine.infer(item)
            single += time.perf_counter() - start
        return single / batched


def alternate_with_bare(target: Target, bare: BareOnnxRuntime, texts: list[str], deadline: float) -> tuple[dict, list[float]]:
    """Concurrency 1, in blocks of BLOCK requests each followed by BLOCK bare calls: both sample the
    same stretches of time, so a change of machine speed lands on both alike."""
    run = {"latencies": [], "errors": 0, "wall_s": 0.0}
    beside: list[float] = []
    for start in range(0, len(texts), BLOCK):
        block = target.run(texts[start : start + BLOCK], 1, deadline)
        run["latencies"] += block["latencies"]
        run["errors"] += block["errors"]
        run["wall_s"] += block["wall_s"]
        beside += bare.calls(len(block["latencies"]))
    return run, beside


def run_rounds(targets: dict[str, Target], bare: BareOnnxRuntime, texts: list[str], levels: list[int],
               args, deadline: float) -> dict:
    """Every round: each level against each server (order rotating), concurrency 1 alternating with the
    bare call; plus the bare model's batching gain. Raw samples per round."""
    per_round = max(1, args.requests // args.rounds)
    names = list(targets)
    rounds = []
    for index in range(args.rounds):
        record = {"bare_batching_gain": bare.batching_gain(texts), "bare_beside": {},
                  "servers": {name: {} for name in names}}
        order = names[index % len(names):] + names[:index % len(names)]
        for concurrency in levels:
            for name in order:
                offset = (index * per_round) % len(texts)
                chunk = (texts[offset:] + texts[:offset])[:per_round]
                targets[name].run(texts[:max(REWARM_REQUESTS, concurrency)], concurrency, deadline)
                if concurrency == 1:
                    run, record["bare_beside"][name] = alternate_with_bare(targets[name], bare, chunk, deadline)
                else:
                    run = targets[name].run(chunk, concurrency, deadline)
                record["servers"][name][concurrency] = run
        if not record["bare_beside"]:
            record["bare_beside"]["alone"] = bare.calls(BARE_CALLS)
        rounds.append(record)
        print(f"round {index + 1}/{args.rounds} done", flush=True)
    return {"rounds": rounds}


def summarise(raw: dict, names: list[str], levels: list[int], memory: dict) -> dict:
    rounds = raw["rounds"]
    bare_samples = [[t for samples in r["bare_beside"].values() for t in samples] for r in rounds]
    # The bare model's own batching gain: texts/s at BATCH_CEILING per call over texts/s one per call.
    ceiling = [r["bare_batching_gain"] for r in rounds]
    out = {"bare_onnxruntime": {**percentiles([t for samples in bare_samples for t in samples]),
                                "round_p50": [round(statistics.median(samples), 3) for samples in bare_samples],
                                f"batch{BATCH_CEILING}_vs_batch1_texts_per_s": _median_spread(ceiling)},
           "servers": {}, "comparisons": {}}
    for name in names:
        levels_out = {}
        for concurrency in levels:
            runs = [r["servers"][name][concurrency] for r in rounds]
            samples = [s for run in runs for s in run["latencies"]]
            levels_out[concurrency] = {
                "requests": len(samples), "errors": sum(run["errors"] for run in runs),
                "throughput_rps": round(len(samples) / sum(run["wall_s"] for run in runs), 1),
                "round_throughput_rps": [round(len(run["latencies"]) / run["wall_s"], 1) for run in runs],
                "round_p50": [round(statistics.median(run["latencies"]), 3) for run in runs],
                **percentiles(samples)}
        out["servers"][name] = {"levels": levels_out, **memory[name]}
    for name in names:
        comparisons = {}
        if 1 in levels:
            # each server's concurrency-1 p50 against the bare calls alternated with its own requests
            overhead = [statistics.median(r["servers"][name][1]["latencies"]) - statistics.median(r["bare_beside"][name])
                        for r in rounds]
            comparisons["c1_p50_minus_bare_ms"] = _median_spread(overhead)
        if 16 in levels and "baseline" in names and name != "baseline":
            gain = [_throughput(r["servers"][name][16]) / _throughput(r["servers"]["baseline"][16]) for r in rounds]
            comparisons["c16_throughput_vs_baseline"] = _median_spread(gain)
        out["comparisons"][name] = comparisons
    return out


def _throughput(run: dict) -> float:
    return len(run["latencies"]) / run["wall_s"]


def _median_spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "rounds": [round(v, 3) for v in values]}


def print_table(summary: dict, seq_len: int, model: str, rounds: int) -> None:
    bare = summary["bare_onnxruntime"]
    print(f"\nbare ONNX Runtime ({model}, batch 1, sequence {seq_len}): p50 {bare['p50']} ms, p95 {bare['p95']} ms "
          f"(round p50s {', '.join(f'{v:.2f}' for v in bare['round_p50'])})")
    header = f"{'server':<10} {'conc':>5} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}"
    print(header + f"  {'RSS MiB (warm -> end)':>22}")
    print("-" * (len(header) + 24))
    for name, result in summary["servers"].items():
        memory = f"{result['rss_after_warmup_mib']} -> {result['rss_after_run_mib']}"
        for concurrency, row in result["levels"].items():
            print(f"{name:<10} {concurrency:>5} {row['requests']:>9} {row['errors']:>7} {row['p50']:>8} {row['p95']:>8} "
                  f"{row['p99']:>8} {row['throughput_rps']:>8}  {memory:>22}")
    print(f"\nwithin-round comparisons, median over {rounds} rounds [min, max]:")
    c = bare[f"batch{BATCH_CEILING}_vs_batch1_texts_per_s"]
    print(f"  bare ONNX Runtime texts/s at batch {BATCH_CEILING} / at batch 1: {c['median']:.2f}x [{c['min']:.2f}, "
          f"{c['max']:.2f}] (the model's own batching gain on this machine)")
    for name, comparisons in summary["comparisons"].items():
        if "c1_p50_minus_bare_ms" in comparisons:
            c = comparisons["c1_p50_minus_bare_ms"]
            print(f"  {name:<10} concurrency 1 p50 - bare ONNX Runtime p50: {c['median']:+.2f} ms [{c['min']:+.2f}, {c['max']:+.2f}]")
        if "c16_throughput_vs_baseline" in comparisons:
            c = comparisons["c16_throughput_vs_baseline"]
            print(f"  {name:<10} concurrency 16 throughput / baseline's: {c['median']:.2f}x [{c['min']:.2f}, {c['max']:.2f}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--requests", type=int, default=5000, help="requests per server and concurrency level, over all rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--lengths", default="128", help="128 (fill the window) or real (sentences as they are)")
    parser.add_argument("--servers", default="reference,triton,baseline")
    parser.add_argument("--variant", action="append", default=[], metavar='NAME="SERVE OPTIONS"',
                        help='one more `distilprune serve` configuration to load alongside, e.g. '
                             'b8="--max-batch 8 --max-delay-ms 2" or t1="--threads 1" (repeatable)')
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the reference servers and the bare call")
    parser.add_argument("--max-seconds", type=float, default=1200, help="stop sending after this long, overall")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    servers = dict(SERVERS)
    for variant in args.variant:
        name, _, options = variant.partition("=")
        if not name or not options or name in servers:
            parser.error(f"--variant {variant!r}: give NAME=\"OPTIONS\" with a new name, e.g. b8=\"--max-batch 8\"")
        extra = options.split()
        threads = int(extra[extra.index("--threads") + 1]) if "--threads" in extra else None
        extra = [a for i, a in enumerate(extra) if a != "--threads" and (i == 0 or extra[i - 1] != "--threads")]
        servers[name] = lambda bundle, args, extra=extra, threads=threads: http_server(bundle, threads or args.threads, extra)
    names = args.servers.split(",") + [v.partition("=")[0] for v in args.variant]
    unknown = sorted(set(names) - set(servers))
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {sorted(servers)}")
    texts = texts_for(args.bundle, args.lengths, max(args.requests, WARMUP_REQUESTS))
    print(f"serve_load {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundle {args.bundle}, "
          f"{args.requests} requests per server and level in {args.rounds} rounds, concurrency {levels}, "
          f"lengths {args.lengths}", flush=True)
    with contextlib.ExitStack() as stack:
        targets = {name: stack.enter_context(servers[name](args.bundle, args)) for name in names}
        deadline = time.monotonic() + args.max_seconds
        for target in targets.values():  # warm-up at the highest concurrency: full batches
            target.run(texts[:WARMUP_REQUESTS], max(levels), deadline)
        memory = {name: {"rss_after_warmup_mib": round(_rss_kib(t.pid) / 1024, 1)} for name, t in targets.items()}
        bare = BareOnnxRuntime(args.bundle, args.threads, texts)
        raw = run_rounds(targets, bare, texts, levels, args, deadline)
        for name, target in targets.items():
            memory[name]["rss_after_run_mib"] = round(_rss_kib(target.pid) / 1024, 1)
    summary = summarise(raw, names, levels, memory)
    print_table(summary, bare.seq_len, bare.engine.model_file, args.rounds)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
                                         **summary}, indent=2))
    return 1 if any(row["errors"] for s in summary["servers"].values() for row in s["levels"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
