"""Data the way users hold it: per-split files, hub configurations and split mappings, sentence pairs,
cross-split duplicates, the TREC asset, and the teacher's label order. Small files written here; the
hub is replaced by in-memory datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilprune.config import DataConfig
from distilprune.data import (
    Split,
    _read_trec,
    check_teacher_labels,
    dedupe_splits,
    load_data,
    normalize_text,
    split_keys,
)
from distilprune.errors import ConfigError, DataError


def _csv(path: Path, rows: list[tuple[str, int]]) -> str:
    path.write_text("sentence,label\n" + "".join(f"{text},{label}\n" for text, label in rows))
    return str(path)


def _distinct(prefix: str, n: int) -> list[tuple[str, int]]:
    return [(f"{prefix} sentence number {i}", i % 2) for i in range(n)]


# -- per-split files and cross-split duplicates --------------------------------------------------------
def test_per_split_files_with_cross_split_duplicates_are_deduped_from_train_and_validation(tmp_path):
    shared_val, shared_test, val_and_test = "Seen In Validation", "seen   in test", "in validation and test"
    train = _csv(tmp_path / "train.csv", _distinct("train", 20) + [("seen in validation", 1), ("SEEN IN TEST", 0)] * 2)
    validation = _csv(tmp_path / "dev.csv", _distinct("dev", 5) + [(shared_val, 1), (val_and_test, 0)])
    test = _csv(tmp_path / "test.csv", _distinct("test", 5) + [(shared_test, 0), (val_and_test, 1)])
    cfg = DataConfig(train_file=train, validation_file=validation, test_file=test, text_column="sentence")

    data = load_data(cfg)
    report = data.info["duplicates"]
    assert report["shared_keys"] == {"train/validation": 1, "train/test": 1, "validation/test": 1}
    assert report["found_rows"] == report["removed"] == {"train": 4, "validation": 1}
    assert report["cross_split_after"] == 0 and data.info["carved"] == []
    assert (len(data.train), len(data.validation), len(data.test)) == (20, 6, 7)
    keys = {name: set(split_keys(getattr(data, name))) for name in ("train", "validation", "test")}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]

    with pytest.raises(DataError, match=r"3 text\(s\) that occur in more than one split .*train/validation: 1.*"
                                         r"Set data.dedupe=train") as error:
        load_data(DataConfig(**{**cfg.__dict__, "dedupe": "error"}))
    assert "\n" not in str(error.value)
    kept = load_data(DataConfig(**{**cfg.__dict__, "dedupe": "off"}))
    assert len(kept.train) == 24 and kept.info["duplicates"]["cross_split_after"] == 3
    assert kept.info["duplicates"]["removed"] == {"train": 0, "validation": 0}


def test_one_file_is_carved_and_its_duplicates_removed_after_carving(tmp_path):
    rows = _distinct("row", 60) + [("the same text", 1)] * 40  # 40 copies: some land in validation/test
    data = load_data(DataConfig(dataset=_csv(tmp_path / "d.csv", rows), text_column="sentence"))
    report = data.info["duplicates"]
    assert data.info["carved"] == ["validation", "test"]
    assert report["removed"]["train"] > 0 and report["cross_split_after"] == 0
    assert "the same text" not in data.train.texts  # it is in validation or test, so not in train
    assert len(data.train) + len(data.validation) + len(data.test) == 100 - sum(report["removed"].values())


def test_validation_file_without_test_file_carves_only_the_test_split(tmp_path):
    cfg = DataConfig(train_file=_csv(tmp_path / "t.csv", _distinct("t", 50)),
                     validation_file=_csv(tmp_path / "v.csv", _distinct("v", 7)), text_column="sentence")
    data = load_data(cfg)
    assert data.info["carved"] == ["test"] and len(data.validation) == 7 and (len(data.train), len(data.test)) == (45, 5)
    assert data.source.endswith("t.csv + " + str(tmp_path / "v.csv"))


def test_missing_split_file_names_its_key(tmp_path):
    cfg = DataConfig(train_file=_csv(tmp_path / "t.csv", _distinct("t", 20)), test_file=str(tmp_path / "nope.csv"),
                     text_column="sentence")
    with pytest.raises(DataError, match=r"nope.csv does not exist. Check data.test_file"):
        load_data(cfg)


def test_dedupe_core_works_on_any_container():
    """Token classification keeps word lists: the same core, other keys and selection."""
    sentences = {"train": [["EU", "rejects", "German"], ["Peter", "Blackburn"]], "test": [["eu", "rejects", "german"]]}
    out, report = dedupe_splits(
        sentences, lambda split: [normalize_text(" ".join(words)) for words in split],
        lambda split, indices: [split[i] for i in indices], "train", "conll")
    assert out["train"] == [["Peter", "Blackburn"]] and out["test"] == sentences["test"]
    assert report["removed"] == {"train": 1} and report["examples"] == ["eu rejects german"]


# -- sentence pairs -----------------------------------------------------------------------------------
def _pairs_jsonl(path: Path, rows: list[tuple[str, str, str]]) -> str:
    path.write_text("".join(json.dumps({"premise": p, "hypothesis": h, "label": y}) + "\n" for p, h, y in rows))
    return str(path)


def test_pairs_are_read_carried_and_deduped_as_pairs(tmp_path):
    rows = [(f"premise {i}", f"hypothesis {i}", ["entailment", "neutral", "contradiction"][i % 3]) for i in range(40)]
    rows += [("a man sleeps", "a person rests", "entailment"), ("a man sleeps", "nobody sleeps", "contradiction")] * 10
    path = _pairs_jsonl(tmp_path / "nli.jsonl", rows)
    data = load_data(DataConfig(dataset=path, text_column="premise", text_pair_column="hypothesis"))
    assert data.label_names == ["contradiction", "entailment", "neutral"]  # sorted, not assumed
    assert data.train.text_pairs is not None and len(data.train.text_pairs) == len(data.train)
    assert data.info["columns"] == {"text": "premise", "label": "label", "text_pair": "hypothesis"}
    # The same premise with two hypotheses is two examples: only identical (premise, hypothesis) collide,
    # and after dedupe each repeated pair lives in one split only (premise alone may be in several).
    report = data.info["duplicates"]
    assert report["cross_split_after"] == 0 and 0 < sum(report["shared_keys"].values()) <= 6
    for pair in (("a man sleeps", "a person rests"), ("a man sleeps", "nobody sleeps")):
        homes = [name for name in ("train", "validation", "test") if pair in split_keys(getattr(data, name))]
        assert len(homes) == 1, (pair, homes)
    first = data.train.head(3)
    assert first.text_pairs == data.train.text_pairs[:3] and first.texts == data.train.texts[:3]
    with pytest.raises(DataError, match=r"no text_pair column 'question2'; its columns are \['premise', "
                                         r"'hypothesis', 'label'\]. Set data.text_pair_column"):
        load_data(DataConfig(dataset=path, text_column="premise", text_pair_column="question2"))


def test_split_stays_positional_and_head_carries_pairs():
    single = Split(["a", "b", "c"], [0, 1, 0])
    assert single.text_pairs is None and single.head(2).texts == ["a", "b"] and single.head(2).text_pairs is None
    pair = Split(["a", "b", "c"], [0, 1, 0], ["x", "y", "z"])
    assert pair.head(2).text_pairs == ["x", "y"] and pair.select([2, 0]).text_pairs == ["z", "x"]


# -- hub datasets: configuration, split mapping, declared label names ---------------------------------
@pytest.fixture
def fake_hub(monkeypatch):
    """load_dataset(id, subset) answers from memory: a glue/mnli-like DatasetDict with ClassLabel labels."""
    import datasets

    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})

    def table(prefix: str, n: int, labelled: bool = True):
        return datasets.Dataset.from_dict(
            {"premise": [f"{prefix} premise {i}" for i in range(n)], "hypothesis": [f"{prefix} hyp {i}" for i in range(n)],
             "label": [i % 3 if labelled else -1 for i in range(n)]}, features=features)

    calls = []

    def load_dataset(name, subset=None, **kwargs):
        calls.append((name, subset))
        if (name, subset) != ("glue", "mnli"):
            raise FileNotFoundError(f"no {name}/{subset}")
        return datasets.DatasetDict({"train": table("tr", 30), "validation_matched": table("vm", 6),
                                     "validation_mismatched": table("vmm", 9), "test_matched": table("tm", 4, False)})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_subset_and_split_mapping(fake_hub):
    cfg = DataConfig(dataset="glue", subset="mnli", text_column="premise", text_pair_column="hypothesis",
                     splits={"validation": "validation_matched", "test": "validation_mismatched"})
    data = load_data(cfg)
    assert fake_hub == [("glue", "mnli")]
    assert (len(data.train), len(data.validation), len(data.test)) == (30, 6, 9)
    assert data.label_names == ["entailment", "neutral", "contradiction"]  # the dataset's own order
    assert data.info["splits_from"] == {"train": "train", "validation": "validation_matched", "test": "validation_mismatched"}
    assert data.source == "glue/mnli" and data.info["carved"] == []
    # A mapping that leaves validation out carves it from train instead of taking one by name.
    carved = load_data(DataConfig(**{**cfg.__dict__, "splits": {"test": "validation_matched"}}))
    assert carved.info["carved"] == ["validation"] and len(carved.test) == 6 and len(carved.validation) == 3


def test_hub_split_mapping_errors_name_the_splits_that_exist(fake_hub):
    base = dict(dataset="glue", subset="mnli", text_column="premise")
    with pytest.raises(DataError, match=r"maps test to 'validation'.*its splits are \['test_matched', 'train', "
                                         r"'validation_matched', 'validation_mismatched'\]"):
        load_data(DataConfig(**base, splits={"test": "validation"}))
    with pytest.raises(DataError, match=r"has no labels \(every label is -1.*data.splits=\{test: validation\}"):
        load_data(DataConfig(**base, splits={"test": "test_matched"}))
    with pytest.raises(DataError, match=r"Could not load the dataset 'glue' \(subset 'sst9'\)"):
        load_data(DataConfig(dataset="glue", subset="sst9"))


def test_a_single_local_file_has_only_a_train_split(tmp_path):
    path = _csv(tmp_path / "d.csv", _distinct("x", 30))
    with pytest.raises(DataError, match=r"maps test to 'dev'.*its splits are \['train'\]"):
        load_data(DataConfig(dataset=path, text_column="sentence", splits={"test": "dev"}))


# The GLUE configurations as the hub lays them out: {subset: (columns, label names, labelled splits)}.
# Every GLUE test split is unlabelled (-1).
GLUE_LAYOUT = {
    "mnli": (("premise", "hypothesis"), ["entailment", "neutral", "contradiction"],
             ("train", "validation_matched", "validation_mismatched")),
    "qqp": (("question1", "question2"), ["not_duplicate", "duplicate"], ("train", "validation")),
    "mrpc": (("sentence1", "sentence2"), ["not_equivalent", "equivalent"], ("train", "validation")),
    "sst2": (("sentence",), ["negative", "positive"], ("train", "validation")),
}


@pytest.mark.parametrize("subset", sorted(GLUE_LAYOUT))
def test_glue_recipes_read_a_dataset_laid_out_like_glue(subset, monkeypatch):
    import datasets

    from distilprune.config import load_recipe

    columns, names, labelled = GLUE_LAYOUT[subset]
    features = datasets.Features({**{c: datasets.Value("string") for c in columns},
                                  "label": datasets.ClassLabel(names=names), "idx": datasets.Value("int32")})

    def table(split: str, n: int):
        rows = {c: [f"{split} {c} {i}" for i in range(n)] for c in columns}
        return datasets.Dataset.from_dict({**rows, "label": [i % len(names) if split in labelled else -1 for i in range(n)],
                                           "idx": list(range(n))}, features=features)

    test_splits = ("test_matched", "test_mismatched") if subset == "mnli" else ("test",)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, sub=None, **kw: datasets.DatasetDict(
        {split: table(split, 40 if split == "train" else 8) for split in (*labelled, *test_splits)}))
    data = load_data(load_recipe([f"recipe=glue/{subset}_minilm6_to_distil4"]).data)
    assert data.label_names == names and min(len(data.validation), len(data.test)) > 0
    assert (data.train.text_pairs is not None) == (len(columns) == 2)
    assert all(not t.startswith("test") for t in data.test.texts)  # never GLUE's unlabelled test split


# -- TREC ---------------------------------------------------------------------------------------------
def test_trec_reader_keeps_the_largest_nested_training_set(tmp_path):
    first = ["DESC:manner How did serfdom develop ?", "ENTY:cremat What films featured Popeye ?"]
    largest = first + ["LOC:city What city has the most people ?", "ENTY:cremat What films featured Popeye ?",
                       "NUM:date When was the gate built ?"]
    path = tmp_path / "question_labels.txt"
    path.write_text("\n".join(first + largest) + "\n")
    texts, labels = _read_trec(path, "coarse")
    assert texts == ["How did serfdom develop ?", "What films featured Popeye ?", "What city has the most people ?",
                     "When was the gate built ?"]  # the first block and the repeated line are not examples twice
    assert labels == ["DESC", "ENTY", "LOC", "NUM"]
    assert _read_trec(path, "fine")[1] == ["DESC:manner", "ENTY:cremat", "LOC:city", "NUM:date"]
    path.write_text("DESC:manner How ?\nnot a labelled line\n")
    with pytest.raises(DataError, match="line 2 is not 'COARSE:fine question'"):
        _read_trec(path, "coarse")


def test_trec_asset_has_sorted_labels_from_the_data_and_no_cross_split_duplicates():
    coarse = load_data(DataConfig(dataset="trec"))
    assert coarse.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert len(coarse.train) + len(coarse.validation) + len(coarse.test) == 5381
    assert coarse.info["duplicates"]["cross_split_after"] == 0 and coarse.info["carved"] == ["validation", "test"]
    fine = load_data(DataConfig(dataset="trec", label_granularity="fine"))
    assert fine.num_labels == 50 and fine.label_names == sorted(fine.label_names) and "LOC:city" in fine.label_names


# -- recipe keys ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, fragment", [
    (dict(dedupe="trian"), "choose one of train, error, off. Did you mean 'train'"),
    (dict(splits={"dev": "validation"}), "data.splits has 'dev'; its keys are the project's splits"),
    (dict(validation_file="v.csv"), "data.validation_file is set but data.train_file is not"),
    (dict(train_file="t.csv", subset="sst2"), "with per-split files"),
    (dict(label_granularity="fine"), "applies to the built-in trec dataset only"),
    (dict(text_pair_column=""), "one is empty"),
])
def test_data_keys_are_checked_at_load(kwargs, fragment):
    with pytest.raises(ConfigError, match=None) as error:
        DataConfig(**kwargs).validate()
    assert fragment in str(error.value)


def test_builtin_datasets_reject_hub_and_pair_keys():
    with pytest.raises(DataError, match="built-in dataset of single texts"):
        load_data(DataConfig(dataset="rotten-tomatoes", text_pair_column="hypothesis"))


# -- the teacher's label order ----------------------------------------------------------------------------
def test_teacher_label_order_is_checked_by_name():
    names = ["negative", "positive"]
    check_teacher_labels(names, {"0": "NEGATIVE", "1": "POSITIVE"}, "t")  # case does not matter
    check_teacher_labels(names, {0: "LABEL_0", 1: "LABEL_1"}, "t")  # generic: only the count
    check_teacher_labels(["0", "1"], {0: "neg", 1: "pos"}, "t")  # integer labels: ids, nothing to compare
    with pytest.raises(DataError, match=r"orders its labels \['positive', 'negative'\].*dataset's labels are "
                                         r"\['negative', 'positive'\]; the same names in another order"):
        check_teacher_labels(names, {0: "positive", 1: "negative"}, "t")
    with pytest.raises(DataError, match=r"has 3 labels .* but the dataset has 2"):
        check_teacher_labels(names, {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "t")
    with pytest.raises(DataError, match="the names differ"):
        check_teacher_labels(names, {0: "entailment", 1: "contradiction"}, "t")
