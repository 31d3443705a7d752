"""Data loading, splitting, and the wheel-asset registry (no network: fake wheels are built here)."""

import hashlib
import zipfile
from dataclasses import replace

import pytest

from distilprune import assets
from distilprune.config import DataConfig
from distilprune.data import _read_rotten_tomatoes, load_data
from distilprune.errors import AssetError, DataError

from conftest import write_sentiment_csv


def test_rotten_tomatoes_parser_binarizes_and_drops_neutral(tmp_path):
    path = tmp_path / "snippets.txt"
    path.write_bytes(b"id\tsentiment\ttext\r\n1\t2.5\tA fine film.\r\n2\t-1.2\tDull ''plot''.\r\n3\t0.0\tMeh.\r\n4\t0.1\tCaf\xe9 scene.\r\n")
    texts, labels = _read_rotten_tomatoes(path)
    assert labels == [1, 0, 1]
    assert texts[1] == "Dull ''plot''." and texts[2] == "Caf\u00e9 scene."


def test_local_csv_gets_a_fixed_three_way_split(tmp_path):
    cfg = DataConfig(dataset=str(write_sentiment_csv(tmp_path / "d.csv", rows=100)), text_column="sentence")
    first, second = load_data(cfg), load_data(cfg)
    assert (len(first.train), len(first.validation), len(first.test)) == (80, 10, 10)
    assert first.test.texts == second.test.texts and first.num_labels == 2
    assert not set(first.test.texts) & set(first.train.texts) and first.info["duplicates"]["cross_split_after"] == 0


def test_missing_text_column_names_the_available_columns(tmp_path):
    cfg = DataConfig(dataset=str(write_sentiment_csv(tmp_path / "d.csv")))  # column is "sentence"
    with pytest.raises(DataError, match=r"no text column 'text'; its columns are \['sentence', 'label'\]"):
        load_data(cfg)


def test_missing_data_file_is_explained(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(dataset=str(tmp_path / "nope.csv")))


def test_labels_beyond_the_model_head_are_rejected(tmp_path):
    from conftest import tiny_bert
    from distilprune.errors import ModelError
    from distilprune.train.teacher_stage import check_teacher_label_order

    data = load_data(DataConfig(dataset=str(write_sentiment_csv(tmp_path / "d.csv", label_offset=1)), text_column="sentence"))
    with pytest.raises(ModelError, match=r"The dataset has 3 labels \(0, 1, 2\) but the model tiny outputs only 2 classes"):
        check_teacher_label_order(data, tiny_bert(), "tiny")


def test_collate_pads_to_the_longest_example_only():
    from distilprune.tasks import default_task

    out = default_task().collate([{"input_ids": [2, 5, 3], "label": 1, "index": 0}, {"input_ids": [2, 3], "label": 0, "index": 1}])
    assert out["input_ids"].shape == (2, 3)
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def _fake_wheel(tmp_path, asset_path: str) -> tuple:
    wheel = tmp_path / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(asset_path + "config.json", "{}")
        archive.writestr(asset_path + "vocab.txt", "a\nb\n")
        archive.writestr("fakepkg/other.py", "")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    asset = assets.WheelAsset("fake", "model", "fakepkg", "1.0", sha, asset_path, "MIT", "test")
    return wheel, asset


def test_wheel_asset_extracts_only_its_path(tmp_path):
    wheel, asset = _fake_wheel(tmp_path, "fakepkg/model/")
    assets.verify_wheel(asset, wheel)
    path = assets.extract_from_wheel(asset, wheel, tmp_path / "out")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "vocab.txt"]
    assert not (tmp_path / "out" / "fakepkg" / "other.py").exists()


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    wheel, asset = _fake_wheel(tmp_path, "fakepkg/model/")
    tampered = replace(asset, sha256="0" * 64)
    with pytest.raises(AssetError, match="Checksum mismatch .* Delete .* to re-download"):
        assets.verify_wheel(tampered, wheel)


def test_builtin_assets_are_pinned_by_version_and_sha256():
    for asset in assets.ASSETS.values():
        assert len(asset.sha256) == 64 and asset.version.count(".") == 2
