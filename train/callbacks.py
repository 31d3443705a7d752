"""Callbacks: keeping student checkpoints (weights-only safetensors, never the teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from distilprune.export.run_export import CHECKPOINT_INFO
from distilprune.pruning import compact


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

    def keep(self, trainer: L.Trainer, module: L.LightningModule, name: str, **info) -> Path:
        if not trainer.is_global_zero:
            return self.root / name
        student, density, extra = self._compacted(module)
        directory = student.save(self.root / name)
        record = {
            "name": name, "order": len(self.kept), "step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch), "density": density,
            "val_acc": _metric(trainer, "val/acc"), **extra, **info,
        }
        tmp = directory / (CHECKPOINT_INFO + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(directory / CHECKPOINT_INFO)
        self.kept.append(directory)
        return directory

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.keep(trainer, module, "final")


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)
