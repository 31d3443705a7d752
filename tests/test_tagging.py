"""Token classification building blocks: readers, BIO checks, labels, sub-token alignment with the real
MiniLM tokenizer, entity scores against seqeval, and entities with character offsets for servers."""

from __future__ import annotations

import ast
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from distilprune import assets, tagging
from distilprune.errors import DataError
from distilprune.export.serving import entities as serving_entities
from distilprune.tagging import TaggedSentence

TYPES = ("LOC", "MISC", "ORG", "PER")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return assets.fetch("minilm-l6", progress=False)


@pytest.fixture(scope="module")
def fast_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


@pytest.fixture(scope="module")
def bundle_tokenizer(model_dir):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


# ---------------------------------------------------------------------------------------------- readers


def test_conll_reader_skips_docstart_and_blank_runs_and_reads_last_sentence_without_blank(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n"
                    "\n\n\nPeter NNP B-NP B-PER\nBlackburn\tNNP\tB-NP\tI-PER", encoding="utf-8")
    first, second = tagging.read_conll(path)
    assert (first.words, first.tags) == (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"])
    assert (second.words, second.tags) == (["Peter", "Blackburn"], ["B-PER", "I-PER"])
    assert (first.source, second.source) == (f"{path}:3", f"{path}:9")
    assert second.location(1) == f"{path}:10"
    assert tagging.read_tagged_file(path) == [first, second]


def test_conll_line_with_one_column_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU B-ORG\nrejects O\n\nPeter\nBlackburn I-PER\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:4: expected a token and its tag .* found one column 'Peter'"):
        tagging.read_conll(path)


def test_conll_file_without_sentences_is_an_error(tmp_path):
    path = tmp_path / "empty.conll"
    path.write_text("-DOCSTART- -X- O\n\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no tagged sentence"):
        tagging.read_conll(path)


def test_jsonl_reader_takes_tags_or_string_ner_tags(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"tokens": ["Zürich", "is", "big"], "tags": ["B-LOC", "O", "O"]}\n\n'
                    '{"tokens": ["Ada"], "ner_tags": ["B-PER"]}\n', encoding="utf-8")
    first, second = tagging.read_tagged_file(path)
    assert (first.words, first.tags, first.source) == (["Zürich", "is", "big"], ["B-LOC", "O", "O"], f"{path}:1")
    assert (second.words, second.tags, second.source) == (["Ada"], ["B-PER"], f"{path}:3")
    assert second.location(0) == f"{path}:3 (word 1)"


@pytest.mark.parametrize("line, message", [
    ('{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}', r":2: 3 tokens but 2 tags"),
    ('{"tokens": ["a"], "ner_tags": [0]}', r":2: \"ner_tags\" holds \[0\].*tag names"),
    ('{"tokens": ["a"]}', r":2: expected an object with \"tokens\" and \"tags\""),
    ('{"tokens": [], "tags": []}', r":2: empty sentence"),
    ('{"tokens": ["a"], "tags": ["O"]', r":2: not a JSON object"),
])
def test_jsonl_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"tokens": ["ok"], "tags": ["O"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        tagging.read_jsonl(path)


def test_hub_rows_are_named_by_the_datasets_own_tag_names():
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]  # wikiann's order, not sorted
    (sentence,) = tagging.sentences_from_hub_rows([{"tokens": ["Ada", "Lovelace", "of", "London"],
                                                   "ner_tags": [1, 2, 0, 5]}], names, source="wikiann")
    assert sentence.tags == ["B-PER", "I-PER", "O", "B-LOC"]
    assert sentence.source == "wikiann row 0"
    with pytest.raises(DataError, match=r"wikiann row 1: tag id 7 is not one of the dataset's 7 tag names"):
        tagging.sentences_from_hub_rows([{"tokens": ["a"], "ner_tags": [0]}, {"tokens": ["b"], "ner_tags": [7]}],
                                        names, source="wikiann")


# ------------------------------------------------------------------------------------ scheme and labels


def test_scheme_error_names_line_tag_and_fix(tmp_path):
    path = tmp_path / "iob1.conll"
    path.write_text("EU B-ORG\n\nthe O\nPeter O\nBlackburn I-PER\n", encoding="utf-8")
    sentences = tagging.read_conll(path)
    with pytest.raises(DataError) as caught:
        tagging.check_scheme(sentences)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: tag 'I-PER' on word 'Blackburn' follows 'O'")
    assert "use B-PER on the first word of an entity" in message and "IOB1" in message and "\n" not in message


