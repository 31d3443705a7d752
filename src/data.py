"""Labelled text: loading, a fixed train/validation/test split, tokenization, dynamic padding.

A dataset spec is a built-in asset name (``rotten-tomatoes``), a local file (csv, tsv, json, jsonl,
parquet), or a Hugging Face hub dataset id. Sources that come without validation/test splits are
split once with ``data.split_seed``, so every run of every recipe sees the same test set.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from distilprune import assets
from distilprune.errors import DataError
from distilprune.paths import user_path

LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.texts[:n], self.labels[:n])


@dataclass
class TextClassificationData:
    """Three fixed splits and the label names (index = label id)."""

    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# -- sources ------------------------------------------------------------------------------------
def _read_rotten_tomatoes(path: Path) -> tuple[list[str], list[int]]:
    """Hutto & Gilbert's snippets: ``id<TAB>sentiment<TAB>text``; label = sentiment > 0, zeros dropped."""
    texts, labels = [], []
    with open(path, encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if header[:3] != ["id", "sentiment", "text"]:
            raise DataError(f"{path} does not look like the Rotten Tomatoes snippets file (header {header}).")
        for row in reader:
            if len(row) < 3:
                continue
            score = float(row[1])
            if score == 0:
                continue  # no sentiment either way: neither label fits
            texts.append(row[2].strip())
            labels.append(int(score > 0))
    return texts, labels


def _three_way_split(texts, labels, validation_fraction, test_fraction, seed) -> tuple[Split, Split, Split]:
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    n_val = round(len(order) * validation_fraction)
    pick = lambda idx: Split([texts[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    return pick(order[n_test + n_val:]), pick(order[n_test:n_test + n_val]), pick(order[:n_test])


def _column(table, name: str, role: str, where: str) -> list:
    columns = list(table.column_names)
    if name not in columns:
        raise DataError(
            f"The dataset {where} has no {role} column {name!r}; its columns are {columns}. Set "
            f"data.{role}_column to one of them (e.g. data.{role}_column={columns[-1] if columns else 'text'})."
        )
    return list(table[name])  # datasets 5 returns a Column object, not a list


def _check_has_rows(path: Path) -> None:
    """Fail on a data file with no data rows, before the datasets library gives a cryptic message.

    Text formats only: a csv/tsv needs a header line and at least one row, a jsonl one object,
    a json file anything but whitespace. Parquet is checked after loading.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return
    needed = 2 if suffix in (".csv", ".tsv") else 1
    lines = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            lines += bool(line.strip())
            if lines >= needed:
                return
    what = "only a header line" if lines else "nothing in it"
    raise DataError(
        f"The data file {path} has no data rows ({what}), so there is nothing to split into "
        f"train/validation/test. Add labelled rows to it (one example per "
        f"{'line after the header' if needed == 2 else 'line'}), or point data.dataset at another file."
    )


def _load_with_datasets(spec: str) -> dict[str, Any]:
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - datasets is a dependency
        raise DataError(f"The datasets package is needed to read {spec}: {error}") from None
    datasets.disable_progress_bars()
    path = user_path(spec)
    try:
        if path.exists():
            fmt = LOCAL_FORMATS.get(path.suffix.lower())
            if fmt is None or not path.is_file():
                raise DataError(
                    f"Cannot read {path}: {'it is a directory' if path.is_dir() else f'unsupported file type {path.suffix!r}'}. "
                    f"Set data.dataset to a file ending in one of {', '.join(sorted(LOCAL_FORMATS))}."
                )
            _check_has_rows(path)
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            return dict(datasets.load_dataset(fmt, data_files={"train": str(path)}, **kwargs))
        return dict(datasets.load_dataset(spec))
    except DataError:
        raise
    except Exception as error:
        if path.is_file() and "corresponds to no data" in str(error):  # e.g. a json file holding []
            raise DataError(
                f"The data file {path} has no data rows, so there is nothing to split into "
                f"train/validation/test. Add labelled examples to it, or point data.dataset at another file."
            ) from None
        raise DataError(
            f"Could not load the dataset {spec!r} ({type(error).__name__}: {str(error)[:200]}). "
            f"data.dataset must be a built-in asset ({', '.join(n for n, a in assets.ASSETS.items() if a.kind == 'dataset')}), "
            f"an existing local file ({', '.join(sorted(LOCAL_FORMATS))}), or a hub dataset id (needs the hub)."
        ) from None


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or Path(spec).suffix.lower() in LOCAL_FORMATS


def load_data(cfg) -> TextClassificationData:
    """Load ``cfg.dataset`` (a :class:`distilprune.config.DataConfig`) into three fixed splits."""
    spec = cfg.dataset
    split_seed = cfg.split_seed
    if assets.is_asset(spec):
        asset = assets.ASSETS[spec]
        if asset.kind != "dataset":
            raise DataError(f"Built-in asset {spec!r} is a {asset.kind}, not a dataset.")
        texts, labels = _read_rotten_tomatoes(assets.fetch(spec))
        train, validation, test = _three_way_split(
            texts, labels, cfg.validation_fraction, cfg.test_fraction, split_seed
        )
        label_names = ["negative", "positive"]
        source = f"{spec} ({asset.package}=={asset.version})"
    else:
        if _looks_like_path(spec) and not user_path(spec).exists():
            raise DataError(
                f"The data file {spec} does not exist. Check data.dataset, or use the built-in "
                f"dataset: data.dataset=rotten-tomatoes."
            )
        tables = _load_with_datasets(spec)
        raw: dict[str, tuple[list, list]] = {}
        for name, table in tables.items():
            raw[name] = (
                _column(table, cfg.text_column, "text", f"{spec} [{name}]"),
                _column(table, cfg.label_column, "label", f"{spec} [{name}]"),
            )
            _check_cells(raw[name], cfg, f"{spec} [{name}]")
        if not raw or not any(texts for texts, _ in raw.values()):
            raise DataError(
                f"The dataset {spec!r} has no rows. Give a dataset with labelled examples in "
                f"data.dataset (a csv needs a header line and one row per example)."
            )
        label_names, to_id = _label_vocabulary(raw.get("train", next(iter(raw.values())))[1])
        splits = {name: Split([str(t) for t in texts], [to_id(v, spec) for v in values]) for name, (texts, values) in raw.items()}
        train = splits.get("train")
        if train is None:
            raise DataError(f"The dataset {spec!r} has no 'train' split (splits: {list(splits)}).")
        validation = splits.get("validation") or splits.get("dev")
        test = splits.get("test")
        if validation is None or test is None:
            # Carve what is missing out of train, with the fixed split seed.
            val_frac = cfg.validation_fraction if validation is None else 1e-9
            test_frac = cfg.test_fraction if test is None else 1e-9
            carved_train, carved_val, carved_test = _three_way_split(
                train.texts, train.labels, val_frac, test_frac, split_seed
            )
            train = carved_train
            validation = validation or carved_val
            test = test or carved_test
        source = spec
    for split_name, split in (("train", train), ("validation", validation), ("test", test)):
        if len(split) == 0:
            raise DataError(
                f"The {split_name} split of {spec!r} is empty. Give a dataset with more rows, or adjust "
                f"data.validation_fraction / data.test_fraction."
            )
    # A seeded shuffle of train so that data.train_examples picks a random, fixed subset.
    order = list(range(len(train)))
    random.Random(split_seed).shuffle(order)
    train = Split([train.texts[i] for i in order], [train.labels[i] for i in order])
    data = TextClassificationData(
        train=train.head(cfg.train_examples),
        validation=validation.head(cfg.eval_examples),
        test=test.head(cfg.eval_examples),
        label_names=label_names,
        source=source,
    )
    data.info = {
        "source": source,
        "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "num_labels": data.num_labels,
        "label_names": label_names,
        "split_seed": split_seed,
    }
    return data


def _check_cells(columns: tuple[list, list], cfg, where: str) -> None:
    """Empty cells (None: a blank csv field, a missing json key) would silently become the text or
    label "None"; name them instead."""
    for role, values in (("text", columns[0]), ("label", columns[1])):
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            column = cfg.text_column if role == "text" else cfg.label_column
            raise DataError(
                f"The dataset {where} has {len(missing)} row(s) without a {role} in column {column!r} "
                f"(first at row {missing[0] + 1} after the header). Fill in or remove those rows."
            )


def _label_vocabulary(values: list) -> tuple[list[str], Any]:
    """Integer labels are kept as they are (0..max); strings are sorted and numbered."""
    if all(isinstance(v, bool) or isinstance(v, int) for v in values):
        ints = [int(v) for v in values]
        if min(ints) < 0:
            raise DataError(
                f"Labels must be integers 0..num_labels-1; found {min(ints)}. Re-map the label column."
            )
        names = [str(i) for i in range(max(ints) + 1)]

        def to_id(value, spec):
            if isinstance(value, str) or int(value) < 0 or int(value) >= len(names):
                raise DataError(
                    f"Label {value!r} in {spec!r} is outside the labels seen in its train split "
                    f"(0..{len(names) - 1}). Every split must use the same label set."
                )
            return int(value)
        return names, to_id
    names = sorted({str(v) for v in values})

    def to_id(value, spec):
        if str(value) not in names:
            raise DataError(f"Label {value!r} in {spec!r} does not occur in its train split ({names}).")
        return names.index(str(value))
    return names, to_id


# -- tokenization and batches ---------------------------------------------------------------------
class TokenizedSplit(Dataset):
    """Token ids without padding; :func:`collate` pads each batch to its longest example."""

    def __init__(self, split: Split, tokenizer, max_seq_len: int) -> None:
        encoded = tokenizer(list(split.texts), truncation=True, max_length=max_seq_len)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = list(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[index], "label": self.labels[index], "index": index}

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def collate(examples: list[dict[str, Any]], pad_token_id: int = 0, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest example in the batch (or to ``pad_to``).

    Returns input_ids, attention_mask (batch, seq) int64, labels (batch,) int64, index (batch,).
    """
    longest = pad_to or max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        ids = example["input_ids"][:longest]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([e["label"] for e in examples], dtype=torch.long),
        "index": torch.tensor([e["index"] for e in examples], dtype=torch.long),
    }


def check_labels_fit(data: TextClassificationData, num_labels: int, model_name: str) -> None:
    """Raise when the data has labels the model's classifier cannot output."""
    largest = max(max(s.labels) for s in (data.train, data.validation, data.test))
    if largest >= num_labels:
        raise DataError(
            f"The dataset has label {largest} but the model {model_name} outputs only {num_labels} "
            f"classes (0..{num_labels - 1}). Use a teacher with {largest + 1} or more labels, set "
            f"teacher.finetuned=false so a new head of the right size is trained, or re-map the labels."
        )
