"""Verify a serving bundle on this machine: checksums, parity vectors, latency grid and budget.

    python -m distilprune.export.verify <bundle> [--threads N] [--runs 20] [--budget-ms 10] [--json out.json]
    python <bundle>/verify_bundle.py <bundle>          # the copy shipped inside every bundle

Standalone on purpose: the standard library, numpy and onnxruntime only (no distilprune, no torch),
so a serving team can verify a bundle with nothing but the bundle. Exit status: 0 every check
passed, 1 a check failed, 2 the input is not a usable bundle (or onnxruntime is missing).

Checks, in order: the manifest exists; every file it lists is present with the same sha256; the
files a server needs are present; both ONNX models accept the inputs the spec describes; both
reproduce the stored parity logits within the stored tolerance, with the same argmax; the latency
grid runs; the INT8 p95 at the budget cell is within the latency budget. When ONNX Runtime has the
CUDA execution provider, parity and latency are also run on an fp16 graph with IOBinding; when it
has not, that part is recorded as skipped, never as an error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__:  # imported as distilprune.export.verify
    from distilprune.export.runtime import (
        PARALLEL_MIN_SPEEDUP, PARALLEL_RELATIVE, PARALLEL_WAIT_SECONDS, ParallelProbe, available_threads,
        never_parallel, threads_text,
        import_onnxruntime, kept_rounds, machine_info, make_session, more_rounds_wanted, percentiles, random_inputs,
        run_logits, sha256_file, session_feed, time_ms, time_samples, write_atomic,
    )
else:  # run as a script: the copy inside a bundle (runtime.py copied beside it as verify_runtime.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # python -I and runpy do not add it
    try:
        from verify_runtime import (
            PARALLEL_MIN_SPEEDUP, PARALLEL_RELATIVE, PARALLEL_WAIT_SECONDS, ParallelProbe, available_threads,
            never_parallel, threads_text,
            import_onnxruntime, kept_rounds, machine_info, make_session, more_rounds_wanted, percentiles, random_inputs,
            run_logits, sha256_file, session_feed, time_ms, time_samples, write_atomic,
        )
    except ImportError:  # export/verify.py run from a source checkout, beside runtime.py
        from runtime import (
            PARALLEL_MIN_SPEEDUP, PARALLEL_RELATIVE, PARALLEL_WAIT_SECONDS, ParallelProbe, available_threads,
            never_parallel, threads_text,
            import_onnxruntime, kept_rounds, machine_info, make_session, more_rounds_wanted, percentiles, random_inputs,
            run_logits, sha256_file, session_feed, time_ms, time_samples, write_atomic,
        )

MANIFEST = "manifest.json"
INPUT_SPEC = "input_spec.json"
PARITY = "parity.json"
CONFIG = "config.json"
RUNTIME_COPY = "verify_runtime.py"  # export/runtime.py as copied into a bundle, beside verify_bundle.py
MODELS = {"onnx_fp32": "model.onnx", "onnx_int8": "model.int8.onnx"}  # report key -> file in the bundle
REQUIRED = ("model.onnx", "model.int8.onnx", CONFIG, INPUT_SPEC, PARITY)
# A Hugging Face tokenizer is usable from tokenizer_config.json plus one of these vocabularies.
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_VOCABS = ("tokenizer.json", "vocab.txt")
DEFAULT_GRID = {"batch_sizes": [1, 8, 32], "seq_lens": [32, 128]}
DEFAULT_BUDGET_CELL = {"batch_size": 1, "seq_len": 128}
# fp16 keeps ~3 significant digits; through a few layers logits of magnitude ~5 move by ~1e-2.
GPU_FP16_ATOL = 5e-2


class BundleError(Exception):
    """The input cannot be verified at all (not a bundle, onnxruntime missing): exit status 2."""


def bundle_files(bundle: Path) -> list[str]:
    """Every file under ``bundle`` as a sorted posix path relative to it, except the manifest itself."""
    files = []
    for path in bundle.rglob("*"):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(bundle).as_posix()
            if rel != MANIFEST:
                files.append(rel)
    return sorted(files)


def _ort():
    try:
        return import_onnxruntime()
    except ImportError as error:
        raise BundleError(str(error)) from None


# --------------------------------------------------------------------------------------------
# ONNX Runtime sessions and timing


def bound_runner(session, input_ids: np.ndarray, attention_mask: np.ndarray, device: str = "cuda",
                 token_type_ids: np.ndarray | None = None):
    """(run, fetch) with IOBinding: inputs copied to ``device`` once, the outputs left there.

    Timing ``run`` then measures the model, not host-to-device copies; ``fetch`` runs once and
    returns the logits on the host (a question-answering model's start and end logits stacked, as
    :func:`run_logits`). Every input the model takes is bound (``token_type_ids`` 0 where not given).
    ``device`` is "cuda" on the GPU path ("cpu" works too).
    """
    ort = _ort()
    binding = session.io_binding()
    feed = session_feed(session, input_ids, attention_mask, token_type_ids)
    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), device, 0) for name, value in feed.items()}
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    outputs = [output.name for output in session.get_outputs()]
    for name in outputs:
        binding.bind_output(name, device, 0)

    def run():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # wait for the device so the wall time covers the kernels

    def fetch() -> np.ndarray:
        run()
        fetched = binding.copy_outputs_to_cpu()
        return np.stack(fetched[:2], axis=-1) if outputs[:2] == ["start_logits", "end_logits"] else fetched[0]

    return run, fetch


def fp16_copy(model_path: Path, out_path: Path) -> Path:
    """Write an fp16 version of an fp32 ONNX model (inputs and outputs kept int64/fp32) for the GPU path.

    Raises:
        ImportError: onnx or onnxruntime.transformers.float16 is not installed.
    """
    import onnx
    from onnxruntime.transformers import float16

    model = float16.convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


def _run_cell(session, provider: str, input_ids: np.ndarray, attention_mask: np.ndarray, warmup: int, runs: int) -> dict:
    if provider == "cuda":
        run, _ = bound_runner(session, input_ids, attention_mask, "cuda")
    else:
        feed = session_feed(session, input_ids, attention_mask)

        def run():
            session.run(None, feed)

    return time_ms(run, warmup, runs)


def latency_grid(
    model_path: Path,
    batch_sizes,
    seq_lens,
    threads: int,
    warmup: int,
    runs: int,
    vocab_size: int,
    provider: str = "cpu",
    session=None,
) -> list[dict]:
    """Latency of one ONNX model over batch sizes x sequence lengths, in milliseconds.

    One session for the whole grid (``threads`` intra-op threads, 1 inter-op, sequential), fixed-seed
    random ids with a full mask, ``warmup`` untimed calls then ``runs`` timed calls per cell.

    Returns:
        one dict per cell: ``{"batch_size", "seq_len", "p50", "p95", "p99", "runs"}`` (ms).
    """
    session = session or make_session(Path(model_path), threads, provider)
    grid = [(int(b), int(s)) for b in batch_sizes for s in seq_lens]
    measured = {}
    # Smallest cells first: timed after large batches, small ones ran about 30% slower (2 cores).
    for batch_size, seq_len in sorted(grid, key=lambda cell: cell[0] * cell[1]):
        input_ids, attention_mask = random_inputs(batch_size, seq_len, vocab_size)
        measured[(batch_size, seq_len)] = _run_cell(session, provider, input_ids, attention_mask, warmup, runs)
    return [{"batch_size": b, "seq_len": s, **measured[(b, s)]} for b, s in grid]


# --------------------------------------------------------------------------------------------
# the checks


class _Checks:
    def __init__(self) -> None:
        self.items: list[dict] = []

    def add(self, name: str, ok: bool, detail: str, skipped: bool = False) -> bool:
        item = {"name": name, "ok": bool(ok), "detail": detail}
        if skipped:
            item["skipped"] = True
        self.items.append(item)
        return ok


def _read_json(path: Path) -> tuple[dict | None, str]:
    try:
        data = json.loads(path.read_text())
        return (data, "") if isinstance(data, dict) else (None, f"{path.name} is not a JSON object")
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, ValueError) as error:
        return None, f"{path.name} is not readable JSON ({error})"


def measured_threads(bundle: Path) -> int | None:
    """The intra-op thread count the bundle's own latencies were measured with (parity.json's
    ``produced_on.threads``, which the export writes with ``export.threads``); None when unknown."""
    parity, _ = _read_json(Path(bundle) / PARITY)
    threads = ((parity or {}).get("produced_on") or {}).get("threads")
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else None


def _looks_like_bundle(bundle: Path) -> bool:
    return any((bundle / name).exists() for name in (MANIFEST, INPUT_SPEC, PARITY, *MODELS.values()))


def _check_manifest(bundle: Path, checks: _Checks) -> None:
    manifest, problem = _read_json(bundle / MANIFEST)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        checks.add("manifest", False, problem or f"{MANIFEST} has no 'files' table; regenerate the bundle")
        checks.add("checksums", False, f"cannot check checksums without a valid {MANIFEST}")
        return
    listed = manifest["files"]
    checks.add("manifest", True, f"{MANIFEST} lists {len(listed)} files")
    problems, missing = [], []
    for rel, entry in sorted(listed.items()):
        path = bundle / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:  # a manifest never points outside its bundle
            problems.append(f"{rel}: listed path is outside the bundle")
            continue
        if not path.is_file():
            missing.append(rel)
            continue
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            problems.append(f"{rel}: sha256 mismatch, expected {entry.get('sha256')} actual {actual}")
    if missing:
        problems.insert(0, "missing: " + ", ".join(missing))
    unlisted = sorted(set(bundle_files(bundle)) - set(listed))
    note = f"; {len(unlisted)} file(s) not in the manifest (not checked): {', '.join(unlisted)}" if unlisted else ""
    if problems:
        checks.add("checksums", False, "; ".join(problems) + note)
    else:
        checks.add("checksums", True, f"all {len(listed)} files match their sha256{note}")


def _check_required(bundle: Path, spec: dict | None, checks: _Checks) -> None:
    missing = [name for name in REQUIRED if not (bundle / name).is_file()]
    tokenizer_files = list((spec or {}).get("tokenizer", {}).get("files", []))
    if not tokenizer_files:  # no spec to say which: the minimum a Hugging Face tokenizer loads from
        tokenizer_files = [TOKENIZER_CONFIG]
        if not any((bundle / name).is_file() for name in TOKENIZER_VOCABS):
            missing.append(" or ".join(TOKENIZER_VOCABS))
    missing += [name for name in tokenizer_files if not (bundle / name).is_file()]
    if missing:
        checks.add("required files", False, "missing: " + ", ".join(missing))
    else:
        checks.add("required files", True, f"models, config, spec, parity and tokenizer ({', '.join(tokenizer_files)}) present")


def _check_interface(name: str, session, spec: dict, checks: _Checks) -> None:
    """The model's inputs/outputs are those the spec promises a server (names, int64/float32, labels)."""
    inputs = {i.name: i.type for i in session.get_inputs()}
    wanted = {i["name"]: "tensor(int64)" for i in spec.get("inputs", [])}
    outputs = {o.name: o for o in session.get_outputs()}
    problems = [f"input {n!r} is {inputs.get(n, 'absent')}, spec says {t}" for n, t in wanted.items() if inputs.get(n) != t]
    for out in spec.get("outputs", []):
        found = outputs.get(out["name"])
        if found is None:
            problems.append(f"output {out['name']!r} is absent")
            continue
        labels = out.get("shape", [None, None])[-1]
        if isinstance(labels, int) and isinstance(found.shape[-1], int) and found.shape[-1] != labels:
            problems.append(f"output {out['name']!r} has {found.shape[-1]} labels, spec says {labels}")
    checks.add(f"interface {name}", not problems, "; ".join(problems) or "inputs and outputs match input_spec.json")


