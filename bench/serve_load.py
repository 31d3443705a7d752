"""Load test of a bundle's servers on this machine (127.0.0.1 only, bounded by count and time).

    python bench/serve_load.py <bundle> [--requests 5000] [--concurrency 1,4,16,64] [--lengths 128]
                               [--servers reference,triton,baseline] [--threads 2] [--max-seconds 900]

Servers, each started here on free ports, given the same texts by the same client code (HTTP/JSON,
one text per request, keep-alive connections, one client thread per concurrent request):

  reference  `distilprune serve` (FastAPI + uvicorn): dynamic batching, --max-batch 32, --max-delay-ms 5
  triton     the bundle's python-backend text model in tritonserver (nvidia-pytriton's build), its
             config.pbtxt as exported (dynamic batching, instances and threads from the latency grid)
  baseline   `distilprune serve --max-batch 1 --max-delay-ms 0`: one request per model call, the
             usual first deployment

plus the bare ONNX Runtime call on the same token ids, one text at a time, for reference.
Texts are real test-split review sentences; --lengths 128 joins consecutive sentences until they
fill the model's 128-token window (truncated there), so every request is batch 1, sequence 128;
--lengths real sends each sentence as it is. Each server gets --requests requests per concurrency
level after a warm-up of 200; the table gives p50/p95/p99 latency (ms, client side), throughput
(requests/s), errors, and the server's resident memory (all its processes) after warm-up and
after the run. On a 2-core machine the client threads share the cores with the server.
"""

from __future__ import annotations

import argparse
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
    """Where requests go: host, port, path, and how a text becomes a request body."""

    def __init__(self, port: int, path: str, body):
        self.port, self.path, self.body = port, path, body

    def run(self, texts: list[str], concurrency: int, deadline: float) -> dict:
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
        wall = time.perf_counter() - start
        return {"requests": len(latencies), "errors": errors[0], "wall_s": round(wall, 2),
                "throughput_rps": round(len(latencies) / wall, 1),
                **(percentiles(latencies) if latencies else dict.fromkeys(("p50", "p95", "p99")))}


def reference_body(text: str) -> bytes:
    return json.dumps({"texts": [text]}).encode()


def triton_body(text: str) -> bytes:
    return json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}).encode()


def load_levels(target: Target, texts: list[str], levels: list[int], requests: int, deadline: float, pid: int) -> dict:
    target.run(texts[:WARMUP_REQUESTS], max(levels), deadline)  # warm-up at the highest concurrency: full batches
    result = {"rss_after_warmup_mib": round(_rss_kib(pid) / 1024, 1), "levels": {}}
    for concurrency in levels:
        result["levels"][concurrency] = target.run(texts[:requests], concurrency, deadline)
    result["rss_after_run_mib"] = round(_rss_kib(pid) / 1024, 1)
    return result


def http_server(bundle: Path, args, texts, levels, deadline, extra: list[str]) -> dict:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "distilprune.train.cli", "serve", str(bundle),
                                "--port", str(port), "--threads", str(args.threads), *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for _ in range(600):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/v1/health/ready")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        return load_levels(Target(port, "/v1/predict", reference_body), texts, levels, args.requests, deadline, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)


def triton_server(bundle: Path, args, texts, levels, deadline) -> dict:
    models = [p.name for p in (bundle / "triton").iterdir() if p.name.endswith("-text")]
    with LocalTriton(bundle / "triton", models) as server:
        path = f"/v2/models/{models[0]}/infer"
        return load_levels(Target(server.http_port, path, triton_body), texts, levels, args.requests, deadline,
                           server.process.pid)


def bare_onnxruntime(bundle: Path, args, texts: list[str]) -> dict:
    engine = BundleRuntime(bundle, threads=args.threads)
    encoded = [engine.encode([t]) for t in texts[:500]]
    for item in encoded[:50]:
        engine.infer(item)
    samples = []
    for item in encoded:
        start = time.perf_counter()
        engine.infer(item)
        samples.append((time.perf_counter() - start) * 1e3)
    return {"model": engine.model_file, "seq_len": int(encoded[0].input_ids.shape[1]), **percentiles(samples)}


def print_table(results: dict, bare: dict) -> None:
    print(f"\nbare ONNX Runtime ({bare['model']}, batch 1, sequence {bare['seq_len']}): p50 {bare['p50']} ms, "
          f"p95 {bare['p95']} ms")
    header = f"{'server':<10} {'conc':>5} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}"
    print(header + f"  {'RSS MiB (warm -> end)':>22}")
    print("-" * (len(header) + 24))
    for name, result in results.items():
        memory = f"{result['rss_after_warmup_mib']} -> {result['rss_after_run_mib']}"
        for concurrency, row in result["levels"].items():
            print(f"{name:<10} {concurrency:>5} {row['requests']:>9} {row['errors']:>7} {row['p50']:>8} {row['p95']:>8} "
                  f"{row['p99']:>8} {row['throughput_rps']:>8}  {memory:>22}")
    base = results.get("baseline", {}).get("levels", {})
    for name in ("reference", "triton"):
        levels = results.get(name, {}).get("levels", {})
        if 16 in levels and 16 in base:
            print(f"{name} vs baseline at concurrency 16: {levels[16]['throughput_rps'] / base[16]['throughput_rps']:.2f}x throughput")
        if 1 in levels:
            print(f"{name} at concurrency 1: p50 {levels[1]['p50']} ms = bare ONNX Runtime + "
                  f"{levels[1]['p50'] - bare['p50']:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--requests", type=int, default=5000, help="requests per server and concurrency level")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--lengths", default="128", help="128 (fill the window) or real (sentences as they are)")
    parser.add_argument("--servers", default="reference,triton,baseline")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the reference servers")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long, overall")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    deadline = time.monotonic() + args.max_seconds
    texts = texts_for(args.bundle, args.lengths, max(args.requests, WARMUP_REQUESTS))
    print(f"serve_load {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, bundle {args.bundle}, "
          f"{args.requests} requests per level, concurrency {levels}, lengths {args.lengths}")
    results = {}
    for name in args.servers.split(","):
        if name == "reference":
            results[name] = http_server(args.bundle, args, texts, levels, deadline, ["--max-batch", "32", "--max-delay-ms", "5"])
        elif name == "baseline":
            results[name] = http_server(args.bundle, args, texts, levels, deadline, ["--max-batch", "1", "--max-delay-ms", "0"])
        elif name == "triton":
            results[name] = triton_server(args.bundle, args, texts, levels, deadline)
        print(f"{name}: done", flush=True)
    bare = bare_onnxruntime(args.bundle, args, texts)
    print_table(results, bare)
    if args.json:
        args.json.write_text(json.dumps({"bare_onnxruntime": bare, "servers": results}, indent=2))
    return 1 if any(r["errors"] for s in results.values() for r in s["levels"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
