"""Extractive question answering (SQuAD v1.1 / v2.0) building blocks: readers, answer span checks,
windowed features with start/end labels, and the official exact-match / F1 scores.

Nothing here imports torch.

- **Readers** return :class:`QAExample` lists from SQuAD JSON files (``data -> paragraphs -> qas``,
  v2.0's ``is_impossible``), JSONL files (``{"id", "question", "context", "answers": {"text": [...],
  "answer_start": [...]}}``, one object per line) and hub-style rows with the same fields (the
  ``squad`` / ``squad_v2`` datasets). A question without answers is unanswerable (v2.0).
- **Answer spans** are checked against the context: ``context[start:start + len(text)]`` must equal
  the answer text. A span that does not match, or lies outside the context, is an error naming the
  question id (``AnswerSpanCheck("error")``, the default) or is counted and dropped
  (``AnswerSpanCheck("drop")``); it is never shifted to a nearby match. A question whose every answer
  is dropped is dropped with them (it would otherwise turn unanswerable).
- **Features** are built as Hugging Face's ``run_qa.py`` builds them: question first, context second,
  only the context truncated, windows of at most ``max_seq_len`` tokens whose contexts overlap by
  ``doc_stride`` tokens (a fast tokenizer's ``return_overflowing_tokens``). Each :class:`QAWindow` keeps
  its tokens, the character offsets of its context tokens (None at question, special and padding
  tokens) and the example it came from. Training labels: the answer's first and last token in a window
  that holds the whole answer, else the ``[CLS]`` position 0 (also for unanswerable questions).
- **Scores** follow the official SQuAD v2.0 evaluation script: answers normalized (lower case, no
  punctuation, no articles a/an/the, single spaces), exact match and token F1, the maximum over the
  gold answers; an unanswerable question's gold is ``[""]`` and only an empty prediction ("no answer")
  scores 1 on it. Scores are fractions in [0, 1] (the official script prints percentages).
  :func:`score_predictions` gives the HasAns / NoAns breakdown and per-question ``(questions, 2)``
  ``[em, f1]`` units whose mean over any resample of questions is the metric (for a bootstrap).
- **Post-processing** of start/end logits into answer text lives once, in
  ``distilprune.export.serving.answers`` (standalone, copied into serving bundles);
  :func:`predict_answers` applies it to every question of a split.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distilprune.errors import ConfigError, DataError
from distilprune.export.serving import answers as serving_answers

DEFAULT_MAX_SEQ_LEN = 384  # tokens per window, question and special tokens included
DEFAULT_DOC_STRIDE = 128  # context tokens shared by two consecutive windows of one question
CLS_INDEX = 0  # label of "no answer in this window": the [CLS] position
SPAN_MODES = ("error", "drop")
SQUAD_SHAPE = ('{"data": [{"title": ..., "paragraphs": [{"context": "...", "qas": [{"id": "...", "question": "...", '
               '"answers": [{"text": "...", "answer_start": 0}], "is_impossible": false}]}]}]}')
JSONL_SHAPE = ('{"id": "...", "question": "...", "context": "...", "answers": {"text": ["..."], '
               '"answer_start": [0]}}')


@dataclass(frozen=True)
class QAExample:
    """One question about one context.

    answers: ``(text, start_char)`` pairs; ``context[start_char:start_char + len(text)] == text`` for
        each (checked by the readers). Empty for an unanswerable question.
    source: where the question comes from (``file:line``, ``file: data[i].paragraphs[j].qas[k]``,
        ``dataset row N``), named in errors; also the ``id`` of a question that has none.
    """

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    is_impossible: bool
    source: str = field(default="", compare=False)

    @property
    def answer_texts(self) -> list[str]:
        return [text for text, _ in self.answers]


@dataclass
class AnswerSpanCheck:
    """What to do with an answer whose text is not at its ``answer_start`` in the context.

    mode: ``"error"`` raises a DataError naming the question id; ``"drop"`` drops the answer (and the
        question when none of its answers is left) and records it in ``dropped``.
    dropped: one line per dropped answer: ``"<id>: <why>"``.
    dropped_questions: ids of questions dropped because all their answers were.
    """

    mode: str = "error"
    dropped: list[str] = field(default_factory=list)
    dropped_questions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in SPAN_MODES:
            raise ConfigError(f"The answer span check mode {self.mode!r} is unknown. Use one of {list(SPAN_MODES)}: "
                              f"'error' stops at the first answer that does not match its context, 'drop' counts "
                              f"and drops such answers.")


# ---------------------------------------------------------------------------------------------- readers


def _span_problem(context: str, text: str, start: int) -> str | None:
    """Why the answer ``text`` at ``start`` (characters) is not a span of ``context``, or None."""
    end = start + len(text)
    if start < 0 or end > len(context):
        return (f"its span [{start}, {end}) lies outside the context ({len(context)} characters); answer_start "
                f"counts characters (code points) from the start of the context")
    if context[start:end] != text:
        return (f"the context holds {context[start:end]!r} at answer_start {start}, not the answer text {text!r}; "
                f"answer_start counts characters (code points) from the start of the context")
    return None


def make_example(raw_id, question, context, texts: Sequence, starts: Sequence, is_impossible: bool | None,
                 where: str, check: AnswerSpanCheck) -> QAExample | None:
    """A checked :class:`QAExample` from raw fields (None when ``check`` dropped all its answers).

    ``texts`` / ``starts``: the answers' texts and start characters, in the same order.
    ``is_impossible``: the file's flag (None when absent: a question without answers is unanswerable).
    """
    name = f"{where} (question id {raw_id!r})" if raw_id is not None else where
    if not isinstance(context, str) or not context:
        raise DataError(f"{name}: missing or empty 'context'. Every question needs the paragraph its answer is "
                        f"taken from: add its 'context' text, or remove the question.")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{name}: missing or empty 'question'. Add the question text, or remove the entry.")
    if len(texts) != len(starts):
        raise DataError(f"{name}: {len(texts)} answer texts but {len(starts)} answer_start values. Each answer "
                        f"needs its text and its start character; fix the answers of this question.")
    question_id = str(raw_id) if raw_id is not None else where
    answers = []
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise DataError(f"{name}: answer {text!r} at {start!r}: the text must be a string and answer_start an "
                            f"integer (its first character's index in the context). Fix this answer.")
        problem = _span_problem(context, text, start)
        if problem is None:
            answers.append((text, start))
        elif check.mode == "drop":
            check.dropped.append(f"{question_id}: {problem}")
        else:
            raise DataError(f"{name}: answer {text!r}: {problem}. Fix answer_start (or the text) of this answer, "
                            f"or set data.answer_span_check=drop to count and drop such answers.")
    if texts and not answers:  # every answer dropped: the question is not unanswerable, it is unusable
        check.dropped_questions.append(question_id)
        return None
    if is_impossible and answers:
        raise DataError(f"{name}: marked is_impossible but has {len(answers)} answer(s). An unanswerable question "
                        f"has an empty answer list (its plausible_answers are not answers); fix one or the other.")
    return QAExample(question_id, question, context, answers, not answers, where)


def _not_squad(path: Path, found: str) -> DataError:
    return DataError(f"{path} is not a SQuAD-format file ({found}). Give a SQuAD v1.1/v2.0 JSON file shaped "
                     f"{SQUAD_SHAPE}, or a JSONL file with one question per line: {JSONL_SHAPE}.")


def read_squad_file(path: Path | str, check: AnswerSpanCheck | None = None) -> list[QAExample]:
    """Questions of a local file: a SQuAD JSON file (``{"data": [...]}``) or JSONL (one question per line).

    The format is read from the contents, not the suffix. Errors name the file and the question.
    """
    path = Path(path)
    check = check or AnswerSpanCheck()
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None  # several JSON values: JSONL, read line by line below
    if isinstance(document, dict) and "data" in document:
        return _unique_ids(squad_json_examples(document, str(path), check), path)
    if (isinstance(document, dict) and "question" in document) or (document is None and text.lstrip().startswith("{")):
        return _unique_ids(read_qa_jsonl(path, check), path)
    found = f"top-level keys {sorted(document)[:6]}" if isinstance(document, dict) else (
        f"a JSON {type(document).__name__}" if document is not None else "not JSON")
    raise _not_squad(path, found)


def squad_json_examples(document: Mapping, source: str, check: AnswerSpanCheck) -> list[QAExample]:
    """Questions of a parsed SQuAD v1.1 / v2.0 document, in file order."""
    if not isinstance(document.get("data"), list):
        raise _not_squad(Path(source), "'data' is not a list of articles")
    examples = []
    for a, article in enumerate(document["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise _not_squad(Path(source), f"data[{a}] has no 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise _not_squad(Path(source), f"data[{a}].paragraphs[{p}] has no 'qas' list")
            for q, qa in enumerate(qas):
                where = f"{source}: data[{a}].paragraphs[{p}].qas[{q}]"
                answers = qa.get("answers") or []
                if not isinstance(answers, list) or any(not isinstance(x, dict) for x in answers):
                    raise DataError(f"{where}: 'answers' must be a list of {{\"text\", \"answer_start\"}} objects. "
                                    f"Fix the answers of this question.")
                example = make_example(qa.get("id"), qa.get("question"), paragraph.get("context"),
                                       [x.get("text") for x in answers], [x.get("answer_start") for x in answers],
                                       qa.get("is_impossible"), where, check)
                if example is not None:
                    examples.append(example)
    return examples


def _row_example(row, where: str, check: AnswerSpanCheck) -> QAExample | None:
    """A question of a JSONL line or hub row (``answers`` as ``{"text": [...], "answer_start": [...]}``)."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected an object like {JSONL_SHAPE}, found a {type(row).__name__}.")
    answers = row.get("answers") or {"text": [], "answer_start": []}
    if isinstance(answers, list) and all(isinstance(answer, Mapping) for answer in answers):  # SQuAD-JSON style
        answers = {"text": [x.get("text") for x in answers], "answer_start": [x.get("answer_start") for x in answers]}
    if not isinstance(answers, Mapping) or not isinstance(answers.get("text", []), list):
        raise DataError(f"{where}: 'answers' must be {{\"text\": [...], \"answer_start\": [...]}}. Fix this row.")
    return make_example(row.get("id"), row.get("question"), row.get("context"), list(answers.get("text", [])),
                        list(answers.get("answer_start", [])), row.get("is_impossible"), where, check)


