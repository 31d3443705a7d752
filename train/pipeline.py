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
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    import lightning as L

# Lightning is imported where training starts, not here: a recipe or data mistake is reported in
# about two seconds instead of after the Lightning import.
console = Console(stderr=True)


RUN_DIR_ENV = "DISTILPRUNE_RUN_DIR"


# -- processes ----------------------------------------------------------------------------------
def process_rank() -> int:
    """Global rank of this process before Lightning sets up (0 when not distributed).

    Lightning's DDP launcher re-runs this script for ranks 1..N-1 with LOCAL_RANK/NODE_RANK set;
    SLURM and torchrun set RANK / SLURM_PROCID themselves.
    """
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable])
    local = int(os.environ.get("LOCAL_RANK", 0))
    return local if int(os.environ.get("NODE_RANK", 0)) == 0 else -1  # other nodes: not rank 0


def is_rank_zero() -> bool:
    return process_rank() == 0


# -- run directory ----------------------------------------------------------------------------
def make_run_dir(recipe: Recipe) -> Path:
    """A new directory runs/<name>/<YYYYmmdd-HHMMSS>[-N]; an existing one is never reused.

    Distributed runs share one directory: rank 0 creates it and hands it to the processes Lightning
    launches through the environment; under SLURM / torchrun (processes started outside) its name is
    the job id, so every rank computes the same path on the shared filesystem.
    """
    shared = os.environ.get(RUN_DIR_ENV)
    if shared and not is_rank_zero():
        return Path(shared)
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    if job and recipe.train.devices * recipe.train.num_nodes > 1 and job != "none":
        path = Path(recipe.output_dir) / recipe.name / f"job-{job}"
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = Path(recipe.output_dir) / recipe.name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            candidate = root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                candidate.mkdir()
                os.environ[RUN_DIR_ENV] = str(candidate.resolve())
                return candidate
            except FileExistsError:
                continue
    except (PermissionError, NotADirectoryError, FileExistsError, OSError) as error:
        raise ConfigError(
            f"The output directory {root} cannot be created or written ({error.strerror or error}). "
            f"Set output_dir=<a writable directory> (e.g. output_dir=$HOME/distilprune-runs)."
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


def make_trainer(
    recipe: Recipe, run_dir: Path, loggers: list, callbacks: list, epochs: int, max_steps: int = -1,
    distributed: bool = True,
) -> "L.Trainer":
    """``distributed=False`` runs on one device whatever the recipe says (teacher fine-tuning)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

    cfg = recipe.train
    devices, nodes, strategy = (cfg.devices, cfg.num_nodes, cfg.strategy) if distributed else (1, 1, "auto")
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        options = {}
        if cfg.accelerator == "cpu" or not torch.cuda.is_available():
            options["process_group_backend"] = "gloo"
        if recipe.pruning.enabled and recipe.pruning.fill:
            options["find_unused_parameters"] = True  # after the fill the scores get no gradient
        if options:
            strategy = DDPStrategy(**options)
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
        devices=devices,
        num_nodes=nodes,
        strategy=strategy,
        # Our batch sampler shards every global batch across ranks itself (exact 1-process parity).
        use_distributed_sampler=False,
        precision=resolve_precision(cfg.precision, cfg.accelerator),
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=False,  # KeepStudentCheckpoint + ResumeCheckpoint; the teacher is never saved
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=cfg.log_every_steps,
        check_val_every_n_epoch=cfg.val_every_epochs,
        num_sanity_val_steps=0,
        deterministic=False,
    )


# -- steps ------------------------------------------------------------------------------------
def load_teacher_for_run(recipe: Recipe, data: TextClassificationData) -> dict:
    """Resolve, load and check the teacher *before* anything is written (bad input fails early).

    Returns {"teacher", "tokenizer", "info", "finetune": None | {"key", "settings", "identity"}}.
    """
    source, identity = resolve_teacher(recipe.teacher.model)
    tokenizer = load_tokenizer(source, recipe.teacher.model)
    if recipe.teacher.finetuned:
        teacher = load_teacher(source, recipe.teacher.model, num_labels=None, tokenizer=tokenizer)
        check_labels_fit(data, teacher.config.num_labels, recipe.teacher.model)
        _check_positions(recipe, teacher)
        return {"teacher": teacher, "tokenizer": tokenizer, "finetune": None,
                "info": {"source": source, "identity": identity, "finetuned_here": False}}
    t = recipe.teacher
    settings = {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size, "warmup_ratio": t.warmup_ratio,
                "weight_decay": t.weight_decay,
                "precision": resolve_precision(recipe.train.precision, recipe.train.accelerator)}
    key = finetune_cache_key(identity, data.info, settings, recipe.data.max_seq_len, recipe.seed)
    cached = read_cached_teacher(key)
    if cached:
        directory, meta = cached
        if is_rank_zero():
            console.print(f"[bold]Teacher[/bold]: reusing fine-tuned teacher from cache {directory}")
        teacher = load_teacher(str(directory), recipe.teacher.model, num_labels=None, tokenizer=tokenizer)
        _check_positions(recipe, teacher)
        return {"teacher": teacher, "tokenizer": tokenizer, "finetune": None,
                # identity last: the fine-tuned weights (key), not the base model named in meta
                "info": {"source": str(directory), "finetuned_here": False, "cache_key": key, **meta,
                         "base_identity": meta.get("identity"), "identity": f"finetuned:{key}"}}
    teacher = load_teacher(source, recipe.teacher.model, num_labels=data.num_labels, label_names=data.label_names,
                           tokenizer=tokenizer)
    _check_positions(recipe, teacher)
    return {"teacher": teacher, "tokenizer": tokenizer, "info": {"source": source, "identity": identity},
            "finetune": {"key": key, "settings": settings}}


def finetune_teacher(recipe: Recipe, data: TextClassificationData, run_dir: Path, loaded: dict):
    """Fine-tune the teacher on the task (one device) and cache it; returns (teacher, info)."""
    teacher, tokenizer = loaded["teacher"], loaded["tokenizer"]
    key, settings = loaded["finetune"]["key"], loaded["finetune"]["settings"]
    t = recipe.teacher
    console.print(
        f"[bold]Teacher[/bold]: fine-tuning {recipe.teacher.model} on {len(data.train)} examples for "
        f"{t.epochs} epoch(s) (cached afterwards under key {key})"
    )
    from distilprune.train.datamodule import TextDataModule
    from distilprune.train.modules import ClassifierFinetuneModule

    seed_everything(recipe.seed)
    datamodule = TextDataModule(data, tokenizer, recipe.data.max_seq_len, t.batch_size, recipe.data.eval_batch_size, recipe.seed)
    module = ClassifierFinetuneModule(teacher, data.num_labels, t.lr, t.weight_decay, t.warmup_ratio)
    # One device: fine-tuning is short, and its result is cached before any distributed launch, so
    # the processes Lightning starts for distillation find it in the cache.
    trainer = make_trainer(recipe, run_dir, make_loggers(recipe, run_dir, "teacher"), [], epochs=t.epochs, distributed=False)
    trainer.fit(module, datamodule)
    _finish_wandb(trainer)
    val_acc = float(trainer.callback_metrics.get("teacher/val_acc", float("nan")))
    teacher.eval()
    directory = finetuned_cache_dir(key)
    staging = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    teacher.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    meta = {"teacher": recipe.teacher.model, "identity": loaded["info"]["identity"], "settings": settings,
            "data": data.info, "validation_accuracy": val_acc, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    (staging / TEACHER_META).write_text(json.dumps(meta, indent=2))
    if directory.exists():
        shutil.rmtree(staging)  # a concurrent run cached the same key first
    else:
        staging.replace(directory)
    return teacher, {"source": str(directory), "finetuned_here": True, "cache_key": key, **meta,
                     "base_identity": meta["identity"], "identity": f"finetuned:{key}"}


def _check_positions(recipe: Recipe, teacher) -> None:
    limit = getattr(teacher.config, "max_position_embeddings", None)
    if limit is not None and recipe.data.max_seq_len > limit:
        raise ModelError(
            f"data.max_seq_len={recipe.data.max_seq_len} is longer than the teacher's {limit} position "
            f"embeddings. Set data.max_seq_len to {limit} or less."
        )
    e = recipe.export
    longest = max(e.grid_seq_lens + [e.latency_seq_len, e.budget_seq_len])
    if e.enabled and limit is not None and longest > limit:
        raise ModelError(
            f"The export's latency measurements ask for sequences of {longest} tokens "
            f"(export.grid_seq_lens={e.grid_seq_lens}, latency_seq_len={e.latency_seq_len}, "
            f"budget_seq_len={e.budget_seq_len}) but the model has {limit} position embeddings. Set them to "
            f"{limit} or less, e.g. export.grid_seq_lens=[32,{limit}] export.latency_seq_len={limit} "
            f"export.budget_seq_len={limit}."
        )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (what Lightning's seed_everything does, without importing it),
    and export PL_GLOBAL_SEED so processes Lightning launches seed the same way."""
    import random

    import numpy as np

    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _finish_wandb(trainer: "L.Trainer") -> None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()


def build_student(recipe: Recipe, teacher) -> DistilBertStudent:
    """The student to distil: teacher layers copied into a DistilBERT, or a kept student checkpoint
    (``student.init_from``) checked against the recipe and the teacher."""
    if not recipe.student.init_from:
        return student_from_teacher(teacher, recipe.student.num_layers, recipe.student.init_layers)
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
    if config.num_labels != teacher_labels:
        problems.append(f"it predicts {config.num_labels} labels, the teacher {teacher_labels} "
                        f"(it was trained on another dataset)")
    if problems:
        raise ConfigError(f"student.init_from={source} cannot start this run: " + "; ".join(problems) + ".")
    return student.train()


def _autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def with_augmented_train(recipe: Recipe, data: TextClassificationData, tokenizer) -> TextClassificationData:
    """``data`` with ``distill.augment_copies`` perturbed copies appended to its training split (no
    gold labels; see :mod:`distilprune.augment`), and the augmentation recorded in ``info`` so the
    teacher output cache is keyed on it. Unchanged when augmentation is off."""
    cfg = recipe.distill
    if cfg.augment_copies <= 0:
        return data
    from dataclasses import replace

    from distilprune.augment import augment_split

    settings = {"copies": cfg.augment_copies, "mask_prob": cfg.augment_mask_prob, "swap_prob": cfg.augment_swap_prob,
                "ngram_prob": cfg.augment_ngram_prob, "seed": recipe.seed}
    train = augment_split(data.train, cfg.augment_copies, cfg.augment_mask_prob, cfg.augment_swap_prob,
                          cfg.augment_ngram_prob, tokenizer.mask_token or "[MASK]", seed=recipe.seed)
    info = {**data.info, "augmentation": settings,
            "rows": {**data.info.get("rows", {}), "train_with_augmented": len(train)}}
    return replace(data, train=train, info=info)


def build_teacher_cache(recipe: Recipe, teacher, tokenizer, data: TextClassificationData, datamodule, teacher_identity: str, student):
    """The teacher's outputs on the training split, computed once and read from disk afterwards."""
    from distilprune.assets import cache_root
    from distilprune.teacher_cache import build_teacher_outputs, teacher_cache_key, tokenizer_fingerprint

    precision = resolve_precision(recipe.train.precision, recipe.train.accelerator)
    hidden_layers = (
        [src + 1 for src in student.config.source_layers] if recipe.distill.hidden_loss != "none" else None
    )
    key = teacher_cache_key(teacher_identity, data.info, tokenizer_fingerprint(tokenizer), recipe.data.max_seq_len,
                            precision, hidden_layers)
    device = "cuda" if recipe.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    teacher.to(device)
    try:
        return build_teacher_outputs(
            teacher, datamodule.splits["train"], cache_root() / "teacher_outputs", key,
            batch_size=recipe.data.eval_batch_size, autocast_dtype=_autocast_dtype(precision),
            hidden_layers=hidden_layers, progress=recipe.train.progress_bar and is_rank_zero(),
        )
    finally:
        teacher.to("cpu")


def resume_checkpoint_path(run_dir: Path) -> Path:
    from distilprune.train.callbacks import ResumeCheckpoint

    return run_dir / "resume" / ResumeCheckpoint.FILENAME


def read_resume_checkpoint(path: Path) -> dict:
    """Load and check a resume checkpoint with ``weights_only=True`` (tensors and plain types only)."""
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(
            f"There is no resume checkpoint at {path}: the run stopped before its first checkpoint "
            f"(train.checkpoint_every_steps) was written. Start it again instead of resuming."
        ) from None
    except Exception as error:  # truncated zip, pickle with foreign classes, not a torch file
        raise ModelError(
            f"The resume checkpoint {path} cannot be read safely ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). It is truncated or was not written by distilprune. "
            f"Delete it and start the run again, or resume a different run directory."
        ) from None
    if not isinstance(checkpoint, dict) or "distilprune" not in checkpoint or "state_dict" not in checkpoint:
        raise ModelError(
            f"{path} is a PyTorch file but not a distilprune resume checkpoint (no 'distilprune' and "
            f"'state_dict' entries). Resume only runs written by train/distill.py."
        )
    return checkpoint


def batches_done_in_epoch(checkpoint: dict, train_examples: int, global_batch: int) -> int:
    """Global batches of the interrupted epoch that the checkpoint already trained on.

    A checkpoint written at an epoch's end (its epoch is processed but not yet counted complete)
    resumes at the start of the next epoch: 0. One written after step k of an epoch resumes at k.
    """
    epoch = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
    if epoch["processed"] > epoch["completed"]:
        return 0
    steps_per_epoch = -(-train_examples // global_batch)
    return int(checkpoint["global_step"]) - int(checkpoint["epoch"]) * steps_per_epoch


def distill(recipe: Recipe, run_dir: Path, teacher, tokenizer, data: TextClassificationData, student: DistilBertStudent,
            teacher_identity: str = "", resume: dict | None = None):
    """Fit the student; returns the trainer (its loggers stay open for the report).

    ``resume`` = {"path": last.ckpt, "checkpoint": its contents}: continue that run exactly.
    """
    from distilprune.train.callbacks import KeepStudentCheckpoint, KillAfterStep, ResumeCheckpoint
    from distilprune.train.datamodule import TextDataModule
    from distilprune.train.modules import DistillationModule

    seed_everything(recipe.seed)
    t = recipe.train
    data = with_augmented_train(recipe, data, tokenizer)
    datamodule = TextDataModule(
        data, tokenizer, recipe.data.max_seq_len, t.batch_size, recipe.data.eval_batch_size, recipe.seed,
        padding=t.padding, length_bucketing=t.length_bucketing, num_workers=t.num_workers, pin_memory=t.pin_memory,
    )
    if recipe.distill.teacher_cache and (recipe.distill.kd_weight > 0 or recipe.distill.hidden_loss != "none"):
        datamodule.set_teacher_outputs(build_teacher_cache(recipe, teacher, tokenizer, data, datamodule, teacher_identity, student))
    module = DistillationModule(student, teacher, recipe.distill, t, data.num_labels, recipe.pruning)
    keep_at = recipe.pruning.keep_at_densities if recipe.pruning.enabled else []
    stage = "distill"
    if resume is not None:
        datamodule.resume_skip = batches_done_in_epoch(resume["checkpoint"], len(datamodule.splits["train"]), t.batch_size)
        stage = f"distill-resumed-{time.strftime('%Y%m%d-%H%M%S')}"
    callbacks = [KeepStudentCheckpoint(run_dir / "checkpoints", keep_at),
                 ResumeCheckpoint(run_dir / "resume", t.checkpoint_every_steps)]
    if os.environ.get(KillAfterStep.ENV) and resume is None:
        callbacks.append(KillAfterStep(int(os.environ[KillAfterStep.ENV])))  # after ResumeCheckpoint
    trainer = make_trainer(recipe, run_dir, make_loggers(recipe, run_dir, stage), callbacks,
                           epochs=t.epochs, max_steps=t.max_steps)
    if is_rank_zero():
        world = t.devices * t.num_nodes
        console.print(
            f"[bold]Student[/bold]: DistilBERT, {student.config.num_layers} layers "
            + (f"from the checkpoint {recipe.student.init_from}" if recipe.student.init_from
               else f"from teacher layers {student.config.source_layers}")
            + f", {student.num_parameters() / 1e6:.1f}M parameters; distilling on "
            f"{len(data.train)} examples"
            + (f" ({recipe.distill.augment_copies} augmented copies of each, teacher logits only)"
               if recipe.distill.augment_copies else "")
            + (f" over {world} processes ({t.strategy})" if world > 1 else "")
            + (f"; block pruning ({recipe.pruning.method}) to attention density {recipe.pruning.attention_density}, "
               f"FFN density {recipe.pruning.ffn_density}" if recipe.pruning.enabled else "")
            + (f"; resuming from step {resume['checkpoint']['global_step']}" if resume else "")
        )
    trainer.fit(module, datamodule, ckpt_path=str(resume["path"]) if resume else None, weights_only=True if resume else None)
    return trainer


def log_report_to_wandb(trainer: "L.Trainer", report: dict, extra_images: dict[str, Path] | None = None,
                        bundles: list[Path] | None = None) -> None:
    """Report table, Pareto plot and each bundle (as an artifact) into the run's W&B run."""
    from distilprune.export.report import HEADER, rows

    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            logger.experiment.log({"report/table": wandb.Table(columns=HEADER, data=rows(report))})
            for key, path in (extra_images or {}).items():
                logger.experiment.log({key: wandb.Image(str(path))})
            for ckpt in report["checkpoints"]:
                logger.experiment.summary[f"{ckpt['name']}/onnx_int8_accuracy"] = ckpt["accuracy"]["onnx_int8"]
                logger.experiment.summary[f"{ckpt['name']}/onnx_int8_p50_ms"] = ckpt["latency_ms"]["onnx_int8"]["p50"]
            for bundle in bundles or []:
                artifact = wandb.Artifact(name=f"bundle-{report['recipe']['name'].replace('/', '-')}-{bundle.name}",
                                          type="model", metadata={"run_dir": report["run_dir"]})
                artifact.add_dir(str(bundle))
                logger.experiment.log_artifact(artifact)
            logger.experiment.finish()


def run(recipe: Recipe, resume_dir: Path | None = None) -> Path:
    """The whole pipeline. Returns the path of report.json (or the run directory without export)."""
    from distilprune.export.report import print_report
    from distilprune.export.run_export import export_run

    _quiet_libraries()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    resume = None
    if resume_dir is not None:
        path = resume_checkpoint_path(resume_dir)
        resume = {"path": path, "checkpoint": read_resume_checkpoint(path)}
    seed_everything(recipe.seed)
    # Everything that can be wrong with the input is found before the run directory exists.
    data = load_data(recipe.data)
    loaded = load_teacher_for_run(recipe, data)
    teacher, tokenizer, teacher_info = loaded["teacher"], loaded["tokenizer"], loaded["info"]
    student = build_student(recipe, teacher)
    if recipe.pruning.enabled:
        from distilprune.pruning import BlockPruner

        BlockPruner.check(student, recipe.pruning.block_shapes, recipe.pruning.layers)

    run_dir = resume_dir if resume_dir is not None else make_run_dir(recipe)
    if resume_dir is not None:
        os.environ[RUN_DIR_ENV] = str(Path(resume_dir).resolve())
    if is_rank_zero():
        if resume_dir is None:
            save_recipe(recipe, run_dir / "recipe.yaml")
        console.print(f"[bold]Run[/bold] {recipe.name} -> {run_dir}" + (" (resumed)" if resume else ""))
        console.print(f"[bold]Data[/bold]: {data.source}: {data.info['rows']}")
    if loaded["finetune"] is not None:
        teacher, teacher_info = finetune_teacher(recipe, data, run_dir, loaded)
        student = build_student(recipe, teacher)
    if is_rank_zero():
        tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    start = time.perf_counter()
    trainer = distill(recipe, run_dir, teacher, tokenizer, data, student, teacher_info.get("identity", ""), resume)
    train_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return run_dir  # only rank 0 exports, reports and logs
    precision = resolve_precision(recipe.train.precision, recipe.train.accelerator)
    run_info = {"teacher": teacher_info, "train_seconds": round(train_seconds, 1),
                "train_steps": int(trainer.global_step), "precision": precision,
                "processes": trainer.world_size, "strategy": recipe.train.strategy,
                "teacher_cache": bool(recipe.distill.teacher_cache), "resumed": resume is not None}
    write_json_atomic(run_dir / "run_info.json", run_info)
    if not recipe.export.enabled:
        console.print(f"Export disabled; checkpoints are in {run_dir / 'checkpoints'}")
        _finish_wandb(trainer)
        return run_dir
    result = export_run(run_dir, run_dir, recipe, teacher, tokenizer, data, extra={"training": run_info})
    log_report_to_wandb(trainer, result.report, result.images, result.bundles)
    print_report(result.report, result.json_path, pareto_md=result.pareto_md)
    result.raise_if_failed()
    return result.json_path


def write_json_atomic(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


def _split_resume(argv: list[str]) -> tuple[Path | None, list[str]]:
    """``resume=<run dir>`` (alone: the run's saved recipe is reused as it is)."""
    resume = [a for a in argv if a.lstrip("-").startswith("resume=")]
    rest = [a for a in argv if a not in resume]
    if not resume:
        return None, argv
    if len(resume) > 1 or rest:
        raise ConfigError(
            "resume=<run dir> continues a run with the recipe saved in that run; it takes no other "
            f"arguments (got {' '.join(rest or resume[1:])}). Start a new run to change settings."
        )
    run_dir = Path(resume[0].split("=", 1)[1]).expanduser()
    if not (run_dir / "recipe.yaml").is_file():
        raise ConfigError(
            f"{run_dir} is not a distilprune run directory (no recipe.yaml). Give resume=runs/<recipe>/<time>."
        )
    if (run_dir / "run_info.json").is_file():
        raise ConfigError(
            f"The run in {run_dir} already finished training (run_info.json exists); there is nothing to "
            f"resume. Re-export it with python -m distilprune.export.cli {run_dir}."
        )
    return run_dir, []


def main(argv: list[str] | None = None) -> int:
    """Entry point: every :class:`DistilpruneError` becomes one paragraph on stderr and exit code 2
    (3 for a diverged run)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        resume_dir, argv = _split_resume(argv)
        if resume_dir is not None:
            recipe = load_recipe([f"recipe={resume_dir / 'recipe.yaml'}"])
        else:
            recipe = load_recipe(argv)
        run(recipe, resume_dir)
    except DistilpruneError as error:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/bold red]: outputs written so far are complete files.")
        return 130
    return 0
