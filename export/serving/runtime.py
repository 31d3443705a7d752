"""Text in, predictions out: the one tokenization, inference and post-processing every server uses.

A bundle's servers (the reference HTTP server and Triton's python-backend model) and the load
benchmark all call :class:`BundleRuntime`, so a text gets the same tokens, the same model and the
same answer whichever server it goes through. This file needs only numpy, onnxruntime and
tokenizers: the export copies it into each bundle (``serving_runtime.py``) and into the Triton
model's version directory, where no distilprune install exists.

Which ONNX file serves is written in the bundle's ``serving.json`` (``batched_model``): a model
whose output for a text does not depend on what it is batched with, since servers batch requests
from different clients together.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Triton's python-backend stub starts an embedded interpreter that does not read PYTHONPATH. The
# Triton models import this file first, so numpy, onnxruntime and tokenizers can come from a
# virtual environment given to the server in PYTHONPATH. (Elsewhere PYTHONPATH is on sys.path already.)
sys.path[:0] = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry and entry not in sys.path]

import numpy as np  # noqa: E402

if __package__:  # distilprune.export.serving.runtime
    from distilprune.export.serving.answers import best_answer
    from distilprune.export.serving.entities import entities_of_text
else:  # serving_runtime.py inside a bundle or a Triton model directory: serving_*.py beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serving_answers import best_answer  # noqa: E402
    from serving_entities import entities_of_text  # noqa: E402

SERVING_SPEC = "serving.json"
INPUT_SPEC = "input_spec.json"
TOKENIZER_JSON = "tokenizer.json"
MANIFEST = "manifest.json"
TASK_SEQUENCE_CLASSIFICATION = "sequence_classification"
TASK_TOKEN_CLASSIFICATION = "token_classification"
TASK_QUESTION_ANSWERING = "question_answering"
ENTITIES_FILE = "serving_entities.py"  # export/serving/entities.py as copied beside serving_runtime.py
ANSWERS_FILE = "serving_answers.py"  # export/serving/answers.py as copied beside serving_runtime.py
SPAN_OUTPUTS = ("start_logits", "end_logits")  # a question-answering model's outputs, (batch, seq) each


class RequestError(ValueError):
    """A request a server must refuse: ``status`` is the HTTP status, the message one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BundleError(RuntimeError):
    """The bundle cannot be served as it is (missing file, changed file, unknown task)."""


