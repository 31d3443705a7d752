"""Schedules of a run: the learning rate (linear warmup, linear decay) and the L1 penalty ramp."""

from __future__ import annotations

import math

import pytest
import torch

from distilprune.pruning import linear_ramp
from distilprune.pruning.masks import sigmoid_l1


def _learning_rates(total_steps: int, warmup_ratio: float, peak: float = 0.1) -> list[float]:
    from distilprune.train.modules import linear_warmup_decay

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = linear_warmup_decay(optimizer, total_steps, warmup_ratio)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_learning_rate_rises_linearly_to_the_peak_then_decays_linearly_to_zero():
    rates = _learning_rates(total_steps=10, warmup_ratio=0.2, peak=0.1)  # 2 warmup steps
    expected = [0.05, 0.1] + [0.1 * (10 - step) / 8 for step in range(2, 10)]
    assert rates == pytest.approx(expected)
    assert max(rates) == pytest.approx(0.1) and rates.index(max(rates)) == 1
    assert rates[-1] == pytest.approx(0.1 / 8)  # the last step still learns; the step after it is 0


def test_learning_rate_warmup_is_at_least_one_step():
    rates = _learning_rates(total_steps=5, warmup_ratio=0.0, peak=1.0)
    assert rates == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25])


def test_l1_ramp_is_zero_before_start_one_after_end_and_linear_between():
    total = 100
    ramp = [linear_ramp(step, total, 0.1, 0.5) for step in range(total + 1)]
    assert all(value == 0.0 for value in ramp[:11])  # through 10% of training
    assert all(value == 1.0 for value in ramp[50:])  # from 50% of training
    assert ramp[30] == pytest.approx(0.5) and ramp[20] == pytest.approx(0.25)
    assert all(a <= b for a, b in zip(ramp, ramp[1:]))
    assert linear_ramp(7, total, 0.3, 0.3) == 0.0 and linear_ramp(31, total, 0.3, 0.3) == 1.0  # a step


def test_l1_penalty_is_the_mean_sigmoid_over_every_block():
    scores = [torch.zeros(2, 3), torch.full((4,), math.log(3.0))]  # sigmoid: 0.5 (6 blocks), 0.75 (4 rows)
    assert float(sigmoid_l1(scores)) == pytest.approx((6 * 0.5 + 4 * 0.75) / 10)
