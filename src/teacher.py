"""Loading a BERT-family teacher from an asset, a local directory or the hub, and caching the
fine-tuned result.

The fine-tuning itself is training, so it lives in ``train/``; this module resolves sources,
computes the cache key, and reads and writes the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from distilprune import assets
from distilprune.architectures import architecture_of
from distilprune.errors import ModelError
from distilprune.paths import user_path

TEACHER_META = "distilprune_teacher.json"


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.sep in spec and user_path(spec).exists()


def resolve_teacher(spec: str) -> tuple[str, str]:
    """(where to load from, a stable identity for cache keys)."""
    if assets.is_asset(spec):
        asset = assets.ASSETS[spec]
        if asset.kind != "model":
            raise ModelError(f"Built-in asset {spec!r} is a {asset.kind}, not a model. Model assets: "
                             f"{', '.join(n for n, a in assets.ASSETS.items() if a.kind == 'model')}.")
        return str(assets.fetch(spec)), f"asset:{spec}:{asset.sha256}"
    if _looks_like_path(spec):
        path = user_path(spec)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"The teacher path {spec} does not exist or is not a model directory (it needs a "
                f"config.json and weights). Fix teacher.model, or use the built-in teacher: "
                f"teacher.model=minilm-l6."
            )
        weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        digest = hashlib.sha256()
        for file in [path / "config.json", *weights]:
            digest.update(file.name.encode())
            digest.update(str(file.stat().st_size).encode())
            digest.update(str(int(file.stat().st_mtime)).encode())
        return str(path.resolve()), f"local:{path.resolve()}:{digest.hexdigest()[:16]}"
    return spec, f"hub:{spec}"


def load_tokenizer(source: str, spec: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as error:
        raise ModelError(_load_failure(spec, "tokenizer", error)) from None


def load_teacher(
    source: str, spec: str, num_labels: int | None, label_names: list[str] | None = None, tokenizer=None,
    auto_class: str = "AutoModelForSequenceClassification",
) -> nn.Module:
    """A Hugging Face classifier (``auto_class``: the task's, e.g. AutoModelForTokenClassification)
    in eval mode, with eager attention.

    Eager attention keeps the model exportable in the form ONNX Runtime fuses, and lets the
    student copy reproduce its numerics; ``num_labels=None`` keeps the checkpoint's own head.
    The model is checked against ``tokenizer`` (see :func:`check_vocabulary`); without one, against
    the tokenizer saved next to the weights in ``source``, when there is one.
    """
    import transformers
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
        kwargs["ignore_mismatched_sizes"] = True  # a new head: the checkpoint's own (other labels) is dropped
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected here
    try:
        model = getattr(transformers, auto_class).from_pretrained(source, **kwargs)
    except Exception as error:
        raise ModelError(_load_failure(spec, "model", error)) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    architecture_of(model)  # fail now, with the table's message, for unsupported families
    if tokenizer is None:
        tokenizer = _tokenizer_beside(source)
    if tokenizer is not None:
        check_vocabulary(tokenizer, model, spec)
    return model.eval()


def _tokenizer_beside(source: str):
    """The tokenizer saved with the weights in ``source``, or None when it has none (the caller
    tokenizes with a tokenizer from elsewhere and can pass it to :func:`load_teacher`)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception:  # noqa: BLE001 - no tokenizer here is a normal case, not an error
        return None


def check_vocabulary(tokenizer, model: nn.Module, spec: str) -> None:
    """Raise :class:`ModelError` when the tokenizer can emit ids the model has no embedding for.

    The student copies the teacher's word embeddings, so this also checks the student. A table
    larger than the tokenizer is fine (some checkpoints pad it to a multiple of 8 or 64); a smaller
    one means tokenizer and weights come from different models, and the first id past the table
    would fail deep inside the embedding lookup in the middle of training.
    """
    rows = model.get_input_embeddings().num_embeddings
    tokens = len(tokenizer)
    if tokens > rows:
        raise ModelError(
            f"The teacher {spec!r} has a tokenizer of {tokens} tokens but only {rows} word embeddings "
            f"(config vocab_size {getattr(model.config, 'vocab_size', rows)}), so token ids {rows}..{tokens - 1} "
            f"have no embedding: the tokenizer files and the weights come from different models. Put the "
            f"tokenizer that belongs to these weights (vocab.txt / tokenizer.json) in the model directory, "
            f"or use the built-in teacher: teacher.model=minilm-l6."
        )


def _load_failure(spec: str, what: str, error: Exception) -> str:
    offline = " The Hugging Face hub is not reachable from this machine." if os.environ.get("HF_HUB_OFFLINE") else ""
    return (
        f"Could not load the teacher {what} {spec!r} ({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        f"{offline} teacher.model must be a built-in asset ({', '.join(n for n, a in assets.ASSETS.items() if a.kind == 'model')}), "
        f"an existing local model directory, or a hub id that this machine can download."
    )


def finetune_cache_key(identity: str, data_info: dict, settings: dict, max_seq_len: int, seed: int) -> str:
    """sha256 over everything that changes the fine-tuned teacher."""
    payload = json.dumps(
        {"teacher": identity, "data": data_info, "settings": settings, "max_seq_len": max_seq_len,
         "seed": seed, "format": 1},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def finetuned_cache_dir(key: str) -> Path:
    return assets.cache_root() / "teachers" / key


def read_cached_teacher(key: str) -> tuple[Path, dict] | None:
    """(directory, meta) of the fine-tuned teacher cached under ``key``, or None."""
    directory = finetuned_cache_dir(key)
    meta = directory / TEACHER_META
    if meta.is_file():
        return directory, json.loads(meta.read_text())
    return None


def write_cached_teacher(key: str, teacher: nn.Module, tokenizer, meta: dict) -> tuple[Path, dict]:
    """Cache a fine-tuned teacher (weights, tokenizer, ``meta`` + creation time) under ``key``.

    Written into a staging directory and renamed, so a reader never sees half a teacher; when a
    concurrent run cached the same key first, its copy is kept. Returns (directory, meta as stored).
    """
    directory = finetuned_cache_dir(key)
    staging = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    teacher.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    meta = {**meta, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    (staging / TEACHER_META).write_text(json.dumps(meta, indent=2))
    if directory.exists():
        shutil.rmtree(staging)
    else:
        staging.replace(directory)
    return directory, meta


def cached_teacher_info(directory: Path, key: str, meta: dict, finetuned_here: bool) -> dict:
    """What a run records about a teacher from the fine-tuning cache. Its identity is the fine-tuned
    weights (the cache key); the base model it was fine-tuned from is kept as ``base_identity``."""
    return {"source": str(directory), "finetuned_here": finetuned_here, "cache_key": key, **meta,
            "base_identity": meta.get("identity"), "identity": f"finetuned:{key}"}
