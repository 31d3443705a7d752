"""The reference HTTP server for a bundle: FastAPI + uvicorn, dynamic batching, Prometheus metrics.

    distilprune serve <bundle> [--host 127.0.0.1 --port 8000 --max-batch 32 --max-delay-ms 5 --threads 2]

Endpoints:
    POST /v1/predict        {"texts": ["...", ...]} -> {"predictions": [{label, label_id, score, scores, truncated}]}
                            (text pairs: [["first", "second"], ...]; a tagger answers {entities, truncated};
                            question answering: [{"question", "context"}, ...] -> {answer, start, end, score,
                            no_answer, windows})
    GET  /v1/health/live    200 while the process runs
    GET  /v1/health/ready   200 once the model is loaded and warmed up, 503 before and while draining
    GET  /v1/metadata       task, labels, window, model file, manifest, batching settings
    GET  /metrics           Prometheus: requests, latency, batch sizes, queue depth

Requests wait in one queue; a single worker takes every queued text, up to ``--max-batch`` (several
requests together), runs them in one model call and answers each request. Under load (the last call
held more than one text) it first waits up to ``--max-delay-ms`` for the batch to fill; a lone
client never waits. The model is the bundle's batch-invariant one (``serving.json``), so a
text's answer does not depend on the requests it was batched with. On SIGTERM uvicorn stops
accepting connections and waits for the requests in flight; the worker answers them all first,
and the process then ends with the SIGTERM status (as uvicorn re-raises the signal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# FastAPI reads the endpoint annotations at run time, so Request must be a module-level name
from fastapi import Request

from distilprune.export.serving.runtime import BundleError, BundleRuntime, RequestError, check_manifest, parse_texts

LATENCY_BUCKETS_S = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("distilprune_requests", "Predict requests by HTTP status", ["status"], registry=self.registry)
        self.latency = Histogram("distilprune_request_latency_seconds", "Predict request latency, receipt to answer",
                                 buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch = Histogram("distilprune_batch_texts", "Texts per model call", buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue = Gauge("distilprune_queue_texts", "Texts waiting for the model", registry=self.registry)


class Batcher:
    """One queue, one worker thread: several requests' texts per model call, each request answered apart."""

    def __init__(self, runtime: BundleRuntime, max_batch: int, max_delay_ms: float, metrics: Metrics):
        self.runtime, self.max_batch, self.max_delay_s, self.metrics = runtime, max_batch, max_delay_ms / 1e3, metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None
        self.carry: tuple[list[str], asyncio.Future] | None = None
        self.last_call_texts = 0
        self.pending = 0  # texts queued or in the model

    async def predict(self, texts: list[str]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        self.pending += len(texts)
        self.metrics.queue.set(self.pending)
        await self.queue.put((texts, future))
        return await future

    async def _collect(self) -> list[tuple[list[str], asyncio.Future]]:
        """The next model call's requests: the first waits at most max_delay for others to join it."""
        first, self.carry = self.carry or await self.queue.get(), None
        items, count = [first], len(first[0])
        # Wait for more texts only under load (the last call batched several texts): a lone client
        # then gets the bare model latency, and concurrent clients get full batches.
        deadline = time.monotonic() + (self.max_delay_s if self.last_call_texts > 1 else 0.0)
        while count < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if count + len(item[0]) > self.max_batch:
                self.carry = item  # does not fit: it opens the next call
                break
            items.append(item)
            count += len(item[0])
        return items

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            texts = [text for request_texts, _ in items for text in request_texts]
            self.last_call_texts = len(texts)
            self.metrics.batch.observe(len(texts))
            try:
                predictions = await loop.run_in_executor(self.executor, self.runtime.predict, texts)
            except Exception as error:  # a model failure answers the requests of this call, the worker goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
            else:
                start = 0
                for request_texts, future in items:
                    if not future.done():
                        future.set_result(predictions[start : start + len(request_texts)])
                    start += len(request_texts)
            self.pending -= len(texts)
            self.metrics.queue.set(self.pending)


def _lifespan(state: dict, metrics: Metrics, bundle: Path, max_batch: int, max_delay_ms: float, threads: int | None,
              files_checked: int | None):
    """Start: check the manifest (unless the caller did), load and warm up the model, start the batcher.
    Stop: answer what is queued."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        state["files_checked"] = check_manifest(bundle) if files_checked is None else files_checked
        runtime = BundleRuntime(bundle, threads=threads)
        # One call at the largest shape a model call can take (max_batch texts filling the window):
        # ONNX Runtime's memory arena grows to its working size now, not under the first full batch.
        long_text = " ".join(["warm-up"] * runtime.max_seq_len)
        one, full = (["warm-up", "warm-up"], [long_text, long_text]) if runtime.text_pairs else ("warm-up", long_text)
        if runtime.qa is not None:
            one, full = {"question": "warm-up?", "context": "warm-up"}, {"question": "warm-up?", "context": long_text}
        runtime.predict([one])
        runtime.predict([full] * max_batch)
        state["runtime"] = runtime
        state["batcher"] = batcher = Batcher(runtime, max_batch, max_delay_ms, metrics)
        batcher.task = asyncio.create_task(batcher.run())
        state["ready"] = True
        yield
        state["ready"] = False
        while batcher.pending:  # uvicorn has let the requests in flight finish; answer any still queued
            await asyncio.sleep(0.005)
        batcher.task.cancel()
        batcher.executor.shutdown(wait=True)

    return lifespan


def create_app(bundle: Path, max_batch: int = 32, max_delay_ms: float = 5.0, threads: int | None = None,
               files_checked: int | None = None):
    """The FastAPI app for ``bundle``, loaded when the app starts. ``files_checked``: the number of files
    the caller already checked against the manifest; None = check them at start."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    state: dict = {"ready": False}
    metrics = Metrics()
    app = FastAPI(title="distilprune bundle server", lifespan=_lifespan(state, metrics, bundle, max_batch, max_delay_ms, threads, files_checked),
                  docs_url=None, redoc_url=None)

    def error(status: int, message: str) -> JSONResponse:
        metrics.requests.labels(status=str(status)).inc()
        return JSONResponse({"error": message}, status_code=status)

    @app.post("/v1/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        if not state["ready"]:
            return error(503, "The model is not ready yet (or the server is stopping); retry shortly.")
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as problem:
            return error(400, f"The request body is not valid JSON ({problem}).")
        try:
            texts = parse_texts(payload, max_batch, pairs=state["runtime"].text_pairs,
                                questions=state["runtime"].qa is not None)
            state["runtime"].check_questions(texts)  # a question too long for the window: 400, before batching
        except RequestError as problem:
            return error(problem.status, str(problem))
        try:
            predictions = await state["batcher"].predict(texts)
        except Exception as problem:  # the model itself failed: say so in one line, no stack trace
            return error(500, f"The model failed on this request: {type(problem).__name__}: {str(problem)[:200]}")
        metrics.requests.labels(status="200").inc()
        metrics.latency.observe(time.perf_counter() - start)
        return {"predictions": predictions, "model": state["runtime"].model_file}

    @app.get("/v1/health/live")
    async def live():
        return {"status": "live"}

    @app.get("/v1/health/ready")
    async def ready():
        if state["ready"]:
            return {"status": "ready"}
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/v1/metadata")
    async def metadata():
        if "runtime" not in state:
            return JSONResponse({"error": "The model is not loaded yet."}, status_code=503)
        return {**state["runtime"].metadata(), "bundle": str(bundle), "manifest_files_checked": state["files_checked"],
                "max_batch": max_batch, "max_delay_ms": max_delay_ms}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(404)
    async def not_found(request, exc):
        return JSONResponse({"error": f"No endpoint {request.method} {request.url.path}; see /v1/metadata."}, status_code=404)

    @app.exception_handler(405)
    async def wrong_method(request, exc):
        return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}."}, status_code=405)

    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distilprune serve", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the bundle directory (holds serving.json and manifest.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=32, help="most texts in one model call (and in one request)")
    parser.add_argument("--max-delay-ms", type=float, default=5.0, help="how long the first queued text waits for others")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: CPUs available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_batch < 1 or args.max_delay_ms < 0 or (args.threads is not None and args.threads < 1):
        print("error: --max-batch and --threads must be at least 1 and --max-delay-ms at least 0.", file=sys.stderr)
        return 2
    try:  # fail before binding the port: a tampered or incomplete bundle is never served
        files_checked = check_manifest(args.bundle)
        BundleRuntime(args.bundle, threads=1, load_model=False)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import uvicorn

    app = create_app(args.bundle, args.max_batch, args.max_delay_ms, args.threads, files_checked)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
