"""The distillation stage: the student (built once), the augmented training split, the teacher's
cached outputs, and the fit itself."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console

from distilprune.config import Recipe
from distilprune.errors import ConfigError, ModelError
from distilprune.precision import resolve_precision
from distilprune.students import DistilBertStudent, student_from_teacher
from distilprune.students.from_teacher import check_init_layers
from distilprune.tasks import Task, TaskData
from distilprune.train.ranks import is_rank_zero, seed_everything
from distilprune.train.resume import RESUME_DIR, batches_done_in_epoch

if TYPE_CHECKING:
    import lightning as L

console = Console(stderr=True)


def check_student_plan(recipe: Recipe, teacher) -> None:
    """Check, without building it, that the student the recipe asks for can be copied from
    ``teacher`` and pruned as asked (the teacher is fine-tuned before the student is built)."""
    from distilprune.architectures import layers_of

    layers = check_init_layers(len(layers_of(teacher)), recipe.student.num_layers, recipe.student.init_layers)
    if recipe.pruning.enabled:
        from distilprune.pruning import BlockPruner

        BlockPruner.check(teacher, recipe.pruning.block_shapes, recipe.pruning.layers, source_layers=layers)


def build_student(recipe: Recipe, teacher, task: Task) -> DistilBertStudent:
    """The student to distil: teacher layers copied into a DistilBERT with the task's head, or a kept
    student checkpoint (``student.init_from``) checked against the recipe and the teacher; checked
    for pruning."""
    student = _student_from_checkpoint(recipe, teacher, task) if recipe.student.init_from else (
        student_from_teacher(teacher, recipe.student.num_layers, recipe.student.init_layers, head=task.head,
                             segment_embeddings=recipe.student.segment_embeddings))
    if recipe.pruning.enabled:
        from distilprune.pruning import BlockPruner

        BlockPruner.check(student, recipe.pruning.block_shapes, recipe.pruning.layers)
    return student


def _student_from_checkpoint(recipe: Recipe, teacher, task: Task) -> DistilBertStudent:
    source = Path(recipe.student.init_from).expanduser()
    try:
        student = DistilBertStudent.load(source)
    except ModelError as error:
        raise ConfigError(f"student.init_from: {error}") from None
    config = student.config
    teacher_vocab = teacher.get_input_embeddings().num_embeddings
    teacher_labels = teacher.config.num_labels
    problems = []
    if config.num_layers != recipe.student.num_layers:
        problems.append(f"it has {config.num_layers} layers but student.num_layers is {recipe.student.num_layers} "
                        f"(set student.num_layers={config.num_layers})")
    if config.vocab_size != teacher_vocab:
        problems.append(f"its vocabulary has {config.vocab_size} tokens, the teacher's {teacher_vocab} "
                        f"(it was distilled from another teacher; use that teacher.model)")
    if config.head != task.head:
        problems.append(f"it has a {config.head} head, task {task.name} needs a {task.head} head "
                        f"(it was trained for another task)")
    if config.num_labels != teacher_labels:
        problems.append(f"it predicts {config.num_labels} labels, the teacher {teacher_labels} "
                        f"(it was trained on another dataset)")
    if problems:
        raise ConfigError(f"student.init_from={source} cannot start this run: " + "; ".join(problems) + ".")
    return student.train()


def with_augmented_train(recipe: Recipe, data: TaskData, tokenizer, task: Task) -> TaskData:
    """``data`` with ``distill.augment_copies`` perturbed copies appended to its training split (no
    gold labels; see :mod:`distilprune.augment`), and the augmentation recorded in ``info`` so the
    teacher output cache is keyed on it. Unchanged when augmentation is off."""
    cfg = recipe.distill
    if cfg.augment_copies <= 0:
        return data
    if not task.supports_augmentation or getattr(data.train, "text_pairs", None) is not None:
        raise ConfigError(
            f"distill.augment_copies={cfg.augment_copies}, but this run has no text augmentation: it perturbs "
            f"single texts of a sequence-classification task (not text pairs, not the words of a token-"
            f"classification task, whose gold tags would break). Set distill.augment_copies=0."
        )
    from distilprune.augment import augment_split

    settings = {"copies": cfg.augment_copies, "mask_prob": cfg.augment_mask_prob, "swap_prob": cfg.augment_swap_prob,
                "ngram_prob": cfg.augment_ngram_prob, "seed": recipe.seed}
    train = augment_split(data.train, cfg.augment_copies, cfg.augment_mask_prob, cfg.augment_swap_prob,
                          cfg.augment_ngram_prob, tokenizer.mask_token or "[MASK]", seed=recipe.seed)
    info = {**data.info, "augmentation": settings,
            "rows": {**data.info.get("rows", {}), "train_with_augmented": len(train)}}
    return replace(data, train=train, info=info)


def build_teacher_cache(recipe: Recipe, teacher, tokenizer, data: TaskData, datamodule,
                        teacher_identity: str, student, task: Task):
    """The teacher's outputs on the training split, computed once and read from disk afterwards."""
    from distilprune.teacher_cache import (
        build_teacher_outputs,
        teacher_cache_key,
        teacher_outputs_root,
        tokenizer_fingerprint,
    )

    precision = resolve_precision(recipe.train.precision, recipe.train.accelerator)
    hidden_layers = (
        [src + 1 for src in student.config.source_layers] if recipe.distill.hidden_loss != "none" else None
    )
    key = teacher_cache_key(teacher_identity, {**data.info, "task": task.name}, tokenizer_fingerprint(tokenizer),
                            recipe.data.max_seq_len, precision, hidden_layers)
    device = "cuda" if recipe.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    teacher.to(device)
    try:
        return build_teacher_outputs(
            teacher, datamodule.train_split, teacher_outputs_root(), key, task=task,
            batch_size=recipe.data.eval_batch_size, autocast_dtype=autocast_dtype,
            hidden_layers=hidden_layers, progress=recipe.train.progress_bar and is_rank_zero(),
        )
    finally:
        teacher.to("cpu")