@dataclass
class Encoded:
    """A tokenized batch: ``input_ids`` / ``attention_mask`` are (texts, longest) int64, right-padded."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: list[bool]
    encodings: list | None = None  # the tokenizers.Encoding of each text (offsets, word ids)
    token_type_ids: np.ndarray | None = None  # (texts, longest) int64 segment ids, for text pairs
    owners: list[int] | None = None  # question answering: the question each row (window) belongs to


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: serve a complete bundle (re-export it with distilprune).") from None
    except ValueError as error:
        raise BundleError(f"{path} is not valid JSON ({error}); re-export the bundle.") from None


def check_manifest(bundle: Path) -> int:
    """Compare every file listed in ``manifest.json`` with its sha256; return how many were checked.

    Raises:
        BundleError: a listed file is missing or changed, naming the files.
    """
    import hashlib

    manifest = _read_json(Path(bundle) / MANIFEST)
    problems = []
    for name, entry in sorted(manifest.get("files", {}).items()):
        path = Path(bundle) / name
        if not path.is_file():
            problems.append(f"{name} (missing)")
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != entry.get("sha256"):
            problems.append(f"{name} (sha256 differs from the manifest)")
    if problems:
        raise BundleError(
            f"The bundle {bundle} does not match its manifest: {', '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}. A server refuses a changed bundle; re-export it, or copy "
            f"it again from the export, then start the server again."
        )
    return len(manifest.get("files", {}))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (rows, labels) float32 logits, computed per row so batching cannot change it."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classify(logits: np.ndarray, labels: list[str], encoded: Encoded, texts: list[str]) -> list[dict]:
    """Sequence classification post-processing of (texts, labels) logits: best label, its
    probability, every probability."""
    probabilities = softmax(logits.astype(np.float32))
    results = []
    for row, cut in zip(probabilities, encoded.truncated):
        best = int(row.argmax())
        results.append({"label": labels[best], "label_id": best, "score": float(row[best]),
                        "scores": {label: float(p) for label, p in zip(labels, row)}, "truncated": bool(cut)})
    return results


def tag_entities(logits: np.ndarray, labels: list[str], encoded: Encoded, texts: list[str]) -> list[dict]:
    """Token classification post-processing of (texts, tokens, labels) logits: the entities of each
    text with character offsets into it (words as the tokenizer's pre-tokenizer splits the text; a
    word's tag read at its first sub-token; B/I merged; see serving_entities.py)."""
    return [{"entities": entities_of_text(logits[i], labels, encoded.encodings[i], text),
             "truncated": bool(encoded.truncated[i])} for i, text in enumerate(texts)]


def answer_questions(logits: np.ndarray, labels: list[str], encoded: Encoded, items: list[dict],
                     n_best: int = 20, max_answer_tokens: int = 30, null_threshold: float | None = None) -> list[dict]:
    """Question answering post-processing of (windows, tokens, 2) start/end logits: each question's
    answer over all its windows (serving_answers.py: n-best start/end pairs, the longest answer, the
    "no answer" threshold chosen on validation), with character offsets into its context."""
    results = []
    for index, item in enumerate(items):
        rows = [row for row, owner in enumerate(encoded.owners) if owner == index]
        offsets = [_context_offsets(encoded.encodings[row]) for row in rows]
        answer = best_answer([logits[row, :, 0] for row in rows], [logits[row, :, 1] for row in rows], offsets,
                             item["context"], n_best, max_answer_tokens, null_threshold)
        results.append({"answer": answer["text"], "start": answer["start"], "end": answer["end"],
                        "score": answer["score"], "no_answer": answer["no_answer"], "windows": len(rows),
                        "truncated": False})
    return results


def _context_offsets(encoding) -> list:
    """(tokens,) ``(start, end)`` characters of each context token in the context, None elsewhere."""
    return [tuple(span) if sequence == 1 else None for span, sequence in zip(encoding.offsets, encoding.sequence_ids)]


# task name -> post-processing of (logits, labels, encoded batch, texts) into one dict per text
POSTPROCESS = {TASK_SEQUENCE_CLASSIFICATION: classify, TASK_TOKEN_CLASSIFICATION: tag_entities,
               TASK_QUESTION_ANSWERING: answer_questions}


class BundleRuntime:
    """One bundle, ready to serve: tokenizer, ONNX Runtime session and post-processing.

    Args:
        bundle: the bundle directory (or a Triton model version directory holding the same files).
        model_file: the ONNX file to run; None = ``serving.json``'s ``batched_model``.
        threads: ONNX Runtime intra-op threads; None = the CPUs this process may use.
    """

    def __init__(self, bundle: Path | str, model_file: str | None = None, threads: int | None = None,
                 load_model: bool = True, load_tokenizer: bool = True):

        self.bundle = Path(bundle)
        self.spec = _read_json(self.bundle / INPUT_SPEC)
        self.serving = _read_json(self.bundle / SERVING_SPEC)
        self.task = self.serving.get("task", TASK_SEQUENCE_CLASSIFICATION)
        if self.task not in POSTPROCESS:
            raise BundleError(f"The bundle's task {self.task!r} has no post-processing here (known: "
                              f"{', '.join(POSTPROCESS)}); serve it with a distilprune that knows the task.")
        self.model_file = model_file or self.serving["batched_model"]
        self.max_seq_len = int(self.spec["max_seq_len"])
        self.labels = [self.spec["id2label"][str(i)] for i in range(int(self.spec["num_labels"]))]
        self.pad_id = int(self.spec["tokenizer"]["pad_token_id"])
        self.text_pairs = bool(self.spec.get("task", {}).get("text_pairs"))  # requests send [first, second]
        self.takes_segments = any(i["name"] == "token_type_ids" for i in self.spec.get("inputs", []))
        self.qa = self.spec.get("task", {}).get("question_answering") if self.task == TASK_QUESTION_ANSWERING else None
        self.postprocess_options = {}
        if self.qa is not None:
            calibration = self.spec.get("task", {}).get("calibration", {}).get(self.model_file, {})
            self.postprocess_options = {"n_best": int(self.qa["n_best"]), "max_answer_tokens": int(self.qa["max_answer_tokens"]),
                                        "null_threshold": calibration.get("null_threshold")}
        self.tokenizer = (self._tokenizer(self.bundle / TOKENIZER_JSON, self.max_seq_len,
                                          self.qa["doc_stride"] if self.qa else None) if load_tokenizer else None)
        self.counter = None  # question answering: counts question and context tokens (no truncation, no windows)
        if self.qa is not None and load_tokenizer:
            self.counter = self._tokenizer(self.bundle / TOKENIZER_JSON, self.max_seq_len)
            self.counter.no_truncation()
        self.session = self._session(self.bundle / self.model_file, threads) if load_model else None

    @staticmethod
    def _tokenizer(path: Path, max_seq_len: int, doc_stride: int | None = None):
        from tokenizers import Tokenizer

        if not path.is_file():
            raise BundleError(f"{path} is missing: the bundle's tokenizer is needed to serve text.")
        tokenizer = Tokenizer.from_file(str(path))
        if doc_stride is None:
            tokenizer.enable_truncation(max_length=max_seq_len)
        else:  # question answering: only the context is cut, into windows overlapping by doc_stride tokens
            tokenizer.enable_truncation(max_length=max_seq_len, stride=int(doc_stride), strategy="only_second")
        tokenizer.no_padding()  # padding is done per batch in encode(), to the batch's longest text
        return tokenizer

    @staticmethod
    def _session(model_path: Path, threads: int | None):
        import onnxruntime as ort

        if not model_path.is_file():
            raise BundleError(f"{model_path} is missing: serving.json names it as the model to serve.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cpus()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list, pad_to: int | None = None) -> Encoded:
        """Tokenize as ``input_spec.json`` says: special tokens, truncation to max_seq_len, right padding
        to the longest text (or to ``pad_to`` tokens, for servers that need one shape per batch). For a
        pair task each item is a (first, second) pair, tokenized as the teacher's pairs. For question
        answering each item is ``{"question", "context"}``: one row per window of the context."""
        owners = None
        if self.qa is not None:
            encodings, owners = self._windows(texts)
        else:
            encodings = self.tokenizer.encode_batch([tuple(t) if self.text_pairs else t for t in texts])
        longest = pad_to or max(len(e.ids) for e in encodings)
        input_ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), longest), dtype=np.int64)
        token_type_ids = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
            token_type_ids[row, : len(encoding.ids)] = encoding.type_ids
        truncated = [False] * len(encodings) if owners is not None else [bool(e.overflowing) for e in encodings]
        return Encoded(input_ids, attention_mask, truncated, encodings, token_type_ids, owners)

    def check_questions(self, items: list) -> None:
        """Question answering: raise :class:`RequestError` for a question too long for the window (no-op
        for other tasks), so a server refuses that request alone instead of failing a batch."""
        if self.qa is not None:
            self._windows(items, encode=False)

    def _windows(self, items: list[dict], encode: bool = True) -> tuple[list, list[int]]:
        """Every window of every question (question first, context second, only the context cut, windows
        overlapping by doc_stride tokens), as the training features were made; and each window's question."""
        special = self.tokenizer.num_special_tokens_to_add(True)  # [CLS] question [SEP] context [SEP]
        stride = int(self.qa["doc_stride"])
        encodings, owners = [], []
        for index, item in enumerate(items):
            question = item["question"].lstrip()
            room = self.max_seq_len - special - len(self.counter.encode(question, add_special_tokens=False).ids)
            if room <= stride and len(self.counter.encode(item["context"], add_special_tokens=False).ids) > room:
                raise RequestError(400, f"question {index} is too long: a window of {self.max_seq_len} tokens leaves "
                                        f"{max(room, 0)} tokens for its context, not more than the {stride} tokens "
                                        f"consecutive windows share. Shorten the question.")
            if not encode:
                continue
            first = self.tokenizer.encode(question, item["context"])
            for window in [first, *first.overflowing]:
                encodings.append(window)
                owners.append(index)
        return encodings, owners

    def infer(self, encoded: Encoded) -> np.ndarray:
        """(texts, labels) or (texts, tokens, labels) float32 logits of the serving model."""
        feed = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
        if self.takes_segments:
            feed["token_type_ids"] = encoded.token_type_ids
        names = [output.name for output in self.session.get_outputs()]
        if tuple(names[:2]) == SPAN_OUTPUTS:  # (windows, tokens, 2): start and end logits stacked
            return np.stack(self.session.run(list(SPAN_OUTPUTS), feed), axis=-1)
        return self.session.run(names[:1], feed)[0]

    def postprocess(self, logits: np.ndarray, encoded: Encoded, texts: list[str]) -> list[dict]:
        return POSTPROCESS[self.task](logits, self.labels, encoded, texts, **self.postprocess_options)

    def predict(self, texts: list[str]) -> list[dict]:
        """Predictions for ``texts`` (one dict per text, in order); every text must be a string."""
        encoded = self.encode(texts)
        return self.postprocess(self.infer(encoded), encoded, texts)

    def metadata(self) -> dict:
        """What a client needs to know: task, labels, window, the model file and why it serves."""
        if self.qa is not None:
            return {"task": self.task, "max_seq_len": self.max_seq_len, "model_file": self.model_file,
                    "model_note": self.serving.get("why"), "doc_stride": int(self.qa["doc_stride"]),
                    **self.postprocess_options,
                    "windows": f"a context longer than one window of {self.max_seq_len} tokens is read in windows "
                               f"overlapping by {self.qa['doc_stride']} tokens; the answer is the best over them"}
        return {"task": self.task, "labels": self.labels, "max_seq_len": self.max_seq_len,
                "model_file": self.model_file, "model_note": self.serving.get("why"),
                "truncation": f"texts longer than {self.max_seq_len} tokens are cut on the "
                              f"{self.spec['tokenizer'].get('truncation_side', 'right')}; the response says so"}


