"""Extractive QA building blocks: SQuAD readers and span checks, windows with the real MiniLM tokenizer
(answers across window boundaries), the official normalization and scores, and the post-processing of
start/end logits into answer text (n-best, length limit, context only, across windows, no answer)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from distilprune import assets, squad
from distilprune.errors import ConfigError, DataError
from distilprune.export.serving import answers
from distilprune.squad import AnswerSpanCheck, QAExample

ZURICH = "Zürich liegt an der Limmat. The Limmat river flows north from Lake Zürich — past the Großmünster."
BERN = "Bern is the federal city of Switzerland; the Aare loops around its old town."


def _span(context: str, text: str, occurrence: int = 0) -> dict:
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(text, start + 1)
    return {"text": text, "answer_start": start}


def _squad_v2_document() -> dict:
    return {"version": "v2.0", "data": [
        {"title": "Zürich", "paragraphs": [{"context": ZURICH, "qas": [
            {"id": "z1", "question": "Which river flows through Zürich?",
             "answers": [_span(ZURICH, "Limmat"), _span(ZURICH, "The Limmat river")], "is_impossible": False},
            {"id": "z2", "question": "  Which church is named?", "answers": [_span(ZURICH, "Großmünster")]},
            {"id": "z3", "question": "How many people live in Zürich?", "answers": [], "is_impossible": True,
             "plausible_answers": [_span(ZURICH, "Zürich")]},
        ]}]},
        {"title": "Bern", "paragraphs": [{"context": BERN, "qas": [
            {"id": "b1", "question": "Which river loops around Bern?", "answers": [_span(BERN, "the Aare")]},
        ]}]},
    ]}


def _write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def _row(example: QAExample) -> dict:
    return {"id": example.id, "question": example.question, "context": example.context,
            "answers": {"text": [t for t, _ in example.answers], "answer_start": [s for _, s in example.answers]}}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(assets.fetch("minilm-l6", progress=False)))


# ---------------------------------------------------------------------------------------------- readers


def test_squad_v2_reader_reads_answerable_and_unanswerable_questions_with_non_ascii_text(tmp_path):
    path = _write_json(tmp_path / "dev-v2.0.json", _squad_v2_document())
    z1, z2, z3, b1 = squad.read_squad_file(path)
    assert (z1.id, z1.context, z1.is_impossible) == ("z1", ZURICH, False)
    assert z1.answers == [("Limmat", ZURICH.index("Limmat")), ("The Limmat river", ZURICH.index("The Limmat"))]
    assert z2.answers == [("Großmünster", ZURICH.index("Großmünster"))]  # no is_impossible key: v1.1 style
    assert (z3.answers, z3.is_impossible) == ([], True)  # plausible_answers are not answers
    assert (b1.context, b1.answer_texts) == (BERN, ["the Aare"])
    assert z3.source == f"{path}: data[0].paragraphs[0].qas[2]"


def test_jsonl_file_and_hub_rows_read_the_same_questions_as_the_json_file(tmp_path):
    from_json = squad.read_squad_file(_write_json(tmp_path / "dev.json", _squad_v2_document()))
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text("\n".join(json.dumps(_row(e), ensure_ascii=False) for e in from_json) + "\n\n", encoding="utf-8")
    assert squad.read_squad_file(jsonl) == from_json
    assert squad.read_qa_jsonl(jsonl)[2].source == f"{jsonl}:3"
    hub_rows = [_row(e) for e in from_json]  # squad_v2 rows: unanswerable = empty answer lists
    assert squad.examples_from_hub_rows(hub_rows, "squad_v2 [validation]") == from_json


@pytest.mark.parametrize("contents, found", [
    ('{"rows": [{"question": "q"}]}', "top-level keys \\['rows'\\]"),
    ("EU B-ORG\nrejects O\n", "not JSON"),
    ('[{"question": "q"}]', "a JSON list"),
    ('{"data": [{"title": "no paragraphs"}]}', "data\\[0\\] has no 'paragraphs' list"),
])
def test_file_that_is_not_squad_format_is_an_error_showing_the_expected_shape(tmp_path, contents, found):
    path = tmp_path / "train.json"
    path.write_text(contents, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path} is not a SQuAD-format file \({found}\)\. Give a SQuAD"):
        squad.read_squad_file(path)


def test_missing_context_is_an_error_naming_the_question(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"id": "q7", "question": "Who?", "answers": {"text": [], "answer_start": []}}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:1 \(question id 'q7'\): missing or empty 'context'"):
        squad.read_squad_file(path)


def test_answer_that_is_not_at_its_start_is_an_error_naming_the_question_id(tmp_path):
    document = _squad_v2_document()
    shifted = BERN.index("the Aare") + 4  # 4 characters late: an error, never moved back to the nearby match
    document["data"][1]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "the Aare", "answer_start": shifted}]
    with pytest.raises(DataError, match=rf"question id 'b1'\): answer 'the Aare': the context holds 'Aare loo' at "
                                        rf"answer_start {shifted}, not the answer text 'the Aare'"):
        squad.read_squad_file(_write_json(tmp_path / "dev.json", document))


def test_answer_span_outside_the_context_is_an_error(tmp_path):
    document = _squad_v2_document()
    document["data"][1]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "the Aare", "answer_start": len(BERN) - 3}]
    with pytest.raises(DataError, match=rf"question id 'b1'\): answer 'the Aare': its span \[{len(BERN) - 3}, "
                                        rf"{len(BERN) + 5}\) lies outside the context \({len(BERN)} characters\)"):
        squad.read_squad_file(_write_json(tmp_path / "dev.json", document))


def test_drop_mode_counts_and_drops_bad_answers_and_questions_left_without_answers(tmp_path):
    document = _squad_v2_document()
    z1_answers = document["data"][0]["paragraphs"][0]["qas"][0]["answers"]
    z1_answers[1]["answer_start"] += 1  # one of z1's two answers shifted by a character: z1 keeps the other
    document["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 500  # b1's only answer
    check = AnswerSpanCheck("drop")
    examples = squad.read_squad_file(_write_json(tmp_path / "dev.json", document), check)
    assert [e.id for e in examples] == ["z1", "z2", "z3"]  # b1 dropped, never turned unanswerable
    assert examples[0].answers == [("Limmat", ZURICH.index("Limmat"))]
    assert [line.split(":")[0] for line in check.dropped] == ["z1", "b1"]
    assert check.dropped_questions == ["b1"]
    with pytest.raises(ConfigError, match="'shift' is unknown"):
        AnswerSpanCheck("shift")


def test_unanswerable_flag_with_answers_and_duplicate_ids_are_errors(tmp_path):
    document = _squad_v2_document()
    document["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = True
    with pytest.raises(DataError, match="question id 'z1'\\): marked is_impossible but has 2 answer"):
        squad.read_squad_file(_write_json(tmp_path / "a.json", document))
    document = _squad_v2_document()
    document["data"][1]["paragraphs"][0]["qas"][0]["id"] = "z2"
    with pytest.raises(DataError, match="question id 'z2' occurs twice"):
        squad.read_squad_file(_write_json(tmp_path / "b.json", document))


# --------------------------------------------------------------------------------------------- windows

LONG_CONTEXT = " ".join(f"Sentence {n} tells that the Café Ühl number {n} opened in district {n * 7}."
                        for n in range(40))  # 2762 characters: 15 windows of 64 tokens with a stride of 16


def _crossing_answer(tokenizer, question: str, max_seq_len: int, doc_stride: int) -> tuple[str, int]:
    """An answer (text, start char) of LONG_CONTEXT that begins 2 context tokens before the end of the
    first window and ends 2 tokens after it: the first window cuts it, the second holds it."""
    probe = QAExample("probe", question, LONG_CONTEXT, [], True)
    first, second = squad.windows_of_examples([probe], tokenizer, max_seq_len, doc_stride)[:2]
    first_spans = [span for span in first.offsets if span is not None]
    second_spans = [span for span in second.offsets if span is not None]
    start_char = first_spans[-2][0]
    end_char = second_spans[second_spans.index(first_spans[-1]) + 2][1]
    return LONG_CONTEXT[start_char:end_char], start_char


def test_windows_overlap_by_doc_stride_and_keep_offsets_of_context_tokens_only(tokenizer):
    question = "Where did Café Ühl open?"
    example = QAExample("w", question, LONG_CONTEXT, [], True)
    windows = squad.windows_of_examples([example], tokenizer, max_seq_len=64, doc_stride=16)
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    assert len(windows) >= 5
    for window in windows:
        assert len(window.input_ids) <= 64 and window.input_ids[0] == tokenizer.cls_token_id
        assert window.input_ids[1:1 + question_tokens] == tokenizer(question, add_special_tokens=False)["input_ids"]
        context_and_sep = len(window.input_ids) - question_tokens - 2
        assert window.token_type_ids == [0] * (question_tokens + 2) + [1] * context_and_sep
        assert window.attention_mask == [1] * len(window.input_ids)
        is_context = [span is not None for span in window.offsets]
        assert is_context == [0] * (question_tokens + 2) + [1] * (context_and_sep - 1) + [0]
        assert (window.start_position, window.end_position) == (0, 0)  # unanswerable: [CLS] everywhere
    for before, after in zip(windows, windows[1:]):
        shared_before = [span for span in before.offsets if span is not None][-16:]
        assert [span for span in after.offsets if span is not None][:16] == shared_before
    covered = [span for window in windows for span in window.offsets if span is not None]
    assert covered[0][0] == 0 and covered[-1][1] == len(LONG_CONTEXT)


def test_answer_crossing_a_window_boundary_is_labelled_cls_where_cut_and_by_tokens_where_whole(tokenizer):
    question = "Which café opened?"
    text, start_char = _crossing_answer(tokenizer, question, max_seq_len=64, doc_stride=16)
    assert " " in text and len(text) > 8  # several tokens, cut by the first window's end
    example = QAExample("x", question, LONG_CONTEXT, [(text, start_char)], False)
    windows = squad.windows_of_examples([example], tokenizer, max_seq_len=64, doc_stride=16)
    first, second = windows[0], windows[1]
    assert (first.start_position, first.end_position) == (0, 0)
    assert second.start_position > 0 and second.end_position >= second.start_position
    assert second.offsets[second.start_position][0] == start_char
    assert second.offsets[second.end_position][1] == start_char + len(text)
    answer_ids = second.input_ids[second.start_position:second.end_position + 1]
    assert tokenizer.decode(answer_ids) == tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])
    for window in windows:  # labelled exactly where the window's context holds the whole answer
        spans = [span for span in window.offsets if span is not None]
        holds = spans[0][0] <= start_char and spans[-1][1] >= start_char + len(text)
        assert (window.start_position > 0) == holds


def test_doc_stride_not_below_max_seq_len_and_a_question_longer_than_the_window_are_clear_errors(tokenizer):
    example = QAExample("long-q", "why " * 60, LONG_CONTEXT, [], True, source="dev.json:3")
    with pytest.raises(ConfigError, match="data.doc_stride=64 must be at least 0 and below data.max_seq_len=64"):
        squad.windows_of_examples([example], tokenizer, max_seq_len=64, doc_stride=64)
    with pytest.raises(DataError, match=r"dev.json:3 \(question id 'long-q'\): the question is 60 tokens long, so a "
                                        r"window of data.max_seq_len=64 tokens leaves 1 tokens"):
        squad.windows_of_examples([example], tokenizer, max_seq_len=64, doc_stride=16)
    short_context = QAExample("long-q-short-context", "why " * 58, "Because.", [], True)  # 3 tokens left, 2 used
    (window,) = squad.windows_of_examples([short_context], tokenizer, max_seq_len=64, doc_stride=16)
    assert [span for span in window.offsets if span is not None] == [(0, 7), (7, 8)]


# ------------------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("text, normalized", [
    ("The Limmat", "limmat"),
    ("  an apple, a   day!  ", "apple day"),
    ("Theory of the A-Team", "theory of ateam"),  # articles only as whole words; hyphen removed, words joined
    ("Großmünster.", "großmünster"),
    ("", ""),
])
def test_normalize_answer_as_the_official_script(text, normalized):
    assert squad.normalize_answer(text) == normalized


def test_exact_match_and_f1_on_hand_checked_cases():
    assert squad.exact_match("the Limmat.", "Limmat") == 1.0
    assert squad.exact_match("Limmat river", "Limmat") == 0.0
    assert squad.token_f1("Limmat river", "the Limmat") == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert squad.token_f1("river river Limmat", "Limmat river") == pytest.approx(0.8)  # p 2/3, r 1
    assert squad.token_f1("Aare", "Limmat") == 0.0
    assert squad.token_f1("", "") == 1.0 and squad.token_f1("Aare", "") == 0.0 and squad.token_f1("", "Aare") == 0.0


def test_scores_take_the_best_gold_answer_and_give_unanswerable_questions_their_own_breakdown(tmp_path):
    z1, z2, z3, b1 = squad.read_squad_file(_write_json(tmp_path / "dev.json", _squad_v2_document()))
    # z1 gold {Limmat, The Limmat river}: "the Limmat river flows" -> EM 0, F1 max(1/2, 4/5) = 0.8
    # z2 "Großmünster" -> 1, 1; z3 unanswerable, "" -> 1, 1; b1 gold "the Aare", "Lake Zürich" -> 0, 0
    scores = squad.score_predictions([z1, z2, z3, b1], {"z1": "the Limmat river flows", "z2": "the Großmünster",
                                                        "z3": "", "b1": "Lake Zürich"})
    np.testing.assert_allclose(scores.units, [[0, 0.8], [1, 1], [1, 1], [0, 0]])
    assert (scores.exact_match, scores.f1) == (pytest.approx(0.5), pytest.approx(0.7))
    assert scores.breakdown["HasAns"] == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx(0.6), "total": 3}
    assert scores.breakdown["NoAns"] == {"exact_match": 1.0, "f1": 1.0, "total": 1}
    answered_unanswerable = squad.score_predictions([z3], ["Zürich"])
    assert (answered_unanswerable.exact_match, answered_unanswerable.f1) == (0.0, 0.0)
    assert list(answered_unanswerable.breakdown) == ["NoAns"]
    only_article = QAExample("a", "Which word?", "Say the word.", [("the", 4)], False)
    assert squad.gold_answers(only_article) == [""]  # as the official script: normalizes to nothing


# ------------------------------------------------------------------------------------- post-processing

# [CLS] which river ? [SEP] alpha beta gamma delta [SEP] <pad>
CONTEXT = "alpha beta gamma delta"
OFFSETS = [None, None, None, None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]  # 10 tokens


def _logits(**values) -> np.ndarray:
    """(11,) logits (one padding position past the 10 tokens): 0 everywhere, ``p<i>=value`` at position i."""
    logits = np.zeros(len(OFFSETS) + 1)
    for key, value in values.items():
        logits[int(key[1:])] = value
    return logits


def test_best_span_is_the_highest_start_plus_end_inside_the_context():
    start, end = _logits(p1=9.0, p6=4.0, p10=8.0), _logits(p2=9.0, p7=3.0, p10=8.0)  # question / padding refused
    best = answers.best_answer([start], [end], [OFFSETS], CONTEXT)
    assert (best["text"], best["start"], best["end"], best["score"]) == ("beta gamma", 6, 16, 7.0)
    assert best["no_answer"] is False and best["null_score_diff"] == -7.0
    reversed_pair = answers.best_answer([_logits(p7=5.0, p6=1.0)], [_logits(p6=5.0, p8=2.0)], [OFFSETS], CONTEXT)
    assert reversed_pair["text"] == "gamma delta"  # (7, 6) has end < start; best valid: start 7, end 8


def test_n_best_limits_the_positions_tried_and_max_length_refuses_long_spans():
    start, end = _logits(p1=9.0, p5=3.0, p7=1.0), _logits(p1=9.0, p8=3.0)
    assert answers.best_answer([start], [end], [OFFSETS], CONTEXT, n_best=1)["no_answer"] is True  # only [q] tried
    assert answers.best_answer([start], [end], [OFFSETS], CONTEXT, n_best=2)["text"] == CONTEXT
    limited = answers.best_answer([start], [end], [OFFSETS], CONTEXT, max_answer_tokens=3)
    assert (limited["text"], limited["score"]) == ("gamma delta", 4.0)  # the 4-token span (score 6) refused
    top = answers.candidate_answers([start], [end], [OFFSETS], CONTEXT, n_best=3)  # starts 1, 5, 7; ends 1, 8, 0
    assert [(c["text"], c["score"], c["start_token"], c["end_token"]) for c in top] == [
        ("alpha beta gamma delta", 6.0, 5, 8), ("gamma delta", 4.0, 7, 8)]


def test_best_span_across_windows_maps_to_characters_of_the_whole_context():
    context = "one two three four five six"
    first_offsets = [None, None, (0, 3), (4, 7), (8, 13), (14, 18), None]
    second_offsets = [None, None, (8, 13), (14, 18), (19, 23), (24, 27), None]
    start = [np.array([1.0, 0, 2, 0, 0, 0, 0]), np.array([-1.0, 0, 0, 0, 4, 0, 0])]
    end = [np.array([1.0, 0, 2, 0, 0, 0, 0]), np.array([2.0, 0, 0, 0, 0, 4, 0])]
    best = answers.best_answer(start, end, [first_offsets, second_offsets], context)
    assert (best["text"], best["start"], best["end"], best["score"]) == ("five six", 19, 27, 8.0)
    assert best["null_score_diff"] == min(1.0 + 1.0, -1.0 + 2.0) - 8.0  # null: min over windows


def test_null_threshold_decides_no_answer_by_null_score_minus_best_span():
    start, end = _logits(p0=6.0, p6=2.0), _logits(p0=1.0, p6=3.0)  # null 7, best span "beta" 5: diff 2
    assert answers.best_answer([start], [end], [OFFSETS], CONTEXT)["text"] == "beta"  # v1.1: always answer
    answered = answers.best_answer([start], [end], [OFFSETS], CONTEXT, null_threshold=2.0)
    assert (answered["text"], answered["no_answer"], answered["null_score_diff"]) == ("beta", False, 2.0)
    abstained = answers.best_answer([start], [end], [OFFSETS], CONTEXT, null_threshold=1.5)
    assert abstained == {"text": "", "start": None, "end": None, "score": 7.0, "no_answer": True,
                         "null_score_diff": 2.0}


def test_best_null_threshold_maximizes_the_score_and_reproduces_it():
    diffs, has, answered_f1 = [-3.0, -1.0, 0.5, 2.0, np.nan], [True, False, True, False, False], [1.0, 0, 0.5, 0, 0]
    # all "no answer": 3 of 5; answering in diff order: +1 (4), -1 (3), +0.5 (3.5), -1 (2.5) -> best 4 at -3
    threshold, best = answers.best_null_threshold(diffs, has, answered_f1)
    assert (threshold, best) == (-3.0, pytest.approx(4 / 5))
    answered = np.array(diffs) <= threshold  # NaN never answers
    assert np.where(answered, answered_f1, ~np.array(has)).mean() == pytest.approx(best)
    assert answers.best_null_threshold([1.0, 2.0], [False, False], [0.0, 0.0]) == (0.0, 1.0)  # answer nothing
    tied = answers.best_null_threshold([1.0, 1.0], [True, False], [1.0, 0.0])  # switched together: no gain
    assert tied == (0.0, 0.5)


# ---------------------------------------------------------------------------------------------- round trip


def _round_trip_file(tmp_path, tokenizer) -> Path:
    """A SQuAD v2 file whose answers sit across, at and inside window boundaries, and one unanswerable."""
    crossing, crossing_start = _crossing_answer(tokenizer, "Which café opened?", 64, 16)
    probe = squad.windows_of_examples([QAExample("p", "Which café opened?", LONG_CONTEXT, [], True)], tokenizer,
                                      max_seq_len=64, doc_stride=16)
    # the last whole word of the second window: its last token is the window's last context token or close to it
    edge_end = max(end for _, end in filter(None, probe[1].offsets) if LONG_CONTEXT[end:end + 1] in (" ", "."))
    edge_start = LONG_CONTEXT.rfind(" ", 0, edge_end) + 1
    qas = [
        {"id": "cross", "question": "Which café opened?",
         "answers": [{"text": crossing, "answer_start": crossing_start}]},
        {"id": "edge", "question": "Which café opened?",
         "answers": [{"text": LONG_CONTEXT[edge_start:edge_end], "answer_start": edge_start}]},
        {"id": "first", "question": "Which café opened?", "answers": [_span(LONG_CONTEXT, "Sentence 0")]},
        {"id": "late", "question": "Which café opened?", "answers": [_span(LONG_CONTEXT, "Café Ühl number 37")]},
        {"id": "none", "question": "Which café closed?", "answers": [], "is_impossible": True},
    ]
    document = {"data": [{"paragraphs": [{"context": LONG_CONTEXT, "qas": qas}]}, _squad_v2_document()["data"][0]]}
    return _write_json(tmp_path / "round-trip.json", document)


def test_gold_labels_as_one_hot_logits_post_process_to_exactly_the_gold_answers(tmp_path, tokenizer):
    examples = squad.read_squad_file(_round_trip_file(tmp_path, tokenizer))
    windows = squad.windows_of_examples(examples, tokenizer, max_seq_len=64, doc_stride=16)
    width = max(len(w.input_ids) for w in windows) + 3  # padded batch: positions past a window are never chosen
    start_logits, end_logits = np.zeros((len(windows), width)), np.zeros((len(windows), width))
    for row, window in enumerate(windows):
        start_logits[row, window.start_position] = end_logits[row, window.end_position] = 10.0
    predictions = squad.predict_answers(examples, windows, start_logits, end_logits, null_threshold=0.0)
    for example, prediction in zip(examples, predictions):
        if example.answers:
            gold_text, gold_start = example.answers[0]
            assert (prediction["text"], prediction["start"]) == (gold_text, gold_start), example.id
            assert prediction["end"] == gold_start + len(gold_text) and not prediction["no_answer"]
        else:
            assert prediction["no_answer"] and prediction["text"] == "", example.id
    scores = squad.score_predictions(examples, [p["text"] for p in predictions])
    assert (scores.exact_match, scores.f1) == (1.0, 1.0)
    assert {"HasAns", "NoAns"} == set(scores.breakdown)
    spans = squad.predict_answers(examples, windows, start_logits, end_logits)  # no threshold: best span, diff
    threshold, validation_f1 = squad.choose_null_threshold(examples, spans)
    assert validation_f1 == 1.0
    assert max(s["null_score_diff"] for s, e in zip(spans, examples) if e.answers) <= threshold
    assert min(s["null_score_diff"] for s, e in zip(spans, examples) if not e.answers) > threshold


def test_answers_module_imports_only_stdlib_and_numpy():
    tree = ast.parse(Path(answers.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == {"numpy"}
