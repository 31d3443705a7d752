"""Token classification (NER): a BIO tag per word.

Rows are sentences of words with tags (:mod:`distilprune.tagging`): a CoNLL-style column file or a
JSONL file in ``data.dataset`` (carved into train / validation / test with ``data.split_seed``), or
a hub dataset with ``tokens`` and integer ``ner_tags`` columns (``conll2003``, ``wikiann`` with
``data.subset``), whose tag names come from the dataset's features.

Words are re-split the way the tokenizer's pre-tokenizer splits raw text (whitespace and
punctuation), so training scores exactly the words a server finds in a text. A word's label sits on
its first sub-token; later sub-tokens, special tokens and padding are not scored (``IGNORE``). The
student scores one row per word that fits in ``data.max_seq_len``; words cut by truncation count as
predicted ``O``, so a gold entity there is a miss. Metric: entity-level F1 (micro; precision, recall
and a per-type table beside it), exact match of type and both boundaries, as conlleval and seqeval.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from distilprune import tagging
from distilprune.errors import DataError
from distilprune.paths import user_path
from distilprune.tasks.base import IGNORE, Scored, Task, TaskData
from distilprune.tasks.sequence_classification import pad_inputs


@dataclass
class TaggedSplit:
    """Sentences of one split (:class:`distilprune.tagging.TaggedSentence`)."""

    sentences: list

    def __len__(self) -> int:
        return len(self.sentences)

    def head(self, n: int | None) -> TaggedSplit:
        return self if n is None else TaggedSplit(self.sentences[:n])

    def keys(self) -> list[str]:
        """One normalized text per sentence (lower case, single spaces) for the leakage check."""
        return [" ".join(" ".join(s.words).lower().split()) for s in self.sentences]

    @property
    def texts(self) -> list[str]:
        """Each sentence as a server receives it: its words joined by single spaces."""
        return [" ".join(s.words) for s in self.sentences]


class TokenizedWords(Dataset):
    """Sub-token ids and per-sub-token label ids (the word's label on its first sub-token, IGNORE
    elsewhere) of re-split sentences; :meth:`TokenClassification.collate` pads them."""

    def __init__(self, sentences: list, label_ids: dict[str, int], tokenizer, max_seq_len: int) -> None:
        encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True,
                            max_length=max_seq_len)
        self.sentences = sentences  # re-split: the words (and gold tags) the scored rows belong to
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.word_ids: list[list[int | None]] = [encoded.word_ids(i) for i in range(len(sentences))]
        self.labels = [tagging.align_labels(self.word_ids[i], [label_ids[tag] for tag in s.tags])
                       for i, s in enumerate(sentences)]

    def scored_words(self, index: int) -> list[int]:
        """Word index of each scored row of example ``index``, in row order: the words whose first
        sub-token survived truncation (a word the tokenizer turns into no sub-token has no row)."""
        return [word for word, label in zip(self.word_ids[index], self.labels[index]) if label != IGNORE]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[index], "token_labels": self.labels[index], "index": index}

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


class TokenClassification(Task):
    name = "token_classification"
    head = "token"
    hf_auto_class = "AutoModelForTokenClassification"
    metric = "entity_f1"
    metric_label = "entity F1"

    def __init__(self, data_cfg) -> None:
        super().__init__(data_cfg)
        self._pieces_of = None  # the tokenizer's word splitting, known from the first tokenize()
        # id(split) -> (split, its tokenized words): score() reads the words behind each scored row
        self._tokenized: dict[int, tuple[TaggedSplit, TokenizedWords]] = {}

    # -- data ---------------------------------------------------------------------------------------
    def load(self) -> TaskData:
        from distilprune.data import dedupe_splits

        cfg = self.data_cfg
        splits, source = self._read_splits()
        # the same sentence in two splits (case and whitespace aside) would score training examples
        deduped, duplicates = dedupe_splits(
            {name: TaggedSplit(splits[name]) for name in ("train", "validation", "test")},
            TaggedSplit.keys, lambda split, rows: TaggedSplit([split.sentences[i] for i in rows]), cfg.dedupe, source)
        splits = {name: split.sentences for name, split in deduped.items()}
        train = splits["train"]
        tagging.check_scheme(train)
        labels = tagging.labels_from_data(train)
        if len(labels) < 2:
            raise DataError(
                f"The training split of {source} has no entity tags (every tag is O), so there is nothing to "
                f"learn. Give a dataset with B-<type>/I-<type> tags."
            )
        for name in ("validation", "test"):
            tagging.check_scheme(splits[name], labels)
        self.label_names = labels
        rng = random.Random(cfg.split_seed)
        train = list(train)
        rng.shuffle(train)  # a seeded shuffle, so data.train_examples picks a random, fixed subset
        data = TaskData(
            train=TaggedSplit(train).head(cfg.train_examples),
            validation=TaggedSplit(splits["validation"]).head(cfg.eval_examples),
            test=TaggedSplit(splits["test"]).head(cfg.eval_examples),
            label_names=labels, source=source,
        )
        data.info = {
            "source": source, "task": self.name,
            "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
            "num_labels": len(labels), "label_names": labels, "scheme": tagging.SCHEME, "split_seed": cfg.split_seed,
            "duplicates": duplicates,
            "words": {name: sum(len(s.words) for s in getattr(data, name).sentences)
                      for name in ("train", "validation", "test")},
        }
        return data

    def _read_splits(self) -> tuple[dict[str, list], str]:
        cfg = self.data_cfg
        if cfg.train_file:  # one file per split; a missing validation or test split is carved from train
            files = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
            for name, file in files.items():
                if file and not user_path(file).is_file():
                    raise DataError(f"data.{name}_file {file} does not exist. Give an existing CoNLL-style or JSONL file.")
            read = {name: tagging.read_tagged_file(user_path(f)) for name, f in files.items() if f}
            carved = self._carve(read["train"], cfg.train_file, keep=[n for n in read if n != "train"])
            return {**carved, **read, "train": carved["train"]}, cfg.train_file
        spec = cfg.dataset
        path = user_path(spec)
        if path.is_file():
            sentences = tagging.read_tagged_file(path)
            return self._carve(sentences, spec), spec
        if path.suffix.lower() in (".conll", ".txt", ".jsonl", ".json", ".iob", ".bio") or spec.startswith(("/", "./", "~")):
            raise DataError(f"The data file {spec} does not exist. Check data.dataset (a CoNLL-style or JSONL file "
                            f"for task=token_classification).")
        return self._hub_splits(spec), spec

    def _carve(self, sentences: list, spec: str, keep: list[str] = ()) -> dict[str, list]:
        """train / validation / test carved from ``sentences`` with ``data.split_seed`` (a split named
        in ``keep`` comes from its own file: nothing is carved for it)."""
        cfg = self.data_cfg
        order = list(range(len(sentences)))
        random.Random(cfg.split_seed).shuffle(order)
        n_test = 0 if "test" in keep else round(len(order) * cfg.test_fraction)
        n_val = 0 if "validation" in keep else round(len(order) * cfg.validation_fraction)
        pick = lambda idx: [sentences[i] for i in idx]  # noqa: E731
        splits = {"train": pick(order[n_test + n_val:]), "validation": pick(order[n_test:n_test + n_val]),
                  "test": pick(order[:n_test])}
        for name, split in splits.items():
            if not split and name not in keep:
                raise DataError(
                    f"The {name} split carved from {spec} ({len(sentences)} sentences) is empty. Give a file with "
                    f"more sentences, or adjust data.validation_fraction / data.test_fraction."
                )
        return splits

    def _hub_splits(self, spec: str) -> dict[str, list]:
        try:
            import datasets

            datasets.disable_progress_bars()
            subset = getattr(self.data_cfg, "subset", None)
            tables = dict(datasets.load_dataset(spec, subset) if subset else datasets.load_dataset(spec))
        except Exception as error:  # noqa: BLE001 - no hub, unknown id: one message with the fix
            raise DataError(
                f"Could not load the token-classification dataset {spec!r} ({type(error).__name__}: "
                f"{str(error)[:200]}). data.dataset must be a CoNLL-style or JSONL file, or a hub dataset "
                f"with tokens and ner_tags columns (e.g. conll2003, or wikiann with data.subset=en; needs the hub)."
            ) from None
        splits = {}
        mapping = {"train": "train", "validation": "validation", "test": "test", **(self.data_cfg.splits or {})}
        for name in ("train", "validation", "test"):
            source_name = mapping[name]
            if source_name not in tables:
                raise DataError(f"The dataset {spec!r} has no {source_name!r} split (splits: {sorted(tables)}); "
                                f"map it with data.splits, e.g. data.splits={{{name}: {sorted(tables)[0]}}}.")
            table = tables[source_name]
            tag_names = list(table.features["ner_tags"].feature.names)
            splits[name] = tagging.sentences_from_hub_rows(table, tag_names, source=f"{spec} [{name}]")
        return splits

    def tokenize(self, split: TaggedSplit, tokenizer, max_seq_len: int) -> TokenizedWords:
        self._pieces_of = tagging.pre_tokenizer_pieces(tokenizer)
        label_ids = {label: i for i, label in enumerate(self.label_names)}
        resplit = [tagging.resplit_words(s, self._pieces_of) for s in split.sentences]
        tokenized = TokenizedWords(resplit, label_ids, tokenizer, max_seq_len)
        self._tokenized[id(split)] = (split, tokenized)  # the split is held, so its id is not reused
        return tokenized

    def collate(self, examples: list[dict], pad_token_id: int = 0, pad_to: int | None = None) -> dict:
        batch = pad_inputs(examples, pad_token_id, pad_to)
        labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
        for row, example in enumerate(examples):
            tags = example["token_labels"][: labels.shape[1]]
            labels[row, : len(tags)] = torch.tensor(tags, dtype=torch.long)
        batch["labels"] = labels  # (batch, seq): a word's label on its first sub-token, IGNORE elsewhere
        return batch

    # -- scored rows: the first sub-token of every word ---------------------------------------------
    def scored_logits(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return logits[batch["labels"] != IGNORE]  # (words in the batch, labels), row-major order

    def scored_labels(self, batch: dict) -> torch.Tensor:
        labels = batch["labels"]
        return labels[labels != IGNORE]

    def rows_per_example(self, batch: dict) -> list[int]:
        return (batch["labels"] != IGNORE).sum(dim=1).tolist()

    def cache_dtype(self) -> torch.dtype:
        return torch.float16  # one row per word: half precision keeps the cache proportional to words

    # -- metric -------------------------------------------------------------------------------------
    def score(self, rows: list[np.ndarray], split: TaggedSplit, calibration: dict | None = None) -> Scored:
        held = self._tokenized.get(id(split))
        if held is None or held[0] is not split:
            raise RuntimeError("TokenClassification.tokenize() must run on a split before it is scored")
        tokenized = held[1]
        gold, predicted = [], []
        for index, (sentence, sentence_rows) in enumerate(zip(tokenized.sentences, rows, strict=True)):
            # words without a row (cut by truncation, or no sub-token at all) are predicted O
            tags = [tagging.OUTSIDE] * len(sentence.words)
            for word, row in zip(tokenized.scored_words(index), np.asarray(sentence_rows).reshape(-1, len(self.label_names)),
                                 strict=True):
                tags[word] = self.label_names[int(row.argmax())]
            predicted.append(tags)
            gold.append(sentence.tags)
        scores = tagging.entity_scores(gold, predicted)
        details = {
            "precision": scores.micro.precision, "recall": scores.micro.recall, "entities": scores.micro.support,
            "per_type": [{"type": t, "precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
                         for t, s in scores.per_type.items()],
        }
        return Scored(float(scores.micro.f1), scores.per_sentence.astype(np.float64), details)

    @staticmethod
    def statistic(mean_units: np.ndarray) -> np.ndarray:
        """Micro entity F1 = 2 tp / (2 tp + fp + fn) from mean per-sentence (tp, fp, fn)."""
        tp, fp, fn = mean_units[..., 0], mean_units[..., 1], mean_units[..., 2]
        denominator = 2 * tp + fp + fn
        return np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=np.float64),
                         where=denominator > 0)

    # -- bundle ------------------------------------------------------------------------------------
    def bundle_spec(self, data: TaskData) -> dict:
        return {"task": self.name, "labels": list(data.label_names), "scheme": tagging.SCHEME,
                "text_pairs": False,
                "label_position": "first sub-token of each word; other positions are not read",
                "words": "split as the tokenizer's pre-tokenizer splits raw text (whitespace and punctuation)",
                "outputs": {"logits": "(batch, sequence, labels) float32; softmax per token"}}

    def parity_texts(self, data: TaskData, count: int = 4) -> list[str]:
        with_entities = [t for t, s in zip(data.test.texts, data.test.sentences) if tagging.tag_spans(s.tags)]
        return (with_entities + data.test.texts)[:count]


__all__ = ["TaggedSplit", "TokenClassification", "TokenizedWords"]
