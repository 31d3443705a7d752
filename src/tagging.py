"""Token classification (NER) building blocks: reading tagged sentences, checking the BIO scheme,
the label list, sub-token alignment and entity-level scores.

Everything here works on words and tags; nothing imports torch.

- **Readers** return :class:`TaggedSentence` lists from CoNLL-style column files, JSONL files and
  hub-style rows (integer ``ner_tags`` named by the dataset's features).
- **Scheme**: BIO, also called IOB2. A tag is ``O``, ``B-<type>`` or ``I-<type>``, and ``I-<type>``
  may only follow ``B-<type>`` or ``I-<type>``. Gold data that breaks this is an error
  (:func:`check_scheme`); data in IOB1 (the original CoNLL-2003 files) converts with :func:`iob1_to_iob2`.
- **Labels** come from the data: ``O`` first, then ``B-``/``I-`` for each entity type in sorted order
  (:func:`labels_from_data`); the model's output index ``i`` means ``labels[i]``.
- **Alignment**: a word's label sits on its FIRST sub-token; every other position (special tokens,
  later sub-tokens, padding) gets :data:`IGNORE_INDEX` and counts in neither the loss nor the metric
  (:func:`align_labels`).
- **Truncation**: words cut off by truncation get no prediction. :func:`word_tags_from_predictions`
  tags them ``O``, so a gold entity in the cut part is counted as missed (a false negative): the
  metric scores every gold word of the split, never only the words that fitted.
- **Entities** from tags follow conlleval: ``B-X`` starts an entity, ``I-X`` continues an entity of
  type X, and an ``I-X`` that follows ``O`` or another type starts a new entity (:func:`tag_spans`).
  The rule lives in ``export/serving/entities.py`` (stdlib only, copied into serving bundles), so
  training, the metric and the servers read entities with one implementation.
- **Scores**: entity-level precision / recall / F1, micro and per type, with per-sentence counts for a
  bootstrap over sentences (:func:`entity_scores`); checked against seqeval in the tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distilprune.errors import DataError
from distilprune.export.serving.entities import OUTSIDE, split_tag, tag_spans  # the one BIO rule, shared with servers

IGNORE_INDEX = -100  # label id of positions that count in neither loss nor metric (torch's CE default)
DOCSTART = "-DOCSTART-"
SCHEME = "BIO"  # also called IOB2; written into bundles beside the label list


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence: ``words[i]`` carries ``tags[i]``.

    ``source`` is where its first word comes from (``file:line``, or ``dataset row N``). In a CoNLL
    file word ``i`` is on line ``first line + i`` (``one_word_per_line``), which :meth:`location` uses.
    """

    words: list[str]
    tags: list[str]
    source: str
    one_word_per_line: bool = field(default=False, compare=False)

    def location(self, word_index: int) -> str:
        """Where word ``word_index`` is: ``file:line`` for CoNLL files, else ``source (word N)``."""
        if self.one_word_per_line:
            path, _, line = self.source.rpartition(":")
            return f"{path}:{int(line) + word_index}"
        return f"{self.source} (word {word_index + 1})"


# ---------------------------------------------------------------------------------------------- readers


