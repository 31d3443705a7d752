"""Callbacks: keeping student checkpoints (weights-only safetensors, never the teacher) and the
resume checkpoint (model, scores, optimizer, scheduler, loop position, RNG) for exact resume."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import lightning as L
import torch

from distilprune.pruning import compact
from distilprune.students import CHECKPOINT_INFO
from distilprune.train.resume import RESUME_FILE


class KeepStudentCheckpoint(L.Callback):
    """Keep student checkpoints: ``final`` when training ends, and ``density-0.60`` etc. when the
    overall pruning density first falls to each value of ``keep_at_densities``.

    A pruned student is kept *compacted* (masks folded in, empty heads and FFN rows removed); the
    largest |compacted - masked| logit difference on a validation batch is recorded with it. Only the
    student's own tensors are written (``DistilBertStudent.save``): the frozen teacher is not part of
    the student and cannot end up in the file.
    """

    def __init__(self, root: Path, keep_at_densities: list[float] | None = None) -> None:
        self.root = Path(root)
        self.pending = sorted(keep_at_densities or [], reverse=True)
        self.kept: list[Path] = []
        self.probe: dict | None = None

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.probe = next(iter(trainer.datamodule.val_dataloader()))

    # Which checkpoints are still to be kept is part of the resume state.
    def state_dict(self) -> dict:
        return {"pending": list(self.pending), "kept": [p.name for p in self.kept]}

    def load_state_dict(self, state: dict) -> None:
        self.pending = list(state["pending"])
        self.kept = [self.root / name for name in state["kept"]]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.pruner is None or not self.pending:
            return
        density = module.pruner.densities()["overall"]
        if density <= self.pending[0] + 1e-9:
            target = self.pending.pop(0)
            while self.pending and density <= self.pending[0] + 1e-9:
                self.pending.pop(0)
            self.keep(trainer, module, f"density-{target:.2f}")

    @torch.no_grad()
    def _compacted(self, module: L.LightningModule) -> tuple[torch.nn.Module, float, dict]:
        student, density = module.kept_student()
        if module.pruner is None:
            return student, density, {}
        densities = module.pruner.densities()
        small = compact(student)
        ids, mask = self.probe["input_ids"].to(module.device), self.probe["attention_mask"].to(module.device)
        was_training = module.student.training
        module.student.eval()
        small.to(module.device)
        diff = float((small(ids, mask).float() - module.student(ids, mask).float()).abs().max())
        module.student.train(was_training)
        return small.cpu(), density, {"compaction_max_abs_diff": diff, "densities": densities}

    def keep(self, trainer: L.Trainer, module: L.LightningModule, name: str) -> Path:
        if not trainer.is_global_zero:
            return self.root / name
        student, density, extra = self._compacted(module)
        final = self.root / name
        # Write into a staging directory and rename: a kill mid-write never leaves a half checkpoint
        # under the final name. A resumed run that reaches the same checkpoint again moves the earlier
        # copy aside instead of overwriting it.
        staging = self.root / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        directory = student.save(staging)
        record = {
            "name": name, "order": len(self.kept), "step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch), "density": density,
            "val_acc": _metric(trainer, "val/acc"), **extra,
        }
        (directory / CHECKPOINT_INFO).write_text(json.dumps(record, indent=2))
        if final.exists():
            aside = self.root / ".superseded" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            final.rename(aside)
        directory.rename(final)
        self.kept.append(final)
        return final

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.keep(trainer, module, "final")


class ResumeCheckpoint(L.Callback):
    """Write ``<run>/resume/last.ckpt`` every ``every_steps`` optimizer steps and at each epoch end.

    The file holds everything an exact resume needs (student and score weights, optimizer and LR
    scheduler states, loop counters, callback states, RNG states; never the teacher). It is written
    to a temporary name and renamed, so a kill during the write leaves the previous one intact.
    """

    FILENAME = RESUME_FILE

    def __init__(self, directory: Path, every_steps: int) -> None:
        self.directory = Path(directory)
        self.every_steps = every_steps
        self.last_saved_step = -1

    @property
    def path(self) -> Path:
        return self.directory / self.FILENAME

    def save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self.last_saved_step:
            return
        tmp = self.directory / f".{self.FILENAME}.tmp"
        if trainer.is_global_zero:
            self.directory.mkdir(parents=True, exist_ok=True)
        # every rank calls it, rank 0 writes; weights_only=False here means "full training state"
        trainer.save_checkpoint(str(tmp), weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self.last_saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # An epoch's last batch is saved by on_train_epoch_end instead: Lightning's loop counters are
        # only consistent once the epoch has ended, and a checkpoint of the last batch's end resumed
        # as a finished run (it counted the epoch as processed twice and ended training early).
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        if self.every_steps and trainer.global_step % self.every_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.save(trainer)


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)
