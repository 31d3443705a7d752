"""Write a bundle's serving files: ``serving.json``, the runtime, and Triton's text-in models.

Layout added to a bundle (``<name>`` is the bundle's Triton model name)::

    serving.json                 which ONNX file servers batch with, and why; the task
    serving_runtime.py           tokenization + inference + post-processing (numpy, onnxruntime, tokenizers)
    triton/<name>-text/          python backend: TEXT -> LABEL, SCORE, SCORES, TRUNCATED (one model)
    triton/<name>-tokenize/      python backend: TEXT -> input_ids, attention_mask, TRUNCATED   } ensemble
    triton/<name>/               ONNX Runtime backend: ids -> logits (written by bundle.py)      } for ORT-
    triton/<name>-postprocess/   python backend: logits, TRUNCATED -> LABEL, SCORE, SCORES       } backend
    triton/<name>-ensemble/      ensemble: TEXT -> LABEL, SCORE, SCORES, TRUNCATED               } teams

Each python model's version directory ``1/`` holds its ``model.py``, a copy of the runtime and the
files the runtime reads, so a serving team can copy one model directory into its repository as is.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from distilprune.errors import ConfigError, ExportError
from distilprune.export.runtime import replacing, write_atomic
from distilprune.export.serving import runtime

SOURCES = Path(__file__).resolve().parent / "triton"
RUNTIME_FILE = "serving_runtime.py"
ENTITIES_SOURCE = Path(__file__).resolve().parent / "entities.py"  # copied as serving_entities.py
ANSWERS_SOURCE = Path(__file__).resolve().parent / "answers.py"  # copied as serving_answers.py
TRITON_DIR = "triton"
SPEC_FILES = (runtime.INPUT_SPEC, runtime.SERVING_SPEC)


def _copy(source: Path, target: Path) -> None:
    with replacing(target) as tmp:
        shutil.copyfile(source, tmp)


def _write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_serving_spec(bundle: Path, batched_model: str, why: str,
                       task: str = runtime.TASK_SEQUENCE_CLASSIFICATION) -> Path:
    """``serving.json`` and ``serving_runtime.py``: the model servers batch with, and the code that serves it."""
    bundle = Path(bundle)
    if not (bundle / batched_model).is_file():
        raise ExportError(f"{bundle / batched_model} is missing; write the model into the bundle before serving.json.")
    spec = {"format": "distilprune serving spec", "version": 1, "task": task, "batched_model": batched_model,
            "why": why, "runtime": RUNTIME_FILE}
    path = bundle / runtime.SERVING_SPEC
    write_atomic(path, json.dumps(spec, indent=2) + "\n")
    _copy(Path(runtime.__file__), bundle / RUNTIME_FILE)
    _copy(ENTITIES_SOURCE, bundle / runtime.ENTITIES_FILE)
    _copy(ANSWERS_SOURCE, bundle / runtime.ANSWERS_FILE)
    return path


def settings_from_grid(cells: list[dict], threads: int, cpus: int, seq_len: int = 128) -> dict:
    """Triton batching settings from the bundle's measured latency grid (INT8 cells at ``seq_len``).

    Preferred batch sizes are those whose time per text beats batch 1's (batching pays off there);
    instances = CPUs / threads per instance, so instances never compete for cores.
    """
    rows = sorted((c for c in cells if c.get("seq_len") == seq_len), key=lambda c: c["batch_size"])
    if not rows or threads < 1:
        return {"preferred": [8, 32], "max_batch_size": 32, "instances": 1, "threads": max(threads, 1)}
    single = next((c["p50"] for c in rows if c["batch_size"] == 1), rows[0]["p50"] / rows[0]["batch_size"])
    preferred = [c["batch_size"] for c in rows if c["batch_size"] > 1 and c["p50"] / c["batch_size"] < single]
    return {"preferred": preferred or [1], "max_batch_size": max(c["batch_size"] for c in rows),
            "instances": max(1, cpus // threads), "threads": threads}


def _string_tensor(texts: list[str]) -> bytes:
    """Triton's serialized TYPE_STRING tensor: per element a little-endian uint32 length, then the bytes."""
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def _python_model(model_dir: Path, source: str, bundle: Path, files: tuple[str, ...]) -> Path:
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    _copy(SOURCES / source, version / "model.py")
    _copy(Path(runtime.__file__), version / RUNTIME_FILE)
    _copy(ENTITIES_SOURCE, version / runtime.ENTITIES_FILE)
    _copy(ANSWERS_SOURCE, version / runtime.ANSWERS_FILE)
    for name in files:
        _copy(bundle / name, version / name)
    return version