def parse_texts(payload, max_texts: int, pairs: bool = False, questions: bool = False) -> list:
    """The texts of a predict request ``{"texts": [str, ...]}`` (a pair task: ``[[first, second], ...]``;
    question answering: ``[{"question": str, "context": str}, ...]``), or a :class:`RequestError` saying why not."""
    if not isinstance(payload, dict) or "texts" not in payload:
        raise RequestError(400, 'The request body must be a JSON object with a "texts" field: {"texts": ["a sentence", ...]}.')
    texts = payload["texts"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list):
        raise RequestError(400, f'"texts" must be a list of strings, got {type(texts).__name__}.')
    if not texts:
        raise RequestError(400, '"texts" is empty: send at least one text.')
    if len(texts) > max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; this server takes at most {max_texts} "
                                f"(--max-batch). Split the request.")
    for index, text in enumerate(texts):
        if questions:
            if not (isinstance(text, dict) and isinstance(text.get("question"), str) and isinstance(text.get("context"), str)):
                raise RequestError(400, f'"texts"[{index}] must be {{"question": "...", "context": "..."}} with two strings: '
                                        f'this model answers questions about a context.')
            if not text["question"].strip() or not text["context"].strip():
                raise RequestError(400, f'"texts"[{index}] has an empty question or context.')
            continue
        if pairs and not (isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)):
            raise RequestError(400, f'"texts"[{index}] must be a [first, second] pair of strings: this model '
                                    f'reads text pairs, e.g. {{"texts": [["A man sleeps.", "A person rests."]]}}.')
        if not pairs and not isinstance(text, str):
            raise RequestError(400, f'"texts"[{index}] is {type(text).__name__}, not a string.')
    return texts