def read_qa_jsonl(path: Path | str, check: AnswerSpanCheck | None = None) -> list[QAExample]:
    """Questions of a JSONL file: one ``{id, question, context, answers}`` object per line (blank lines skipped)."""
    path = Path(path)
    check = check or AnswerSpanCheck()
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not a JSON object ({error.msg}). Each line of a JSONL file is "
                                f"one question: {JSONL_SHAPE}.") from None
            example = _row_example(row, f"{path}:{number}", check)
            if example is not None:
                examples.append(example)
    if not examples and not check.dropped_questions:
        raise _not_squad(path, "no question in it")
    return _unique_ids(examples, path)


def examples_from_hub_rows(rows: Iterable[Mapping], source: str = "dataset",
                           check: AnswerSpanCheck | None = None) -> list[QAExample]:
    """Questions of hub-style rows (``squad``, ``squad_v2``): ``id``, ``question``, ``context`` and
    ``answers = {"text": [...], "answer_start": [...]}`` (empty lists: unanswerable)."""
    check = check or AnswerSpanCheck()
    examples = [_row_example(row, f"{source} row {index}", check) for index, row in enumerate(rows)]
    return _unique_ids([example for example in examples if example is not None], source)


def _unique_ids(examples: list[QAExample], source) -> list[QAExample]:
    seen: dict[str, str] = {}
    for example in examples:
        if example.id in seen:
            raise DataError(f"{source}: question id {example.id!r} occurs twice ({seen[example.id]} and "
                            f"{example.source}). Predictions are matched to questions by id: give each its own.")
        seen[example.id] = example.source
    return examples