@pytest.mark.parametrize("tags, problem", [
    (["B-LOC", "I-PER"], "follows 'B-LOC'"),
    (["S-PER"], "is not a BIO tag (this looks like the IOBES/BILOU scheme)"),
    (["B-"], "is not a BIO tag"),
    (["PER"], "is not a BIO tag"),
])
def test_scheme_errors(tags, problem):
    sentence = TaggedSentence([f"w{i}" for i in range(len(tags))], tags, "data.jsonl:7")
    with pytest.raises(DataError, match=rf"data.jsonl:7 \(word {len(tags)}\): tag '{tags[-1]}' .*{re.escape(problem)}"):
        tagging.check_scheme([sentence])


def test_tag_outside_the_label_list_is_an_error():
    labels = tagging.labels_for_types(["LOC", "PER"])
    tagging.check_scheme([TaggedSentence(["Ada", "Paris"], ["B-PER", "B-LOC"], "train:1")], labels)
    with pytest.raises(DataError, match=r"dev:3 \(word 2\): tag 'B-ORG' on word 'IBM' is not in the label list"):
        tagging.check_scheme([TaggedSentence(["at", "IBM"], ["O", "B-ORG"], "dev:3")], labels)


def test_iob1_converts_to_valid_iob2():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-PER"]
    iob2 = tagging.iob1_to_iob2(iob1)
    assert iob2 == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-PER"]
    tagging.check_scheme([TaggedSentence(["w"] * len(iob2), iob2, "x:1")])
    assert tagging.iob1_to_iob2(iob2) == iob2


def test_labels_come_from_the_data_sorted_by_type_with_o_first():
    sentences = [TaggedSentence(["Paris"], ["B-PER"], "a:1"), TaggedSentence(["x", "y"], ["B-MISC", "I-MISC"], "a:3"),
                 TaggedSentence(["Rome"], ["B-LOC"], "a:6")]
    expected = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-PER", "I-PER"]
    assert tagging.labels_from_data(sentences) == expected
    assert tagging.labels_from_data(reversed(sentences)) == expected
    assert tagging.entity_types_of(sentences) == ["LOC", "MISC", "PER"]


# ------------------------------------------------------------------------------------------ alignment


WORDS = ["Angela", "Merkel", "besuchte", "Hewlett-Packard", "in", "Zürich", "."]
TAGS = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC", "O"]


def test_labels_sit_on_the_first_sub_token_of_each_word(fast_tokenizer):
    labels = tagging.labels_from_data([TaggedSentence(WORDS, TAGS, "s:1")])
    word_label_ids = [labels.index(tag) for tag in TAGS]
    word_ids = fast_tokenizer(WORDS, is_split_into_words=True).word_ids()
    pieces = [word_ids.count(word) for word in range(len(WORDS))]
    assert pieces[2] > 1 and pieces[3] > 1  # "besuchte" and "Hewlett-Packard" split into several sub-tokens
    aligned = tagging.align_labels(word_ids, word_label_ids)
    first_positions = [word_ids.index(word) for word in range(len(WORDS))]
    assert [aligned[position] for position in first_positions] == word_label_ids
    assert sum(label != tagging.IGNORE_INDEX for label in aligned) == len(WORDS)
    assert aligned[0] == aligned[-1] == tagging.IGNORE_INDEX  # [CLS], [SEP]
    assert tagging.word_tags_from_predictions(aligned, word_ids, len(WORDS), labels) == TAGS


def test_words_cut_by_truncation_count_as_missed(fast_tokenizer):
    labels = tagging.labels_from_data([TaggedSentence(WORDS, TAGS, "s:1")])
    encoded = fast_tokenizer(WORDS, is_split_into_words=True, truncation=True, max_length=8)
    word_ids = encoded.word_ids()
    kept_words = {word for word in word_ids if word is not None}
    assert 0 < len(kept_words) < len(WORDS) and 5 not in kept_words  # "Zürich" (B-LOC) is cut off
    perfect = [max(label, 0) for label in tagging.align_labels(word_ids, [labels.index(tag) for tag in TAGS])]
    predicted = tagging.word_tags_from_predictions(perfect, word_ids, len(WORDS), labels)
    assert len(predicted) == len(WORDS) and predicted[5] == "O"
    scores = tagging.entity_scores([TAGS], [predicted])
    assert scores.per_type["LOC"].false_negatives == 1 and scores.micro.recall < 1.0


