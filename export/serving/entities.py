"""Token logits to entities with character offsets: the one NER post-processing of servers and verifier.

This file imports only the standard library and numpy: it is copied into serving bundles and runs
where distilprune is not installed.

**How a server finds words in raw text.** It runs the bundle's fast tokenizer (``tokenizer.json``, a
``tokenizers.Tokenizer``) on the raw string and takes its ``word_ids`` and ``offsets``
(:func:`words_of_encoding`). A word is then one pre-token of the tokenizer: BERT's pre-tokenizer splits
on whitespace and on every punctuation character, and its normalizer makes each CJK character a word
of its own. The offsets are Python string (code point) indices into the ORIGINAL text, whatever the
normalizer did (lower-casing, accent stripping), so non-ASCII text and runs of spaces keep exact offsets.
This is the word rule of Hugging Face's token-classification pipeline for WordPiece tokenizers.

**Limits of that rule.** Training words (CoNLL columns, JSONL tokens) are given already split, and a
word with inner punctuation is one training word but several server words: ``U.S.`` is 4 words here,
``Hewlett-Packard`` 3, ``O'Neil`` 3. The model is then asked for a tag at positions it was never
trained on (the ``.`` after ``U``); the B/I merge below joins the pieces back into one entity when it
tags them ``I-X``, which is likely but not guaranteed. Training on words re-split with the same rule
(``distilprune.tagging.resplit_words``) removes the mismatch. Splitting server text on whitespace
alone would not help: ``Berlin,`` would become one word and its entity would include the comma.
Words past the tokenizer's truncation have no token and are never part of an entity.

**Decoding.** Each word takes the label with the highest logit at its FIRST sub-token (the position
the labels were trained on; later sub-tokens are ignored). Entities follow the BIO rule of conlleval:
``B-X`` starts an entity, ``I-X`` continues one of type X, and an ``I-X`` after ``O`` or after another
type starts a new entity. An entity's ``score`` is the mean, over its words, of the softmax probability
of the chosen label at the word's first sub-token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUTSIDE = "O"


def split_tag(tag: str) -> tuple[str, str]:
    """``("B", "PER")`` for ``"B-PER"``, ``("O", "")`` for ``"O"``; ValueError for anything else."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, dash, entity_type = tag.partition("-")
    if dash and prefix in ("B", "I") and entity_type:
        return prefix, entity_type
    raise ValueError(f"{tag!r} is not a BIO tag (O, B-<type> or I-<type>)")


def tag_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of BIO tags as ``(type, start_word, end_word_exclusive)`` (conlleval's rule, above)."""
    spans = []
    current: list | None = None  # [type, start]
    for index, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        if current is not None and (prefix != "I" or current[0] != entity_type):
            spans.append((current[0], current[1], index))
            current = None
        if prefix != OUTSIDE and current is None:
            current = [entity_type, index]
    if current is not None:
        spans.append((current[0], current[1], len(tags)))
    return spans


def words_of_encoding(encoding) -> tuple[list[int | None], list[tuple[int, int]]]:
    """Word ids per token and each word's character span, from a ``tokenizers.Encoding`` of raw text.

    Args:
        encoding: ``tokenizer.encode(text)`` of a ``tokenizers.Tokenizer`` (special tokens and
            padding have word id None).
    Returns:
        word_ids: (tokens,) word index of each token, or None.
        word_spans: (words,) ``(start, end)`` character offsets of each word in the text, end
            exclusive: from the start of its first token to the end of its last.
    """
    word_ids = list(encoding.word_ids)
    spans: dict[int, list[int]] = {}
    for word_id, (start, end) in zip(word_ids, encoding.offsets):
        if word_id is not None:
            span = spans.setdefault(word_id, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
    count = max(spans) + 1 if spans else 0
    return word_ids, [(spans[word][0], spans[word][1]) if word in spans else (0, 0) for word in range(count)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def first_token_of_words(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Position of each word's first token: ``{word_id: token_index}`` (words without a token absent)."""
    first: dict[int, int] = {}
    for position, word_id in enumerate(word_ids):
        if word_id is not None and word_id not in first:
            first[word_id] = position
    return first


def decode_entities(token_logits: np.ndarray, labels: Sequence[str], word_ids: Sequence[int | None],
                    word_spans: Sequence[tuple[int, int]], text: str) -> list[dict]:
    """Entities of one text from the model's token logits.

    Args:
        token_logits: (seq, labels) float logits of the text; ``seq >= len(word_ids)`` (rows past
            ``word_ids``, i.e. batch padding, are ignored).
        labels: (labels,) the label list, ``labels[i]`` the tag of logit column ``i``.
        word_ids: (tokens,) word index of each token, None for special and padding tokens.
        word_spans: (words,) character span ``(start, end)`` of each word in ``text``, end exclusive.
        text: the original text.
    Returns:
        ``[{"type", "text", "start", "end", "score"}]`` in text order: ``start``/``end`` are character
        offsets into ``text`` (end exclusive, ``text[start:end] == entity["text"]``), ``score`` the mean
        first-sub-token probability of the entity's words (see the module docstring).
    """
    token_logits = np.asarray(token_logits, dtype=np.float32)
    if token_logits.ndim != 2 or token_logits.shape[1] != len(labels) or token_logits.shape[0] < len(word_ids):
        raise ValueError(f"token logits of shape {token_logits.shape} do not fit {len(word_ids)} tokens and "
                         f"{len(labels)} labels: expected (>= {len(word_ids)}, {len(labels)})")
    first = first_token_of_words(word_ids)
    words = sorted(first)  # words that have a token (truncation cuts the rest)
    probabilities = _softmax(token_logits[[first[word] for word in words]])  # (words, labels)
    chosen = probabilities.argmax(axis=-1)
    tags = [labels[int(label)] for label in chosen]
    confidence = probabilities[np.arange(len(words)), chosen]
    entities = []
    for entity_type, start, end in tag_spans(_break_at_gaps(tags, words)):
        char_start, char_end = word_spans[words[start]][0], word_spans[words[end - 1]][1]
        entities.append({"type": entity_type, "text": text[char_start:char_end], "start": int(char_start),
                         "end": int(char_end), "score": float(confidence[start:end].mean())})
    return entities


def _break_at_gaps(tags: list[str], words: list[int]) -> list[str]:
    """``tags`` of the words that have a token, with an ``I-X`` after a missing word made ``B-X`` so no
    entity spans words the model did not see (only possible when word ids are not contiguous)."""
    fixed = list(tags)
    for index in range(1, len(words)):
        if words[index] != words[index - 1] + 1 and fixed[index].startswith("I-"):
            fixed[index] = "B-" + fixed[index][2:]
    return fixed


def entities_of_text(token_logits: np.ndarray, labels: Sequence[str], encoding, text: str) -> list[dict]:
    """:func:`decode_entities` for a text and its ``tokenizers.Encoding`` (word rule: module docstring)."""
    word_ids, word_spans = words_of_encoding(encoding)
    return decode_entities(token_logits, labels, word_ids, word_spans, text)
