"""Extractive question answering: start/end logits of a question's windows -> answer text and span.

Standalone (standard library and numpy only): serving bundles carry a copy of this file, and the
export, the verifier and every server read answers through it, so they all decide alike.

**Windows.** A question with a long context is cut into overlapping windows (question first, context
second); the model scores every token of every window with a start logit and an end logit. Each
window comes with its ``offsets``: per token, the ``(start, end)`` character span of a context token
in the context (end exclusive), or None for a question, special or padding token.

**Candidates.** In each window, the ``n_best`` highest start logits and the ``n_best`` highest end
logits are paired; a pair ``(s, e)`` is a candidate when both tokens are context tokens (offsets not
None), ``s <= e``, and the answer is at most ``max_answer_tokens`` tokens long (``e - s + 1``). Its
text is ``context[offsets[s][0]:offsets[e][1]]``.

**Score.** A candidate's score is ``start_logits[s] + end_logits[e]``, the sum of two raw logits (the
log of an unnormalized probability of the span; the rule of the BERT reference ``run_squad.py`` and
Hugging Face's ``run_qa.py``). The best candidate over all windows of the question is the answer.
Scores are comparable between candidates of one question; they are not probabilities.

**No answer (SQuAD v2.0).** The null score is ``start_logits[0] + end_logits[0]`` (the [CLS] token,
trained as "no answer in this window"), the minimum over the question's windows (a window that does
not see the answer also scores [CLS] high, so the most confident window decides, as ``run_qa.py``
does). With a ``null_threshold``, the answer is "no answer" when ``null_score - best score >
null_threshold``. The threshold is chosen on validation questions with :func:`best_null_threshold`
(the rule of the official v2.0 evaluation's ``find_best_thresh``). Without a threshold (SQuAD v1.1)
the best span is always the answer; "no answer" then only means that no window has a valid span.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_N_BEST = 20  # start and end positions tried per window
DEFAULT_MAX_ANSWER_TOKENS = 30  # longest answer, in tokens
CLS_INDEX = 0  # the position whose start + end logits are the null ("no answer") score

Offsets = Sequence[tuple[int, int] | None]


def _window_candidates(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Offsets, n_best: int,
                       max_answer_tokens: int) -> list[tuple[float, int, int]]:
    """Valid spans of one window as ``(score, start_token, end_token)`` (unsorted).

    Args:
        start_logits, end_logits: (seq,) logits of the window's tokens; positions at or past
            ``len(offsets)`` (batch padding) are never chosen.
        offsets: (tokens,) character span of each context token, None elsewhere.
    """
    usable = min(len(offsets), start_logits.shape[0], end_logits.shape[0])
    order_start = np.argsort(-start_logits[:usable], kind="stable")[:n_best]
    order_end = np.argsort(-end_logits[:usable], kind="stable")[:n_best]
    candidates = []
    for start in order_start.tolist():
        if offsets[start] is None:
            continue
        for end in order_end.tolist():
            if offsets[end] is None or end < start or end - start + 1 > max_answer_tokens:
                continue
            candidates.append((float(start_logits[start] + end_logits[end]), start, end))
    return candidates


def candidate_answers(start_logits: Sequence, end_logits: Sequence, offsets: Sequence[Offsets], context: str,
                      n_best: int = DEFAULT_N_BEST,
                      max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS) -> list[dict]:
    """The ``n_best`` best spans of one question over all its windows, best first.

    Args:
        start_logits, end_logits: per window, (seq,) float logits (a (windows, seq) array works too).
        offsets: per window, (tokens,) ``(start, end)`` character span of each context token, None for
            question, special and padding tokens.
        context: the question's context; offsets index it.
        n_best: start and end positions tried per window, and candidates returned.
        max_answer_tokens: longest answer, in tokens.
    Returns:
        ``[{"text", "start", "end", "score", "window", "start_token", "end_token"}]``: ``start``/``end``
        character offsets into ``context`` (end exclusive), ``score`` = start logit + end logit.
    """
    if not len(start_logits) == len(end_logits) == len(offsets):
        raise ValueError(f"{len(start_logits)} start, {len(end_logits)} end logit rows and {len(offsets)} offset "
                         f"lists: expected one of each per window")
    scored = []
    for window, (starts, ends, window_offsets) in enumerate(zip(start_logits, end_logits, offsets)):
        starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
        for score, start, end in _window_candidates(starts, ends, window_offsets, n_best, max_answer_tokens):
            scored.append((score, window, start, end))
    scored.sort(key=lambda candidate: -candidate[0])  # stable: ties keep window, then start order
    answers = []
    for score, window, start, end in scored[:n_best]:
        char_start, char_end = offsets[window][start][0], offsets[window][end][1]
        answers.append({"text": context[char_start:char_end], "start": int(char_start), "end": int(char_end),
                        "score": score, "window": window, "start_token": start, "end_token": end})
    return answers


def null_score(start_logits: Sequence, end_logits: Sequence) -> float:
    """The question's "no answer" score: min over windows of ``start[0] + end[0]`` (module docstring)."""
    per_window = [float(starts[CLS_INDEX]) + float(ends[CLS_INDEX]) for starts, ends in zip(start_logits, end_logits)]
    return min(per_window)