# --------------------------------------------------------------------------------------------- features


@dataclass
class QAWindow:
    """One model input: a question with one window of its context.

    input_ids, token_type_ids, attention_mask: (tokens,) ``[CLS] question [SEP] context part [SEP]``,
        not padded (``tokens <= max_seq_len``); token types 0 for the question, 1 for the context.
    offsets: (tokens,) ``(start, end)`` character span of each context token in the example's context
        (end exclusive), None at question, special and padding tokens.
    example_index: index of the question in the example list the windows were made from.
    start_position, end_position: the answer's first and last token when this window holds the whole
        answer, else both ``CLS_INDEX`` (0), as for an unanswerable question.
    """

    example_index: int
    input_ids: list[int]
    token_type_ids: list[int]
    attention_mask: list[int]
    offsets: list[tuple[int, int] | None]
    start_position: int
    end_position: int


def check_window_settings(examples: Sequence[QAExample], tokenizer, max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
                          doc_stride: int = DEFAULT_DOC_STRIDE) -> None:
    """Raise before tokenizing when the windows cannot be built.

    Needs ``doc_stride < max_seq_len``, and, for every question whose context does not fit in one
    window, more context tokens per window (``max_seq_len`` - question tokens - special tokens) than
    ``doc_stride`` (the tokenizer cannot advance otherwise: it stops the process instead of raising).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"Question answering needs a fast tokenizer (character offsets of every token); "
                          f"{type(tokenizer).__name__} is not one. Load it with AutoTokenizer.from_pretrained(..., "
                          f"use_fast=True) from a model directory that has a tokenizer.json.")
    if not 0 <= doc_stride < max_seq_len:
        raise ConfigError(f"data.doc_stride={doc_stride} must be at least 0 and below data.max_seq_len="
                          f"{max_seq_len}: it is the number of context tokens two consecutive windows share. "
                          f"Use e.g. max_seq_len=384 with doc_stride=128.")
    special = tokenizer.num_special_tokens_to_add(pair=True)
    question_lengths = [len(ids) for ids in tokenizer([e.question.lstrip() for e in examples],
                                                      add_special_tokens=False)["input_ids"]]
    for example, question_tokens in zip(examples, question_lengths):
        room = max_seq_len - special - question_tokens  # context tokens per window
        if room > doc_stride:
            continue
        context_tokens = len(tokenizer(example.context, add_special_tokens=False)["input_ids"])
        if room >= context_tokens:
            continue  # one window holds the whole context: nothing to stride over
        raise DataError(
            f"{example.source} (question id {example.id!r}): the question is {question_tokens} tokens long, so a "
            f"window of data.max_seq_len={max_seq_len} tokens leaves {max(room, 0)} tokens for its "
            f"{context_tokens}-token context, not more than data.doc_stride={doc_stride} (the tokens consecutive "
            f"windows share). Raise data.max_seq_len, lower data.doc_stride below {max(room, 1)}, or shorten "
            f"or drop this question."
        )


def answer_token_span(offsets: Sequence[tuple[int, int] | None], start_char: int, end_char: int) -> tuple[int, int]:
    """The first and last token of the answer ``[start_char, end_char)`` in a window, or ``(0, 0)``.

    Args:
        offsets: (tokens,) as :attr:`QAWindow.offsets`.
        start_char, end_char: the answer's characters in the context, end exclusive.
    Returns:
        ``(start_token, end_token)``: the last context token starting at or before ``start_char`` and
        the first context token ending at or after ``end_char``, when the window's context covers the
        whole answer; else ``(CLS_INDEX, CLS_INDEX)``.
    """
    context_tokens = [position for position, span in enumerate(offsets) if span is not None]
    if not context_tokens:
        return CLS_INDEX, CLS_INDEX
    first, last = context_tokens[0], context_tokens[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return CLS_INDEX, CLS_INDEX  # the window cuts the answer (or misses it)
    start_token = max(p for p in context_tokens if offsets[p][0] <= start_char)
    end_token = min(p for p in context_tokens if offsets[p][1] >= end_char)
    return start_token, end_token


def windows_of_examples(examples: Sequence[QAExample], tokenizer, max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
                        doc_stride: int = DEFAULT_DOC_STRIDE, chunk: int = 512) -> list[QAWindow]:
    """Every question's windows, in example order, with start/end labels.

    Args:
        examples: questions (their first answer is the training label, as in ``run_qa.py``).
        tokenizer: a Hugging Face fast tokenizer (``is_fast``), e.g. ``AutoTokenizer.from_pretrained``.
        max_seq_len: tokens per window, question and special tokens included.
        doc_stride: context tokens shared by consecutive windows of one question.
        chunk: questions tokenized per call (memory bound only; the result does not depend on it).
    Returns:
        One :class:`QAWindow` per window; a question has at least one.
    """
    check_window_settings(examples, tokenizer, max_seq_len, doc_stride)
    windows = []
    for first in range(0, len(examples), chunk):
        part = examples[first:first + chunk]
        # questions lose leading spaces (some SQuAD questions have many), as run_qa.py does
        encoded = tokenizer([e.question.lstrip() for e in part], [e.context for e in part],
                            truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True,
                            return_attention_mask=True, padding=False)
        for row, local_index in enumerate(encoded["overflow_to_sample_mapping"]):
            sequence_ids = encoded.sequence_ids(row)
            offsets = [tuple(span) if sequence == 1 else None
                       for span, sequence in zip(encoded["offset_mapping"][row], sequence_ids)]
            example = part[local_index]
            if example.answers:
                text, start_char = example.answers[0]
                start_position, end_position = answer_token_span(offsets, start_char, start_char + len(text))
            else:
                start_position, end_position = CLS_INDEX, CLS_INDEX
            windows.append(QAWindow(first + local_index, list(encoded["input_ids"][row]),
                                    list(encoded["token_type_ids"][row]), list(encoded["attention_mask"][row]),
                                    offsets, start_position, end_position))
    return windows


def windows_by_example(windows: Sequence[QAWindow], num_examples: int) -> list[list[int]]:
    """Indices of each question's windows: ``result[i]`` lists the positions in ``windows`` of question i."""
    grouped: list[list[int]] = [[] for _ in range(num_examples)]
    for position, window in enumerate(windows):
        grouped[window.example_index].append(position)
    return grouped


