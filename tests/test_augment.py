"""Distillation data augmentation (src/augment.py) and its use in training."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from distilprune.augment import NO_LABEL, augment_split
from distilprune.data import Split

from conftest import save_tiny_teacher, write_sentiment_csv

SPLIT = Split(["a gripping and funny film", "dull , slow and far too long", "great"], [1, 0, 1])


def test_copies_follow_the_originals_without_gold_labels_and_are_seeded():
    out = augment_split(SPLIT, copies=2, mask_prob=0.3, swap_prob=0.2, ngram_prob=0.5, mask_token="[MASK]", seed=3)
    assert out.texts[:3] == SPLIT.texts and out.labels[:3] == SPLIT.labels  # originals first, untouched
    assert len(out) == 9 and out.labels[3:] == [NO_LABEL] * 6
    again = augment_split(SPLIT, copies=2, mask_prob=0.3, swap_prob=0.2, ngram_prob=0.5, mask_token="[MASK]", seed=3)
    assert again == out  # a pure function of the split and the seed (resume and the teacher cache rely on it)
    other = augment_split(SPLIT, copies=2, mask_prob=0.3, swap_prob=0.2, ngram_prob=0.5, mask_token="[MASK]", seed=4)
    assert other.texts != out.texts
    vocabulary = {word for text in SPLIT.texts for word in text.split()} | {"[MASK]"}
    assert all(set(text.split()) <= vocabulary for text in out.texts[3:])


def test_each_perturbation_does_what_it_says():
    masked = augment_split(SPLIT, 1, mask_prob=1.0, swap_prob=0.0, ngram_prob=0.0, mask_token="[MASK]", seed=0)
    assert masked.texts[3:] == ["[MASK] " * 4 + "[MASK]", " ".join(["[MASK]"] * 7), "[MASK]"]
    same = augment_split(SPLIT, 1, mask_prob=0.0, swap_prob=0.0, ngram_prob=0.0, mask_token="[MASK]", seed=0)
    assert same.texts[3:] == SPLIT.texts
    windows = augment_split(SPLIT, 1, mask_prob=0.0, swap_prob=0.0, ngram_prob=1.0, mask_token="[MASK]", seed=0)
    for original, window in zip(SPLIT.texts, windows.texts[3:]):
        assert window in original and 1 <= len(window.split()) <= min(5, len(original.split()))
    assert augment_split(SPLIT, 0, 0.5, 0.5, 0.5, "[MASK]", seed=0) is SPLIT


def test_no_label_is_what_cross_entropy_ignores():
    logits, labels = torch.randn(4, 2), torch.tensor([1, NO_LABEL, 0, NO_LABEL])
    assert torch.allclose(F.cross_entropy(logits, labels), F.cross_entropy(logits[[0, 2]], labels[[0, 2]]))


def test_a_run_with_augmented_copies_trains_and_caches_the_teacher_on_them(tmp_path, launch):
    """Through the real entry point on the tiny teacher: 96 training sentences + 3 copies each; with
    batches of 4, many batches hold no labelled sentence at all (their cross-entropy is 0, not NaN)."""
    teacher = save_tiny_teacher(tmp_path / "teacher")
    data = write_sentiment_csv(tmp_path / "data.csv", rows=120)
    result = launch(
        "recipe=quickstart", f"output_dir={tmp_path / 'runs'}",
        f"teacher.model={teacher}", "teacher.finetuned=true", f"data.dataset={data}", "data.text_column=sentence",
        "data.max_seq_len=16", "student.num_layers=2", "student.init_layers=[0,2]", "train.epochs=1",
        "train.batch_size=4", "train.precision=32-true", "train.progress_bar=false", "tracking.wandb=false",
        "export.enabled=false", "distill.augment_copies=3",
        env={"DISTILPRUNE_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distilling on 384 examples (3 augmented copies of each" in " ".join(result.stderr.split() + result.stdout.split())
    (meta,) = list((tmp_path / "cache" / "teacher_outputs").glob("*/meta.json"))
    assert json.loads(meta.read_text())["num_examples"] == 384  # teacher logits for every copy
    (run,) = list((tmp_path / "runs" / "quickstart").iterdir())
    info = json.loads((run / "checkpoints" / "final" / "checkpoint_info.json").read_text())
    assert info["step"] == 96 and info["val_acc"] is not None
