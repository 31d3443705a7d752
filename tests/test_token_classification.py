"""Token classification (NER) through the task seam: student head, compaction, export, teacher
cache, training and serving, on tiny models and CoNLL files the tests write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import NER_LABELS, randomly_pruned, save_tiny_tagger, save_tiny_teacher, tiny_bert, write_conll
from distilprune.config import load_recipe
from distilprune.export.onnx_export import export_student, ort_logits, ort_session
from distilprune.students import student_from_teacher
from distilprune.tasks import IGNORE, task_for
from distilprune.teacher_cache import build_teacher_outputs


def tiny_token_student():
    from transformers import BertForTokenClassification

    torch.manual_seed(0)
    teacher = BertForTokenClassification(tiny_bert(num_layers=3, num_labels=len(NER_LABELS)).config).eval()
    return teacher, student_from_teacher(teacher, num_layers=2, init_layers=[0, 2], head="token").eval()


def test_token_student_copies_the_teacher_and_scores_every_token(batch):
    teacher, student = tiny_token_student()
    with torch.no_grad():
        logits = student(*batch)
    assert logits.shape == (*batch[0].shape, len(NER_LABELS))  # (batch, seq, labels)
    assert not hasattr(student, "pre_classifier")  # token classifiers have no pooler
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_token_student_compacts_exactly_and_exports_with_every_attention_fused(tmp_path, batch):
    _, student = tiny_token_student()
    masked, small = randomly_pruned(student, losing=(0, 1))  # layer 0 loses head 1
    with torch.no_grad():
        expected = small(*batch)
        assert (expected - masked(*batch)).abs().max().item() <= 1e-4
    assert small.config.head == "token" and small.config.heads_per_layer[0] == 1
    exported = export_student(small, tmp_path / "bundle")
    assert np.abs(ort_logits(ort_session(exported.fp32_path, 1), *batch) - expected.numpy()).max() <= 1e-4
    # The token head runs every layer over every token: both layers fuse (the sequence head's last does not).
    assert exported.fused_ops["Attention"] == 2


def _task(data_file: Path, max_seq_len: int = 16):
    from transformers import AutoTokenizer

    recipe = load_recipe(["recipe=quickstart", "task=token_classification", f"data.dataset={data_file}"])
    task = task_for(recipe)
    data = task.load()
    tokenizer = AutoTokenizer.from_pretrained(str(save_tiny_teacher(data_file.parent / "tok")))
    return task, data, tokenizer


def test_labels_come_from_the_data_and_sit_on_first_sub_tokens(tmp_path):
    task, data, tokenizer = _task(write_conll(tmp_path / "ner.conll", sentences=60))
    assert data.label_names == NER_LABELS and data.info["duplicates"]["cross_split_after"] == 0
    split = task.tokenize(data.train, tokenizer, 16)
    batch = task.collate([split[i] for i in range(8)])
    scored = batch["labels"] != IGNORE
    assert not scored[:, 0].any()  # [CLS] is never scored
    # one scored row per word that fits in 16 tokens ([CLS] + 14 words + [SEP] at most)
    words = [min(len(s.words), 14) for s in data.train.sentences[:8]]
    assert task.rows_per_example(batch) == words


def test_teacher_cache_stores_one_half_precision_row_per_word(tmp_path):
    from transformers import AutoModelForTokenClassification

    task, data, tokenizer = _task(write_conll(tmp_path / "ner.conll", sentences=40))
    teacher = AutoModelForTokenClassification.from_pretrained(str(save_tiny_tagger(tmp_path / "tagger"))).eval()
    split = task.tokenize(data.train, tokenizer, 16)
    outputs = build_teacher_outputs(teacher, split, tmp_path / "cache", "k", 8, None, None, progress=False, task=task)
    assert outputs.meta["logits_dtype"] == "float16" and outputs.meta["task"] == "token_classification"
    batch = task.collate([split[i] for i in (0, 3, 5)])
    with torch.no_grad():
        live = task.scored_logits(teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch)
    cached = outputs.batch_logits([0, 3, 5])
    assert cached.shape == live.shape == (sum(task.rows_per_example(batch)), len(NER_LABELS))
    torch.testing.assert_close(cached, live, atol=2e-3, rtol=0)  # fp16 storage


NER_RUN = [
    "recipe=quickstart", "task=token_classification", "data.max_seq_len=16", "student.num_layers=2",
    "student.init_layers=[0,2]", "train.progress_bar=false", "tracking.wandb=false",
]


@pytest.mark.e2e
def test_ner_end_to_end_on_a_written_conll_file(tmp_path, launch):
    teacher = save_tiny_teacher(tmp_path / "teacher")  # a sequence checkpoint: the NER head is new
    data = write_conll(tmp_path / "ner.conll", sentences=200)
    result = launch(*NER_RUN, f"output_dir={tmp_path}", f"teacher.model={teacher}", f"data.dataset={data}",
                    "teacher.epochs=12", "teacher.lr=3e-3", "teacher.batch_size=16", "train.epochs=8", "train.lr=3e-3",
                    "train.batch_size=16", "export.latency_runs=3", "export.latency_seq_len=16", "export.budget_seq_len=16",
                    "export.grid_seq_lens=[16]", "export.grid_batch_sizes=[1]", "export.latency_rounds=2", "export.parallel_wait_seconds=0",
                    "pruning.keep_at_densities=[]", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(Path(result.stdout.strip().splitlines()[-1].removeprefix("Report: ")).read_text())
    assert report["task"] == {"name": "token_classification", "metric": "entity_f1", "metric_label": "entity F1"}
    assert report["teacher"]["accuracy"] > 0.6  # entity F1: the teacher learned the names and places
    final = report["checkpoints"][-1]
    assert final["accuracy"]["onnx_int8"] > 0.6 and final["onnx_max_abs_diff"] <= 1e-4
    assert final["compaction_max_abs_diff"] <= 1e-4
    assert final["fused_ops"]["Attention"] == sum(1 for h in final["heads_per_layer"] if h)
    assert final["int8"]["attempts"][0]["method"] == "per_channel"  # the gate decided on entity F1
    assert {t["type"] for t in final["metrics"]["onnx_int8"]["per_type"]} == {"LOC", "PER"}
    bundle = Path(final["bundle"])
    assert json.loads((bundle / "input_spec.json").read_text())["task"]["labels"] == NER_LABELS
    verified = subprocess.run([sys.executable, "verify_bundle.py", ".", "--no-grid"], cwd=bundle,
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout[-3000:]
    parity = json.loads((bundle / "parity.json").read_text())
    for text, prediction in zip(parity["predictions"]["texts"], parity["predictions"]["outputs"]):
        for entity in prediction["entities"]:
            assert text[entity["start"]:entity["end"]] == entity["text"]  # character offsets into the text
            assert f"{entity['type']} {entity['text']!r} [{entity['start']}:{entity['end']}]" in verified.stdout
    assert any(p["entities"] for p in parity["predictions"]["outputs"])


def _weights(out: Path) -> tuple[dict, dict]:
    (run_dir,) = list((out / "quickstart").iterdir())
    final = run_dir / "checkpoints" / "final"
    return load_file(str(final / "model.safetensors")), json.loads((final / "checkpoint_info.json").read_text())


def test_ner_ddp_two_processes_match_one_and_resume_is_bit_identical(tmp_path, launch):
    from conftest import KILL_AFTER_STEP

    tagger = save_tiny_tagger(tmp_path / "tagger")
    data = write_conll(tmp_path / "ner.conll", sentences=80)  # 64 train sentences = 4 global batches of 16
    common = [*NER_RUN, f"teacher.model={tagger}", "teacher.finetuned=true", f"data.dataset={data}",
              "train.epochs=2", "train.batch_size=16", "train.precision=32-true", "train.accelerator=cpu",
              "export.enabled=false", "pruning.keep_at_densities=[]", "train.checkpoint_every_steps=3"]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two one-process runs side by side: one core each
        one_run = pool.submit(launch, *common, f"output_dir={tmp_path / 'one'}", "train.devices=1")
        killed_run = pool.submit(launch, str(5), *common, f"output_dir={tmp_path / 'killed'}", "train.devices=1",
                                 entry=KILL_AFTER_STEP)
        one, killed = one_run.result(), killed_run.result()
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(*common, f"output_dir={tmp_path / 'two'}", "train.devices=2", "train.strategy=ddp")
    assert two.returncode == 0, two.stderr[-3000:]
    (w1, info1), (w2, info2) = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert info1["val_acc"] == info2["val_acc"]
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
    assert killed.returncode != 0
    (run_dir,) = list((tmp_path / "killed" / "quickstart").iterdir())
    resumed = launch(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    w3, info3 = _weights(tmp_path / "killed")
    assert all(torch.equal(w1[k], w3[k]) for k in w1) and info1 == info3


def test_every_task_the_schema_accepts_is_registered():
    from distilprune.config.schema import TASK_NAMES
    from distilprune.tasks import TASKS

    assert tuple(TASKS) == TASK_NAMES
