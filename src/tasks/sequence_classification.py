"""Sequence classification: one label per text, or per text pair (NLI, paraphrase, duplicates).

Rows come from :func:`distilprune.data.load_data`; a pair task names its second column in
``data.text_pair_column`` and is tokenized as the teacher expects a pair (``[CLS] a [SEP] b [SEP]``
with ``token_type_ids`` 0 for segment A and 1 for segment B). The student scores one row per
example: its logits. Metric: accuracy, with macro-F1 and a per-class table beside it (and, with two
classes, the F1 of label 1, as MRPC and QQP are reported).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from distilprune.tasks.base import IGNORE, Scored, Task, TaskData


class TokenizedSentences(Dataset):
    """Token ids (and segment ids for pairs) without padding; :meth:`SequenceClassification.collate`
    pads each batch to its longest example."""

    def __init__(self, split, tokenizer, max_seq_len: int) -> None:
        pairs = getattr(split, "text_pairs", None)
        if pairs is not None:
            encoded = tokenizer(list(split.texts), list(pairs), truncation=True, max_length=max_seq_len)
            self.token_type_ids: list[list[int]] | None = encoded["token_type_ids"]
        else:
            encoded = tokenizer(list(split.texts), truncation=True, max_length=max_seq_len)
            self.token_type_ids = None
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = list(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"input_ids": self.input_ids[index], "label": self.labels[index], "index": index}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[index]
        return item

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def pad_inputs(examples: list[dict], pad_token_id: int, pad_to: int | None) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and (when the items have them) token_type_ids, (batch, seq) int64,
    right-padded to the longest example (or to ``pad_to``); index (batch,)."""
    longest = pad_to or max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    with_types = "token_type_ids" in examples[0]
    token_type_ids = torch.zeros((len(examples), longest), dtype=torch.long) if with_types else None
    for row, example in enumerate(examples):
        ids = example["input_ids"][:longest]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        if with_types:
            token_type_ids[row, : len(ids)] = torch.tensor(example["token_type_ids"][:longest], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "index": torch.tensor([e["index"] for e in examples], dtype=torch.long)}
    if with_types:
        batch["token_type_ids"] = token_type_ids
    return batch


def per_class_table(predicted: np.ndarray, gold: np.ndarray, names: list[str]) -> tuple[float, list[dict]]:
    """Macro-F1 and one {label, precision, recall, f1, support} row per class (fractions).

    A class that is never predicted and never gold would have an undefined F1; it is left out of
    the macro average (the classes averaged are those with support or predictions)."""
    rows, f1s = [], []
    for label_id, name in enumerate(names):
        tp = int(((predicted == label_id) & (gold == label_id)).sum())
        predicted_count = int((predicted == label_id).sum())
        support = int((gold == label_id).sum())
        precision = tp / predicted_count if predicted_count else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support or predicted_count:
            f1s.append(f1)
        rows.append({"label": name, "precision": precision, "recall": recall, "f1": f1, "support": support})
    return (float(np.mean(f1s)) if f1s else 0.0), rows


class SequenceClassification(Task):
    name = "sequence_classification"
    head = "sequence"
    hf_auto_class = "AutoModelForSequenceClassification"
    metric = "accuracy"
    metric_label = "accuracy"
    supports_augmentation = True

    def load(self) -> TaskData:
        from distilprune.data import load_data

        data = load_data(self.data_cfg)
        self.label_names = list(data.label_names)
        return data

    def tokenize(self, split, tokenizer, max_seq_len: int) -> TokenizedSentences:
        return TokenizedSentences(split, tokenizer, max_seq_len)

    def collate(self, examples: list[dict], pad_token_id: int = 0, pad_to: int | None = None) -> dict:
        batch = pad_inputs(examples, pad_token_id, pad_to)
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        return batch

    def scored_logits(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return logits  # (batch, labels): one scored row per example

    def scored_labels(self, batch: dict) -> torch.Tensor:
        return batch["labels"]

    def rows_per_example(self, batch: dict) -> list[int]:
        return [1] * batch["input_ids"].shape[0]

    def score(self, rows: list[np.ndarray], split, calibration: dict | None = None) -> Scored:
        logits = np.stack([r.reshape(-1) for r in rows])  # (examples, labels)
        predicted, gold = logits.argmax(-1), np.asarray(split.labels)
        correct = (predicted == gold).astype(np.float64)[:, None]
        details: dict[str, Any] = {}
        names = self.label_names or [str(i) for i in range(logits.shape[1])]
        details["macro_f1"], details["per_class"] = per_class_table(predicted, gold, names)
        if logits.shape[1] == 2:  # paraphrase / duplicate tasks (MRPC, QQP) report F1 of label 1 beside accuracy
            details["f1"] = details["per_class"][1]["f1"]
        return Scored(float(correct.mean()), correct, details)

    @staticmethod
    def statistic(mean_units: np.ndarray) -> np.ndarray:
        return mean_units[..., 0]

    def bundle_spec(self, data: TaskData) -> dict:
        return {"task": self.name, "labels": list(data.label_names),
                "text_pairs": getattr(data.test, "text_pairs", None) is not None,
                "outputs": {"logits": "(batch, labels) float32; softmax gives the class probabilities"}}

    def parity_texts(self, data: TaskData, count: int = 4) -> list:
        if data.test.text_pairs is not None:  # a pair task: [first, second] items, as a server receives them
            return [[a, b] for a, b in zip(data.test.texts[:count], data.test.text_pairs[:count])]
        return list(data.test.texts[:count])


__all__ = ["IGNORE", "SequenceClassification", "TokenizedSentences", "pad_inputs", "per_class_table"]
