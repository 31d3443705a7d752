"""The distillation pipeline: run directory -> data -> teacher -> student -> fit -> export -> report.

``train/distill.py`` calls :func:`main`; everything it does is here, in small steps that tests can
call one by one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from rich.console import Console

from distilprune.config import Recipe, load_recipe, recipe_to_dict, save_recipe
from distilprune.data import TextClassificationData, check_labels_fit, load_data
from distilprune.errors import ConfigError, DistilpruneError, ModelError
from distilprune.precision import resolve_precision
from distilprune.students import DistilBertStudent, student_from_teacher
from distilprune.teacher import (
    TEACHER_META,
    finetune_cache_key,
    finetuned_cache_dir,
    load_teacher,
    load_tokenizer,
    read_cached_teacher,
    resolve_teacher,
)

console = Console(stderr=True)


# -- run directory ----------------------------------------------------------------------------
def make_run_dir(recipe: Recipe) -> Path:
    """A new directory runs/<name>/<YYYYmmdd-HHMMSS>[-N]; an existing one is never reused."""
    root = Path(recipe.output_dir) / recipe.name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            candidate = root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except PermissionError:
        raise ConfigError(
            f"The output directory {root} is not writable. Set output_dir=<a writable directory> "
            f"(e.g. output_dir=$HOME/distilprune-runs)."
        ) from None
    raise ConfigError(f"Could not create a new run directory under {root}.")


def _quiet_libraries() -> None:
    """Keep the console about this run: library chatter that tells the user nothing is muted."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for pattern in (
        ".*does not have many workers.*", ".*LeafSpec.*", ".*The number of training batches.*",
        ".*Found .* module\\(s\\) in eval mode.*", ".*is an invalid key.*", ".*TracerWarning.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


# -- Lightning plumbing -----------------------------------------------------------------------
def make_loggers(recipe: Recipe, run_dir: Path, stage: str) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers = []
    if recipe.tracking.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="metrics", version=stage))
    if recipe.tracking.wandb:
        if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
            os.environ["WANDB_MODE"] = "offline"  # no key: a local run that `wandb sync` can upload later
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(
            project=recipe.tracking.wandb_project, name=f"{recipe.name}/{run_dir.name}/{stage}",
            save_dir=str(run_dir), group=f"{recipe.name}/{run_dir.name}", job_type=stage,
            config=recipe_to_dict(recipe),
        ))
    return loggers


def make_trainer(recipe: Recipe, run_dir: Path, loggers: list, callbacks: list, epochs: int, max_steps: int = -1) -> L.Trainer:
    from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

    cfg = recipe.train
    callbacks = list(callbacks)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.progress_bar:
        callbacks.append(RichProgressBar(leave=True))
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=epochs,
        max_steps=max_steps,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=resolve_precision(cfg.precision, cfg.accelerator),
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=False,  # students are kept by KeepStudentCheckpoint, teacher never saved
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=cfg.log_every_steps,
        check_val_every_n_epoch=cfg.val_every_epochs,
        num_sanity_val_steps=0,
        deterministic=False,
    )


