"""Lightning plumbing: the Trainer, its loggers (CSV, Weights & Biases) and the report in W&B."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from distilprune.config import Recipe, recipe_to_dict
from distilprune.precision import resolve_precision

if TYPE_CHECKING:
    import lightning as L


def quiet_libraries() -> None:
    """Keep the console about this run: library chatter that tells the user nothing is muted."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for pattern in (
        ".*does not have many workers.*", ".*LeafSpec.*", ".*The number of training batches.*",
        ".*Found .* module\\(s\\) in eval mode.*", ".*is an invalid key.*", ".*TracerWarning.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


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


def _strategy(recipe: Recipe, distributed: bool):
    """Lightning's strategy argument; DDP gets gloo on CPU and unused-parameter search after a fill."""
    cfg = recipe.train
    strategy = cfg.strategy if distributed else "auto"
    if strategy != "ddp":
        return strategy
    from lightning.pytorch.strategies import DDPStrategy

    options = {}
    if cfg.accelerator == "cpu" or not torch.cuda.is_available():
        options["process_group_backend"] = "gloo"
    if recipe.pruning.enabled and recipe.pruning.fill:
        options["find_unused_parameters"] = True  # after the fill the scores get no gradient
    return DDPStrategy(**options) if options else strategy


def make_trainer(
    recipe: Recipe, run_dir: Path, loggers: list, callbacks: list, epochs: int, max_steps: int = -1,
    distributed: bool = True,
) -> "L.Trainer":
    """``distributed=False`` runs on one device whatever the recipe says (teacher fine-tuning)."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

    cfg = recipe.train
    devices, nodes = (cfg.devices, cfg.num_nodes) if distributed else (1, 1)
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
        strategy=_strategy(recipe, distributed),
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


def _wandb_loggers(trainer: "L.Trainer") -> list:
    return [logger for logger in trainer.loggers if type(logger).__name__ == "WandbLogger"]


def finish_wandb(trainer: "L.Trainer") -> None:
    for logger in _wandb_loggers(trainer):
        logger.experiment.finish()


def log_report_to_wandb(trainer: "L.Trainer", report: dict, images: dict[str, Path], bundles: list[Path]) -> None:
    """Report table, Pareto plot and each bundle (as an artifact) into the run's W&B run."""
    from distilprune.export.report import HEADER, rows

    for logger in _wandb_loggers(trainer):
        import wandb

        run = logger.experiment
        run.log({"report/table": wandb.Table(columns=HEADER, data=rows(report))})
        for key, path in images.items():
            run.log({key: wandb.Image(str(path))})
        for ckpt in report["checkpoints"]:
            run.summary[f"{ckpt['name']}/onnx_int8_accuracy"] = ckpt["accuracy"]["onnx_int8"]
            run.summary[f"{ckpt['name']}/onnx_int8_p50_ms"] = ckpt["latency_ms"]["onnx_int8"]["p50"]
        for bundle in bundles:
            artifact = wandb.Artifact(name=f"bundle-{report['recipe']['name'].replace('/', '-')}-{bundle.name}",
                                      type="model", metadata={"run_dir": report["run_dir"]})
            artifact.add_dir(str(bundle))
            run.log_artifact(artifact)
        run.finish()
