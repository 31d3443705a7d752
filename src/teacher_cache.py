"""The frozen teacher's outputs on the training split, computed once and stored on disk.

Distillation pays for a teacher forward pass on every step. The data pipeline has no augmentation,
so the teacher sees the same token ids every epoch and its outputs can be computed once, written in
shards (safetensors) and read back as batches are made. The cache lives in
``<cache root>/teacher_outputs/<key>/`` (cache root: ``$DISTILPRUNE_CACHE`` or
``~/.cache/distilprune``, the same root as the fine-tuned teachers); the key covers the teacher,
the data, the tokenizer, the sequence length, the precision and the stored layers, so a change in
any of them gives a new key and a new directory (the old one is simply no longer read).

Layout of one cache directory::

    meta.json                     what was stored and how (format, key, shapes, shards, fingerprint)
    shard-00000.safetensors       examples [0, shard_size): "logits" (rows, labels): every example's
    shard-00001.safetensors       scored rows (the task's: 1 per sentence, 1 per labelled word...),
    ...                           "logit_offsets" int64 (n + 1,) row offsets, "offsets" int64 (n + 1,)
                                  token offsets, "hidden.<layer>" fp16/bf16 (tokens, hidden): example
                                  i's true-length rows

Logits are stored in the task's cache dtype (float32 for a sentence's one row, float16 for a token
classifier's row per word), so the cache grows with the scored positions, not with padding.
Hidden states are stored unpadded (true length x hidden) in half precision: a snippet of 25 tokens
costs 25 x 384 x 2 bytes per layer instead of 128 x 384 x 4.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from distilprune import assets
from distilprune.errors import DataError, ModelError
from distilprune.tasks import Task, default_task, model_inputs

FORMAT = 2
META = "meta.json"


# -- keys -------------------------------------------------------------------------------------------
def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 (16 hex chars) of the tokenizer's class, vocabulary, lower-casing and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    lower = getattr(tokenizer, "do_lower_case", None)
    if lower is None:
        lower = tokenizer.init_kwargs.get("do_lower_case")
    payload = json.dumps(
        {"class": type(tokenizer).__name__, "vocab": vocab, "lower_case": lower,
         "special": sorted(map(str, tokenizer.all_special_tokens))},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def teacher_cache_key(
    teacher_identity: str,
    data_info: dict,
    tokenizer_fingerprint: str,
    max_seq_len: int,
    precision: str,
    hidden_layers: list[int] | None,
) -> str:
    """sha256 (20 hex chars) of the canonical JSON of everything that changes the stored outputs."""
    payload = json.dumps(
        {"teacher": teacher_identity, "data": data_info, "tokenizer": tokenizer_fingerprint,
         "max_seq_len": max_seq_len, "precision": precision,
         "hidden_layers": list(hidden_layers) if hidden_layers else None, "format": FORMAT},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def teacher_outputs_root() -> Path:
    """``<cache root>/teacher_outputs``: beside ``teachers/`` (the fine-tuned teacher cache)."""
    return assets.cache_root() / "teacher_outputs"


def split_fingerprint(split) -> str:
    """sha256 of the split's token ids and labels: a last check that the cache matches the data.

    Splits with ``input_ids`` and ``labels`` lists (classification) hash those; any other split hashes
    its items (every field but ``index``), e.g. question-answering windows with their answer positions."""
    digest = hashlib.sha256()
    if hasattr(split, "input_ids") and hasattr(split, "labels"):
        rows = ([label, ids] for ids, label in zip(split.input_ids, split.labels))
    else:
        rows = ({k: v for k, v in split[i].items() if k != "index"} for i in range(len(split)))
    for row in rows:
        digest.update(json.dumps(row, separators=(",", ":"), sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:20]


# -- reading --------------------------------------------------------------------------------------
class TeacherOutputs:
    """Read access to one cache directory.

    ``logits(i)`` -> float32 (scored rows of example i, labels); ``hidden(i)`` -> list over stored
    layers of float32 (true_len_i, hidden). Logits and offsets are held in memory (a few bytes per
    scored row); hidden states are read from the memory-mapped shards when asked for.
    """

    def __init__(self, directory: Path, meta: dict, logits: torch.Tensor, row_offsets: torch.Tensor,
                 offsets: list[torch.Tensor]) -> None:
        self.directory = Path(directory)
        self.meta = meta
        self.key: str = meta["key"]
        self.hidden_layers: list[int] = list(meta["hidden_layers"] or [])
        self.shard_size: int = meta["shard_size"]
        self._logits = logits  # float32 (all scored rows, labels)
        self._row_offsets = row_offsets  # int64 (num_examples + 1,): example i's rows
        self._offsets = offsets  # per shard: int64 (n + 1,) token offsets of the hidden states
        self._handles: dict[int, object] = {}

    def __len__(self) -> int:
        return self._row_offsets.shape[0] - 1

    @property
    def num_labels(self) -> int:
        return self._logits.shape[1]

    def logits(self, i: int) -> torch.Tensor:
        return self._logits[self._row_offsets[i]:self._row_offsets[i + 1]]

    def batch_logits(self, indices: Sequence[int]) -> torch.Tensor:
        """float32 (scored rows of the examples, in order, labels), a copy: what
        ``task.scored_logits`` picks from the teacher's logits on the same batch."""
        return torch.cat([self.logits(i) for i in indices]) if len(indices) else self._logits[:0].clone()

    def _shard(self, number: int):
        handle = self._handles.get(number)
        if handle is None:
            from safetensors import safe_open

            path = self.directory / self.meta["shards"][number]["file"]
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as error:
                raise _corrupt(self.directory, f"{path.name} cannot be read ({error})") from None
            self._handles[number] = handle
        return handle

    def hidden(self, i: int) -> list[torch.Tensor]:
        number, row = divmod(i, self.shard_size)
        start, end = self._offsets[number][row].item(), self._offsets[number][row + 1].item()
        shard = self._shard(number)
        return [shard.get_slice(f"hidden.{layer}")[start:end].float() for layer in self.hidden_layers]

    def batch_hidden(self, indices: Sequence[int], pad_to: int) -> list[torch.Tensor]:
        """Per stored layer float32 (batch, pad_to, hidden); rows past an example's length are 0."""
        hidden_size = self.meta["hidden_size"]
        out = [torch.zeros(len(indices), pad_to, hidden_size) for _ in self.hidden_layers]
        for row, i in enumerate(indices):
            for layer_out, states in zip(out, self.hidden(i)):
                n = min(states.shape[0], pad_to)
                layer_out[row, :n] = states[:n]
        return out

    def __getstate__(self) -> dict:
        # safetensors handles do not pickle; DataLoader workers reopen the shards themselves.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