def _parity(name: str, logits: np.ndarray, expected: np.ndarray, atol: float, checks: _Checks) -> np.ndarray:
    if logits.shape != expected.shape:
        checks.add(f"parity {name}", False, f"logits shape {logits.shape} differs from the stored {expected.shape}")
        return logits
    diff = float(np.abs(logits - expected).max())
    ok = diff <= atol
    checks.add(f"parity {name}", ok, f"max |logit diff| {diff:.3g} {'<=' if ok else '>'} tolerance {atol:g}")
    return logits


def _argmax_check(name: str, logits: np.ndarray, expected: np.ndarray, atol: float, checks: _Checks,
                  over_positions: bool = False) -> None:
    """Predicted labels equal the stored ones, except where the stored top-2 margin is within the
    tolerance (a legitimate tie that a within-tolerance change may flip). ``over_positions``: the
    logits are (windows, tokens, 2) start/end logits, and the best start and end token are compared."""
    if logits.shape != expected.shape:
        return
    if over_positions:  # one row per window and side (start, end), over its tokens
        logits, expected = logits.transpose(0, 2, 1), expected.transpose(0, 2, 1)
    # (texts, labels), or (texts, tokens, labels) for a token classifier: one row per scored position
    logits, expected = logits.reshape(-1, logits.shape[-1]), expected.reshape(-1, expected.shape[-1])
    top2 = np.sort(expected, axis=-1)[:, -2:] if expected.shape[-1] > 1 else np.zeros((len(expected), 2))
    clear = (top2[:, 1] - top2[:, 0]) > 2 * atol
    flipped = (logits.argmax(-1) != expected.argmax(-1)) & clear
    rows = np.flatnonzero(flipped).tolist()
    ties = len(expected) - int(clear.sum())
    checks.add(
        f"argmax {name}", not rows,
        f"predicted labels differ from the stored ones on rows {rows}" if rows
        else f"labels agree on all {int(clear.sum())} rows with a clear margin ({ties} near-ties within 2 x atol not compared)",
    )


