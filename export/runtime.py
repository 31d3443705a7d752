"""The base layer of export and verification: ONNX Runtime sessions, timing, latency inputs, machine
facts, sha256 and atomic writes.

Standard library, numpy and onnxruntime only (onnxruntime imported when a session is made), because
it is copied into every serving bundle beside the verifier (as ``verify_runtime.py``) and because the
export times models in a child process that must not load PyTorch, Lightning or W&B.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import statistics
import time
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

# (report name, /proc/cpuinfo flag): the instruction sets INT8 and bf16 kernels depend on.
ISA_FLAGS = (
    ("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512 VNNI", "avx512_vnni"),
    ("AVX-512 BF16", "avx512_bf16"), ("AMX", "amx_tile"),
)


def import_onnxruntime():
    """The onnxruntime module, or ImportError with what to install."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "onnxruntime is not installed in this Python environment, so the bundle's models cannot be "
            "run. Install it (pip install onnxruntime, or onnxruntime-gpu on a CUDA machine) and run the "
            "verification again."
        ) from None
    return onnxruntime


def package_version(package: str) -> str:
    """Installed version of ``package`` without importing it ("not installed" when absent)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def threads_text(threads) -> str:
    """'1 thread', '2 threads'; any other value (a '1/2' of several runs, a missing '?') as given + 'threads'."""
    return f"{threads} thread" if threads == 1 else f"{threads} threads"


def available_threads() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# files


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large models do not load into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def replacing(path: Path):
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed onto ``path``,
    when it fails it is removed. A reader never sees a half-written ``path``.

        with replacing(out) as tmp:
            writer.save(str(tmp))
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never a truncated file."""
    with replacing(path) as tmp:
        tmp.write_text(text)


# --------------------------------------------------------------------------------------------
# machine description


def cpu_model_and_flags() -> tuple[str | None, set[str]]:
    """(CPU model name, feature flags) from /proc/cpuinfo; (None, empty) where it does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, set()
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def instruction_sets() -> list[str]:
    """Names of the INT8/bf16-relevant instruction sets this CPU reports (see :data:`ISA_FLAGS`)."""
    _, flags = cpu_model_and_flags()
    return [name for name, flag in ISA_FLAGS if flag in flags]


def machine_info(threads: int) -> dict:
    """CPU model, the instruction sets INT8/bf16 kernels depend on, threads and library versions.

    Read from /proc/cpuinfo (Linux) with ``platform`` as the fallback, so no extra package is needed;
    library versions come from package metadata, so nothing heavy is imported.
    """
    model, flags = cpu_model_and_flags()
    try:
        ort = import_onnxruntime()
        ort_version, providers = ort.__version__, ort.get_available_providers()
    except ImportError:
        ort_version, providers = "not installed", []
    return {
        "cpu": model or platform.processor() or platform.machine() or "unknown",
        "instruction_sets": [name for name, flag in ISA_FLAGS if flag in flags],
        "threads": threads,
        "logical_cores": os.cpu_count() or 1,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort_version,
        "onnxruntime_providers": providers,
        "torch": package_version("torch"),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------------------------
# sessions, inputs and timing


def make_session(model_path: Path, threads: int, provider: str = "cpu"):
    """An ONNX Runtime session with explicit threads: ``threads`` intra-op, 1 inter-op, sequential.

    ``provider`` is "cpu" or "cuda" (CUDA first, CPU for any node CUDA cannot run).
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"] if provider == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "cuda" and hasattr(ort, "preload_dlls"):
        # CUDA and cuDNN may live in nvidia-* wheels (torch's, or onnxruntime-gpu[cuda,cudnn]) that the
        # dynamic loader does not search; load them first so the CUDA provider starts.
        with contextlib.suppress(Exception):
            ort.preload_dlls()
    return ort.InferenceSession(str(model_path), options, providers=providers)


def cuda_execution_provider_available() -> bool:
    """Whether the installed ONNX Runtime offers the CUDA execution provider (onnxruntime-gpu with its
    CUDA libraries): where it does, verification runs the fp16 graph on the GPU through IOBinding."""
    try:
        return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    except Exception:  # onnxruntime missing is reported by the checks themselves
        return False