# -- steps ------------------------------------------------------------------------------------
def prepare_teacher(recipe: Recipe, data: TextClassificationData, run_dir: Path):
    """The frozen, task-fine-tuned teacher and its tokenizer (fine-tuning and caching it if needed)."""
    source, identity = resolve_teacher(recipe.teacher.model)
    tokenizer = load_tokenizer(source, recipe.teacher.model)
    if recipe.teacher.finetuned:
        teacher = load_teacher(source, recipe.teacher.model, num_labels=None)
        check_labels_fit(data, teacher.config.num_labels, recipe.teacher.model)
        _check_positions(recipe, teacher)
        return teacher, tokenizer, {"source": source, "finetuned_here": False}

    t = recipe.teacher
    settings = {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size, "warmup_ratio": t.warmup_ratio,
                "weight_decay": t.weight_decay,
                "precision": resolve_precision(recipe.train.precision, recipe.train.accelerator)}
    key = finetune_cache_key(identity, data.info, settings, recipe.data.max_seq_len, recipe.seed)
    cached = read_cached_teacher(key)
    if cached:
        directory, meta = cached
        console.print(f"[bold]Teacher[/bold]: reusing fine-tuned teacher from cache {directory}")
        teacher = load_teacher(str(directory), recipe.teacher.model, num_labels=None)
        _check_positions(recipe, teacher)
        return teacher, tokenizer, {"source": str(directory), "finetuned_here": False, "cache_key": key, **meta}

    teacher = load_teacher(source, recipe.teacher.model, num_labels=data.num_labels, label_names=data.label_names)
    _check_positions(recipe, teacher)
    console.print(
        f"[bold]Teacher[/bold]: fine-tuning {recipe.teacher.model} on {len(data.train)} examples for "
        f"{t.epochs} epoch(s) (cached afterwards under key {key})"
    )
    from distilprune.train.datamodule import TextDataModule
    from distilprune.train.modules import ClassifierFinetuneModule

    L.seed_everything(recipe.seed, verbose=False)
    datamodule = TextDataModule(data, tokenizer, recipe.data.max_seq_len, t.batch_size, recipe.data.eval_batch_size, recipe.seed)
    module = ClassifierFinetuneModule(teacher, data.num_labels, t.lr, t.weight_decay, t.warmup_ratio)
    trainer = make_trainer(recipe, run_dir, make_loggers(recipe, run_dir, "teacher"), [], epochs=t.epochs)
    trainer.fit(module, datamodule)
    _finish_wandb(trainer)
    val_acc = float(trainer.callback_metrics.get("teacher/val_acc", float("nan")))
    teacher.eval()
    directory = finetuned_cache_dir(key)
    staging = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    teacher.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    meta = {"teacher": recipe.teacher.model, "identity": identity, "settings": settings,
            "data": data.info, "validation_accuracy": val_acc, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    (staging / TEACHER_META).write_text(json.dumps(meta, indent=2))
    if directory.exists():
        shutil.rmtree(staging)  # a concurrent run cached the same key first
    else:
        staging.replace(directory)
    return teacher, tokenizer, {"source": str(directory), "finetuned_here": True, "cache_key": key, **meta}


def _check_positions(recipe: Recipe, teacher) -> None:
    limit = getattr(teacher.config, "max_position_embeddings", None)
    if limit is not None and recipe.data.max_seq_len > limit:
        raise ModelError(
            f"data.max_seq_len={recipe.data.max_seq_len} is longer than the teacher's {limit} position "
            f"embeddings. Set data.max_seq_len to {limit} or less."
        )


def _finish_wandb(trainer: L.Trainer) -> None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()


def build_student(recipe: Recipe, teacher) -> DistilBertStudent:
    return student_from_teacher(teacher, recipe.student.num_layers, recipe.student.init_layers)


def distill(recipe: Recipe, run_dir: Path, teacher, tokenizer, data: TextClassificationData, student: DistilBertStudent):
    """Fit the student; returns the trainer (its loggers stay open for the report)."""
    from distilprune.train.callbacks import KeepStudentCheckpoint
    from distilprune.train.datamodule import TextDataModule
    from distilprune.train.modules import DistillationModule

    L.seed_everything(recipe.seed, verbose=False)
    datamodule = TextDataModule(data, tokenizer, recipe.data.max_seq_len, recipe.train.batch_size,
                                recipe.data.eval_batch_size, recipe.seed)
    module = DistillationModule(student, teacher, recipe.distill, recipe.train, data.num_labels, recipe.pruning)
    keep_at = recipe.pruning.keep_at_densities if recipe.pruning.enabled else []
    trainer = make_trainer(
        recipe, run_dir, make_loggers(recipe, run_dir, "distill"),
        [KeepStudentCheckpoint(run_dir / "checkpoints", keep_at)],
        epochs=recipe.train.epochs, max_steps=recipe.train.max_steps,
    )
    console.print(
        f"[bold]Student[/bold]: DistilBERT, {student.config.num_layers} layers from teacher layers "
        f"{student.config.source_layers}, {student.num_parameters() / 1e6:.1f}M parameters; distilling on "
        f"{len(data.train)} examples"
        + (f"; block pruning ({recipe.pruning.method}) to attention density {recipe.pruning.attention_density}, "
           f"FFN density {recipe.pruning.ffn_density}" if recipe.pruning.enabled else "")
    )
    trainer.fit(module, datamodule)
    return trainer


def log_report_to_wandb(trainer: L.Trainer, report: dict) -> None:
    from distilprune.export.report import HEADER, rows

    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            logger.experiment.log({"report/table": wandb.Table(columns=HEADER, data=rows(report))})
            for ckpt in report["checkpoints"]:
                logger.experiment.summary[f"{ckpt['name']}/onnx_int8_accuracy"] = ckpt["accuracy"]["onnx_int8"]
                logger.experiment.summary[f"{ckpt['name']}/onnx_int8_p50_ms"] = ckpt["latency_ms"]["onnx_int8"]["p50"]
            logger.experiment.finish()


def run(recipe: Recipe) -> Path:
    """The whole pipeline. Returns the path of report.json."""
    from distilprune.export.report import print_report
    from distilprune.export.run_export import export_run

    _quiet_libraries()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    run_dir = make_run_dir(recipe)
    save_recipe(recipe, run_dir / "recipe.yaml")
    console.print(f"[bold]Run[/bold] {recipe.name} -> {run_dir}")
    L.seed_everything(recipe.seed, verbose=False)
    data = load_data(recipe.data)
    console.print(f"[bold]Data[/bold]: {data.source}: {data.info['rows']}")
    teacher, tokenizer, teacher_info = prepare_teacher(recipe, data, run_dir)
    tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    student = build_student(recipe, teacher)
    start = time.perf_counter()
    trainer = distill(recipe, run_dir, teacher, tokenizer, data, student)
    train_seconds = time.perf_counter() - start
    run_info = {"teacher": teacher_info, "train_seconds": round(train_seconds, 1),
                "train_steps": int(trainer.global_step),
                "precision": resolve_precision(recipe.train.precision, recipe.train.accelerator)}
    (run_dir / "run_info.json").write_text(json.dumps(run_info, indent=2))
    if not recipe.export.enabled:
        console.print(f"Export disabled; checkpoints are in {run_dir / 'checkpoints'}")
        return run_dir
    report, json_path = export_run(run_dir, run_dir, recipe, teacher, tokenizer, data, extra={"training": run_info})
    log_report_to_wandb(trainer, report)
    print_report(report, json_path)
    return json_path


def main(argv: list[str] | None = None) -> int:
    """Entry point: every :class:`DistilpruneError` becomes one paragraph on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        recipe = load_recipe(argv)
        run(recipe)
    except DistilpruneError as error:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/bold red]: outputs written so far are complete files.")
        return 130
    return 0
