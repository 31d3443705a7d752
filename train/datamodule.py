"""LightningDataModule over the fixed splits of :mod:`distilprune.data`."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from distilprune.batching import PaddingCollator, ShuffledBatchSampler
from distilprune.errors import ConfigError
from distilprune.tasks import Task, TaskData, default_task


class TextDataModule(L.LightningDataModule):
    """Tokenizes once (``task.tokenize``); training batches come from :class:`ShuffledBatchSampler`
    and are padded by ``task.collate``.

    ``batch_size`` is the global batch: under a distributed strategy each of the trainer's
    ``world_size`` processes takes its contiguous share of every batch (the Trainer must be built with
    ``use_distributed_sampler=False``, since the sharding happens here). The order is a pure function
    of ``(seed, epoch)``; set ``resume_skip`` before ``fit`` to start the current epoch at that
    global batch (exact mid-epoch resume).

    Args:
        padding: "dynamic" pads each batch to its longest example; "max_length" pads every batch
            to ``max_seq_len`` (the slow baseline, kept for comparison).
        length_bucketing: batch examples of similar length together (see ShuffledBatchSampler).
        num_workers: DataLoader worker processes for training (persistent across epochs when > 0).
        pin_memory: None = on only when the trainer runs on CUDA.
        task: what tokenizes and pads (default: sequence classification).
        teacher_outputs: cached teacher outputs for the TRAIN split (a
            :class:`distilprune.teacher_cache.TeacherOutputs`); training batches then carry
            ``teacher_logits`` (scored rows, labels) float32 and, when stored, ``teacher_hidden``.
    """

    def __init__(
        self,
        data: TaskData,
        tokenizer,
        max_seq_len: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        *,
        padding: str = "dynamic",
        length_bucketing: bool = False,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        teacher_outputs=None,
        task: Task | None = None,
    ) -> None:
        super().__init__()
        if padding not in ("dynamic", "max_length"):
            raise ConfigError(f"train.padding must be 'dynamic' or 'max_length', not {padding!r}.")
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.max_seq_len, self.padding, self.length_bucketing = max_seq_len, padding, length_bucketing
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.pad_token_id = tokenizer.pad_token_id or 0
        self.task = task if task is not None else default_task()
        self.splits = {name: self.task.tokenize(getattr(data, name), tokenizer, max_seq_len) for name in ("train", "validation")}
        self.teacher_outputs = None
        self.set_teacher_outputs(teacher_outputs)
        self.resume_skip: int = 0
        """Global batches of the current epoch already trained (resume); applied once by train_dataloader()."""
        self.train_sampler: ShuffledBatchSampler | None = None

    # -- what the pipeline needs to build the teacher cache -------------------------------------
    @property
    def train_split(self):
        """The tokenized training split; teacher cache row i = ``train_split[i]``."""
        return self.splits["train"]

    def train_lengths(self) -> list[int]:
        """Token count of every training example (after truncation to max_seq_len)."""
        return self.splits["train"].lengths()

    def set_teacher_outputs(self, teacher_outputs) -> None:
        """Attach cached teacher outputs for the train split (or None to run the teacher live)."""
        if teacher_outputs is not None and len(teacher_outputs) != len(self.splits["train"]):
            raise ConfigError(
                f"The cached teacher outputs hold {len(teacher_outputs)} examples but the training split "
                f"has {len(self.splits['train'])}. Build the cache from this datamodule's train_split."
            )
        self.teacher_outputs = teacher_outputs

    # -- loaders ------------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        trainer = self.trainer
        if world_size > 1 and getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", False):
            raise RuntimeError(
                "TextDataModule shards each global batch itself; build the Trainer with "
                "use_distributed_sampler=False, or Lightning would shard the batches a second time."
            )
        sampler = ShuffledBatchSampler(
            self.train_lengths(), self.batch_size, self.seed, world_size=world_size, rank=rank,
            bucketing=self.length_bucketing,
        )
        if trainer is not None:
            # Lightning sets the epoch only after it has made the first iterator; a resumed run starts
            # at a later epoch, so the sampler must know that epoch from the start.
            sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        if self.resume_skip:
            sampler.skip_next(self.resume_skip)
            self.resume_skip = 0
        self.train_sampler = sampler
        collate = PaddingCollator(
            self.task.collate, self.pad_token_id, self.max_seq_len if self.padding == "max_length" else None,
            self.teacher_outputs, self.task.rows_from_cache,
        )
        # A dedicated generator: making a DataLoader iterator draws a base seed from it, and drawing it
        # from the global torch RNG would shift dropout masks (exact resume needs them unchanged).
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.splits["train"], batch_sampler=sampler, collate_fn=collate, generator=generator,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, pin_memory=self._pin(),
        )

    def val_dataloader(self) -> DataLoader:
        # Evaluation always pads dynamically: padding never changes a prediction, only its cost.
        return DataLoader(self.splits["validation"], batch_size=self.eval_batch_size,
                          collate_fn=PaddingCollator(self.task.collate, self.pad_token_id))