def predict_answers(examples: Sequence[QAExample], windows: Sequence[QAWindow], start_logits: Sequence,
                    end_logits: Sequence, n_best: int = serving_answers.DEFAULT_N_BEST,
                    max_answer_tokens: int = serving_answers.DEFAULT_MAX_ANSWER_TOKENS,
                    null_threshold: float | None = None) -> list[dict]:
    """Each question's answer (``serving_answers.best_answer``) from the logits of its windows.

    Args:
        start_logits, end_logits: per window, in ``windows`` order, (seq,) logits (``seq`` may exceed the
            window's tokens: padding is never chosen); a (windows, seq) array works too.
        null_threshold: SQuAD v2.0's "no answer" threshold; None for v1.1 (always answer).
    Returns:
        One answer dict per example, in example order.
    """
    if not len(start_logits) == len(end_logits) == len(windows):
        raise ValueError(f"{len(start_logits)} start and {len(end_logits)} end logit rows for {len(windows)} windows")
    predictions = []
    for example, positions in zip(examples, windows_by_example(windows, len(examples)), strict=True):
        if not positions:
            raise ValueError(f"question {example.id!r} has no window: windows and examples do not belong together")
        predictions.append(serving_answers.best_answer(
            [start_logits[p] for p in positions], [end_logits[p] for p in positions],
            [windows[p].offsets for p in positions], example.context, n_best, max_answer_tokens, null_threshold))
    return predictions


