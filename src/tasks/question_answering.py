"""Extractive question answering (SQuAD v1.1 / v2.0): the answer is a span of the context.

Rows are questions about contexts (:class:`distilprune.squad.QAExample`) from a SQuAD JSON or JSONL
file in ``data.dataset`` (carved into train / validation / test by context with ``data.split_seed``,
so no context is in two splits), one file per split (``data.train_file`` ...), the built-in
``nyt-cloze`` questions (:mod:`distilprune.cloze_qa`), or a hub dataset with SQuAD's columns
(``squad``, ``squad_v2``).

**Windows.** Each question is tokenized with its context into windows of ``data.max_seq_len`` tokens
that overlap by ``data.doc_stride`` context tokens (:func:`distilprune.squad.windows_of_examples`);
a window is one model input. The student's span head gives every token a start and an end logit:
logits (batch, seq, 2).

**Scored rows.** A window scores two rows over its positions: the start distribution and the end
distribution, (2 x windows, seq) with padding set to :data:`MASKED` (probability 0 under softmax).
Their labels are the answer's first and last token in a window that holds it, else the [CLS]
position 0. So KL (temperature as for every task) runs on the start and on the end distribution and
cross-entropy on the gold positions, as Hugging Face's QA loss (mean of start and end CE). The
teacher output cache stores each window's (tokens, 2) start/end logits in half precision and pads
them back per batch (:meth:`QuestionAnswering.rows_from_cache`).

**Metric.** Answers are read from the logits of all windows of a question by
:mod:`distilprune.export.serving.answers` (n-best start/end pairs, the longest answer
``export.qa_max_answer_tokens``, character offsets into the context) and scored with the official
SQuAD exact match and F1 (:func:`distilprune.squad.score_predictions`). With unanswerable questions
in the data (SQuAD v2.0), the "no answer" threshold on the null-score difference is chosen on the
validation split for each model (:meth:`QuestionAnswering.calibrate`) and then applied to test; the
report gives HasAns / NoAns breakdowns.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from distilprune import squad
from distilprune.errors import DataError
from distilprune.export.serving import answers as serving_answers
from distilprune.paths import user_path
from distilprune.tasks.base import Scored, Task, TaskData
from distilprune.tasks.sequence_classification import pad_inputs

MASKED = -1.0e4  # logit of a padding position in a scored row: softmax gives it 0 in fp16, bf16 and fp32
BUILTIN_DATASETS = ("nyt-cloze",)  # built from the nyt-editorials asset (distilprune.cloze_qa)
LABEL_NAMES = ["start", "end"]  # the span head's two outputs per token


@dataclass
class QASplit:
    """Questions of one split (:class:`distilprune.squad.QAExample`)."""

    examples: list

    def __len__(self) -> int:
        return len(self.examples)

    def head(self, n: int | None) -> QASplit:
        return self if n is None else QASplit(self.examples[:n])

    def keys(self) -> list[str]:
        """One normalized (question, context) text per question for the leakage check."""
        return [" ".join(f"{e.question} || {e.context}".lower().split()) for e in self.examples]

    @property
    def unanswerable(self) -> int:
        return sum(1 for e in self.examples if not e.answers)


class TokenizedWindows(Dataset):
    """The windows of a split's questions (:class:`distilprune.squad.QAWindow`), one item each."""

    def __init__(self, examples: list, tokenizer, max_seq_len: int, doc_stride: int) -> None:
        self.examples = examples
        self.windows = squad.windows_of_examples(examples, tokenizer, max_seq_len, doc_stride)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        window = self.windows[index]
        return {"input_ids": window.input_ids, "token_type_ids": window.token_type_ids,
                "positions": (window.start_position, window.end_position), "index": index}

    def lengths(self) -> list[int]:
        return [len(window.input_ids) for window in self.windows]