def _corrupt(directory: Path, what: str) -> DataError:
    return DataError(
        f"The teacher output cache {directory} is damaged or incomplete: {what}. It was probably "
        f"interrupted or edited by hand. Delete that directory (rm -r {directory}) and run again; it "
        f"is rebuilt from the teacher, or set distill.teacher_cache=false to run the teacher live."
    )


def load_teacher_outputs(directory: Path, split=None) -> TeacherOutputs:
    """Open a finished cache directory, checking every shard's presence, size and header."""
    from safetensors import safe_open

    directory = Path(directory)
    try:
        meta = json.loads((directory / META).read_text())
        shards = meta["shards"]
        expected = (meta["format"], meta["key"], meta["num_examples"], meta["shard_size"])
    except FileNotFoundError:
        raise _corrupt(directory, f"{META} is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _corrupt(directory, f"{META} cannot be read ({type(error).__name__}: {error})") from None
    if expected[0] != FORMAT:
        raise _corrupt(directory, f"it has format {expected[0]}, this version reads format {FORMAT}")
    if split is not None:
        if meta["num_examples"] != len(split) or meta.get("split_fingerprint") != split_fingerprint(split):
            raise DataError(
                f"The teacher output cache {directory} was built from other token ids than this run's "
                f"training split ({meta['num_examples']} vs {len(split)} examples), although the cache "
                f"key matches: something that changes the data is missing from the key. Delete that "
                f"directory (rm -r {directory}) and run again."
            )
    logits, row_counts, offsets = [], [], []
    for number, shard in enumerate(shards):
        path = directory / shard["file"]
        if not path.is_file():
            raise _corrupt(directory, f"shard {shard['file']} is missing")
        if path.stat().st_size != shard["bytes"]:
            raise _corrupt(
                directory, f"shard {shard['file']} has {path.stat().st_size} bytes, {shard['bytes']} were written"
            )
        try:
            with safe_open(str(path), framework="pt") as handle:
                shard_logits, shard_offsets = handle.get_tensor("logits"), handle.get_tensor("offsets")
                shard_rows = handle.get_tensor("logit_offsets")
                names = set(handle.keys())
        except Exception as error:
            raise _corrupt(directory, f"shard {shard['file']} cannot be read ({error})") from None
        missing = {f"hidden.{layer}" for layer in meta["hidden_layers"] or []} - names
        if (missing or shard_rows.shape[0] != shard["count"] + 1 or int(shard_rows[-1]) != shard_logits.shape[0]
                or shard_offsets.shape[0] != shard["count"] + 1):
            raise _corrupt(directory, f"shard {shard['file']} does not hold what {META} says")
        logits.append(shard_logits.float())
        row_counts.append(shard_rows.diff())
        offsets.append(shard_offsets)
    all_logits = torch.cat(logits) if logits else torch.zeros(0, meta.get("num_labels") or 0)
    counts = torch.cat(row_counts) if row_counts else torch.zeros(0, dtype=torch.long)
    if counts.shape[0] != meta["num_examples"]:
        raise _corrupt(directory, f"its shards hold {counts.shape[0]} examples, {META} says {meta['num_examples']}")
    row_offsets = torch.zeros(counts.shape[0] + 1, dtype=torch.long)
    row_offsets[1:] = torch.cumsum(counts, 0)
    return TeacherOutputs(directory, meta, all_logits, row_offsets, offsets)


# -- building -------------------------------------------------------------------------------------
def build_teacher_outputs(
    teacher: nn.Module,
    split,
    directory: Path,
    key: str,
    batch_size: int,
    autocast_dtype: torch.dtype | None,
    hidden_layers: list[int] | None,
    shard_size: int = 4096,
    progress: bool = True,
    task: Task | None = None,
) -> TeacherOutputs:
    """Load ``directory/key`` when it holds a finished cache, else run the teacher once and write it.

    Args:
        teacher: a Hugging Face classifier (called with the batch's model inputs).
        split: the tokenized training split (``task.tokenize``); cache entry i = ``split[i]``.
        directory: the cache root (normally :func:`teacher_outputs_root`); the cache is ``directory/key``.
        key: from :func:`teacher_cache_key`.
        batch_size: examples per teacher forward pass (batches are length-sorted inside each shard).
        autocast_dtype: run the teacher under ``torch.autocast(<its device type>, dtype)``, as the
            live teacher runs inside a bf16-mixed / 16-mixed training step; None = full precision.
        hidden_layers: teacher ``hidden_states`` indices to store (0 = embeddings, block j = j + 1),
            in the order the loss wants them; None or [] = logits only.
        shard_size: examples per shard file.
        progress: show a progress bar on stderr.
        task: pads the batches and picks the scored rows (default: sequence classification).
    """
    task = task if task is not None else default_task()
    final = Path(directory) / key
    if final.exists():
        outputs = load_teacher_outputs(final, split)
        if list(outputs.hidden_layers) != list(hidden_layers or []):
            raise _corrupt(final, f"it stores layers {outputs.hidden_layers}, the key was made for {hidden_layers}")
        return outputs
    hidden_layers = list(hidden_layers or [])
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f"{key}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    start = time.perf_counter()
    try:
        meta = _write_shards(teacher, split, staging, key, batch_size, autocast_dtype, hidden_layers,
                             shard_size, progress, task)
        meta["build_seconds"] = round(time.perf_counter() - start, 2)
        tmp = staging / (META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, staging / META)
        if final.exists():
            shutil.rmtree(staging)  # a concurrent run finished the same key first; use its copy
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _log(f"teacher outputs for {len(split)} examples cached in {meta['build_seconds']:.1f} s -> {final}")
    return load_teacher_outputs(final, split)


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold]Teacher cache[/bold]: {message}", highlight=False, soft_wrap=True)


