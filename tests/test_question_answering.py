"""Extractive question answering through the task seam: the span head, windows and scored rows, the
teacher cache, compaction and export, the serving path, and one run end to end, on tiny models and
SQuAD files the tests write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomly_pruned, save_tiny_qa_teacher, save_tiny_teacher, tiny_bert, write_squad
from distilprune.config import load_recipe
from distilprune.export.onnx_export import export_student, ort_logits, ort_session
from distilprune.students import student_from_teacher
from distilprune.tasks import task_for
from distilprune.tasks.question_answering import MASKED
from distilprune.teacher_cache import build_teacher_outputs


def tiny_qa_teacher():
    from transformers import BertForQuestionAnswering

    torch.manual_seed(0)
    return BertForQuestionAnswering(tiny_bert(num_layers=3).config).eval()


def test_span_student_copies_a_qa_teacher_and_matches_its_start_and_end_logits(batch):
    teacher = tiny_qa_teacher()
    student = student_from_teacher(teacher, num_layers=3, init_layers=[0, 1, 2], head="span",
                                   segment_embeddings=True).eval()
    input_ids, attention_mask = batch
    types = torch.zeros_like(input_ids)
    types[:, 4:] = 1
    with torch.no_grad():
        logits = student(input_ids, attention_mask, token_type_ids=types)
        expected = teacher(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types)
    assert logits.shape == (*input_ids.shape, 2)  # (batch, seq, [start, end])
    assert torch.equal(student.qa_outputs.weight, teacher.qa_outputs.weight)
    real = attention_mask.bool()
    assert (logits[..., 0] - expected.start_logits)[real].abs().max() <= 1e-5
    assert (logits[..., 1] - expected.end_logits)[real].abs().max() <= 1e-5


def test_span_student_compacts_exactly_and_exports_start_and_end_logits(tmp_path, batch):
    student = student_from_teacher(tiny_qa_teacher(), num_layers=2, init_layers=[0, 2], head="span").eval()
    masked, small = randomly_pruned(student, losing=(1, 0))  # layer 1 loses head 0
    with torch.no_grad():
        expected = small(*batch)
        assert (expected - masked(*batch)).abs().max().item() <= 1e-4
    assert small.config.head == "span" and small.config.heads_per_layer[1] == 1
    exported = export_student(small, tmp_path / "bundle")
    session = ort_session(exported.fp32_path, 1)
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]
    assert np.abs(ort_logits(session, *batch) - expected.numpy()).max() <= 1e-4
    assert exported.fused_ops["Attention"] == 2  # every layer runs over every token
    from distilprune.export import verify

    ids, mask = (t.numpy() for t in batch)  # the verifier's IOBinding path (CUDA on a GPU) reads both outputs
    assert np.array_equal(verify.bound_runner(session, ids, mask, device="cpu")[1](), ort_logits(session, *batch))


def test_exclude_sensitive_ranks_layers_of_a_span_model_on_windows_of_different_lengths(tmp_path):
    """The sensitivity probe compares logits feed by feed: calibration batches of a span (or token) model
    have different sequence lengths, so its outputs cannot be concatenated."""
    from distilprune.export.quantize import sensitive_groups

    student = student_from_teacher(tiny_qa_teacher(), num_layers=2, init_layers=[0, 2], head="span").eval()
    exported = export_student(student, tmp_path / "bundle", quantize=False)
    feeds = [{"input_ids": np.full((2, n), 7, dtype=np.int64), "attention_mask": np.ones((2, n), dtype=np.int64)}
             for n in (9, 14)]
    ranked = sensitive_groups(exported.fp32_path, tmp_path, feeds)
    assert {group for group, _, _ in ranked} >= {"layer 0", "layer 1"}
    assert all(np.isfinite(removed) for _, removed, _ in ranked)


def _task(tmp_path: Path, max_seq_len: int = 16, doc_stride: int = 4, **squad):
    from transformers import AutoTokenizer

    data_file = write_squad(tmp_path / "qa.json", **squad)
    recipe = load_recipe(["recipe=quickstart", "task=question_answering", f"data.dataset={data_file}",
                          f"data.max_seq_len={max_seq_len}", f"data.doc_stride={doc_stride}"])
    task = task_for(recipe)
    data = task.load()
    tokenizer = AutoTokenizer.from_pretrained(str(save_tiny_teacher(tmp_path / "tok")))
    return task, data, tokenizer


def test_hub_squad_v2_rows_map_dev_to_test_and_carve_validation_by_context(tmp_path, monkeypatch):
    """A hub dataset with SQuAD's columns (squad_v2): data.splits={test: validation} tests on the official
    dev set, and validation is carved from train by context."""
    import datasets

    rows = json.loads(write_squad(tmp_path / "qa.json", contexts=60).read_text())["data"]

    def hub_rows(articles):
        return [{"id": qa["id"], "title": a["title"], "context": a["paragraphs"][0]["context"], "question": qa["question"],
                 "answers": {"text": [x["text"] for x in qa["answers"]], "answer_start": [x["answer_start"] for x in qa["answers"]]}}
                for a in articles for qa in a["paragraphs"][0]["qas"]]

    tables = {"train": hub_rows(rows[:45]), "validation": hub_rows(rows[45:])}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, subset=None, **kw: dict(tables))
    recipe = load_recipe(["recipe=quickstart", "task=question_answering", "data.dataset=squad_v2",
                          "data.splits={test: validation}", "data.max_seq_len=null"])
    task = task_for(recipe)
    data = task.load()
    assert [e.id for e in data.test.examples] == [r["id"] for r in tables["validation"]]
    assert len(data.train) + len(data.validation) == 45 and len(data.validation) > 0
    assert not {e.context for e in data.train.examples} & {e.context for e in data.validation.examples}
    assert data.info["squad_version"] == "v2.0" and recipe.data.max_seq_len == 384  # the task's default window
    monkeypatch.setattr(datasets, "load_dataset", lambda name, subset=None, **kw: {"train": tables["train"]})
    with pytest.raises(Exception, match=r"maps test to 'validation', but squad_v2 has no split of that name; its splits "
                                        r"are \['train'\]"):
        task_for(recipe).load()


def test_windows_label_the_answer_tokens_and_scored_rows_mask_padding(tmp_path):
    task, data, tokenizer = _task(tmp_path)
    assert data.info["squad_version"] == "v2.0" and data.info["duplicates"]["cross_split_after"] == 0
    contexts = {name: {e.context for e in getattr(data, name).examples} for name in ("train", "validation", "test")}
    assert not contexts["train"] & contexts["test"] and not contexts["validation"] & contexts["test"]
    split = task.tokenize(data.train, tokenizer, 16)
    assert len(split) > len(data.train)  # long contexts need several windows
    for window in split.windows[:40]:
        example = data.train.examples[window.example_index]
        if window.start_position:  # the labelled tokens spell the answer
            start, end = window.offsets[window.start_position][0], window.offsets[window.end_position][1]
            assert example.context[start:end] == example.answers[0][0]
    batch = task.collate([split[i] for i in range(6)])
    logits = torch.randn(*batch["input_ids"].shape, 2)
    rows = task.scored_logits(logits, batch)
    assert rows.shape == (12, batch["input_ids"].shape[1])  # a start row and an end row per window
    torch.testing.assert_close(rows[0], logits[0, :, 0].masked_fill(batch["attention_mask"][0] == 0, MASKED))
    torch.testing.assert_close(rows[1], logits[0, :, 1].masked_fill(batch["attention_mask"][0] == 0, MASKED))
    assert task.scored_labels(batch).tolist() == batch["labels"].reshape(-1).tolist()


def test_teacher_cache_stores_half_precision_start_end_logits_and_pads_them_per_batch(tmp_path):
    from transformers import BertForQuestionAnswering

    task, data, tokenizer = _task(tmp_path)
    teacher = BertForQuestionAnswering(tiny_bert(num_layers=2).config).eval()
    split = task.tokenize(data.train, tokenizer, 16)
    outputs = build_teacher_outputs(teacher, split, tmp_path / "cache", "k", 8, None, None, progress=False, task=task)
    assert outputs.meta["logits_dtype"] == "float16" and outputs.meta["task"] == "question_answering"
    assert outputs.logits(0).shape == (len(split[0]["input_ids"]), 2)  # (tokens, [start, end]), no padding
    batch = task.collate([split[i] for i in (0, 3, 5)])
    with torch.no_grad():
        live = task.scored_logits(task.model_logits(teacher(input_ids=batch["input_ids"],
                                                            attention_mask=batch["attention_mask"],
                                                            token_type_ids=batch["token_type_ids"])), batch)
    cached = task.rows_from_cache([outputs.logits(i) for i in (0, 3, 5)], batch)
    assert cached.shape == live.shape == (6, batch["input_ids"].shape[1])
    torch.testing.assert_close(cached, live, atol=2e-3, rtol=0)  # fp16 storage; padding MASKED in both


def test_serving_windows_are_the_training_windows(tmp_path):
    """The bundle's standalone window builder (tokenizers only) makes the same windows, offsets and
    token types as the training features (transformers), including questions with several windows."""
    from distilprune.export.serving.runtime import BundleRuntime

    task, data, tokenizer = _task(tmp_path, max_seq_len=16, doc_stride=4)
    tokenizer.save_pretrained(str(tmp_path / "bundle"))
    runtime = BundleRuntime.__new__(BundleRuntime)
    runtime.max_seq_len, runtime.qa = 16, {"doc_stride": 4}
    runtime.tokenizer = BundleRuntime._tokenizer(tmp_path / "bundle" / "tokenizer.json", 16, 4)
    runtime.counter = BundleRuntime._tokenizer(tmp_path / "bundle" / "tokenizer.json", 16)
    runtime.counter.no_truncation()
    runtime.text_pairs, runtime.pad_id = False, 0
    examples = data.test.examples
    split = task.tokenize(data.test, tokenizer, 16)
    encoded = runtime.encode([{"question": e.question, "context": e.context} for e in examples])
    assert encoded.owners == [w.example_index for w in split.windows]
    assert max(np.bincount(encoded.owners)) > 1
    for row, window in enumerate(split.windows):
        n = len(window.input_ids)
        assert encoded.input_ids[row, :n].tolist() == window.input_ids
        assert encoded.token_type_ids[row, :n].tolist() == window.token_type_ids
        served = [tuple(span) if seq == 1 else None for span, seq in zip(encoded.encodings[row].offsets,
                                                                            encoded.encodings[row].sequence_ids)]
        assert served == window.offsets


def test_v2_threshold_is_chosen_on_validation_and_scores_follow_the_official_rules(tmp_path):
    task, data, tokenizer = _task(tmp_path)
    validation, test = task.tokenize(data.validation, tokenizer, 16), task.tokenize(data.test, tokenizer, 16)

    def oracle_rows(split, null_bonus: float) -> list[np.ndarray]:
        """Logits that point at the gold span (or [CLS] with ``null_bonus`` for no answer)."""
        rows = []
        for window in split.windows:
            logits = np.full((len(window.input_ids), 2), -5.0, dtype=np.float32)
            logits[window.start_position, 0] = logits[window.end_position, 1] = 5.0
            logits[0] += null_bonus if window.start_position == 0 else 0.0
            rows.append(logits)
        return rows

    calibration = task.calibrate(oracle_rows(validation, 0.0), data.validation)
    assert calibration["validation_f1"] == 1.0
    scored = task.score(oracle_rows(test, 0.0), data.test, calibration)
    assert scored.value == 1.0 and scored.details["breakdown"]["NoAns"]["f1"] == 1.0
    assert scored.units.shape == (len(data.test), 2) and task.statistic(scored.units.mean(0)) == 1.0
    with pytest.raises(RuntimeError, match="calibrate"):
        task.score(oracle_rows(test, 0.0), data.test)  # v2.0 data: no threshold, no score


def test_http_server_answers_questions_and_refuses_bad_ones(tmp_path):
    """The reference server reads question + context, answers through serving_answers.py as the runtime
    does (a long context in several windows), and refuses malformed questions with a one-line 4xx."""
    from serving_bundles import QUESTIONS, make_qa_bundle
    from test_serving import Server

    from distilprune.export.serving.runtime import BundleRuntime

    bundle = make_qa_bundle(tmp_path)
    expected = BundleRuntime(bundle, threads=1).predict(QUESTIONS)
    assert expected[0]["windows"] > 1 and expected[1]["windows"] == 1
    for item, answer in zip(QUESTIONS, expected):
        assert answer["no_answer"] or item["context"][answer["start"]:answer["end"]] == answer["answer"]
    server = Server(bundle, "--max-batch", "4")
    try:
        server.wait_ready()
        status, body = server.predict(QUESTIONS)
        assert status == 200 and body["predictions"] == expected
        status, meta = server.request("GET", "/v1/metadata")
        assert status == 200 and meta["task"] == "question_answering" and meta["doc_stride"] == 8
        assert meta["null_threshold"] == 0.0
        for texts, words in (([{"question": "good w1 ?"}], '"context"'), (["good w1 ?"], '"question"'),
                             ([{"question": " ".join(["good"] * 30), "context": "w1 w2"}], "too long")):
            code, answer = server.predict(texts)
            assert code == 400 and words in answer["error"] and "\n" not in answer["error"]
    finally:
        assert server.stop()


QA_RUN = [
    "recipe=quickstart", "task=question_answering", "data.max_seq_len=24", "data.doc_stride=8",
    "student.num_layers=2", "student.init_layers=[0,2]", "train.progress_bar=false", "tracking.wandb=false",
    "teacher.epochs=10", "teacher.lr=3e-3", "teacher.batch_size=16", "train.epochs=6", "train.lr=3e-3",
    "train.batch_size=16", "export.latency_runs=3", "export.latency_seq_len=24", "export.budget_seq_len=24",
    "export.grid_seq_lens=[24]", "export.grid_batch_sizes=[1]", "export.latency_rounds=2", "export.parallel_wait_seconds=0",
]


@pytest.mark.e2e
def test_qa_end_to_end_on_a_written_squad_v2_file(tmp_path, launch):
    teacher = save_tiny_teacher(tmp_path / "teacher")  # a sequence checkpoint: the QA head is new
    data = write_squad(tmp_path / "qa.json", contexts=240)
    result = launch(*QA_RUN, f"output_dir={tmp_path}", f"teacher.model={teacher}", f"data.dataset={data}",
                    "pruning.keep_at_densities=[]", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(Path(result.stdout.strip().splitlines()[-1].removeprefix("Report: ")).read_text())
    assert report["task"] == {"name": "question_answering", "metric": "f1", "metric_label": "F1"}
    assert report["data"]["squad_version"] == "v2.0"
    assert report["teacher"]["accuracy"] > 0.8  # F1: the teacher learned to point at the name
    final = report["checkpoints"][-1]
    assert final["accuracy"]["onnx_int8"] >= 0.95 * report["teacher"]["accuracy"]
    assert final["onnx_max_abs_diff"] <= 1e-4 and final["compaction_max_abs_diff"] <= 1e-4
    assert final["int8"]["attempts"][0]["method"] == "per_channel"  # the gate decided on answer F1
    int8 = final["metrics"]["onnx_int8"]
    assert set(int8["breakdown"]) == {"HasAns", "NoAns"} and int8["null_threshold"] is not None
    assert final["postprocess_ms"]["questions"] == report["data"]["rows"]["test"]
    bundle = Path(final["bundle"])
    spec = json.loads((bundle / "input_spec.json").read_text())
    served = json.loads((bundle / "serving.json").read_text())["batched_model"]
    assert spec["task"]["question_answering"]["doc_stride"] == 8
    assert spec["task"]["calibration"][served]["null_threshold"] is not None  # the served model's own threshold
    verified = subprocess.run([sys.executable, "verify_bundle.py", ".", "--no-grid"], cwd=bundle,
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout[-3000:]
    parity = json.loads((bundle / "parity.json").read_text())
    outputs = parity["predictions"]["outputs"]
    assert outputs[0]["windows"] > 1  # the longest context is read in several windows
    assert any(o["no_answer"] for o in outputs) and any(not o["no_answer"] for o in outputs)
    for item, answer in zip(parity["predictions"]["texts"], outputs):
        if not answer["no_answer"]:
            assert item["context"][answer["start"]:answer["end"]] == answer["answer"]
    assert "Exact match and F1" in (bundle / "README.md").read_text()


def _weights(out: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    (run_dir,) = list((out / "quickstart").iterdir())
    final = run_dir / "checkpoints" / "final"
    return load_file(str(final / "model.safetensors")), json.loads((final / "checkpoint_info.json").read_text())


def test_qa_ddp_two_processes_match_one_and_resume_is_bit_identical(tmp_path, launch):
    """The teacher cache (on by default), DDP over 2 processes and an exact resume, for QA windows."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import KILL_AFTER_STEP

    teacher = save_tiny_qa_teacher(tmp_path / "reader")
    data = write_squad(tmp_path / "qa.json", contexts=60, context_words=(6, 14))
    common = [*QA_RUN, f"teacher.model={teacher}", "teacher.finetuned=true", f"data.dataset={data}",
              "train.epochs=2", "train.batch_size=16", "train.precision=32-true", "train.accelerator=cpu",
              "export.enabled=false", "pruning.keep_at_densities=[]", "train.checkpoint_every_steps=2"]
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
    # qa_outputs.bias adds one constant to every position of a start (or end) row, so the softmax over
    # positions cancels it and its gradient is 0 up to rounding; Adam scales that rounding (which
    # differs between one and two processes) to lr-sized steps. It changes no answer, so it is left out.
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1 if k != "qa_outputs.bias") < 1e-4
    assert "qa_outputs.weight" in w1  # the span head was trained and kept
    assert killed.returncode != 0
    (run_dir,) = list((tmp_path / "killed" / "quickstart").iterdir())
    resumed = launch(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    w3, info3 = _weights(tmp_path / "killed")
    assert all(torch.equal(w1[k], w3[k]) for k in w1) and info1 == info3
