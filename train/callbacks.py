"""Callbacks: keeping student checkpoints (weights-only safetensors, never the teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from distilprune.export.run_export import CHECKPOINT_INFO


class KeepStudentCheckpoint(L.Callback):
    """Save the student when training ends as ``<root>/final``: weights + per-layer widths + info.

    Only the student's own tensors are written (``DistilBertStudent.save``); the frozen teacher is not
    part of the student and cannot end up in the file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.kept: list[Path] = []

    def keep(self, trainer: L.Trainer, module: L.LightningModule, name: str, density: float = 1.0, **info) -> Path:
        if not trainer.is_global_zero:
            return self.root / name
        directory = module.student.save(self.root / name)
        record = {
            "name": name, "order": len(self.kept), "step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch), "density": density,
            "val_acc": _metric(trainer, "val/acc"), **info,
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