def test_resplit_words_matches_the_server_words_of_raw_text(fast_tokenizer, bundle_tokenizer):
    sentence = TaggedSentence(["U.S.", "officials", "met", "Hewlett-Packard", "in", "Zürich", "."],
                              ["B-LOC", "O", "O", "B-ORG", "O", "B-LOC", "O"], "s:1")
    resplit = tagging.resplit_words(sentence, tagging.pre_tokenizer_pieces(fast_tokenizer))
    assert resplit.words[:4] == ["U", ".", "S", "."] and resplit.tags[:4] == ["B-LOC", "I-LOC", "I-LOC", "I-LOC"]
    assert resplit.words[6:9] == ["Hewlett", "-", "Packard"] and resplit.tags[6:9] == ["B-ORG", "I-ORG", "I-ORG"]
    text = " ".join(sentence.words)
    _, spans = serving_entities.words_of_encoding(bundle_tokenizer.encode(text))
    assert [text[start:end] for start, end in spans] == resplit.words
    assert [span[0] for span in tagging.tag_spans(resplit.tags)] == ["LOC", "ORG", "LOC"]


# -------------------------------------------------------------------------------------- entities, scores


def test_tag_spans_follow_conlleval_for_stray_i_tags():
    tags = ["I-PER", "I-PER", "O", "B-LOC", "I-ORG", "I-ORG", "B-ORG", "B-ORG", "I-LOC"]
    assert tagging.tag_spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 6), ("ORG", 6, 7),
                                       ("ORG", 7, 8), ("LOC", 8, 9)]


def test_training_and_serving_read_entities_with_one_bio_rule():
    assert tagging.tag_spans is serving_entities.tag_spans and tagging.split_tag is serving_entities.split_tag


def test_hand_checked_scores():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"], ["O", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"], ["B-LOC", "O"]]
    scores = tagging.entity_scores(gold, predicted)
    # gold: PER 0-2, LOC 3-4, ORG 0-1; predicted: PER 0-2, ORG 3-4, ORG 0-1, LOC 0-1 -> tp 2, fp 2, fn 1
    assert scores.per_sentence.tolist() == [[1, 1, 1], [1, 0, 0], [0, 1, 0]]
    assert (scores.micro.precision, scores.micro.recall) == (0.5, 2 / 3)
    assert scores.micro.f1 == pytest.approx(4 / 7)
    assert (scores.per_type["ORG"].precision, scores.per_type["ORG"].recall, scores.per_type["ORG"].support) == (0.5, 1.0, 1)
    assert scores.per_type["LOC"].f1 == 0.0 and scores.per_type["LOC"].support == 1
    assert float(tagging.micro_f1(scores.per_sentence)) == pytest.approx(4 / 7)


def _random_gold(rng: random.Random, length: int) -> list[str]:
    tags, index = [], 0
    while index < length:
        if rng.random() < 0.6:
            tags.append("O")
            index += 1
            continue
        entity_type, size = rng.choice(TYPES), rng.randint(1, 3)
        tags.extend([f"B-{entity_type}"] + [f"I-{entity_type}"] * (size - 1))
        index += size
    return tags[:length]


def test_scores_equal_seqeval_on_the_same_predictions():
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    rng = random.Random(1)
    labels = tagging.labels_for_types(TYPES)
    gold = [_random_gold(rng, rng.randint(1, 15)) for _ in range(300)]
    # Predictions: gold with ~20% of the tags replaced by any label, so stray I- tags occur too.
    predicted = [[rng.choice(labels) if rng.random() < 0.2 else tag for tag in tags] for tags in gold]
    ours = tagging.entity_scores(gold, predicted)
    assert ours.micro.precision == pytest.approx(precision_score(gold, predicted), abs=1e-12)
    assert ours.micro.recall == pytest.approx(recall_score(gold, predicted), abs=1e-12)
    assert ours.micro.f1 == pytest.approx(f1_score(gold, predicted), abs=1e-12)
    assert 0.3 < ours.micro.f1 < 0.95  # the comparison covers both hits and misses
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    for entity_type in TYPES:
        theirs, mine = report[entity_type], ours.per_type[entity_type]
        assert (mine.precision, mine.recall, mine.f1) == pytest.approx(
            (theirs["precision"], theirs["recall"], theirs["f1-score"]), abs=1e-12)
        assert mine.support == theirs["support"]


