"""Bundles with their serving files, for the server tests: a tiny one and one with the real tokenizer."""

from __future__ import annotations

from pathlib import Path

from conftest import VOCAB, tiny_bert

from distilprune.export import bundle as B
from distilprune.export.onnx_export import export_student
from distilprune.export.serving import package
from distilprune.students import student_from_teacher

TEXTS = ["good movie", "bad plot , awful and dull w1 w2 w3", "Great FUN", "w5 w6 w7 movie great"]
SETTINGS = {"preferred": [4, 8], "max_batch_size": 8, "instances": 1, "threads": 1}
BATCHED_WHY = "fp32: a text's logits do not depend on its batch"


def _tiny_tokenizer(directory: Path):
    from transformers import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer(vocab=str(directory / "vocab.txt"), do_lower_case=True)


def _finish(bundle: Path, student, tokenizer, max_seq_len: int, texts: list[str], settings: dict,
            batched: tuple[str, str] = ("model.onnx", BATCHED_WHY)) -> Path:
    tokenizer.save_pretrained(str(bundle))
    (bundle / "config.json").write_text(student.config.to_json())
    B.write_input_spec(bundle, tokenizer, max_seq_len, student.config.id2label or {"0": "negative", "1": "positive"})
    B.write_parity_vectors(bundle, tokenizer, texts, max_seq_len, B.PARITY_FP32_ATOL, B.PARITY_INT8_ATOL, threads=1)
    B.write_triton_repository(bundle, "tiny", onnx_file=batched[0], threads=1)
    package.write_serving(bundle, "tiny", batched[0], batched[1], settings)
    B.write_manifest(bundle)
    return bundle


def make_bundle(root: Path, max_seq_len: int = 16) -> Path:
    """A complete tiny bundle (random 2-layer student, 72-word vocabulary); fp32 model.onnx is served."""
    student = student_from_teacher(tiny_bert(num_layers=3), num_layers=2).eval()
    export_student(student, root / "final")
    return _finish(root / "final", student, _tiny_tokenizer(root / "tokenizer"), max_seq_len, TEXTS, SETTINGS)


def make_real_bundle(root: Path, texts: list[str], max_seq_len: int = 128) -> Path:
    """A bundle of a 2-layer student of the real MiniLM-L6 teacher with its real WordPiece tokenizer
    (the classifier head is untrained: serving tests need real tokens and lengths, not accuracy),
    served with per-token INT8 (``model.int8.batched.onnx``), as an export ships it for batching."""
    from distilprune.export.batch_invariant import quantize_per_token

    from distilprune.teacher import load_teacher, load_tokenizer, resolve_teacher

    source, _ = resolve_teacher("minilm-l6")
    teacher = load_teacher(source, "minilm-l6", num_labels=2).eval()
    student = student_from_teacher(teacher, num_layers=2).eval()
    export_student(student, root / "final")
    quantize_per_token(root / "final" / "model.onnx", root / "final" / "model.int8.batched.onnx", key_length=max_seq_len)
    settings = {"preferred": [8, 32], "max_batch_size": 32, "instances": 1, "threads": 1}
    batched = ("model.int8.batched.onnx", "per-token INT8: a text's output does not depend on its batch")
    return _finish(root / "final", student, load_tokenizer(source, "minilm-l6"), max_seq_len, texts[:4], settings, batched)


QUESTIONS = [  # question answering requests: a context of several windows at max_seq_len 24, and short ones
    {"question": "good w3 ?", "context": " ".join(f"w{20 + i % 30}" for i in range(40)) + " w3 movie plot"},
    {"question": "good w1 ?", "context": "w20 w21 w4 w22"},
    {"question": "good plot ?", "context": "movie plot w30"},
]


def make_qa_bundle(root: Path, max_seq_len: int = 24, doc_stride: int = 8) -> Path:
    """A complete tiny question-answering bundle (random 2-layer span student with segment embeddings);
    fp32 model.onnx is served, with a "no answer" threshold of 0 for it."""
    from transformers import BertForQuestionAnswering

    student = student_from_teacher(BertForQuestionAnswering(tiny_bert(num_layers=3).config).eval(), num_layers=2,
                                   head="span", segment_embeddings=True).eval()
    bundle = root / "final"
    export_student(student, bundle)
    tokenizer = _tiny_tokenizer(root / "tokenizer")
    tokenizer.save_pretrained(str(bundle))
    (bundle / "config.json").write_text(student.config.to_json())
    task = {"task": "question_answering", "labels": ["start", "end"], "text_pairs": False,
            "question_answering": {"doc_stride": doc_stride, "n_best": 20, "max_answer_tokens": 30},
            "calibration": {"model.onnx": {"null_threshold": 0.0}}}
    B.write_input_spec(bundle, tokenizer, max_seq_len, {"0": "start", "1": "end"}, task=task)
    B.write_parity_vectors(bundle, tokenizer, QUESTIONS, max_seq_len, B.PARITY_FP32_ATOL, B.PARITY_INT8_ATOL,
                           threads=1, doc_stride=doc_stride)
    B.write_triton_repository(bundle, "tiny", onnx_file="model.onnx", threads=1)
    package.write_serving(bundle, "tiny", "model.onnx", BATCHED_WHY, SETTINGS, task=task)
    B.write_manifest(bundle)
    return bundle
