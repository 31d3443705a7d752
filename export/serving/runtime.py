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
    from distilprune.export.serving.entities import entities_of_text
else:  # serving_runtime.py inside a bundle or a Triton model directory: serving_entities.py beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serving_entities import entities_of_text  # noqa: E402

SERVING_SPEC = "serving.json"
INPUT_SPEC = "input_spec.json"
TOKENIZER_JSON = "tokenizer.json"
MANIFEST = "manifest.json"
TASK_SEQUENCE_CLASSIFICATION = "sequence_classification"
TASK_TOKEN_CLASSIFICATION = "token_classification"
ENTITIES_FILE = "serving_entities.py"  # export/serving/entities.py as copied beside serving_runtime.py


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


# task name -> post-processing of (logits, labels, encoded batch, texts) into one dict per text
POSTPROCESS = {TASK_SEQUENCE_CLASSIFICATION: classify, TASK_TOKEN_CLASSIFICATION: tag_entities}


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
        self.tokenizer = self._tokenizer(self.bundle / TOKENIZER_JSON, self.max_seq_len) if load_tokenizer else None
        self.session = self._session(self.bundle / self.model_file, threads) if load_model else None

    @staticmethod
    def _tokenizer(path: Path, max_seq_len: int):
        from tokenizers import Tokenizer

        if not path.is_file():
            raise BundleError(f"{path} is missing: the bundle's tokenizer is needed to serve text.")
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.enable_truncation(max_length=max_seq_len)
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
        pair task each item is a (first, second) pair, tokenized as the teacher's pairs."""
        encodings = self.tokenizer.encode_batch([tuple(t) if self.text_pairs else t for t in texts])
        longest = pad_to or max(len(e.ids) for e in encodings)
        input_ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), longest), dtype=np.int64)
        token_type_ids = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
            token_type_ids[row, : len(encoding.ids)] = encoding.type_ids
        return Encoded(input_ids, attention_mask, [bool(e.overflowing) for e in encodings], encodings, token_type_ids)

    def infer(self, encoded: Encoded) -> np.ndarray:
        """(texts, labels) or (texts, tokens, labels) float32 logits of the serving model."""
        feed = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
        if self.takes_segments:
            feed["token_type_ids"] = encoded.token_type_ids
        return self.session.run(None, feed)[0]

    def postprocess(self, logits: np.ndarray, encoded: Encoded, texts: list[str]) -> list[dict]:
        return POSTPROCESS[self.task](logits, self.labels, encoded, texts)

    def predict(self, texts: list[str]) -> list[dict]:
        """Predictions for ``texts`` (one dict per text, in order); every text must be a string."""
        encoded = self.encode(texts)
        return self.postprocess(self.infer(encoded), encoded, texts)

    def metadata(self) -> dict:
        """What a client needs to know: task, labels, window, the model file and why it serves."""
        return {"task": self.task, "labels": self.labels, "max_seq_len": self.max_seq_len,
                "model_file": self.model_file, "model_note": self.serving.get("why"),
                "truncation": f"texts longer than {self.max_seq_len} tokens are cut on the "
                              f"{self.spec['tokenizer'].get('truncation_side', 'right')}; the response says so"}


def parse_texts(payload, max_texts: int, pairs: bool = False) -> list:
    """The texts of a predict request ``{"texts": [str, ...]}`` (a pair task: ``[[first, second], ...]``),
    or a :class:`RequestError` saying why not."""
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
        if pairs and not (isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)):
            raise RequestError(400, f'"texts"[{index}] must be a [first, second] pair of strings: this model '
                                    f'reads text pairs, e.g. {{"texts": [["A man sleeps.", "A person rests."]]}}.')
        if not pairs and not isinstance(text, str):
            raise RequestError(400, f'"texts"[{index}] is {type(text).__name__}, not a string.')
    return texts