def _batching(settings: dict) -> str:
    return (f"max_batch_size: {settings['max_batch_size']}\n"
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {', '.join(str(b) for b in settings['preferred'])} ]\n"
            f"  max_queue_delay_microseconds: {settings['max_queue_delay_us']}\n"
            "}\n")


def _io(kind: str, tensors: list[tuple[str, str, str]]) -> str:
    body = ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: [ {d} ] }}' for n, t, d in tensors)
    return f"{kind} [\n{body}\n]\n"


def _text_outputs(num_labels: int) -> list[tuple[str, str, str]]:
    return [("LABEL", "TYPE_STRING", "1"), ("SCORE", "TYPE_FP32", "1"),
            ("SCORES", "TYPE_FP32", str(num_labels)), ("TRUNCATED", "TYPE_BOOL", "1")]


def _instances(settings: dict) -> str:
    return (f"instance_group [ {{ count: {settings['instances']} kind: KIND_CPU }} ]\n"
            f'parameters {{ key: "threads" value: {{ string_value: "{settings["threads"]}" }} }}\n')


def write_text_model(bundle: Path, name: str, settings: dict, warmup_text: str) -> Path:
    """``triton/<name>-text``: the whole path in one python-backend model, with dynamic batching and warmup."""
    spec = json.loads((bundle / runtime.INPUT_SPEC).read_text())
    serving = json.loads((bundle / runtime.SERVING_SPEC).read_text())
    model_dir = bundle / TRITON_DIR / f"{name}-text"
    _python_model(model_dir, "text_model.py", bundle, (*SPEC_FILES, runtime.TOKENIZER_JSON, serving["batched_model"]))
    (model_dir / "warmup").mkdir(exist_ok=True)
    _write_bytes(model_dir / "warmup" / "text", _string_tensor([warmup_text]))
    # the largest call: max_batch_size texts that fill the window, so the memory arena starts at its working size
    long_text = " ".join([warmup_text] * int(spec["max_seq_len"]))
    _write_bytes(model_dir / "warmup" / "full_batch", _string_tensor([long_text]))
    config = (
        f"# Generated by distilprune: text in, labels out. Runs {serving['batched_model']} ({serving['why']}).\n"
        f'name: "{name}-text"\nbackend: "python"\n'
        + _batching(settings)
        + _io("input", [("TEXT", "TYPE_STRING", "1")])
        + _io("output", _text_outputs(int(spec["num_labels"])))
        + _instances(settings)
        + "model_warmup [ {\n  name: \"one_text\"\n  batch_size: 1\n"
          "  inputs { key: \"TEXT\" value: { data_type: TYPE_STRING dims: [ 1 ] input_data_file: \"text\" } }\n}, {\n"
          f"  name: \"full_batch\"\n  batch_size: {settings['max_batch_size']}\n"
          "  inputs { key: \"TEXT\" value: { data_type: TYPE_STRING dims: [ 1 ] input_data_file: \"full_batch\" } }\n} ]\n"
    )
    write_atomic(model_dir / "config.pbtxt", config)
    return model_dir


