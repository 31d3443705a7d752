"""The task seam: what differs between tasks, behind one small interface.

A task (sequence classification, token classification, ...) is one subclass of :class:`Task`. The
pipeline asks the task, and only the task, for the things that depend on it:

==========================  ==============================================  ==========================
what                        method / attribute                              called by
==========================  ==============================================  ==========================
rows: read and split        :meth:`Task.load`                               train pipeline, export CLI
tokens: encode one split    :meth:`Task.tokenize`                           datamodule, teacher cache,
                                                                            export
batches: pad + labels       :meth:`Task.collate`                            datamodule, teacher cache,
                                                                            export
which logits are scored     :meth:`Task.scored_logits` / ``scored_labels``  losses, teacher cache,
                                                                            validation metric
the teacher's model class   :attr:`Task.hf_auto_class`                      teacher loading
the student's head          :attr:`Task.head` (``StudentConfig.head``)      student, ONNX export,
                                                                            fusion check
the metric                  :meth:`Task.score`, :meth:`Task.statistic`,     export (report, INT8 gate,
                            :meth:`Task.calibrate`                          bootstrap intervals)
what a bundle says          :meth:`Task.bundle_spec`,                       bundle, verifier, servers
                            :meth:`Task.parity_texts`
==========================  ==============================================  ==========================

The pruner, compaction, the Lightning module, the ONNX export, the INT8 gate, the latency grid,
the bundle and the Pareto code never branch on the task: they call these methods. A new task is
one new module here plus recipes (see docs/tasks.md).

The common currency is **scored rows**: the logits a task's loss and metric read, flattened to
(rows, labels). A sequence classifier scores one row per example (its logits); a token classifier
scores the first sub-token of every labelled word. The distillation loss (KL + cross-entropy) is
the same function of scored rows for every task, and the teacher output cache stores each
example's scored rows, so it grows with the number of scored positions, not with sequence length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

IGNORE = -100  # label of a position that is not scored: torch cross-entropy's ignore_index


def model_inputs(batch: dict) -> dict:
    """The batch's model inputs: input_ids, attention_mask and, for text pairs, token_type_ids."""
    return {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}


@dataclass
class TaskData:
    """Three fixed splits of a task's examples and the label names (index = label id).

    The split objects are the task's own (sentences with labels, words with tags...); every split
    has ``len()``, ``head(n)`` and ``keys()`` (one normalized text per example, for the leakage check).
    """

    train: Any
    validation: Any
    test: Any
    label_names: list[str]
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class Scored:
    """A metric over one split.

    value: the task's primary metric, a fraction in [0, 1].
    units: (examples, k) float64, each example's sufficient statistics; ``Task.statistic`` of their
        mean over any resample of examples is the metric on that resample (the bootstrap uses it).
    details: further metrics for the report (macro-F1, per-class or per-entity-type tables).
    calibration: the settings :meth:`Task.calibrate` chose for this model on validation (the "no
        answer" threshold of question answering); empty for tasks that calibrate nothing.
    """

    value: float
    units: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # what calibrate() chose (bundles carry it)


