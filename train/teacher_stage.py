"""The teacher of a run: resolved, loaded and checked before anything is written, then fine-tuned
on the task (one device) unless the fine-tuning cache already holds it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from distilprune.config import Recipe
from distilprune.data import check_teacher_labels
from distilprune.tasks import Task, TaskData
from distilprune.errors import ModelError
from distilprune.precision import resolve_precision
from distilprune.teacher import (
    cached_teacher_info,
    finetune_cache_key,
    load_teacher,
    load_tokenizer,
    read_cached_teacher,
    resolve_teacher,
    write_cached_teacher,
)
from distilprune.train.ranks import is_rank_zero, seed_everything

console = Console(stderr=True)


@dataclass
class RunTeacher:
    teacher: object
    tokenizer: object
    info: dict
    """What the run records about the teacher (source, identity, cache key...)."""
    finetune: dict | None = None
    """{"key", "settings"} when the teacher still has to be fine-tuned; None when it is ready."""


def load_teacher_for_run(recipe: Recipe, data: TaskData, task: Task) -> RunTeacher:
    """Resolve, load and check the teacher *before* anything is written (bad input fails early)."""
    spec = recipe.teacher.model
    source, identity = resolve_teacher(spec)
    tokenizer = load_tokenizer(source, spec)
    auto_class = task.hf_auto_class
    if recipe.teacher.finetuned:
        teacher = load_teacher(source, spec, num_labels=None, tokenizer=tokenizer, auto_class=auto_class)
        check_teacher_label_order(data, teacher, spec)
        check_positions(recipe, teacher)
        return RunTeacher(teacher, tokenizer, {"source": source, "identity": identity, "finetuned_here": False})
    settings = finetune_settings(recipe)
    key = finetune_cache_key(identity, {**data.info, "task": task.name}, settings, recipe.data.max_seq_len,
                             recipe.seed)
    cached = read_cached_teacher(key)
    if cached:
        directory, meta = cached
        if is_rank_zero():
            console.print(f"[bold]Teacher[/bold]: reusing fine-tuned teacher from cache {directory}")
        teacher = load_teacher(str(directory), spec, num_labels=None, tokenizer=tokenizer, auto_class=auto_class)
        check_positions(recipe, teacher)
        return RunTeacher(teacher, tokenizer, cached_teacher_info(directory, key, meta, finetuned_here=False))
    teacher = load_teacher(source, spec, num_labels=data.num_labels, label_names=data.label_names, tokenizer=tokenizer,
                           auto_class=auto_class)
    check_positions(recipe, teacher)
    return RunTeacher(teacher, tokenizer, {"source": source, "identity": identity},
                      finetune={"key": key, "settings": settings})


def finetune_settings(recipe: Recipe) -> dict:
    """Everything about the fine-tuning that changes its result (part of the cache key)."""
    t = recipe.teacher
    return {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size, "warmup_ratio": t.warmup_ratio,
            "weight_decay": t.weight_decay,
            "precision": resolve_precision(recipe.train.precision, recipe.train.accelerator)}


def check_teacher_label_order(data: TaskData, teacher, spec: str) -> None:
    """A fine-tuned teacher's labels must be the dataset's, in the same order (names compared when
    the teacher names its labels; generic LABEL_0.. names only fix the count)."""
    outputs = int(teacher.config.num_labels)
    if data.num_labels > outputs:
        raise ModelError(
            f"The dataset has {data.num_labels} labels ({', '.join(data.label_names[:8])}"
            f"{' ...' if data.num_labels > 8 else ''}) but the model {spec} outputs only {outputs} "
            f"classes. Use a teacher fine-tuned on this label set, or set teacher.finetuned=false so a new head "
            f"of the right size is trained."
        )
    id2label = getattr(teacher.config, "id2label", None) or {}
    check_teacher_labels(list(data.label_names), {int(k): str(v) for k, v in id2label.items()}, spec)


def finetune_teacher(recipe: Recipe, data: TaskData, task: Task, run_dir: Path, loaded: RunTeacher) -> None:
    """Fine-tune ``loaded.teacher`` on the task (one device), cache it, and update ``loaded`` in place."""
    from distilprune.train.datamodule import TextDataModule
    from distilprune.train.modules import ClassifierFinetuneModule
    from distilprune.train.trainer import finish_wandb, make_loggers, make_trainer

    teacher, tokenizer, t = loaded.teacher, loaded.tokenizer, recipe.teacher
    key, settings = loaded.finetune["key"], loaded.finetune["settings"]
    console.print(
        f"[bold]Teacher[/bold]: fine-tuning {t.model} on {len(data.train)} examples for "
        f"{t.epochs} epoch(s) (cached afterwards under key {key})"
    )
    seed_everything(recipe.seed)
    datamodule = TextDataModule(data, tokenizer, recipe.data.max_seq_len, t.batch_size, recipe.data.eval_batch_size,
                                recipe.seed, task=task)
    module = ClassifierFinetuneModule(teacher, task, data.num_labels, t.lr, t.weight_decay, t.warmup_ratio)
    # One device: fine-tuning is short, and its result is cached before any distributed launch, so
    # the processes Lightning starts for distillation find it in the cache.
    trainer = make_trainer(recipe, run_dir, make_loggers(recipe, run_dir, "teacher"), [], epochs=t.epochs, distributed=False)
    trainer.fit(module, datamodule)
    finish_wandb(trainer)
    val_acc = float(trainer.callback_metrics.get("teacher/val_acc", float("nan")))
    teacher.eval()
    meta = {"teacher": t.model, "identity": loaded.info["identity"], "settings": settings, "data": data.info,
            "validation_accuracy": val_acc}
    directory, meta = write_cached_teacher(key, teacher, tokenizer, meta)
    loaded.info = cached_teacher_info(directory, key, meta, finetuned_here=True)
    loaded.finetune = None


def check_positions(recipe: Recipe, teacher) -> None:
    """Every sequence length the run asks for fits the teacher's position embeddings."""
    limit = getattr(teacher.config, "max_position_embeddings", None)
    if limit is None:
        return
    if recipe.data.max_seq_len > limit:
        raise ModelError(
            f"data.max_seq_len={recipe.data.max_seq_len} is longer than the teacher's {limit} position "
            f"embeddings. Set data.max_seq_len to {limit} or less."
        )
    e = recipe.export
    longest = max(e.grid_seq_lens + [e.latency_seq_len, e.budget_seq_len])
    if e.enabled and longest > limit:
        raise ModelError(
            f"The export's latency measurements ask for sequences of {longest} tokens "
            f"(export.grid_seq_lens={e.grid_seq_lens}, latency_seq_len={e.latency_seq_len}, "
            f"budget_seq_len={e.budget_seq_len}) but the model has {limit} position embeddings. Set them to "
            f"{limit} or less, e.g. export.grid_seq_lens=[32,{limit}] export.latency_seq_len={limit} "
            f"export.budget_seq_len={limit}."
        )