class QuestionAnswering(Task):
    name = "question_answering"
    head = "span"
    hf_auto_class = "AutoModelForQuestionAnswering"
    metric = "f1"
    metric_label = "F1"
    calibrates = True  # v2.0: the "no answer" threshold is chosen on validation (calibrate())

    def __init__(self, data_cfg, n_best: int = serving_answers.DEFAULT_N_BEST,
                 max_answer_tokens: int = serving_answers.DEFAULT_MAX_ANSWER_TOKENS) -> None:
        super().__init__(data_cfg)
        self.n_best, self.max_answer_tokens = n_best, max_answer_tokens
        self.with_unanswerable = False  # SQuAD v2.0 data: set by load()
        # id(split) -> (split, its windows): score() reads the offsets behind each window's rows
        self._tokenized: dict[int, tuple[QASplit, TokenizedWindows]] = {}

    @property
    def doc_stride(self) -> int:
        """``data.doc_stride`` (a recipe fills a null one with a third of the window when it is loaded)."""
        value = getattr(self.data_cfg, "doc_stride", None)
        return squad.DEFAULT_DOC_STRIDE if value is None else int(value)

    # -- data ---------------------------------------------------------------------------------------
    def load(self) -> TaskData:
        from distilprune.data import dedupe_splits

        cfg = self.data_cfg
        splits, source = self._read_splits()
        deduped, duplicates = dedupe_splits(
            {name: QASplit(splits[name]) for name in ("train", "validation", "test")}, QASplit.keys,
            lambda split, rows: QASplit([split.examples[i] for i in rows]), cfg.dedupe, source)
        train = list(deduped["train"].examples)
        if not any(e.answers for e in train):
            raise DataError(f"The training split of {source} has no answerable question, so there is no span to "
                            f"learn. Give SQuAD-format data with answers.")
        random.Random(cfg.split_seed).shuffle(train)  # a seeded shuffle: data.train_examples picks a fixed subset
        data = TaskData(train=QASplit(train).head(cfg.train_examples),
                        validation=deduped["validation"].head(cfg.eval_examples),
                        test=deduped["test"].head(cfg.eval_examples), label_names=list(LABEL_NAMES), source=source)
        self.label_names = list(LABEL_NAMES)
        self.with_unanswerable = any(getattr(data, name).unanswerable for name in ("train", "validation", "test"))
        data.info = {
            "source": source, "task": self.name, "squad_version": "v2.0" if self.with_unanswerable else "v1.1",
            "rows": {name: len(getattr(data, name)) for name in ("train", "validation", "test")},
            "unanswerable": {name: getattr(data, name).unanswerable for name in ("train", "validation", "test")},
            "num_labels": 2, "label_names": list(LABEL_NAMES), "split_seed": cfg.split_seed,
            "doc_stride": self.doc_stride, "answer_span_check": cfg.answer_span_check,
            "dropped_answers": self._dropped, "duplicates": duplicates,
        }
        return data

    def _read_splits(self) -> tuple[dict[str, list], str]:
        cfg = self.data_cfg
        check = squad.AnswerSpanCheck(cfg.answer_span_check)
        self._dropped = check.dropped  # filled while reading; recorded in data.info
        if cfg.train_file:
            files = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}
            for name, file in files.items():
                if file and not user_path(file).is_file():
                    raise DataError(f"data.{name}_file {file} does not exist. Give an existing SQuAD JSON or JSONL file.")
            read = {name: squad.read_squad_file(user_path(f), check) for name, f in files.items() if f}
            carved = self._carve(read["train"], cfg.train_file, keep=[n for n in read if n != "train"])
            return {**carved, **read, "train": carved["train"]}, cfg.train_file
        spec = cfg.dataset
        if spec in BUILTIN_DATASETS:
            from distilprune import assets, cloze_qa

            return cloze_qa.cloze_splits(assets.fetch("nyt-editorials"), split_seed=cfg.split_seed,
                                         validation_fraction=cfg.validation_fraction,
                                         test_fraction=cfg.test_fraction), spec
        path = user_path(spec)
        if path.is_file():
            return self._carve(squad.read_squad_file(path, check), spec), spec
        if path.suffix.lower() in (".json", ".jsonl") or spec.startswith(("/", "./", "~")):
            raise DataError(f"The data file {spec} does not exist. Check data.dataset (a SQuAD JSON or JSONL file, "
                            f"or the built-in nyt-cloze, for task=question_answering).")
        return self._hub_splits(spec, check), spec

    def _carve(self, examples: list, spec: str, keep: list[str] = ()) -> dict[str, list]:
        """train / validation / test carved from ``examples`` by context (all questions about one
        context go to the same split) with ``data.split_seed``; splits in ``keep`` come from their own file."""
        cfg = self.data_cfg
        by_context: dict[str, list] = defaultdict(list)
        for example in examples:
            by_context[example.context].append(example)
        contexts = list(by_context)
        random.Random(cfg.split_seed).shuffle(contexts)
        n_test = 0 if "test" in keep else round(len(contexts) * cfg.test_fraction)
        n_val = 0 if "validation" in keep else round(len(contexts) * cfg.validation_fraction)
        parts = {"test": contexts[:n_test], "validation": contexts[n_test:n_test + n_val],
                 "train": contexts[n_test + n_val:]}
        splits = {name: [e for context in part for e in by_context[context]] for name, part in parts.items()}
        for name, split in splits.items():
            if not split and name not in keep:
                raise DataError(f"The {name} split carved from {spec} ({len(contexts)} distinct contexts) is empty. "
                                f"Give more contexts, or adjust data.validation_fraction / data.test_fraction.")
        return splits

    def _hub_splits(self, spec: str, check) -> dict[str, list]:
        try:
            import datasets

            datasets.disable_progress_bars()
            subset = getattr(self.data_cfg, "subset", None)
            tables = dict(datasets.load_dataset(spec, subset) if subset else datasets.load_dataset(spec))
        except Exception as error:  # noqa: BLE001 - no hub, unknown id: one message with the fix
            raise DataError(
                f"Could not load the question-answering dataset {spec!r} ({type(error).__name__}: {str(error)[:200]}). "
                f"data.dataset must be a SQuAD JSON or JSONL file, the built-in nyt-cloze, or a hub dataset with "
                f"SQuAD's columns (squad, squad_v2; needs the hub)."
            ) from None
        from distilprune.data import pick_splits

        # the source's splits by name (dev for validation) or as data.splits maps them; the rest is carved
        source_name = {id(table): name for name, table in tables.items()}  # errors name the source's split
        read = {name: squad.examples_from_hub_rows(table, f"{spec} [{source_name[id(table)]}]", check)
                for name, table in pick_splits(tables, dict(self.data_cfg.splits or {}), spec).items()}
        carved = self._carve(read["train"], spec, keep=[n for n in read if n != "train"])
        return {**carved, **read, "train": carved["train"]}

    def check_inputs(self, data: TaskData, tokenizer, max_seq_len: int) -> None:
        """A fast tokenizer, and every question leaves more than doc_stride context tokens per window."""
        for name in ("train", "validation", "test"):
            squad.check_window_settings(getattr(data, name).examples, tokenizer, max_seq_len, self.doc_stride)

    def tokenize(self, split: QASplit, tokenizer, max_seq_len: int) -> TokenizedWindows:
        tokenized = TokenizedWindows(split.examples, tokenizer, max_seq_len, self.doc_stride)
        self._tokenized[id(split)] = (split, tokenized)  # the split is held, so its id is not reused
        return tokenized

    def collate(self, examples: list[dict], pad_token_id: int = 0, pad_to: int | None = None) -> dict:
        batch = pad_inputs(examples, pad_token_id, pad_to)
        # (batch, 2): the answer's first and last token (both 0, [CLS], when the window has no answer)
        batch["labels"] = torch.tensor([e["positions"] for e in examples], dtype=torch.long)
        return batch

    # -- scored rows: the start and the end distribution of every window -----------------------------
    def model_logits(self, output) -> torch.Tensor:
        if hasattr(output, "start_logits"):  # a Hugging Face question-answering model
            return torch.stack([output.start_logits, output.end_logits], dim=-1)
        return output.logits

    def scored_logits(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """(batch, seq, 2) -> (2 x batch, seq): window i's start row at 2i, its end row at 2i + 1."""
        padded = batch["attention_mask"][..., None] == 0
        masked = logits.masked_fill(padded, MASKED)
        return masked.transpose(1, 2).reshape(-1, logits.shape[1])

    def scored_labels(self, batch: dict) -> torch.Tensor:
        return batch["labels"].reshape(-1)

    def rows_per_example(self, batch: dict) -> list[int]:
        return [2] * batch["input_ids"].shape[0]

    def example_rows(self, logits: torch.Tensor, batch: dict) -> list[torch.Tensor]:
        """Each window's (tokens, 2) start and end logits, without padding."""
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        return [logits[row, :length] for row, length in enumerate(lengths)]

    def rows_from_cache(self, rows: list[torch.Tensor], batch: dict) -> torch.Tensor:
        seq = batch["input_ids"].shape[1]
        out = torch.full((len(rows), 2, seq), MASKED, dtype=torch.float32)
        for window, window_rows in enumerate(rows):
            out[window, :, : window_rows.shape[0]] = window_rows[:seq].float().T
        return out.reshape(-1, seq)

    def cache_dtype(self) -> torch.dtype:
        return torch.float16  # (tokens, 2) per window: half precision keeps the cache small

    # -- metric -------------------------------------------------------------------------------------
    def _answers(self, rows: list[np.ndarray], split: QASplit, null_threshold: float | None) -> list[dict]:
        held = self._tokenized.get(id(split))
        if held is None or held[0] is not split:
            raise RuntimeError("QuestionAnswering.tokenize() must run on a split before it is scored")
        windows = held[1].windows
        starts = [np.asarray(r, dtype=np.float32)[:, 0] for r in rows]
        ends = [np.asarray(r, dtype=np.float32)[:, 1] for r in rows]
        return squad.predict_answers(split.examples, windows, starts, ends, self.n_best, self.max_answer_tokens,
                                     null_threshold)

    def calibrate(self, rows: list[np.ndarray], split: QASplit) -> dict:
        """The "no answer" threshold chosen on ``split`` (validation) for the model whose rows these are;
        without unanswerable questions (SQuAD v1.1) there is none: every question is answered."""
        if not self.with_unanswerable:
            return {"null_threshold": None}
        threshold, f1 = squad.choose_null_threshold(split.examples, self._answers(rows, split, None))
        return {"null_threshold": threshold, "validation_f1": f1}

    def score(self, rows: list[np.ndarray], split: QASplit, calibration: dict | None = None) -> Scored:
        threshold = (calibration or {}).get("null_threshold")
        if self.with_unanswerable and calibration is None:
            raise RuntimeError("SQuAD v2.0 data: score() needs the calibration (null threshold) from calibrate()")
        answers = self._answers(rows, split, threshold)
        scores = squad.score_predictions(split.examples, [a["text"] for a in answers])
        details = {"exact_match": scores.exact_match, "f1": scores.f1, "breakdown": scores.breakdown,
                   "null_threshold": threshold, "questions": len(split)}
        # units (questions, 2) [em, f1]: statistic() reads the F1 column
        return Scored(scores.f1, scores.units, details, calibration=dict(calibration or {"null_threshold": None}))

    @staticmethod
    def statistic(mean_units: np.ndarray) -> np.ndarray:
        return mean_units[..., 1]

    def time_postprocess(self, rows: list[np.ndarray], split: QASplit, calibration: dict | None = None,
                         repeats: int = 3) -> dict | None:
        """Milliseconds per question of reading the answer from its windows' logits (what a server does
        after the model): p50 / p95 over the split's questions (best of ``repeats`` passes per question),
        and the mean number of windows per question."""
        import time

        held = self._tokenized.get(id(split))
        if held is None or held[0] is not split:
            raise RuntimeError("QuestionAnswering.tokenize() must run on a split before it is timed")
        windows = held[1].windows
        threshold = (calibration or {}).get("null_threshold")
        samples = []
        for example, positions in zip(split.examples, squad.windows_by_example(windows, len(split.examples))):
            starts = [np.asarray(rows[p], dtype=np.float32)[:, 0] for p in positions]
            ends = [np.asarray(rows[p], dtype=np.float32)[:, 1] for p in positions]
            offsets = [windows[p].offsets for p in positions]
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                serving_answers.best_answer(starts, ends, offsets, example.context, self.n_best,
                                            self.max_answer_tokens, threshold)
                best = min(best, time.perf_counter() - start)
            samples.append(best * 1000.0)
        ordered = sorted(samples)
        return {"p50": ordered[len(ordered) // 2], "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
                "questions": len(ordered), "windows_per_question": len(windows) / max(1, len(split.examples)),
                "n_best": self.n_best, "model": "ONNX INT8 logits of the test questions"}

    # -- bundle ------------------------------------------------------------------------------------
    def bundle_spec(self, data: TaskData) -> dict:
        return {"task": self.name, "labels": list(LABEL_NAMES), "text_pairs": False,
                "question_answering": {
                    "doc_stride": self.doc_stride, "n_best": self.n_best, "max_answer_tokens": self.max_answer_tokens,
                    "null_threshold": None, "squad_version": data.info.get("squad_version"),
                    "truncation": "only the context; questions are not truncated"},
                "outputs": {"start_logits": "(batch, sequence) float32", "end_logits": "(batch, sequence) float32"}}

    def parity_texts(self, data: TaskData, count: int = 4) -> list:
        """Real test questions as a server receives them (``{"question", "context"}``): first the question
        of the longest test context with the three longest distinct contexts joined after it (real text
        long enough for several windows even where every single context fits in one), then an
        unanswerable question when there is one, then others as they are."""
        examples = list(data.test.examples)
        longest = sorted({e.context for e in examples}, key=len, reverse=True)[:3]
        first = next(e for e in examples if e.context == longest[0])
        chosen = [{"question": first.question, "context": " ".join(longest)}]
        rest = [e for e in examples if not e.answers][:1] + [e for e in examples if e.answers and e is not first]
        chosen += [{"question": e.question, "context": e.context} for e in rest]
        return chosen[:count]


__all__ = ["MASKED", "QASplit", "QuestionAnswering", "TokenizedWindows"]