class Task(ABC):
    """One task. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    head: ClassVar[str]  # the student's head: "sequence" (first token), "token" or "span" (every token)
    hf_auto_class: ClassVar[str]  # transformers class that loads the teacher
    metric: ClassVar[str]  # the primary metric's key in reports, e.g. "accuracy", "entity_f1"
    metric_label: ClassVar[str]  # how tables name it, e.g. "accuracy", "entity F1"
    supports_augmentation: ClassVar[bool] = False  # distill.augment_copies perturbs its texts
    calibrates: ClassVar[bool] = False  # score() needs calibrate() on validation rows of the same model

    def __init__(self, data_cfg) -> None:
        self.data_cfg = data_cfg
        self.label_names: list[str] = []  # set by load()

    # -- data ---------------------------------------------------------------------------------------
    @abstractmethod
    def load(self) -> TaskData:
        """Read ``self.data_cfg``'s source into three fixed, leakage-checked splits."""

    @abstractmethod
    def tokenize(self, split, tokenizer, max_seq_len: int):
        """A torch Dataset over ``split``: item i is a dict with ``input_ids`` (list[int]), the
        task's label field(s) and ``index`` = i; it has ``lengths()`` (tokens per example)."""

    def check_inputs(self, data: TaskData, tokenizer, max_seq_len: int) -> None:
        """Raise a one-paragraph error for data that cannot be tokenized as the recipe says, before a
        run directory exists (question answering: a question too long for its window). Nothing by default."""

    @abstractmethod
    def collate(self, examples: list[dict], pad_token_id: int = 0, pad_to: int | None = None) -> dict:
        """Pad items of :meth:`tokenize` into a batch: ``input_ids``, ``attention_mask`` (batch, seq)
        int64, the task's ``labels`` and ``index`` (batch,)."""

    # -- scored rows --------------------------------------------------------------------------------
    def model_logits(self, output) -> torch.Tensor:
        """The logits tensor of a Hugging Face model's output (the teacher's), shaped as the student's."""
        return output.logits

    @abstractmethod
    def scored_logits(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """The rows of a model's ``logits`` that the loss and the metric read: (rows, labels)."""

    @abstractmethod
    def scored_labels(self, batch: dict) -> torch.Tensor:
        """Gold labels of the scored rows, (rows,) int64; ``IGNORE`` where a row has no gold label
        (an augmented copy: learned from the teacher only)."""

    def example_rows(self, logits: torch.Tensor, batch: dict) -> list[torch.Tensor]:
        """What the teacher cache stores and :meth:`score` reads per example of the batch, in batch
        order: list of (rows_i, width) tensors. By default each example's scored rows; a task whose
        rows depend on the batch's padding stores something narrower (question answering: a window's
        (tokens, 2) start/end logits) and rebuilds the rows with :meth:`rows_from_cache`."""
        counts = self.rows_per_example(batch)
        return list(torch.split(self.scored_logits(logits, batch), counts))

    def rows_from_cache(self, rows: list[torch.Tensor], batch: dict) -> torch.Tensor:
        """The batch's scored rows from each example's cached :meth:`example_rows`: equal to
        :meth:`scored_logits` of the same model's logits on ``batch``."""
        return torch.cat(rows) if rows else torch.zeros(0, 0)

    @abstractmethod
    def rows_per_example(self, batch: dict) -> list[int]:
        """How many scored rows each example of ``batch`` has."""

    # -- metric -------------------------------------------------------------------------------------
    @abstractmethod
    def score(self, rows: list[np.ndarray], split, calibration: dict | None = None) -> Scored:
        """The metric of per-example rows (:meth:`example_rows` of every tokenized example of ``split``,
        in order, as float arrays) against ``split``'s gold labels; ``calibration`` is what
        :meth:`calibrate` chose on validation for the same model (only for tasks that calibrate)."""

    def time_postprocess(self, rows: list[np.ndarray], split, calibration: dict | None = None) -> dict | None:
        """Milliseconds per example of reading a server's answer from ``rows``, when that reading is
        work of its own beside the model (question answering: answers over all windows). None by default."""
        return None

    def calibrate(self, rows: list[np.ndarray], split) -> dict:
        """Settings chosen on the validation ``split`` from one model's rows, passed to that model's
        :meth:`score` on test. Nothing by default."""
        return {}

    @staticmethod
    @abstractmethod
    def statistic(mean_units: np.ndarray) -> np.ndarray:
        """The metric from units averaged over examples: (..., k) -> (...,)."""

    # -- bundle ------------------------------------------------------------------------------------
    @abstractmethod
    def bundle_spec(self, data: TaskData) -> dict:
        """What a server needs beyond the tokenizer: labels, scheme, how outputs are read."""

    @abstractmethod
    def parity_texts(self, data: TaskData, count: int = 4) -> list[str]:
        """Real test texts (as a server receives them) the bundle's parity vectors are made from."""

    def cache_dtype(self) -> torch.dtype:
        """How the teacher output cache stores scored rows."""
        return torch.float32