def _vocab_size(bundle: Path, spec: dict | None) -> int:
    config, _ = _read_json(bundle / CONFIG)
    for source in (config or {}, (spec or {}).get("tokenizer", {})):
        if isinstance(source.get("vocab_size"), int) and source["vocab_size"] > 0:
            return source["vocab_size"]
    return 30522  # BERT's WordPiece size; only the spread of random ids depends on it


def _max_positions(bundle: Path, spec: dict | None) -> int | None:
    config, _ = _read_json(bundle / CONFIG)
    value = (config or {}).get("max_position_embeddings") or (spec or {}).get("max_position_embeddings")
    return int(value) if value else None


def _gpu_path(bundle: Path, parity: dict | None, grid: dict | None, warmup: int, runs: int, vocab: int, checks: _Checks) -> dict:
    """Parity and latency with the CUDA execution provider on an fp16 copy of model.onnx."""
    ort = _ort()
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return {"status": f"skipped: CUDA execution provider not available (providers: {', '.join(providers)})"}
    if not isinstance(parity, dict) and grid is None:
        return {"status": "skipped: nothing to run on the GPU (no parity vectors and no latency grid)"}
    with tempfile.TemporaryDirectory(prefix="verify-fp16-") as tmp:
        fp16_path = Path(tmp) / "model.fp16.onnx"
        try:
            session = make_session(fp16_copy(bundle / "model.onnx", fp16_path), 1, "cuda")
        except ImportError as error:
            return {"status": f"skipped: cannot build the fp16 graph, onnx or onnxruntime.transformers.float16 "
                              f"is not importable ({error})"}
        except Exception as error:  # a conversion or CUDA load failure is a finding, reported as such
            checks.add("gpu fp16", False, f"could not build or load the fp16 CUDA model: {str(error).strip()[:300]}")
            return {"status": f"failed: {str(error).strip()[:300]}"}
        if session.get_providers()[0] != "CUDAExecutionProvider":
            # ORT lists CUDA when the package has it but falls back to CPU when the CUDA libraries are missing
            return {"status": f"skipped: CUDA execution provider listed but did not start (session runs on {session.get_providers()})"}
        result: dict = {"status": "measured", "provider": "CUDAExecutionProvider", "model": "model.onnx converted to fp16 (IO kept fp32)"}
        try:
            if parity is not None:
                ids = np.asarray(parity["inputs"]["input_ids"], dtype=np.int64)
                mask = np.asarray(parity["inputs"]["attention_mask"], dtype=np.int64)
                types = parity["inputs"].get("token_type_ids")
                expected = np.asarray(parity["models"]["fp32"]["logits"], dtype=np.float32)
                atol = float(parity.get("gpu_fp16_atol", GPU_FP16_ATOL))
                logits = bound_runner(session, ids, mask, "cuda",
                                      None if types is None else np.asarray(types, dtype=np.int64))[1]()
                _parity("gpu fp16", logits, expected, atol, checks)
                _argmax_check("gpu fp16", logits, expected, atol, checks)
                result["parity_max_abs_diff"] = float(np.abs(logits - expected).max()) if logits.shape == expected.shape else None
                result["parity_atol"] = atol
            if grid is not None:
                result["latency_grid"] = {"onnx_fp16_cuda": latency_grid(
                    fp16_path, grid["batch_sizes"], grid["seq_lens"], 1, warmup, runs, vocab, "cuda", session=session)}
        except Exception as error:  # a CUDA run failure is a failed check, not a crash
            checks.add("gpu fp16", False, f"running the fp16 model on CUDA failed: {str(error).strip()[:300]}")
            result["status"] = f"failed: {str(error).strip()[:300]}"
    return result


