"""Bootstrap intervals for a task's metric over an evaluation split, and for paired differences.

An accuracy measured on ~1,000 test sentences moves by about a point and a half between equally good
models (the binomial standard error at 85% is 1.1 points), so every accuracy in a report carries a 95%
percentile-bootstrap interval over the examples. Two models scored on the *same* examples are compared
by a paired bootstrap: each resample draws example indices once and scores both models on them, so
what the two get right in common cancels and the interval of the difference is much narrower than the
two single intervals suggest.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
_CHUNK = 250  # resamples drawn at a time: 250 x 1,057 int64 indices = 2 MB


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Mean of each of ``resamples`` bootstrap resamples of ``values`` (examples, ...) over axis 0."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    out = []
    for start in range(0, resamples, _CHUNK):
        indices = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
        out.append(values[indices].mean(axis=1))
    return np.concatenate(out)


def _interval(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return float(low), float(high)


def _as_units(units) -> np.ndarray:
    """(examples, k) float64; a 1-D array of per-example correctness becomes (examples, 1)."""
    array = np.asarray(units, dtype=np.float64)
    array = array.reshape(-1, 1) if array.ndim == 1 else array
    if array.shape[0] == 0:
        raise ValueError("no examples: a bootstrap interval needs at least one scored example")
    return array


def mean_of_first(mean_units: np.ndarray) -> np.ndarray:
    """Accuracy: the mean of per-example correctness (unit 0)."""
    return mean_units[..., 0]


def accuracy_interval(units, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED,
                      statistic=mean_of_first) -> dict:
    """A metric and its percentile-bootstrap interval over the examples.

    Args:
        units: (examples,) bool or 0/1 correctness (accuracy), or (examples, k) per-example units
            whose mean over a resample gives the metric through ``statistic`` (e.g. per-sentence
            true positives, false positives and false negatives for entity F1).
        statistic: (..., k) mean units -> (...,) metric; the task's ``statistic``.

    Returns:
        {"value": metric, "low", "high": interval bounds, "level", "resamples", "examples"}.
    """
    values = _as_units(units)
    low, high = _interval(statistic(_resampled_means(values, resamples, seed)), level)
    return {"value": float(statistic(values.mean(axis=0))), "low": low, "high": high, "level": level,
            "resamples": resamples, "examples": int(values.shape[0])}


def paired_difference_interval(units_a, units_b, level: float = LEVEL, resamples: int = RESAMPLES,
                               seed: int = SEED, statistic=mean_of_first) -> dict:
    """Metric of A minus metric of B on the same examples, with a paired bootstrap interval: each
    resample draws example indices once and scores both models on them.

    Args:
        units_a, units_b: per-example units (see :func:`accuracy_interval`) for the same examples
            in the same order.

    Returns:
        {"difference": metric(A) - metric(B), "low", "high", "level", "resamples", "examples"} (fractions).
    """
    a, b = _as_units(units_a), _as_units(units_b)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same examples for both models, got {a.shape[0]} and {b.shape[0]}")
    k = a.shape[1]
    means = _resampled_means(np.concatenate([a, b], axis=1), resamples, seed)  # (resamples, 2k)
    low, high = _interval(statistic(means[:, :k]) - statistic(means[:, k:]), level)
    difference = statistic(a.mean(axis=0)) - statistic(b.mean(axis=0))
    return {"difference": float(difference), "low": low, "high": high, "level": level,
            "resamples": resamples, "examples": int(a.shape[0])}