def best_answer(start_logits: Sequence, end_logits: Sequence, offsets: Sequence[Offsets], context: str,
                n_best: int = DEFAULT_N_BEST, max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
                null_threshold: float | None = None) -> dict:
    """The answer to one question from the logits of all its windows (arguments: :func:`candidate_answers`).

    Args:
        null_threshold: SQuAD v2.0: answer "no answer" when ``null_score - best score > null_threshold``.
            None (SQuAD v1.1): always answer with the best span.
    Returns:
        ``{"text", "start", "end", "score", "no_answer", "null_score_diff"}``. With an answer:
        ``context[start:end] == text`` (character offsets, end exclusive) and ``score`` is the span's
        start logit + end logit. With no answer: ``text`` is ``""``, ``start``/``end`` are None and
        ``score`` is the null score. ``null_score_diff`` = null score - best span score (None when no
        window has a valid span): the quantity the threshold is compared with, and the input of
        :func:`best_null_threshold`.
    """
    candidates = candidate_answers(start_logits, end_logits, offsets, context, n_best, max_answer_tokens)
    null = null_score(start_logits, end_logits)
    if not candidates:
        return {"text": "", "start": None, "end": None, "score": null, "no_answer": True, "null_score_diff": None}
    best = candidates[0]
    difference = null - best["score"]
    if null_threshold is not None and difference > null_threshold:
        return {"text": "", "start": None, "end": None, "score": null, "no_answer": True,
                "null_score_diff": difference}
    return {"text": best["text"], "start": best["start"], "end": best["end"], "score": best["score"],
            "no_answer": False, "null_score_diff": difference}


def best_null_threshold(null_score_diffs: Sequence[float], has_answer: Sequence[bool],
                        answered_scores: Sequence[float]) -> tuple[float, float]:
    """The "no answer" threshold that maximizes the mean score over validation questions.

    A question is answered with its best span when its ``null_score_diff <= threshold`` and gets "no
    answer" otherwise. Answering scores ``answered_scores[i]`` (the F1, or EM, of the best span against
    the gold answers: 0 on an unanswerable question); "no answer" scores 1 on an unanswerable question
    and 0 on an answerable one. As the official v2.0 evaluation's ``find_best_thresh``, the questions
    are visited in increasing ``null_score_diff`` and the best cumulative score wins; questions with
    equal differences are switched together, so the returned threshold reproduces the returned score.

    Args:
        null_score_diffs: (questions,) null score - best span score (``best_answer``'s
            ``null_score_diff``); NaN for a question without any valid span (always "no answer").
        has_answer: (questions,) whether the question has a gold answer.
        answered_scores: (questions,) score in [0, 1] of the best span's text.
    Returns:
        ``(threshold, mean score)``. When answering nothing is best, the threshold is 1 below the
        smallest difference (every question then gets "no answer").
    """
    diffs = np.asarray(null_score_diffs, dtype=np.float64)
    has = np.asarray(has_answer, dtype=bool)
    answered = np.asarray(answered_scores, dtype=np.float64)
    if not diffs.shape == has.shape == answered.shape or diffs.ndim != 1 or diffs.size == 0:
        raise ValueError(f"null_score_diffs {diffs.shape}, has_answer {has.shape} and answered_scores "
                         f"{answered.shape} must be equal non-empty (questions,) arrays")
    abstained = (~has).astype(np.float64)  # score of "no answer"
    gain = answered - abstained  # change of the total when the question is answered instead
    valid = ~np.isnan(diffs)
    total = float(abstained.sum())
    best_total = total
    best_threshold = float(diffs[valid].min()) - 1.0 if valid.any() else 0.0
    order = np.argsort(diffs[valid], kind="stable")
    sorted_diffs, sorted_gain = diffs[valid][order], gain[valid][order]
    position = 0
    while position < sorted_diffs.size:
        group_end = position
        while group_end < sorted_diffs.size and sorted_diffs[group_end] == sorted_diffs[position]:
            group_end += 1
        total += float(sorted_gain[position:group_end].sum())
        if total > best_total:
            best_total, best_threshold = total, float(sorted_diffs[position])
        position = group_end
    return best_threshold, best_total / diffs.size