def _load_sessions(bundle: Path, threads: int, checks: _Checks) -> dict:
    sessions: dict[str, object] = {}
    for key, filename in MODELS.items():
        if (bundle / filename).is_file():
            try:
                sessions[key] = make_session(bundle / filename, threads)
            except Exception as error:  # ORT's own message says what is wrong with the graph
                checks.add(f"load {filename}", False, f"ONNX Runtime cannot load {filename}: {str(error).strip()[:300]}")
    return sessions


def _check_parity_file(bundle: Path, sessions: dict, checks: _Checks) -> dict | None:
    """Rerun parity.json's inputs on both models; returns the parity data (None when unusable)."""
    parity, parity_problem = _read_json(bundle / PARITY)
    if parity is None:
        checks.add("parity", False, parity_problem)
        return None
    try:
        inputs = {name: np.asarray(values, dtype=np.int64) for name, values in parity["inputs"].items()}
        stored = {fmt: (np.asarray(parity["models"][fmt]["logits"], dtype=np.float32), float(parity["models"][fmt]["atol"]))
                  for fmt in ("fp32", "int8")}
    except (KeyError, TypeError, ValueError) as error:
        checks.add("parity", False, f"{PARITY} is malformed ({error!r}); regenerate the bundle")
        return None
    for fmt, key in (("fp32", "onnx_fp32"), ("int8", "onnx_int8")):
        if key not in sessions:
            checks.add(f"parity {fmt}", False, f"{MODELS[key]} could not be run")
            continue
        expected, atol = stored[fmt]
        session = sessions[key]
        logits = run_logits(session, session_feed(session, inputs["input_ids"], inputs["attention_mask"],
                                                  inputs.get("token_type_ids")))
        _parity(fmt, logits, expected, atol, checks)
        over_positions = [o.name for o in session.get_outputs()][:2] == ["start_logits", "end_logits"]
        _argmax_check(fmt, logits, expected, atol, checks, over_positions)
    return parity


def _serving_runtime(bundle: Path):
    """The bundle's own post-processing: serving_runtime.py beside this file in a bundle, else the
    package's. None for a bundle without serving files."""
    if not (bundle / "serving.json").is_file():
        return None
    if __package__:
        from distilprune.export.serving import runtime as serving
    else:
        sys.path.insert(0, str(bundle.resolve()))
        import serving_runtime as serving
    return serving


def prediction_key(prediction: dict) -> object:
    """What must agree between two runs of the same text: the label, or the entities' spans."""
    if "entities" in prediction:
        return [(e["type"], e["start"], e["end"]) for e in prediction["entities"]]
    if "answer" in prediction:
        return (prediction["answer"], prediction["start"], prediction["end"])
    return prediction.get("label")


