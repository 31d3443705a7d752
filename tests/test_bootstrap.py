"""Bootstrap intervals (export/bootstrap.py) and the latency-round summaries (export/latency_rounds.py)."""

from __future__ import annotations

import numpy as np
import pytest

from distilprune.export import bootstrap
from distilprune.export.latency_rounds import NOISY_SPREAD, ratio, runs_per_round, summarize


def test_interval_covers_the_true_accuracy_at_about_the_stated_rate():
    # 200 evaluation splits of 400 examples drawn from a model that is right 80% of the time:
    # a 95% interval must contain 0.80 for about 95% of them (binomial sd of the rate over 200: 1.5%).
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(200):
        correct = rng.random(400) < 0.80
        interval = bootstrap.accuracy_interval(correct, resamples=400, seed=trial)
        hits += interval["low"] <= 0.80 <= interval["high"]
    assert 0.90 <= hits / 200 <= 0.99


def test_interval_width_matches_the_binomial_standard_error():
    correct = np.arange(1000) % 5 != 0  # exactly 80% right
    interval = bootstrap.accuracy_interval(correct)
    assert interval["value"] == pytest.approx(0.8)
    width, expected = interval["high"] - interval["low"], 2 * 1.96 * np.sqrt(0.8 * 0.2 / 1000)
    assert interval["low"] < 0.8 < interval["high"] and width == pytest.approx(expected, rel=0.15)


def test_same_seed_same_interval_other_seed_other_interval():
    correct = np.random.default_rng(0).random(300) < 0.7
    assert bootstrap.accuracy_interval(correct, seed=5) == bootstrap.accuracy_interval(correct, seed=5)
    assert bootstrap.accuracy_interval(correct, seed=5) != bootstrap.accuracy_interval(correct, seed=6)


def test_paired_interval_is_narrower_than_unpaired_for_correlated_predictions():
    rng = np.random.default_rng(2)
    a = rng.random(1000) < 0.85
    b = a.copy()
    flips = rng.choice(1000, size=30, replace=False)  # B differs from A on 3% of the examples
    b[flips] = ~b[flips]
    paired = bootstrap.paired_difference_interval(a, b)
    ia, ib = bootstrap.accuracy_interval(a), bootstrap.accuracy_interval(b)
    assert paired["difference"] == pytest.approx(a.mean() - b.mean())
    assert paired["low"] <= paired["difference"] <= paired["high"]
    # unpaired: the difference of two independent intervals is about sqrt(2) x one interval wide
    unpaired_width = np.hypot(ia["high"] - ia["low"], ib["high"] - ib["low"])
    assert paired["high"] - paired["low"] < 0.5 * unpaired_width


def test_identical_models_have_a_zero_width_paired_interval():
    a = np.random.default_rng(3).random(200) < 0.6
    d = bootstrap.paired_difference_interval(a, a)
    assert d["difference"] == d["low"] == d["high"] == 0.0


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap.accuracy_interval([])
    with pytest.raises(ValueError, match="same examples"):
        bootstrap.paired_difference_interval([1, 0, 1], [1, 0])


# ---- latency rounds: the summary the report prints ----

def test_round_summary_median_of_medians_spread_and_noise_flag():
    steady = [[2.0, 2.1, 2.2], [2.1, 2.1, 2.1], [2.0, 2.05, 2.1]]
    s = summarize(steady)
    assert s["p50"] == 2.1 and s["spread"] == [2.05, 2.1] and s["rounds"] == 3 and s["runs"] == 9
    assert s["p95"] == 2.2 and s["noisy"] is False
    burst = steady[:2] + [[4.0, 4.2, 4.4]]  # one round hit by load elsewhere on the machine
    b = summarize(burst)
    assert b["p50"] == 2.1  # the median of round medians ignores the one bad round ...
    assert b["noisy"] is True and b["spread"][1] - b["spread"][0] > NOISY_SPREAD * b["p50"]  # ... and says so


def test_ratio_is_the_median_of_per_round_ratios():
    teacher = {"round_p50s": [20.0, 40.0, 22.0]}  # round 2: the whole machine was twice as slow
    student = {"round_p50s": [4.0, 8.0, 4.4]}
    assert ratio(teacher, student) == 5.0


def test_runs_are_split_over_rounds_with_a_floor():
    assert runs_per_round(50, 5) == 10 and runs_per_round(100, 5) == 20 and runs_per_round(30, 5) == 10
    assert runs_per_round(5, 5) == 5  # a tiny budget stays tiny: never more per round than asked for in all
    assert runs_per_round(30, 5, headline=False) == 6 and runs_per_round(5, 5, headline=False) == 1


# ---- several seeds: mean ± sd of the headline numbers (bench/seeds.py) ----

def _seeds_module():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seeds", Path(__file__).resolve().parents[1] / "bench" / "seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(teacher_acc: float, int8_acc: float, int8_p50: float, teacher_p50: float = 20.0) -> dict:
    lat = {"p50": int8_p50, "p95": int8_p50 * 1.1, "vs_teacher": teacher_p50 / int8_p50}
    return {"teacher": {"accuracy": teacher_acc, "latency_ms": {"pytorch_fp32": {"p50": teacher_p50, "p95": teacher_p50}}},
            "checkpoints": [{"name": "final", "accuracy": {"pytorch_fp32": int8_acc, "onnx_fp32": int8_acc, "onnx_int8": int8_acc},
                             "latency_ms": {"onnx_int8": lat}}]}


def test_seeds_aggregate_mean_and_sample_sd():
    seeds = _seeds_module()
    summary = seeds.aggregate([_report(0.84, 0.80, 4.0), _report(0.86, 0.82, 5.0), _report(0.85, 0.84, 4.0)])
    acc = summary["final onnx_int8 accuracy %"]
    assert acc["n"] == 3 and acc["mean"] == pytest.approx(82.0) and acc["sd"] == pytest.approx(2.0)
    assert summary["teacher accuracy %"]["mean"] == pytest.approx(85.0)
    assert summary["final onnx_int8 speedup vs teacher"]["values"] == pytest.approx([5.0, 4.0, 5.0])
    text = seeds.to_markdown(summary, ["a", "b", "c"], "python bench/seeds.py --reports a b c")
    assert "| final onnx_int8 accuracy % | 82.00 ± 2.00 | 3 | 80.00, 82.00, 84.00 |" in text