def distill(recipe: Recipe, run_dir: Path, teacher, tokenizer, data: TaskData, task: Task, student: DistilBertStudent,
            teacher_identity: str, resume: dict | None) -> "L.Trainer":
    """Fit the student; returns the trainer (its loggers stay open for the report).

    ``resume`` = {"path": last.ckpt, "checkpoint": its contents}: continue that run exactly.
    """
    from distilprune.train.callbacks import KeepStudentCheckpoint, ResumeCheckpoint
    from distilprune.train.datamodule import TextDataModule
    from distilprune.train.modules import DistillationModule
    from distilprune.train.trainer import make_loggers, make_trainer

    seed_everything(recipe.seed)
    t = recipe.train
    data = with_augmented_train(recipe, data, tokenizer, task)
    datamodule = TextDataModule(
        data, tokenizer, recipe.data.max_seq_len, t.batch_size, recipe.data.eval_batch_size, recipe.seed,
        padding=t.padding, length_bucketing=t.length_bucketing, num_workers=t.num_workers, pin_memory=t.pin_memory,
        task=task,
    )
    if recipe.distill.teacher_cache and (recipe.distill.kd_weight > 0 or recipe.distill.hidden_loss != "none"):
        datamodule.set_teacher_outputs(
            build_teacher_cache(recipe, teacher, tokenizer, data, datamodule, teacher_identity, student, task))
    module = DistillationModule(student, teacher, recipe.distill, t, data.num_labels, recipe.pruning, task=task)
    keep_at = recipe.pruning.keep_at_densities if recipe.pruning.enabled else []
    stage = "distill"
    if resume is not None:
        datamodule.resume_skip = batches_done_in_epoch(resume["checkpoint"], len(datamodule.splits["train"]), t.batch_size)
        stage = f"distill-resumed-{time.strftime('%Y%m%d-%H%M%S')}"
    callbacks = [KeepStudentCheckpoint(run_dir / "checkpoints", keep_at),
                 ResumeCheckpoint(run_dir / RESUME_DIR, t.checkpoint_every_steps)]
    trainer = make_trainer(recipe, run_dir, make_loggers(recipe, run_dir, stage), callbacks,
                           epochs=t.epochs, max_steps=t.max_steps)
    if is_rank_zero():
        console.print(_describe(recipe, student, len(data.train), resume))
    trainer.fit(module, datamodule, ckpt_path=str(resume["path"]) if resume else None, weights_only=True if resume else None)
    return trainer


def _describe(recipe: Recipe, student: DistilBertStudent, train_examples: int, resume: dict | None) -> str:
    """One line: the student, the data, the processes, the pruning target and the resume point."""
    t, pruning = recipe.train, recipe.pruning
    world = t.devices * t.num_nodes
    return (
        f"[bold]Student[/bold]: DistilBERT, {student.config.num_layers} layers "
        + (f"from the checkpoint {recipe.student.init_from}" if recipe.student.init_from
           else f"from teacher layers {student.config.source_layers}")
        + f", {student.num_parameters() / 1e6:.1f}M parameters; distilling on {train_examples} examples"
        + (f" ({recipe.distill.augment_copies} augmented copies of each, teacher logits only)"
           if recipe.distill.augment_copies else "")
        + (f" over {world} processes ({t.strategy})" if world > 1 else "")
        + (f"; block pruning ({pruning.method}) to attention density {pruning.attention_density}, "
           f"FFN density {pruning.ffn_density}" if pruning.enabled else "")
        + (f"; resuming from step {resume['checkpoint']['global_step']}" if resume else "")
    )