def read_tagged_file(path: Path | str) -> list[TaggedSentence]:
    """Sentences of a local file: ``.jsonl`` / ``.json`` as JSONL, anything else as CoNLL columns."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return read_jsonl(path)
    return read_conll(path)


def read_conll(path: Path | str) -> list[TaggedSentence]:
    """Sentences of a CoNLL-style column file.

    One word per line: the token is the first whitespace-separated column, the tag the last (columns
    between, such as CoNLL-2003's POS and chunk tags, are ignored). A blank line ends a sentence (any
    number of them is fine, and so is no blank line at the end of the file); ``-DOCSTART-`` lines are
    skipped and also end a sentence. A line with a single column (a token without a tag, or a tag
    alone) is an error naming its file and line, as is a file with no sentence at all.
    """
    path = Path(path)
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0

    def end_sentence() -> None:
        if words:
            sentences.append(TaggedSentence(list(words), list(tags), f"{path}:{first_line}", one_word_per_line=True))
        words.clear()
        tags.clear()

    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            columns = line.split()
            if not columns or columns[0] == DOCSTART:
                end_sentence()
                continue
            if len(columns) < 2:
                raise DataError(
                    f"{path}:{number}: expected a token and its tag separated by whitespace, found one column "
                    f"{line.strip()!r}. In a CoNLL-style file every line of a sentence is 'token ... tag' and "
                    f"sentences are separated by blank lines; add the missing token or tag on this line (or "
                    f"delete the line)."
                )
            if not words:
                first_line = number
            words.append(columns[0])
            tags.append(columns[-1])
    end_sentence()
    return _non_empty(sentences, path, "CoNLL-style lines 'token ... tag' with blank lines between sentences")


def _non_empty(sentences: list[TaggedSentence], path: Path, expected: str) -> list[TaggedSentence]:
    if not sentences:
        raise DataError(f"{path} holds no tagged sentence. Expected {expected}; check the file's path and contents.")
    return sentences


def read_jsonl(path: Path | str) -> list[TaggedSentence]:
    """Sentences of a JSONL file: one object per line, ``{"tokens": [...], "tags": [...]}``.

    ``ner_tags`` is accepted in place of ``tags`` when it holds tag names (strings); integer tags need
    the dataset's tag names (:func:`sentences_from_hub_rows`). Blank lines are skipped. Invalid JSON,
    a missing key, an empty sentence and a tokens/tags length mismatch are errors naming the line.
    """
    path = Path(path)
    sentences = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not a JSON object ({error.msg}). Each line of a JSONL file is one object "
                                f'like {{"tokens": ["John", "lives"], "tags": ["B-PER", "O"]}}; fix this line.') from None
            tokens, tags = _tokens_and_tags(row, where)
            sentences.append(TaggedSentence(tokens, tags, where))
    return _non_empty(sentences, path, 'one JSON object per line with "tokens" and "tags" lists')


def _tokens_and_tags(row, where: str) -> tuple[list[str], list[str]]:
    """``tokens`` and ``tags`` (or ``ner_tags``) of a JSONL row, as lists of strings of equal length."""
    tag_key = "tags" if isinstance(row, dict) and "tags" in row else "ner_tags"
    if not isinstance(row, dict) or "tokens" not in row or tag_key not in row:
        found = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f'{where}: expected an object with "tokens" and "tags" (or "ner_tags") lists, found {found}. '
                        f'Write each sentence as {{"tokens": [...], "tags": [...]}}.')
    tokens, tags = row["tokens"], row[tag_key]
    if not isinstance(tokens, list) or not isinstance(tags, list):
        raise DataError(f'{where}: "tokens" and "{tag_key}" must be lists (one entry per word). Fix this line.')
    if any(not isinstance(tag, str) for tag in tags):
        raise DataError(f'{where}: "{tag_key}" holds {tags[:5]!r}...: tag names (strings such as "B-PER") are '
                        f"needed here. Write the names, or load integer tags with the dataset's tag names.")
    if not tokens:
        raise DataError(f"{where}: empty sentence (no tokens). Remove this line or give it its words and tags.")
    if len(tokens) != len(tags):
        raise DataError(f'{where}: {len(tokens)} tokens but {len(tags)} tags. Every token needs exactly one tag '
                        f'("O" outside entities); fix the lists on this line so their lengths match.')
    return [str(token) for token in tokens], list(tags)


def sentences_from_hub_rows(rows: Iterable[Mapping], tag_names: Sequence[str],
                            source: str = "dataset") -> list[TaggedSentence]:
    """Sentences of hub-style rows (``conll2003``, ``wikiann``): ``tokens`` and integer ``ner_tags``.

    ``tag_names`` is the dataset's own list (``features["ner_tags"].feature.names``): tag id ``i`` is
    ``tag_names[i]``; the order is the dataset's, never assumed. ``source`` names the dataset in errors.
    """
    sentences = []
    for index, row in enumerate(rows):
        where = f"{source} row {index}"
        if "tokens" not in row or "ner_tags" not in row:
            raise DataError(f"{where}: expected columns 'tokens' and 'ner_tags', found {sorted(row)}. "
                            f"Use a token-classification dataset (such as conll2003 or wikiann) or name its columns so.")
        tokens, ids = list(row["tokens"]), list(row["ner_tags"])
        if not tokens or len(tokens) != len(ids):
            raise DataError(f"{where}: {len(tokens)} tokens but {len(ids)} tags; every token needs one tag. "
                            f"Fix or drop this row.")
        bad = [tag for tag in ids if not isinstance(tag, int) or not 0 <= tag < len(tag_names)]
        if bad:
            raise DataError(f"{where}: tag id {bad[0]!r} is not one of the dataset's {len(tag_names)} tag names "
                            f"{list(tag_names)}. Give the tag names from the dataset's features (ner_tags).")
        sentences.append(TaggedSentence([str(t) for t in tokens], [tag_names[i] for i in ids], where))
    return sentences


# ------------------------------------------------------------------------------------ scheme and labels


def _scheme_problem(tag: str, previous: str) -> str | None:
    """Why ``tag`` after ``previous`` breaks BIO, or None when it does not."""
    try:
        prefix, entity_type = split_tag(tag)
    except ValueError:
        other = " (this looks like the IOBES/BILOU scheme)" if tag[:2] in ("E-", "S-", "L-", "U-") else ""
        return f"is not a BIO tag{other}: tags must be O, B-<type> or I-<type>"
    if prefix == "I" and previous not in (f"B-{entity_type}", f"I-{entity_type}"):
        return (f"follows {previous!r}, but I-{entity_type} may only continue an entity that begins with "
                f"B-{entity_type}; use B-{entity_type} on the first word of an entity")
    return None


def check_scheme(sentences: Iterable[TaggedSentence], labels: Sequence[str] | None = None) -> None:
    """Raise DataError at the first tag that breaks the BIO (IOB2) scheme, or is not in ``labels``.

    The message names the file and line (or row and word), the tag and the fix. ``labels`` is the
    label list the tags must come from (the training split's, or a fine-tuned teacher's).
    """
    allowed = set(labels) if labels is not None else None
    for sentence in sentences:
        previous = OUTSIDE
        for index, (word, tag) in enumerate(zip(sentence.words, sentence.tags)):
            where = f"{sentence.location(index)}: tag {tag!r} on word {word!r}"
            problem = _scheme_problem(tag, previous)
            if problem is not None:
                raise DataError(
                    f"{where} {problem}. Gold data must be in the BIO (IOB2) scheme: fix this tag; a file in "
                    f"IOB1 (I- everywhere, B- only between two adjacent entities of one type, as in the original "
                    f"CoNLL-2003 files) must be converted to IOB2 first."
                )
            if allowed is not None and tag not in allowed:
                raise DataError(
                    f"{where} is not in the label list {list(labels)}. Every split must use the labels the "
                    f"model is trained with: fix the tag, or add its entity type to the training data."
                )
            previous = tag


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """The IOB2 form of IOB1 tags: an ``I-X`` that starts an entity (after ``O`` or another type)
    becomes ``B-X``. Already valid IOB2 tags come back unchanged."""
    converted = []
    previous = OUTSIDE
    for tag in tags:
        prefix, entity_type = split_tag(tag)
        if prefix == "I" and previous not in (f"B-{entity_type}", f"I-{entity_type}"):
            tag = f"B-{entity_type}"
        converted.append(tag)
        previous = tag
    return converted


def entity_types_of(sentences: Iterable[TaggedSentence]) -> list[str]:
    """Entity types that occur in the tags, sorted. Tags must be BIO (run :func:`check_scheme` first)."""
    return sorted({split_tag(tag)[1] for sentence in sentences for tag in sentence.tags if tag != OUTSIDE})


def labels_for_types(entity_types: Iterable[str]) -> list[str]:
    """``["O", "B-T1", "I-T1", "B-T2", ...]`` for the sorted entity types (both prefixes for every type)."""
    return [OUTSIDE] + [f"{prefix}-{entity_type}" for entity_type in sorted(entity_types) for prefix in ("B", "I")]


def labels_from_data(sentences: Iterable[TaggedSentence]) -> list[str]:
    """The label list of a dataset: ``O`` first, then ``B-``/``I-`` per entity type in sorted order.

    Derived from the tags present (never assumed), and the same whatever order sentences come in.
    """
    return labels_for_types(entity_types_of(sentences))


# ------------------------------------------------------------------------------------------ alignment


def align_labels(word_ids: Sequence[int | None], word_label_ids: Sequence[int]) -> list[int]:
    """Per-sub-token label ids: the word's label on its FIRST sub-token, IGNORE_INDEX elsewhere.

    Args:
        word_ids: (tokens,) the word index of each sub-token, None for special and padding tokens, as a
            fast tokenizer's ``word_ids()`` gives for words tokenized with ``is_split_into_words=True``.
        word_label_ids: (words,) the label id of each word of the sentence.
    Returns:
        (tokens,) label ids. Words cut off by truncation have no sub-token and so no label here;
        :func:`word_tags_from_predictions` counts them as missed.
    """
    labels = []
    previous = None
    for word_id in word_ids:
        first_piece = word_id is not None and word_id != previous
        labels.append(word_label_ids[word_id] if first_piece else IGNORE_INDEX)
        previous = word_id
    return labels


def word_tags_from_predictions(token_label_ids: Sequence[int], word_ids: Sequence[int | None],
                               num_words: int, labels: Sequence[str]) -> list[str]:
    """Predicted tag of every word of a sentence, read at each word's first sub-token.

    Args:
        token_label_ids: (tokens,) predicted label id per sub-token (argmax of the token logits); may be
            longer than ``word_ids`` (padding).
        word_ids: (tokens,) as for :func:`align_labels`.
        num_words: words in the sentence, including those cut off by truncation.
        labels: the label list (id -> tag).
    Returns:
        (num_words,) tags. A word without a sub-token (cut by truncation) is ``O``, so a gold entity
        there counts as a false negative instead of vanishing from the score.
    """
    tags = [OUTSIDE] * num_words
    previous = None
    for position, word_id in enumerate(word_ids):
        if word_id is not None and word_id != previous:
            tags[word_id] = labels[int(token_label_ids[position])]
        previous = word_id
    return tags


def resplit_words(sentence: TaggedSentence, pieces_of: Callable[[str], list[str]]) -> TaggedSentence:
    """The sentence with each word split as ``pieces_of`` splits it, the tags carried to the pieces.

    A server that gets raw text finds words with the tokenizer's pre-tokenizer (whitespace and
    punctuation), so ``U.S.`` is four words there but one in a CoNLL file. Re-splitting training words
    the same way (``B-LOC`` -> ``B-LOC I-LOC I-LOC I-LOC``; ``O`` stays ``O`` on every piece) trains
    the model on exactly the positions the server reads. Entity boundaries are unchanged, so the gold
    entities (and their count) are the same in both splits.
    """
    words, tags = [], []
    for word, tag in zip(sentence.words, sentence.tags):
        pieces = pieces_of(word) or [word]
        prefix, entity_type = split_tag(tag)
        continuation = OUTSIDE if prefix == OUTSIDE else f"I-{entity_type}"
        words.extend(pieces)
        tags.extend([tag] + [continuation] * (len(pieces) - 1))
    return TaggedSentence(words, tags, sentence.source, sentence.one_word_per_line and words == sentence.words)


def pre_tokenizer_pieces(tokenizer) -> Callable[[str], list[str]]:
    """``pieces_of`` for :func:`resplit_words`: a word's pieces as the tokenizer splits raw text into words.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or a fast transformers tokenizer (its
    ``backend_tokenizer``). The pieces are substrings of the word (character offsets of the encoding,
    so lower-casing and accent stripping do not change them).
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)

    def pieces_of(word: str) -> list[str]:
        encoding = backend.encode(word, add_special_tokens=False)
        spans: dict[int, list[int]] = {}
        for word_id, (start, end) in zip(encoding.word_ids, encoding.offsets):
            if word_id is not None:
                span = spans.setdefault(word_id, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
        return [word[start:end] for start, end in (spans[key] for key in sorted(spans))]

    return pieces_of


# -------------------------------------------------------------------------------------- entities, scores


@dataclass
class TypeScore:
    """Entity-level scores of one entity type (or of all, micro-averaged). Fractions in [0, 1]."""

    precision: float
    recall: float
    f1: float
    support: int  # gold entities
    true_positives: int
    false_positives: int
    false_negatives: int


@dataclass
class EntityScores:
    """Entity-level scores of a split.

    ``per_sentence`` is (sentences, 3) int64: true positives, false positives, false negatives of each
    sentence, so a bootstrap can resample sentences (:func:`micro_f1`).
    """

    micro: TypeScore
    per_type: dict[str, TypeScore]
    per_sentence: np.ndarray


def _score(tp: int, fp: int, fn: int) -> TypeScore:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TypeScore(precision, recall, f1, tp + fn, tp, fp, fn)


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from per-sentence counts.

    Args:
        counts: (..., sentences, 3) true positives, false positives, false negatives; e.g.
            ``per_sentence[resampled_indices]`` of shape (resamples, sentences, 3).
    Returns:
        (...) F1 = 2 tp / (2 tp + fp + fn), 0 where there is no entity at all.
    """
    tp, fp, fn = np.moveaxis(np.asarray(counts, dtype=np.float64).sum(axis=-2), -1, 0)
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> EntityScores:
    """Entity-level precision / recall / F1 of predicted tags against gold tags, sentence by sentence.

    An entity counts as found only when its type, first word and last word all match (exact match,
    as conlleval and seqeval's default mode). Both sides are read with :func:`tag_spans`.

    Args:
        gold: (sentences, words) gold tags.
        predicted: (sentences, words) predicted tags, the same number of words per sentence.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    per_sentence = np.zeros((len(gold), 3), dtype=np.int64)
    per_type_counts: dict[str, list[int]] = {}
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        gold_spans, predicted_spans = set(tag_spans(gold_tags)), set(tag_spans(predicted_tags))
        for spans, column in ((gold_spans & predicted_spans, 0), (predicted_spans - gold_spans, 1),
                              (gold_spans - predicted_spans, 2)):
            per_sentence[index, column] = len(spans)
            for entity_type, _, _ in spans:
                per_type_counts.setdefault(entity_type, [0, 0, 0])[column] += 1
    tp, fp, fn = (int(value) for value in per_sentence.sum(axis=0))
    per_type = {entity_type: _score(*per_type_counts[entity_type]) for entity_type in sorted(per_type_counts)}
    return EntityScores(_score(tp, fp, fn), per_type, per_sentence)