def test_micro_f1_of_resampled_counts_has_the_resample_shape():
    counts = np.array([[2, 0, 1], [0, 1, 0], [3, 1, 1]])
    resampled = counts[np.array([[0, 0, 0], [0, 1, 2]])]  # (2 resamples, 3 sentences, 3)
    f1 = tagging.micro_f1(resampled)
    assert f1.shape == (2,)
    assert f1.tolist() == pytest.approx([12 / 15, 10 / 14])
    assert tagging.micro_f1(np.zeros((4, 3))) == 0.0


# ------------------------------------------------------------------------------ serving post-processing

TEXT = "Angela  Merkel besuchte 😀 Zürich,  São Paulo und 東京 — U.S. naïve."
ENTITY_WORDS = {"Angela": "B-PER", "Merkel": "I-PER", "Zürich": "B-LOC", "São": "B-LOC", "Paulo": "I-LOC",
                "東": "B-LOC", "京": "I-LOC", "U": "B-ORG"}


def _logits_for(text: str, encoding, labels: list[str], seed: int = 0) -> np.ndarray:
    """(tokens + 3 padding rows, labels) logits: the wanted tag of each word wins at its first
    sub-token; later sub-tokens strongly prefer B-PER, which decoding must ignore."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(encoding.ids) + 3, len(labels))).astype(np.float32)
    word_ids, spans = serving_entities.words_of_encoding(encoding)
    seen = set()
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        if word in seen:
            logits[position, labels.index("B-PER")] += 20.0
            continue
        seen.add(word)
        word_text = text[spans[word][0]:spans[word][1]]
        inside_us = TEXT.index("U.S.") < spans[word][0] < TEXT.index("U.S.") + 4  # ".", "S", "." of "U.S."
        tag = ENTITY_WORDS.get(word_text, "I-ORG" if inside_us else "O")
        logits[position, labels.index(tag)] += 6.0
    return logits


def test_entities_have_character_offsets_into_non_ascii_text(bundle_tokenizer):
    labels = tagging.labels_for_types(["LOC", "ORG", "PER"])
    encoding = bundle_tokenizer.encode(TEXT)
    word_ids, spans = serving_entities.words_of_encoding(encoding)
    assert any(word_ids.count(word) > 1 for word in range(len(spans)))  # "besuchte", "Merkel" have sub-tokens
    logits = _logits_for(TEXT, encoding, labels)
    found = serving_entities.entities_of_text(logits, labels, encoding, TEXT)
    expected = [("PER", "Angela  Merkel"), ("LOC", "Zürich"), ("LOC", "São Paulo"), ("LOC", "東京"), ("ORG", "U.S.")]
    assert [(entity["type"], entity["text"]) for entity in found] == expected
    for entity, (_, text) in zip(found, expected):
        assert (entity["start"], entity["end"]) == (TEXT.index(text), TEXT.index(text) + len(text))
        assert TEXT[entity["start"]:entity["end"]] == entity["text"]
    first = serving_entities.first_token_of_words(word_ids)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    paulo_words = [word for word, (start, end) in enumerate(spans) if TEXT[start:end] in ("São", "Paulo")]
    expected_score = np.mean([probabilities[first[word]].max() for word in paulo_words])
    assert found[2]["score"] == pytest.approx(expected_score, rel=1e-5)


def test_entities_use_decode_entities_with_given_word_spans():
    labels = ["O", "B-PER", "I-PER"]
    text = "Zoë  Ämter lacht"
    word_ids = [None, 0, 1, 1, 2, None]
    spans = [(0, 3), (5, 10), (11, 16)]
    logits = np.full((6, 3), -5.0, dtype=np.float32)
    logits[1, 1] = logits[2, 2] = logits[4, 0] = 5.0
    logits[3, 1] = 50.0  # a later sub-token of "Ämter": ignored
    (entity,) = serving_entities.decode_entities(logits, labels, word_ids, spans, text)
    assert (entity["type"], entity["text"], entity["start"], entity["end"]) == ("PER", "Zoë  Ämter", 0, 10)
    with pytest.raises(ValueError, match="do not fit"):
        serving_entities.decode_entities(logits[:, :2], labels, word_ids, spans, text)


def test_entities_module_imports_only_stdlib_and_numpy():
    tree = ast.parse(Path(serving_entities.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == {"numpy"}