def _check_predictions(bundle: Path, parity: dict | None, threads: int, checks: _Checks) -> list[dict]:
    """Run parity.json's texts through the serving path (tokenizer, served model, post-processing)
    and compare with the predictions stored at export; returns them for printing."""
    stored = (parity or {}).get("predictions")
    if not stored:
        return []
    try:
        serving = _serving_runtime(bundle)
    except ImportError as error:  # the serving runtime needs the tokenizers package; the model checks do not
        checks.add("predictions", True, f"not checked: the serving runtime cannot be imported here ({error}); "
                   f"pip install tokenizers to check the parity texts' predictions", skipped=True)
        return []
    if serving is None:
        return []
    try:
        engine = serving.BundleRuntime(bundle, model_file=stored["model"], threads=threads)
        found = engine.predict(list(stored["texts"]))
    except Exception as error:  # the serving path itself is broken: say how
        checks.add("predictions", False, f"the serving runtime failed on the parity texts: {type(error).__name__}: {error}")
        return []
    differ = [i for i, (a, b) in enumerate(zip(found, stored["outputs"])) if prediction_key(a) != prediction_key(b)]
    checks.add("predictions", not differ,
               f"texts {differ} predict differently from the export's {stored['model']}" if differ
               else f"{len(found)} parity texts give the stored predictions through serving_runtime.py ({stored['model']})")
    return [{"text": text, **prediction} for text, prediction in zip(stored["texts"], found)]


def _grid_sizes(bundle: Path, spec: dict | None) -> tuple[dict, list[int], int | None]:
    """(grid batch sizes and sequence lengths, sequence lengths dropped as too long, max positions)."""
    grid_sizes = dict(DEFAULT_GRID)
    if spec and isinstance(spec.get("latency_grid"), dict):
        grid_sizes = {k: [int(v) for v in spec["latency_grid"].get(k, DEFAULT_GRID[k])] for k in DEFAULT_GRID}
    max_positions = _max_positions(bundle, spec)
    too_long = [s for s in grid_sizes["seq_lens"] if max_positions and s > max_positions]
    grid_sizes["seq_lens"] = [s for s in grid_sizes["seq_lens"] if s not in too_long]
    return grid_sizes, too_long, max_positions


def verify_bundle(
    bundle: Path,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 20,
    budget_ms: float | None = None,
    grid: bool = True,
    gpu: bool = True,
    measured: dict[str, list[dict]] | None = None,
    rounds: int = 5,
    parallel_wait: float = PARALLEL_WAIT_SECONDS,
) -> dict:
    """Run every check on ``bundle`` and return ``{"ok", "checks", "latency_grid", "gpu", "machine"}``.

    Args:
        threads: ONNX Runtime intra-op threads for parity and latency; None = the threads the bundle's
            own latencies were measured with (``measured_threads``), at most the CPUs available, so the
            numbers compare with the bundle's card; the CPUs available when the bundle does not say.
        budget_ms: p95 budget for the INT8 model in ms; overrides input_spec.json's latency_budget.
        grid: measure the latency grid (the budget cell is measured either way when a budget is set).
        gpu: also verify on CUDA when available (False: recorded as skipped).
        measured: a latency grid already measured for these very files ({"onnx_int8": [cells]}, as the
            export's timing rounds write it); the budget check reads its cell instead of timing again.
        rounds: the grid is timed in this many rounds over all cells and models, ``runs`` split over them.
        parallel_wait: with more than one thread, when no round ran the threads in parallel (the
            parallel-threads probe), keep timing rounds for up to this many seconds until some do.

    Raises:
        BundleError: ``bundle`` is not a bundle directory, or onnxruntime is missing.
    """
    bundle = Path(bundle)
    if not bundle.is_dir() or not _looks_like_bundle(bundle):
        what = "does not exist" if not bundle.exists() else "is not a directory" if not bundle.is_dir() else (
            f"has none of {MANIFEST}, {INPUT_SPEC}, {PARITY}, model.onnx or model.int8.onnx")
        raise BundleError(
            f"{bundle} {what}, so it is not a distilprune serving bundle. Pass the bundle directory an "
            f"export wrote (runs/<recipe>/<time>/bundles/<checkpoint>/, the one holding model.onnx and "
            f"{MANIFEST})."
        )
    _ort()  # fail here, as unusable input, when onnxruntime is missing
    threads = threads or min(measured_threads(bundle) or available_threads(), available_threads())
    checks = _Checks()
    _check_manifest(bundle, checks)
    spec, spec_problem = _read_json(bundle / INPUT_SPEC)
    _check_required(bundle, spec, checks)

    sessions = _load_sessions(bundle, threads, checks)
    if spec is not None:
        for key, session in sessions.items():
            _check_interface(MODELS[key], session, spec, checks)
    elif spec_problem:
        checks.add("input spec", False, spec_problem)
    parity = _check_parity_file(bundle, sessions, checks)
    predictions = _check_predictions(bundle, parity, threads, checks)

    grid_sizes, too_long, max_positions = _grid_sizes(bundle, spec)
    vocab = _vocab_size(bundle, spec)
    measured = dict(measured or {})
    if grid:
        _measure_grid(bundle, sessions, grid_sizes, threads, warmup, runs, vocab, measured, checks,
                      f"; sequence lengths {too_long} skipped (over max_position_embeddings={max_positions})" if too_long else "",
                      rounds, parallel_wait)

    _check_budget(spec, budget_ms, measured, sessions, threads, warmup, runs, vocab, checks)

    gpu_result = (_gpu_path(bundle, parity, grid_sizes if grid else None, warmup, runs, vocab, checks) if gpu
                  else {"status": "skipped: turned off (--no-gpu / export.gpu=off)"})
    machine = machine_info(threads)
    return {
        "ok": all(c["ok"] for c in checks.items),
        "bundle": str(bundle),
        "checks": checks.items,
        "predictions": predictions,
        "latency_setup": {"threads": threads, "warmup": warmup, "runs": runs, "rounds": min(rounds, runs),
                          "p50": "median of the round medians", "inputs": "random token ids, full attention mask", **grid_sizes},
        "latency_grid": measured,
        "gpu": gpu_result,
        "machine": machine,
    }