def _write_shards(teacher, split, staging: Path, key: str, batch_size: int, autocast_dtype,
                  hidden_layers: list[int], shard_size: int, progress: bool, task: Task) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from safetensors.torch import save_file

    device = next(teacher.parameters()).device
    # bf16 autocast: the states are bf16 already, so bf16 storage is exact; otherwise fp16 keeps
    # 3 more mantissa bits than bf16 and BERT hidden states stay far below fp16's 65504 limit.
    store_dtype = torch.bfloat16 if autocast_dtype == torch.bfloat16 else torch.float16
    store_logits = task.cache_dtype()
    lengths = split.lengths()
    pad_id = 0
    was_training = teacher.training
    teacher.eval()
    shards, hidden_size, num_labels = [], None, None
    bar = Progress(TextColumn("teacher outputs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not progress, transient=True)
    try:
        with bar, torch.inference_mode():
            progress_row = bar.add_task("teacher", total=len(split))
            for shard_start in range(0, len(split), shard_size):
                rows = list(range(shard_start, min(len(split), shard_start + shard_size)))
                logits_rows: list[torch.Tensor | None] = [None] * len(rows)
                hidden_rows: list[list[torch.Tensor] | None] = [None] * len(rows)
                # Length-sorted batches: each is padded only to its own longest example (fast).
                order = sorted(range(len(rows)), key=lambda r: lengths[rows[r]])
                for b in range(0, len(order), batch_size):
                    chosen = order[b:b + batch_size]
                    batch = task.collate([split[rows[r]] for r in chosen], pad_token_id=pad_id)
                    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                        enabled=autocast_dtype is not None):
                        inputs = {name: value.to(device) for name, value in model_inputs(batch).items()}
                        out = teacher(**inputs, output_hidden_states=bool(hidden_layers))
                    logits = task.model_logits(out).float().cpu()
                    per_example = task.example_rows(logits, batch)
                    num_labels = logits.shape[-1]
                    if hidden_layers:
                        states = out.hidden_states
                        bad = [layer for layer in hidden_layers if not 0 <= layer < len(states)]
                        if bad:
                            raise ModelError(
                                f"The teacher has hidden states 0..{len(states) - 1} (0 = embeddings, "
                                f"block j = j + 1) but layers {bad} were asked for the teacher output "
                                f"cache. Check student.init_layers against the teacher's depth."
                            )
                        picked = [states[layer].to("cpu", store_dtype) for layer in hidden_layers]
                        hidden_size = picked[0].shape[-1]
                    for j, r in enumerate(chosen):
                        logits_rows[r] = per_example[j].to(store_logits)
                        if hidden_layers:
                            n = lengths[rows[r]]
                            hidden_rows[r] = [p[j, :n].clone() for p in picked]
                    bar.advance(progress_row, len(chosen))
                shards.append(_save_shard(staging, len(shards), key, shard_start, logits_rows, hidden_rows,
                                          hidden_layers, save_file))
    finally:
        teacher.train(was_training)
    return {
        "format": FORMAT, "key": key, "num_examples": len(split), "num_labels": num_labels, "task": task.name,
        "logits_dtype": str(store_logits).removeprefix("torch."),
        "hidden_layers": hidden_layers, "hidden_size": hidden_size,
        "hidden_dtype": str(store_dtype).removeprefix("torch.") if hidden_layers else None,
        "autocast_dtype": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else None,
        "split_fingerprint": split_fingerprint(split), "shard_size": shard_size, "shards": shards,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _save_shard(staging: Path, number: int, key: str, first: int, logits_rows, hidden_rows,
                hidden_layers: list[int], save_file) -> dict:
    name = f"shard-{number:05d}.safetensors"
    tensors = {"logits": torch.cat(logits_rows).contiguous()}
    row_offsets = torch.zeros(len(logits_rows) + 1, dtype=torch.long)
    row_offsets[1:] = torch.cumsum(torch.tensor([r.shape[0] for r in logits_rows], dtype=torch.long), 0)
    tensors["logit_offsets"] = row_offsets
    token_counts = [h[0].shape[0] for h in hidden_rows] if hidden_layers else [0] * len(logits_rows)
    offsets = torch.zeros(len(logits_rows) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.tensor(token_counts, dtype=torch.long), 0)
    tensors["offsets"] = offsets
    for k, layer in enumerate(hidden_layers):
        tensors[f"hidden.{layer}"] = torch.cat([h[k] for h in hidden_rows]).contiguous()
    path = staging / name
    save_file(tensors, str(path), metadata={"key": key, "first_example": str(first)})
    return {"file": name, "start": first, "count": len(logits_rows), "tokens": int(offsets[-1]),
            "bytes": path.stat().st_size}