def random_inputs(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The latency inputs: fixed-seed random token ids with a full attention mask, (batch, seq) int64 each."""
    rng = np.random.default_rng(seed)
    # Skip the first ids (special tokens in WordPiece vocabularies) where the vocabulary allows it.
    low = min(1000, vocab_size // 2)
    input_ids = rng.integers(low, vocab_size, size=(batch_size, seq_len), dtype=np.int64)
    return input_ids, np.ones_like(input_ids)


def session_feed(session, input_ids: np.ndarray, attention_mask: np.ndarray,
                 token_type_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The feed for ``session``: input_ids and attention_mask, plus token_type_ids (segment 0 where
    not given) when the model takes them (a pair-task student with segment embeddings)."""
    feed = {"input_ids": input_ids, "attention_mask": attention_mask}
    if any(i.name == "token_type_ids" for i in session.get_inputs()):
        feed["token_type_ids"] = token_type_ids if token_type_ids is not None else np.zeros_like(input_ids)
    return feed


SPAN_OUTPUTS = ("start_logits", "end_logits")  # a question-answering model's two outputs


def run_logits(session, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The model's logits as the PyTorch student returns them: (batch, labels), (batch, seq, labels),
    or for a question-answering model (batch, seq, 2) stacked from its start_logits and end_logits."""
    names = [output.name for output in session.get_outputs()]
    if tuple(names[:2]) == SPAN_OUTPUTS:
        start, end = session.run(list(SPAN_OUTPUTS), feed)
        return np.stack([start, end], axis=-1)
    return session.run(names[:1], feed)[0]


# Untimed calls continue for at least this long: another session's (or PyTorch's) thread pool keeps
# spinning for a while after its last call, and timing through that competes with it for the cores.
MIN_WARMUP_SECONDS = 0.1


def warm_up(fn, calls: int, seconds: float = MIN_WARMUP_SECONDS) -> None:
    """``calls`` untimed calls of ``fn()``, continued until ``seconds`` have passed (none when calls is 0)."""
    end = time.perf_counter() + seconds
    done = 0
    while done < calls or (calls and time.perf_counter() < end):
        fn()
        done += 1


def time_samples(fn, warmup: int, runs: int, max_seconds: float | None = None, min_runs: int = 3) -> list[float]:
    """Wall times in milliseconds of ``runs`` calls of ``fn()`` after ``warmup`` untimed calls (lasting
    at least :data:`MIN_WARMUP_SECONDS` when ``warmup`` > 0). With ``max_seconds``, timing stops early
    once the timed calls have taken that long and at least ``min_runs`` were made (a slow cell, e.g.
    batch 32 x sequence 128 in fp32 at hundreds of ms a call, then costs seconds, not tens of seconds)."""
    warm_up(fn, warmup)
    samples = []
    spent = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        samples.append(elapsed * 1e3)
        spent += elapsed
        if max_seconds is not None and spent >= max_seconds and len(samples) >= min_runs:
            break
    return samples


# The parallel-threads probe: a round's speedup (1 thread / all threads) below PARALLEL_MIN_SPEEDUP means
# the threads did not run in parallel (or the model gains nothing from them); rounds are kept when their
# speedup is within PARALLEL_RELATIVE of the best round's. The 4-layer students reach 1.45-1.9x on 2
# threads when the host runs them in parallel and 0.65-1.1x when it does not (2026-11-30).
PARALLEL_MIN_SPEEDUP = 1.2
PARALLEL_RELATIVE = 1.25
PROBE_CALLS = 4
# When no planned round ran the threads in parallel, more rounds are timed for at most this long (s),
# until this many of them do (export.parallel_wait_seconds, verify --parallel-wait).
PARALLEL_WAIT_SECONDS = 30.0
PARALLEL_ROUNDS_WANTED = 2


class ParallelProbe:
    """Does this machine run one session's threads in parallel right now?

    On a shared (virtualized) host the threads of one ONNX Runtime session sometimes stop running in
    parallel for seconds to minutes. Measured (2026-11-30, 2 vCPUs, unpruned 4-layer INT8 student,
    batch 1, sequence 128): on 2 threads 3.8-4.1 ms, then 6.0-6.5 ms for a while; on 1 thread
    6.4-7.2 ms throughout; two 1-thread sessions side by side were not slowed. A multi-threaded
    latency taken in such a stretch measures the host, not the model. The probe times one model on 1
    thread and on ``threads`` threads (fixed input, :data:`PROBE_CALLS` calls each) and returns the
    speedup; the timing code keeps the rounds whose probe came close to the best round's
    (:func:`kept_rounds`). Where the probe's model is itself timed at the probe's cell, the round's
    own samples are checked too (:meth:`speedup_of`), and a round counts with the smallest speedup.
    """

    def __init__(self, model_path: Path, threads: int, input_ids: np.ndarray, attention_mask: np.ndarray):
        self.single = make_session(model_path, 1)
        self.multi = make_session(model_path, threads)
        self.feed = session_feed(self.single, input_ids, attention_mask)
        self.cell = tuple(input_ids.shape)  # (batch, seq) of the probe's input

    def _median_ms(self, session) -> float:
        warm_up(lambda: session.run(None, self.feed), 1, seconds=0)
        return statistics.median(time_samples(lambda: session.run(None, self.feed), 0, PROBE_CALLS))

    def speedup(self) -> float:
        """Median 1-thread time / median all-threads time, each after one untimed call."""
        return self._median_ms(self.single) / self._median_ms(self.multi)

    def speedup_of(self, samples: list[float]) -> float:
        """Median 1-thread time now / median of ``samples``: the all-threads times (ms) of this probe's
        model at this probe's cell that a round just took. It reads the very samples a round keeps
        (the host can change state between a probe and a round), against a 1-thread time, which the
        host's state barely moves (docs/results.md, "This machine runs at two speeds")."""
        return self._median_ms(self.single) / statistics.median(samples)


def never_parallel(speedups: list[float], min_speedup: float = PARALLEL_MIN_SPEEDUP) -> bool:
    """Whether no round's probe speedup reached ``min_speedup``: the host never ran the threads in
    parallel while they were timed (or the model gains too little from more threads to tell)."""
    return max(speedups) < min_speedup


def kept_rounds(count: int, speedups: list[float] | None = None) -> list[int]:
    """Indices of the ``count`` rounds to summarize, given each round's probe speedup: those within
    PARALLEL_RELATIVE of the best round's, when the best reached PARALLEL_MIN_SPEEDUP; else all (no
    probe, or the threads never ran in parallel: nothing better to choose)."""
    if not speedups or len(speedups) != count or never_parallel(speedups):
        return list(range(count))
    return [i for i, s in enumerate(speedups) if s >= max(speedups) / PARALLEL_RELATIVE]


def more_rounds_wanted(planned: list[float], every: list[float]) -> bool:
    """Whether to time another round: none of the ``planned`` rounds' probe speedups reached
    PARALLEL_MIN_SPEEDUP, and fewer than PARALLEL_ROUNDS_WANTED of ``every`` round so far (planned and
    extra) have."""
    return (bool(planned) and never_parallel(planned)
            and sum(s >= PARALLEL_MIN_SPEEDUP for s in every) < PARALLEL_ROUNDS_WANTED)


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted samples by nearest rank."""
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def percentiles(samples: list[float]) -> dict:
    """p50 (median), p95 and p99 (nearest rank) of ``samples`` in ms, rounded to the microsecond."""
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 3), "p95": round(nearest_rank(ordered, 0.95), 3),
            "p99": round(nearest_rank(ordered, 0.99), 3), "runs": len(ordered)}


def time_ms(fn, warmup: int, runs: int) -> dict:
    """p50/p95/p99 wall time of ``fn()`` in milliseconds after ``warmup`` untimed calls."""
    return percentiles(time_samples(fn, warmup, runs))