def write_ensemble(bundle: Path, name: str, settings: dict) -> Path:
    """``<name>-tokenize`` -> ``<name>`` (ONNX Runtime backend) -> ``<name>-postprocess``, as one ensemble."""
    spec = json.loads((bundle / runtime.INPUT_SPEC).read_text())
    if not (bundle / TRITON_DIR / name / "config.pbtxt").is_file():
        raise ExportError(f"The ensemble needs the ONNX Runtime model triton/{name}; write it first (bundle.write_triton_repository).")
    seq, labels = int(spec["max_seq_len"]), int(spec["num_labels"])
    tokenize = bundle / TRITON_DIR / f"{name}-tokenize"
    _python_model(tokenize, "tokenize_model.py", bundle, (*SPEC_FILES, runtime.TOKENIZER_JSON))
    write_atomic(tokenize / "config.pbtxt", (
        f"# Generated by distilprune: tokenizes TEXT, padded to the window ({seq}) so batch rows share one shape.\n"
        f'name: "{name}-tokenize"\nbackend: "python"\n' + _batching(settings)
        + _io("input", [("TEXT", "TYPE_STRING", "1")])
        + _io("output", [("input_ids", "TYPE_INT64", str(seq)), ("attention_mask", "TYPE_INT64", str(seq)),
                         ("TRUNCATED", "TYPE_BOOL", "1")])
        + _instances({**settings, "threads": 1})))
    post = bundle / TRITON_DIR / f"{name}-postprocess"
    _python_model(post, "postprocess_model.py", bundle, SPEC_FILES)
    write_atomic(post / "config.pbtxt", (
        f'# Generated by distilprune: logits -> labels and probabilities.\nname: "{name}-postprocess"\nbackend: "python"\n'
        + _batching(settings)
        + _io("input", [("logits", "TYPE_FP32", str(labels)), ("TRUNCATED", "TYPE_BOOL", "1")])
        + _io("output", _text_outputs(labels)[:3])
        + _instances({**settings, "threads": 1})))
    ensemble = bundle / TRITON_DIR / f"{name}-ensemble"
    (ensemble / "1").mkdir(parents=True, exist_ok=True)

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        maps = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
        maps += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"

    steps = ",\n".join([
        step(f"{name}-tokenize", {"TEXT": "TEXT"},
             {"input_ids": "ids", "attention_mask": "mask", "TRUNCATED": "TRUNCATED"}),
        step(name, {"input_ids": "ids", "attention_mask": "mask"}, {"logits": "logits"}),
        step(f"{name}-postprocess", {"logits": "logits", "TRUNCATED": "TRUNCATED"},
             {"LABEL": "LABEL", "SCORE": "SCORE", "SCORES": "SCORES"}),
    ])
    write_atomic(ensemble / "config.pbtxt", (
        f"# Generated by distilprune: the text path for Triton servers with the ONNX Runtime backend.\n"
        f'name: "{name}-ensemble"\nplatform: "ensemble"\nmax_batch_size: {settings["max_batch_size"]}\n'
        + _io("input", [("TEXT", "TYPE_STRING", "1")])
        + _io("output", _text_outputs(labels))
        + f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}\n"))
    return ensemble


def write_serving(bundle: Path, name: str, batched_model: str, why: str, settings: dict,
                  warmup_text: str = "a warm-up sentence", task: dict | None = None) -> dict:
    """Everything above, in order; returns the paths written (relative to the bundle) for the card."""
    bundle = Path(bundle)
    if settings.get("max_queue_delay_us", 0) < 0:
        raise ConfigError(f"max_queue_delay_us must be >= 0, got {settings['max_queue_delay_us']}.")
    # No queue delay: Triton then batches the requests that queued while the instance was busy (so
    # concurrent clients get batches) and never holds a lone request back; with 1000 us a request
    # at concurrency 1 waited that long for company that never came (+1 ms at p50).
    settings = {"max_queue_delay_us": 0, **settings}
    task_name = (task or {}).get("task", runtime.TASK_SEQUENCE_CLASSIFICATION)
    write_serving_spec(bundle, batched_model, why, task_name)
    if task_name != runtime.TASK_SEQUENCE_CLASSIFICATION or (task or {}).get("text_pairs"):
        # Triton's text model and ensemble take one TEXT and answer with label tensors; token tasks and
        # text pairs are served as text by the HTTP server (or serving_runtime.py), and as logits by
        # triton/<name> (ONNX Runtime backend, token ids in).
        return {"text_model": None, "ensemble": None, "runtime": RUNTIME_FILE, "settings": settings}
    text = write_text_model(bundle, name, settings, warmup_text)
    ensemble = write_ensemble(bundle, name, settings)
    return {"text_model": text.relative_to(bundle).as_posix(), "ensemble": ensemble.relative_to(bundle).as_posix(),
            "runtime": RUNTIME_FILE, "settings": settings}