# A machine can change speed for seconds at a time (another tenant's load on the host), so one
# process timing each cell once can land wholly in a slow or a fast stretch. The grid is therefore
# timed in rounds: every round passes over every cell and model (smallest cells first) with its
# share of the runs, so each cell's rounds are spread over the whole measurement.
TWO_SPEEDS = 1.25  # round medians of one cell further apart than this (max / min): flagged


def _measure_grid(bundle: Path, sessions: dict, grid_sizes: dict, threads: int, warmup: int, runs: int, vocab: int,
                  measured: dict, checks: _Checks, note: str, rounds: int = 1, parallel_wait: float = 0.0) -> None:
    """Time every grid cell of both models in ``rounds`` rounds into ``measured``; record the "latency grid" check.

    Per cell: p50 = median of the round medians, ``spread`` = their min and max, p95/p99 over all samples.
    With more than one thread the parallel-threads probe (runtime.ParallelProbe) runs before and after
    each cell's round, and at its own cell also checks that round's INT8 samples (the smallest speedup
    counts); rounds far below the cell's best speedup are left
    out (runtime.kept_rounds; ``rounds`` of ``rounds_timed``); when no round ran the threads in
    parallel, more rounds are timed for up to ``parallel_wait`` seconds until some do.
    """
    errors: dict[tuple, str] = {}
    cells = sorted(((b, q) for b in grid_sizes["batch_sizes"] for q in grid_sizes["seq_lens"]), key=lambda c: c[0] * c[1])
    rounds = min(rounds, runs)  # at least one timed run per round
    per_round = -(-runs // rounds)
    samples: dict[tuple, list[list[float]]] = {}
    speedups: dict[tuple, list[float]] = {}
    probe = _probe(bundle, sessions, threads, grid_sizes, vocab) if rounds > 1 else None
    # Smallest cells first in every round: a small cell timed right after large batches ran slower
    # (2 cores), whichever model ran them.
    probed = probe.speedup() if probe is not None else None

    def one_round(index: int) -> None:
        nonlocal probed
        for batch_size, seq_len in cells:
            measured = [probed]  # the probe before the cell's round, its own INT8 samples, the probe after it
            input_ids, attention_mask = random_inputs(batch_size, seq_len, vocab)
            for key, session in sessions.items():
                if (key, batch_size, seq_len) in errors:
                    continue
                try:
                    feed = session_feed(session, input_ids, attention_mask)
                    taken = time_samples(lambda: session.run(None, feed), warmup if index == 0 else min(warmup, 2), per_round)
                except Exception as error:  # a shape the model rejects is a finding, not a crash
                    errors[(key, batch_size, seq_len)] = (f"{MODELS[key]} at batch {batch_size}, sequence {seq_len}: "
                                                          f"{str(error).strip()[:300]}")
                    continue
                samples.setdefault((key, batch_size, seq_len), []).append(taken)
                if probe is not None and key == "onnx_int8" and (batch_size, seq_len) == probe.cell:
                    measured.append(probe.speedup_of(taken))  # the probe's own model and cell, just timed
            if probe is not None:  # the probe after this cell's round is the next one's before it
                probed = probe.speedup()
                speedups.setdefault((batch_size, seq_len), []).append(min(measured + [probed]))

    for index in range(rounds):
        one_round(index)
    # No round of the probe's cell (batch 1, the headline sequence: the cell a budget and a report's
    # headline are read at) ran with the threads in parallel: time more rounds for up to parallel_wait
    # seconds, until some do (the export's timing does the same for its headline cell). Without that
    # cell on the grid, every cell's rounds count.
    extra, started = 0, time.perf_counter()

    def watched() -> tuple[list[float], list[float]]:
        """(the planned rounds' speedups, every round's) at the probe's cell, else over every cell."""
        if probe is not None and probe.cell in speedups:
            return speedups[probe.cell][:rounds], speedups[probe.cell]
        return [v for c in speedups.values() for v in c[:rounds]], [v for c in speedups.values() for v in c]

    while samples and more_rounds_wanted(*watched()) and time.perf_counter() - started < parallel_wait:
        one_round(rounds + extra)
        extra += 1
    if extra:
        note += f"; {extra} more rounds timed because no round of the first {rounds} ran the threads in parallel"
    two_speeds = []
    for (key, batch_size, seq_len), taken in samples.items():
        timed = len(taken)
        taken = [taken[i] for i in kept_rounds(timed, speedups.get((batch_size, seq_len)))]
        medians = [statistics.median(r) for r in taken]
        cell = {"batch_size": batch_size, "seq_len": seq_len, **percentiles([t for r in taken for t in r]),
                "p50": round(statistics.median(medians), 3), "rounds": len(medians), "rounds_timed": timed,
                "spread": [round(min(medians), 3), round(max(medians), 3)]}
        measured.setdefault(key, []).append(cell)
        if min(medians) > 0 and max(medians) / min(medians) > TWO_SPEEDS:
            two_speeds.append(f"{MODELS[key]} {batch_size}x{seq_len} {min(medians):.2f}-{max(medians):.2f} ms")
    count = sum(len(v) for v in measured.values())
    missing = [MODELS[k] for k in MODELS if k not in sessions]
    ok = not errors and not missing
    speeds = (f"; round medians more than {TWO_SPEEDS}x apart (the machine changed speed while timing; rerun, or "
              f"use more --rounds): {', '.join(two_speeds)}") if two_speeds else ""
    speeds += _probe_note(speedups, threads)
    checks.add("latency grid", ok, f"{count} cells measured ({threads_text(threads)}, {warmup} warmup, "
                                   f"{runs} runs in {rounds} round{'s' if rounds != 1 else ''}){note}{speeds}" if ok
               else "; ".join(list(errors.values()) + [f"{m} could not be loaded" for m in missing]))


def _probe(bundle: Path, sessions: dict, threads: int, grid_sizes: dict, vocab: int):
    """The parallel-threads probe on the INT8 model at batch 1 (sequence 128 or the grid's longest below it);
    None with one thread or without a loadable INT8 model."""
    if threads < 2 or "onnx_int8" not in sessions:
        return None
    seq_len = max([q for q in grid_sizes["seq_lens"] if q <= DEFAULT_BUDGET_CELL["seq_len"]] or [min(grid_sizes["seq_lens"])])
    return ParallelProbe(bundle / MODELS["onnx_int8"], threads, *random_inputs(1, seq_len, vocab))


def _probe_note(speedups: dict, threads: int) -> str:
    """One clause on what the parallel-threads probe saw and which rounds were kept."""
    if not speedups:
        return ""
    values = [v for cell in speedups.values() for v in cell]
    kept = sum(len(kept_rounds(len(cell), cell)) for cell in speedups.values())
    if never_parallel(values):
        state = (f"below {PARALLEL_MIN_SPEEDUP}x throughout, so every round is kept: the host may not have run "
                 f"the threads in parallel during this measurement (rerun later)")
    else:
        state = (f"{kept} of {len(values)} cell rounds kept (those within {PARALLEL_RELATIVE}x of their cell's "
                 f"best; the others ran while the host did not run the threads in parallel)")
        never = [f"{b}x{q}" for (b, q), cell in speedups.items() if never_parallel(cell)]
        if never:  # these cells' p50s may be the host's, not the model's
            state += (f"; never in parallel at {', '.join(never)} (every round of those kept: their p50 may be "
                      f"the host's non-parallel speed; rerun later)")
    return (f"; parallel-threads probe (model.int8.onnx on 1 and {threads} threads around each cell's round, and "
            f"against its own round at the probe's cell): "
            f"speedups {min(values):.2f}-{max(values):.2f}x, {state}")


def _check_budget(spec, budget_ms, measured, sessions, threads, warmup, runs, vocab, checks: _Checks) -> None:
    budget = dict((spec or {}).get("latency_budget") or {})
    if budget_ms is not None:
        budget["p95_ms"] = float(budget_ms)
    if budget.get("p95_ms") is None:
        checks.add("latency budget", True, "no budget set (--budget-ms or input_spec.json latency_budget)", skipped=True)
        return
    if "onnx_int8" not in sessions:
        checks.add("latency budget", False, "model.int8.onnx could not be run, so the budget cannot be checked")
        return
    batch = int(budget.get("batch_size") or DEFAULT_BUDGET_CELL["batch_size"])
    seq = int(budget.get("seq_len") or DEFAULT_BUDGET_CELL["seq_len"])
    capped = ""
    max_seq_len = (spec or {}).get("max_seq_len")
    if isinstance(max_seq_len, int) and seq > max_seq_len:
        # the tokenizer truncates at max_seq_len, so a server never runs longer sequences than that
        capped, seq = f" (sequence {seq} capped to the bundle's max_seq_len)", max_seq_len
    cell = next((c for c in measured.get("onnx_int8", []) if c["batch_size"] == batch and c["seq_len"] == seq), None)
    if cell is None:  # the budget cell is not on the grid (or the grid was not run): measure it alone
        try:
            cell = latency_grid(Path("model.int8.onnx"), [batch], [seq], threads, warmup, runs, vocab,
                                session=sessions["onnx_int8"])[0]
        except Exception as error:
            checks.add("latency budget", False, f"cannot run model.int8.onnx at batch {batch}, sequence {seq}: "
                       f"{str(error).strip()[:300]}")
            return
    limit = float(budget["p95_ms"])
    ok = cell["p95"] <= limit
    where = f"batch {batch}, sequence {seq}, {threads_text(threads)}{capped}"
    checks.add(
        "latency budget", ok,
        f"INT8 p95 {cell['p95']:.3f} ms <= budget {limit:g} ms ({where})" if ok else
        f"INT8 p95 {cell['p95']:.3f} ms exceeds the budget of {limit:g} ms ({where}); ship a smaller "
        f"checkpoint, give it more threads, or raise the budget",
    )


# --------------------------------------------------------------------------------------------
# command line


def format_prediction(item: dict) -> str:
    """One line: the text and what the bundle finds in it (entities with character offsets, the answer
    with its character span, or the label)."""
    raw = item["text"]
    if isinstance(raw, dict):  # question answering
        text = f"{raw.get('question', '')} | {raw.get('context', '')}"
    else:
        text = raw if isinstance(raw, str) else " | ".join(raw)
    if "answer" in item:
        found = ("no answer" if item.get("no_answer") else f"{item['answer']!r} [{item.get('start')}:{item.get('end')}]")
        found += f" (score {item.get('score', 0):.2f}, {item.get('windows', 1)} window(s))"
    elif "entities" in item:
        found = ", ".join(f"{e['type']} {e['text']!r} [{e['start']}:{e['end']}]" for e in item["entities"]) or "no entities"
    else:
        found = f"{item.get('label')} ({item.get('score', 0):.2f})"
    return f"{text[:90]!r} -> {found}"


def format_grid(measured: dict[str, list[dict]]) -> list[str]:
    """A plain-text latency table: one line per format x batch x sequence."""
    lines = [f"{'model':<16}{'batch':>6}{'seq':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}  round p50 spread ms"]
    for key, cells in measured.items():
        for c in cells:
            spread = f"  {c['spread'][0]:.3f}-{c['spread'][1]:.3f}" if c.get("spread") else ""
            lines.append(f"{key:<16}{c['batch_size']:>6}{c['seq_len']:>6}{c['p50']:>10.3f}{c['p95']:>10.3f}{c['p99']:>10.3f}{spread}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the bundle directory (holds model.onnx and manifest.json)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: those the bundle's latencies were measured with, "
                             "at most the CPUs available)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency cell (over all rounds)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="time the grid in this many rounds over all cells, the runs split over them (p50 = median of round medians)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before each latency cell")
    parser.add_argument("--parallel-wait", type=float, default=PARALLEL_WAIT_SECONDS, metavar="SECONDS",
                        help="when no round ran the threads in parallel, keep timing rounds for up to this long (0: never)")
    parser.add_argument("--budget-ms", type=float, default=None, help="INT8 p95 budget in ms (overrides the bundle's)")
    parser.add_argument("--no-grid", action="store_true", help="skip the latency grid")
    parser.add_argument("--no-gpu", action="store_true", help="skip the CUDA check even where CUDA is available")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the full result as JSON")
    args = parser.parse_args(argv)
    if (args.threads is not None and args.threads < 1 or args.runs < 1 or args.rounds < 1 or args.warmup < 0
            or args.parallel_wait < 0):
        print("error: --threads, --runs and --rounds must be at least 1, --warmup and --parallel-wait at least 0.",
              file=sys.stderr)
        return 2
    try:
        result = verify_bundle(args.bundle, args.threads, args.warmup, args.runs, args.budget_ms, not args.no_grid,
                               not args.no_gpu, rounds=args.rounds, parallel_wait=args.parallel_wait)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for check in result["checks"]:
        status = "SKIP" if check.get("skipped") else "PASS" if check["ok"] else "FAIL"
        print(f"{status}  {check['name']}: {check['detail']}")
    for item in result.get("predictions", []):
        print(f"      {format_prediction(item)}")
    gpu = result["gpu"]
    if gpu.get("status", "").startswith("skipped"):
        print(f"SKIP  gpu: {gpu['status']}")
    machine = result["machine"]
    print(f"machine: {machine['cpu']} [{', '.join(machine['instruction_sets']) or 'no AVX2/AVX-512/AMX flags'}], "
          f"onnxruntime {machine['onnxruntime']}, {threads_text(machine['threads'])}")
    measured = dict(result["latency_grid"])
    measured.update(gpu.get("latency_grid", {}))
    if measured:
        print("\n".join(format_grid(measured)))
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2))
    failed = [c["name"] for c in result["checks"] if not c["ok"]]
    print(f"{'OK' if not failed else 'FAILED'}: {args.bundle} " + (f"({', '.join(failed)})" if failed else "verified on this machine"))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
