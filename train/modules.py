"""LightningModules: fine-tuning a teacher, and distilling a teacher into a student."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from distilprune.errors import DivergenceError
from distilprune.losses import hidden_state_loss, kd_kl_loss
from distilprune.pruning import BlockPruner, cubic_schedule, linear_ramp
from distilprune.pruning.masks import sigmoid_l1
from distilprune.tasks import IGNORE, Task, default_task, model_inputs


class RowAccuracy(torchmetrics.aggregation.MeanMetric):
    """Micro accuracy of scored rows: the share of rows whose argmax is the gold label (rows labelled
    IGNORE left out). Rows may be over labels (classification) or over positions (question answering:
    the start and end token), so no class count is fixed."""

    def update(self, predicted: torch.Tensor, labels: torch.Tensor) -> None:  # type: ignore[override]
        kept = labels != IGNORE
        if bool(kept.any()):
            super().update((predicted[kept] == labels[kept]).float())


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """LR factor rising linearly to 1 over warmup_ratio * total_steps, then decaying linearly to 0."""
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


class _ScheduledModule(L.LightningModule):
    lr: float
    weight_decay: float
    warmup_ratio: float

    def _optimizer_and_schedule(self, groups: list[dict]):
        optimizer = torch.optim.AdamW(groups, lr=self.lr)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = linear_warmup_decay(optimizer, total, self.warmup_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ClassifierFinetuneModule(_ScheduledModule):
    """Plain supervised fine-tuning of a Hugging Face classifier (the teacher) on the task's scored rows.

    ``teacher/val_acc`` is the accuracy of the scored rows (examples, or labelled words for token
    classification); the task's own metric is measured at export."""

    def __init__(self, model: nn.Module, task: Task, num_labels: int, lr: float, weight_decay: float,
                 warmup_ratio: float) -> None:
        super().__init__()
        self.model, self.task = model, task
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.val_accuracy = RowAccuracy()

    def _scored(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.task.model_logits(self.model(**model_inputs(batch)))
        return self.task.scored_logits(logits, batch).float(), self.task.scored_labels(batch)

    def training_step(self, batch, batch_idx):
        logits, labels = self._scored(batch)
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
        self.log("teacher/train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits, labels = self._scored(batch)
        self.val_accuracy.update(logits.argmax(-1), labels)
        self.log("teacher/val_acc", self.val_accuracy, prog_bar=True)

    def configure_optimizers(self):
        return self._optimizer_and_schedule(decay_groups(self.model, self.weight_decay))


class DistillationModule(_ScheduledModule):
    """Distil a frozen teacher into ``student``.

    loss = kd_weight * KL(teacher_T || student_T) * T^2 + ce_weight * CE(student, labels)
           + hidden_weight * hidden-state loss (student block i vs its source teacher block).

    KL and CE are taken over the task's scored rows (``task.scored_logits``: one per example for
    sequence classification, one per labelled word for token classification), averaged over rows.

    The teacher is deliberately *not* registered as a submodule: it never appears in this module's
    state_dict, so it is never written into a student checkpoint, and the optimizer never sees it.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, distill_cfg, train_cfg, num_labels: int, pruning_cfg=None,
                 task: Task | None = None) -> None:
        super().__init__()
        self.student = student
        self.task = task if task is not None else default_task()
        # Scores live here (not in the student): they are trained and checkpointed with this module,
        # and folded away when a student checkpoint is kept.
        self.pruning_cfg = pruning_cfg if pruning_cfg is not None and pruning_cfg.enabled else None
        self.pruner = (
            BlockPruner(student, pruning_cfg.method, pruning_cfg.block_shapes, pruning_cfg.prune_ffn, pruning_cfg.layers)
            if self.pruning_cfg else None
        )
        self.log_every = train_cfg.log_every_steps
        object.__setattr__(self, "teacher", teacher)  # hidden from nn.Module registration
        self.teacher.eval().requires_grad_(False)
        self.cfg = distill_cfg
        self.lr, self.weight_decay, self.warmup_ratio = train_cfg.lr, train_cfg.weight_decay, train_cfg.warmup_ratio
        self.needs_hidden = distill_cfg.hidden_loss != "none"
        # kd_weight 0 and no hidden loss is plain fine-tuning: the teacher is not run at all.
        self.needs_teacher = distill_cfg.kd_weight > 0 or self.needs_hidden
        self.precision_name = train_cfg.precision
        self._rng_to_restore: dict | None = None
        teacher_width = teacher.config.hidden_size if hasattr(teacher.config, "hidden_size") else teacher.config.dim
        self.hidden_projection = (
            nn.Linear(student.config.hidden_size, teacher_width)
            if self.needs_hidden and student.config.hidden_size != teacher_width
            else None
        )
        self.train_accuracy = RowAccuracy()
        self.val_accuracy = RowAccuracy()

    def on_fit_start(self) -> None:
        self.teacher.to(self.device).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # Lightning toggles train mode on the module; the teacher stays frozen
        return self

    def update_pruning_schedule(self) -> None:
        """Set each group's keep fraction (topk) or threshold (sigmoid) for the current step; with
        ``pruning.fill``, freeze the structure and refill the kept heads when the cooldown starts."""
        cfg, step = self.pruning_cfg, self.global_step
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if self.pruner.filled:
            return  # masks are frozen
        self.update_values(step, total)
        if cfg.fill and step >= (1.0 - cfg.cooldown) * total:
            self.pruner.fill()  # the final-density masks just set are the structure that stays

    def update_values(self, step: int, total: int) -> None:
        cfg = self.pruning_cfg
        if cfg.method == "topk":
            finals = {"attention": cfg.attention_density, "ffn": cfg.ffn_density}
            self.pruner.values = {g: cubic_schedule(step, total, 1.0, f, cfg.warmup, cfg.cooldown) for g, f in finals.items()}
        else:
            value = cubic_schedule(step, total, 0.0, cfg.final_threshold, cfg.warmup, cfg.cooldown)
            self.pruner.values = {"attention": value, "ffn": value}

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._rng_to_restore is not None:
            # Resumed run: continue the random streams (dropout) exactly where the checkpoint left them.
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if self.pruner is not None:
            self.update_pruning_schedule()

    # -- exact resume: RNG state travels with the checkpoint ------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["distilprune"] = {"format": 1, "rng": get_rng_state()}
        if self.pruner is not None and self.pruner.filled:
            # Filled masks are not a function of the scores any more: they travel with the checkpoint.
            checkpoint["distilprune"]["filled_masks"] = {k: v.cpu() for k, v in self.pruner.frozen.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("distilprune", {})
        self._rng_to_restore = state.get("rng")
        if self.pruner is not None and "filled_masks" in state:
            self.pruner.restore_fill(state["filled_masks"])

    @torch.no_grad()
    def teacher_outputs(self, batch) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
        """Teacher logits of the scored rows (rows, labels) and hidden states: from the cached
        outputs carried by the batch when the teacher cache is on, else from a live forward pass of
        the frozen teacher."""
        if "teacher_logits" in batch and (not self.needs_hidden or "teacher_hidden" in batch):
            return batch["teacher_logits"], batch.get("teacher_hidden")
        if not self.needs_teacher:
            return None, None
        out = self.teacher(**model_inputs(batch), output_hidden_states=self.needs_hidden)
        logits = self.task.scored_logits(self.task.model_logits(out), batch)
        if not self.needs_hidden:
            return logits, None
        # hidden_states[0] is the embedding output; student block i matches teacher block source_layers[i]
        return logits, [out.hidden_states[src + 1] for src in self.student.config.source_layers]

    def training_step(self, batch, batch_idx):
        teacher_logits, teacher_hidden = self.teacher_outputs(batch)
        types = batch.get("token_type_ids")
        if self.needs_hidden:
            student_logits, student_hidden = self.student(
                batch["input_ids"], batch["attention_mask"], output_hidden_states=True, token_type_ids=types
            )
        else:
            student_logits = self.student(batch["input_ids"], batch["attention_mask"], token_type_ids=types)
        student_logits = self.task.scored_logits(student_logits, batch)  # (rows, labels)
        labels = self.task.scored_labels(batch)  # (rows,)
        kd = (kd_kl_loss(student_logits, teacher_logits, self.cfg.temperature)
              if teacher_logits is not None else student_logits.new_zeros((), dtype=torch.float32))
        # Augmented copies have no gold label (IGNORE): cross-entropy over the labelled rows only,
        # and 0 for a batch without any (F.cross_entropy would return NaN).
        gold = labels != IGNORE
        has_gold = bool(gold.any())
        ce = (F.cross_entropy(student_logits.float()[gold], labels[gold]) if has_gold
              else student_logits.new_zeros((), dtype=torch.float32))
        kd_share, ce_share = self._shares_of_global_batch(labels.numel(), int(gold.sum()))
        kd, ce = kd * kd_share, ce * ce_share
        loss = self.cfg.kd_weight * kd + self.cfg.ce_weight * ce
        if self.needs_hidden:
            hidden = torch.stack([
                hidden_state_loss(
                    student_hidden[i + 1], teacher_hidden[i], batch["attention_mask"],
                    self.cfg.hidden_loss, self.hidden_projection,
                )
                for i in range(len(teacher_hidden))
            ]).mean()
            loss = loss + self.cfg.hidden_weight * hidden
            self.log("train/hidden_loss", hidden)
        if self.pruner is not None:
            if self.pruning_cfg.l1_weight > 0:
                total = max(1, int(self.trainer.estimated_stepping_batches))
                ramp = linear_ramp(self.global_step, total, *self.pruning_cfg.l1_ramp)
                l1 = sigmoid_l1(list(self.pruner.scores.values()))
                loss = loss + self.pruning_cfg.l1_weight * ramp * l1
                self.log("train/l1_scores", l1)
            if self.global_step % self.log_every == 0:
                self.log_dict({f"density/{k}": v for k, v in self.pruner.densities().items()})
        if not torch.isfinite(loss.detach()):
            raise DivergenceError(
                f"The training loss became {float(loss.detach()):.4g} at step {self.global_step} "
                f"(kd {float(kd.detach()):.4g}, ce {float(ce.detach()):.4g}). Likely causes: a learning rate too high "
                f"(train.lr, pruning.scores_lr) or reduced precision overflowing (try "
                f"train.precision=32-true, or bf16-mixed instead of 16-mixed). The last good resume "
                f"checkpoint and kept students are left as they were."
            )
        if has_gold:
            self.train_accuracy.update(student_logits.argmax(-1)[gold], labels[gold])
        self.log_dict({"train/loss": loss, "train/kd_loss": kd, "train/ce_loss": ce}, prog_bar=False)
        self.log("train/acc", self.train_accuracy, on_step=True, on_epoch=False)
        self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.student(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"))
        logits, labels = self.task.scored_logits(logits, batch), self.task.scored_labels(batch)
        self.val_accuracy.update(logits.argmax(-1), labels)
        self.log("val/loss", F.cross_entropy(logits.float(), labels, ignore_index=IGNORE))
        self.log("val/acc", self.val_accuracy, prog_bar=True)

    def _shares_of_global_batch(self, *rows: int) -> tuple[float, ...]:
        """For each count: world_size x this process's rows / the global batch's rows (one all-reduce).

        KL and CE are means over this process's rows (scored rows; rows with a gold label), and DDP
        averages gradients over processes; scaled by these factors, the average is the mean over every
        row of the global batch, as one process computes it. Processes hold equal numbers of sentences
        but not of words (token classification) or of gold labels (augmented copies), so a factor is
        not always 1. All 1 in a single process."""
        trainer = self._trainer
        world = trainer.world_size if trainer is not None else 1
        if world == 1:
            return (1.0,) * len(rows)
        totals = self.trainer.strategy.reduce(torch.tensor([float(r) for r in rows], device=self.device), reduce_op="sum")
        return tuple(world * r / float(t) if float(t) > 0 else 1.0 for r, t in zip(rows, totals.tolist()))

    def configure_optimizers(self):
        groups = decay_groups(self.student, self.weight_decay)
        if self.hidden_projection is not None:
            groups += decay_groups(self.hidden_projection, self.weight_decay)
        if self.pruner is not None:
            groups.append({"params": list(self.pruner.parameters()), "lr": self.pruning_cfg.scores_lr, "weight_decay": 0.0})
        return self._optimizer_and_schedule(groups)

    def kept_student(self) -> tuple[nn.Module, float]:
        """The student as it would be kept now (masks folded in) and its overall density."""
        if self.pruner is None:
            return self.student, 1.0
        return self.pruner.fold(self.student), self.pruner.densities()["overall"]


def get_rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) RNG states as plain types and tensors, so the resume
    checkpoint loads with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
