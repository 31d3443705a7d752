"""Cloze QA from editorial sentences: spans, splits by editorial, unanswerable questions from the same
split, determinism, the SQuAD v2.0 round trip. Tiny synthetic files; one check on the real asset when
it is already cached."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest

from distilprune import assets
from distilprune.cloze_qa import BLANK, MAX_QUESTION_WORDS, STOPWORDS, cloze_splits, read_editorials, write_squad_json
from distilprune.errors import ConfigError, DataError
from distilprune.squad import read_squad_file

WORDS = ("harbor bridge council mayor budget winter subway tunnel library garden senator river school "
         "museum ferry tower market election").split()
FILLER = ("the of and to in a with for on").split()


def _sentence(rng: random.Random, tag: str, words: int = 9) -> str:
    body = [rng.choice(WORDS if rng.random() < 0.6 else FILLER) for _ in range(words)]
    body[0] = rng.choice(WORDS).capitalize()  # at least one content word: every sentence can be asked about
    body.insert(rng.randrange(1, words), tag)  # makes the sentence unique; never part of an answer (digits)
    return " ".join(body) + rng.choice([".", "!", "?"])


def _write_tsv(path, rows, header="id\tsentiment\ttext") -> str:
    path.write_text(header + "\r\n" + "".join(f"{i}\t0.1\t{text}\r\n" for i, text in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def editorial_file(tmp_path):
    """20 editorials of 5 to 9 sentences (plus one too short to ask about), written in file order."""
    rng = random.Random(0)
    rows = []
    for e in range(1, 21):
        for n in range(1, 5 + e % 5):
            rows.append((f"{e}_{n}", _sentence(rng, f"E{e}S{n}")))
        rows.append((f"{e}_{10 + e % 5}", "Too short here."))
    return _write_tsv(tmp_path / "editorials.txt", rows)


def _origin(question: str, sentences: dict[str, int]) -> int:
    """The editorial whose sentence the cloze ``question`` was made from (exactly one must match)."""
    pattern = re.compile(re.escape(question).replace(re.escape(BLANK), ".+?"))
    found = [editorial for sentence, editorial in sentences.items() if pattern.fullmatch(sentence)]
    assert len(found) == 1, (question, found)
    return found[0]


def _editorial_of(example) -> int:
    return int(example.id.split("-")[1])


def test_answers_are_their_sentence_span_in_the_context(editorial_file):
    editorials = {e.number: e for e in read_editorials(editorial_file)}
    answerable = [x for split in cloze_splits(editorial_file).values() for x in split if not x.is_impossible]
    assert answerable
    for example in answerable:
        (text, start), = example.answers
        assert example.context[start:start + len(text)] == text
        assert example.question.count(BLANK) == 1
        editorial = editorials[_editorial_of(example)]
        index = max(i for i, s in enumerate(editorial.starts) if s <= start)  # the sentence holding the answer
        sentence, offset = editorial.sentences[index], start - editorial.starts[index]
        assert example.question == sentence[:offset] + BLANK + sentence[offset + len(text):]
        words = text.split()
        assert 1 <= len(words) <= 4 and all(word.isalpha() for word in words)
        assert words[0].lower() not in STOPWORDS and words[-1].lower() not in STOPWORDS
        assert "Too short" not in example.question


def test_answer_offset_is_in_its_own_sentence_not_an_earlier_repeat(tmp_path):
    # Every sentence has the same words: any answer also occurs in the first sentence.
    rows = [(f"{e}_{n}", f"Harbor bridges and subway tunnels need repair, tag E{e}S{n} says.")
            for e in (1, 2, 3) for n in range(1, 5)]
    splits = cloze_splits(_write_tsv(tmp_path / "same.txt", rows), validation_fraction=0.3, test_fraction=0.3,
                          questions_per_context=3, unanswerable_fraction=0)
    examples = [x for split in splits.values() for x in split]
    assert len(examples) == 9
    assert any("E1S1" not in x.question for x in examples)
    for example in examples:
        (text, start), = example.answers
        tag = re.search(r"E\d+S\d+", example.question).group()
        sentence = f"Harbor bridges and subway tunnels need repair, tag {tag} says."
        sentence_start = example.context.index(sentence)
        assert sentence_start <= start and start + len(text) <= sentence_start + len(sentence)
        assert example.context[start:start + len(text)] == text


def test_context_is_sentences_in_numeric_order(tmp_path):
    rows = [("7_1", "First sentence of the piece."), ("7_10", "Tenth sentence comes last."),
            ("7_2", "Second sentence in between.")]
    editorial, = read_editorials(_write_tsv(tmp_path / "order.txt", rows))
    assert editorial.sentence_numbers == (1, 2, 10)
    assert editorial.context == "First sentence of the piece. Second sentence in between. Tenth sentence comes last."
    assert [editorial.context[s:].startswith(t) for s, t in zip(editorial.starts, editorial.sentences)] == [True] * 3


def test_splits_share_no_editorial_and_cover_all(editorial_file):
    splits = cloze_splits(editorial_file, validation_fraction=0.2, test_fraction=0.2)
    by_split = {name: {_editorial_of(x) for x in examples} for name, examples in splits.items()}
    assert {name: len(numbers) for name, numbers in by_split.items()} == {"train": 12, "validation": 4, "test": 4}
    assert set.union(*by_split.values()) == set(range(1, 21))
    assert not (by_split["train"] & by_split["validation"] or by_split["train"] & by_split["test"]
                or by_split["validation"] & by_split["test"])
    contexts = {name: {x.context for x in examples} for name, examples in splits.items()}
    assert sum(map(len, contexts.values())) == len(set.union(*contexts.values())) == 20
    ids = [x.id for examples in splits.values() for x in examples]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("fraction", [1 / 3, 0.5, 0.1])
def test_unanswerable_questions_come_from_other_editorials_of_the_same_split(editorial_file, fraction):
    sentences = {s: e.number for e in read_editorials(editorial_file) for s in e.sentences}
    splits = cloze_splits(editorial_file, validation_fraction=0.2, test_fraction=0.2, unanswerable_fraction=fraction)
    for name, examples in splits.items():
        members = {_editorial_of(x) for x in examples}
        impossible = [x for x in examples if x.is_impossible]
        answerable = len(examples) - len(impossible)
        assert len(impossible) == round(answerable * fraction / (1 - fraction)) > 0
        for example in impossible:
            origin = _origin(example.question, sentences)
            assert example.answers == [] and origin != _editorial_of(example) and origin in members, name
        for example in examples:
            if not example.is_impossible:
                assert _origin(example.question, sentences) == _editorial_of(example)


def test_questions_per_context_is_capped_by_eligible_sentences(editorial_file):
    editorials = read_editorials(editorial_file)
    splits = cloze_splits(editorial_file, questions_per_context=6, unanswerable_fraction=0)
    counts = {}
    for example in (x for examples in splits.values() for x in examples):
        counts[_editorial_of(example)] = counts.get(_editorial_of(example), 0) + 1
    # editorial e has 4 + e % 5 sentences long enough to ask about (the "Too short" one never counts)
    assert counts == {e.number: min(6, 4 + e.number % 5) for e in editorials}


def test_same_seed_same_questions_other_seed_other_questions(editorial_file):
    first, again = cloze_splits(editorial_file, split_seed=3), cloze_splits(editorial_file, split_seed=3)
    assert first == again
    assert [[x.source for x in v] for v in first.values()] == [[x.source for x in v] for v in again.values()]
    other = cloze_splits(editorial_file, split_seed=4)
    assert {x.id for x in other["test"]} != {x.id for x in first["test"]}


def test_questions_do_not_depend_on_the_hash_seed(editorial_file, tmp_path):
    # String seeds must not go through hash(): run in two interpreters with different PYTHONHASHSEED.
    script = ("import sys; from distilprune.cloze_qa import cloze_splits, write_squad_json; "
              "write_squad_json(cloze_splits(sys.argv[1])['train'], sys.argv[2])")
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"train-{hash_seed}.json"
        subprocess.run([sys.executable, "-c", script, editorial_file, str(out)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_squad_json_round_trip(editorial_file, tmp_path):
    splits = cloze_splits(editorial_file, validation_fraction=0.2, test_fraction=0.2)
    for name, examples in splits.items():
        path = write_squad_json(examples, tmp_path / f"{name}.json")
        assert read_squad_file(path) == examples
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["version"] == "v2.0"
        paragraphs = [p for article in document["data"] for p in article["paragraphs"]]
        assert len(paragraphs) == len({x.context for x in examples})  # one paragraph per editorial
        assert all(qa["is_impossible"] == (qa["answers"] == []) for p in paragraphs for qa in p["qas"])


def test_unicode_text_keeps_code_point_offsets(tmp_path):
    rows = []
    for e in range(1, 11):
        rows += [(f"{e}_1", f"Die Bürger von Zürich lieben ihre naïve Café Kultur sehr E{e}."),
                 (f"{e}_2", f"東京 の 市民 は 早朝 に 散歩 する E{e} ことを 好む。"),
                 (f"{e}_3", f"Straße für Fußgänger öffnet heute früh wieder E{e} 🚲 überall.")]
    splits = cloze_splits(_write_tsv(tmp_path / "unicode.txt", rows), validation_fraction=0.2, test_fraction=0.2,
                          questions_per_context=3, unanswerable_fraction=0.25)
    examples = [x for split in splits.values() for x in split]
    answered = [x.answers[0] for x in examples if x.answers]
    assert len(answered) == 30 and any(not text.isascii() for text, _ in answered)
    for example in examples:
        for text, start in example.answers:
            assert example.context[start:start + len(text)] == text
    path = write_squad_json(examples, tmp_path / "unicode.json")
    assert read_squad_file(path) == examples
    assert "Zürich" in path.read_text(encoding="utf-8")


def test_long_sentence_is_cut_around_the_blank(tmp_path):
    long = " ".join(f"word{i}" for i in range(30)) + " the harbor bridge " + " ".join(f"tail{i}" for i in range(30))
    rows = [(f"{e}_1", long.replace("word0", f"E{e}")) for e in range(1, 6)]
    splits = cloze_splits(_write_tsv(tmp_path / "long.txt", rows), validation_fraction=0.2, test_fraction=0.2,
                          unanswerable_fraction=0)
    for example in (x for split in splits.values() for x in split):
        assert example.answers[0][0] in ("harbor", "bridge", "harbor bridge")
        words = example.question.split()
        assert words[0] == "..." and words[-1] == "..."
        assert len(words) - 2 - 1 + len(example.answers[0][0].split()) == MAX_QUESTION_WORDS
        assert example.question[4:-4] in example.context.replace(example.answers[0][0], BLANK, 1)


def test_bad_files_and_settings_are_clear_errors(tmp_path, editorial_file):
    with pytest.raises(DataError, match="header 'id<TAB>sentiment<TAB>text'"):
        read_editorials(_write_tsv(tmp_path / "a.txt", [("1_1", "Some text here.")], header="id,text"))
    with pytest.raises(DataError, match=r"b\.txt:3: .*not 'editorial_sentence"):
        read_editorials(_write_tsv(tmp_path / "b.txt", [("1_1", "Fine."), ("one", "Bad id.")]))
    with pytest.raises(DataError, match="occurs twice"):
        read_editorials(_write_tsv(tmp_path / "c.txt", [("1_1", "Fine."), ("1_1", "Again.")]))
    with pytest.raises(ConfigError, match="leaves no editorial for training"):
        cloze_splits(editorial_file, validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="unanswerable_fraction=1"):
        cloze_splits(editorial_file, unanswerable_fraction=1)
    with pytest.raises(DataError, match="leave 1 for the test split, which needs at least 2 .unanswerable"):
        cloze_splits(editorial_file, validation_fraction=0.1, test_fraction=0.05)


def _cached(name: str) -> bool:
    asset = assets.ASSETS[name]
    return (assets.cache_root() / "assets" / f"{asset.name}-{asset.version}" / ".complete").is_file()


@pytest.mark.skipif(not _cached("nyt-editorials"), reason="the nyt-editorials asset is not cached")
def test_real_editorials_make_sane_splits():
    path = assets.fetch("nyt-editorials", progress=False)
    editorials = read_editorials(path)
    assert len(editorials) == 498 and sum(len(e.sentences) for e in editorials) == 5190
    splits = cloze_splits(path)
    contexts = {name: {x.context for x in examples} for name, examples in splits.items()}
    assert {name: len(c) for name, c in contexts.items()} == {"train": 398, "validation": 50, "test": 50}
    for name, examples in splits.items():
        answerable = sum(not x.is_impossible for x in examples)
        assert answerable == 3 * len(contexts[name])  # every editorial has 3 sentences to ask about
        assert len(examples) - answerable == round(answerable / 2)
    sentence_split = {}
    for name, examples in splits.items():
        for editorial in (e for e in editorials if e.context in contexts[name]):
            for sentence in editorial.sentences:
                assert sentence_split.setdefault(sentence, name) == name  # no sentence text in two splits
    ids = [x.id for examples in splits.values() for x in examples]
    assert len(ids) == len(set(ids))