# ------------------------------------------------------------------------------------------- evaluation

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalization: lower case, ASCII punctuation removed, articles (a, an, the)
    removed, runs of whitespace made one space, ends stripped."""
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when both normalize to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalized answers' word bags (official v2.0 rule: when either is empty, 1.0 if both are)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: QAExample) -> list[str]:
    """The texts a prediction is scored against: the answers that do not normalize to nothing, or
    ``[""]`` when none is left (unanswerable), as the official v2.0 script."""
    texts = [text for text in example.answer_texts if normalize_answer(text)]
    return texts or [""]


@dataclass
class QAScores:
    """SQuAD metrics of one split, as fractions in [0, 1].

    exact_match, f1: means over questions.
    units: (questions, 2) float64 ``[em, f1]`` per question; the mean of any resample of rows gives
        the metrics of that resample (the bootstrap resamples questions).
    breakdown: ``{"HasAns": {...}, "NoAns": {...}}`` with ``exact_match``, ``f1`` and ``total`` (question
        count) over answerable and unanswerable questions; a group without questions is left out.
    """

    exact_match: float
    f1: float
    units: np.ndarray
    breakdown: dict[str, dict[str, float]]


def question_scores(prediction: str, example: QAExample) -> tuple[float, float]:
    """``(em, f1)`` of one predicted text (``""`` for "no answer"): maxima over the gold answers."""
    golds = gold_answers(example)
    return max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds)


def score_predictions(examples: Sequence[QAExample], predictions: Sequence[str] | Mapping[str, str]) -> QAScores:
    """Exact match and F1 of predicted answer texts (``""`` = no answer) against the examples' gold answers.

    Args:
        predictions: one text per example (same order), or a mapping from question id to text; a
            question missing from the mapping is an error.
    """
    if isinstance(predictions, Mapping):
        missing = [e.id for e in examples if e.id not in predictions]
        if missing:
            raise ValueError(f"no prediction for {len(missing)} questions, e.g. {missing[:3]}")
        predictions = [predictions[e.id] for e in examples]
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} questions")
    if not examples:
        raise ValueError("no question to score")
    units = np.array([question_scores(p, e) for p, e in zip(predictions, examples)], dtype=np.float64)
    answerable = np.array([bool(e.answers) for e in examples])
    breakdown = {}
    for name, rows in (("HasAns", answerable), ("NoAns", ~answerable)):
        if rows.any():
            breakdown[name] = {"exact_match": float(units[rows, 0].mean()), "f1": float(units[rows, 1].mean()),
                               "total": int(rows.sum())}
    return QAScores(float(units[:, 0].mean()), float(units[:, 1].mean()), units, breakdown)


def choose_null_threshold(examples: Sequence[QAExample], best_spans: Sequence[Mapping]) -> tuple[float, float]:
    """SQuAD v2.0's "no answer" threshold chosen on validation questions, maximizing F1.

    Args:
        examples: the validation questions.
        best_spans: per question, ``serving_answers.best_answer`` run WITHOUT a threshold (its best
            span and ``null_score_diff``), e.g. :func:`predict_answers` with ``null_threshold=None``.
    Returns:
        ``(threshold, validation F1 with it)``: pass the threshold to :func:`predict_answers` on test.
    """
    if len(examples) != len(best_spans):
        raise ValueError(f"{len(best_spans)} answers for {len(examples)} questions")
    diffs = [np.nan if answer["null_score_diff"] is None else answer["null_score_diff"] for answer in best_spans]
    answered_f1 = [question_scores(answer["text"], example)[1] for answer, example in zip(best_spans, examples)]
    return serving_answers.best_null_threshold(diffs, [bool(e.answers) for e in examples], answered_f1)
