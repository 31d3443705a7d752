"""Binary masks from learned block scores, with straight-through gradients (Lagunas et al. 2021).

Scores have one entry per weight block: shape (out_features / block_rows, in_features / block_cols).
The mask is binary in the forward pass; in the backward pass the gradient reaching the mask goes to
the scores unchanged (straight-through estimator), so scores learn from the loss which blocks
matter ("movement": a block whose weights move away from zero gains score).
"""

from __future__ import annotations

import torch


class TopKBinarizer(torch.autograd.Function):
    """Keep exactly ``round(keep_fraction * scores.numel())`` highest-scoring blocks (at least 1)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep_fraction: float) -> torch.Tensor:
        kept = kept_count(scores.numel(), keep_fraction)
        mask = torch.zeros_like(scores)
        mask.view(-1)[torch.topk(scores.detach().view(-1), kept, sorted=False).indices] = 1.0
        return mask

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


class ThresholdBinarizer(torch.autograd.Function):
    """Keep blocks whose ``sigmoid(score)`` exceeds ``threshold``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        return (torch.sigmoid(scores.detach()) > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


def kept_count(total: int, keep_fraction: float) -> int:
    return max(1, min(total, int(round(keep_fraction * total))))


def block_mask(scores: torch.Tensor, method: str, value: float) -> torch.Tensor:
    """Block-level mask: ``method`` is "topk" (value = keep fraction) or "sigmoid_threshold"."""
    if method == "topk":
        return TopKBinarizer.apply(scores, value)
    if method == "sigmoid_threshold":
        return ThresholdBinarizer.apply(scores, value)
    raise ValueError(f"unknown mask method {method!r}")


def expand_blocks(mask: torch.Tensor, block_rows: int, block_cols: int) -> torch.Tensor:
    """(out/br, in/bc) block mask -> (out, in) weight mask."""
    return mask.repeat_interleave(block_rows, dim=0).repeat_interleave(block_cols, dim=1)


def cubic_schedule(step: int, total_steps: int, initial: float, final: float, warmup: float, cooldown: float) -> float:
    """Cubic interpolation from ``initial`` to ``final`` (Zhu & Gupta 2017).

    ``initial`` for the first ``warmup`` fraction of training, ``final`` for the last ``cooldown``
    fraction, and ``final + (initial - final) * (1 - p)^3`` in between, p the progress in [0, 1].
    Monotonic, and exactly at its endpoints.
    """
    start = warmup * total_steps
    end = (1.0 - cooldown) * total_steps
    if step <= start:
        return initial
    if step >= end or end <= start:
        return final
    progress = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - progress) ** 3


def linear_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """0 before ``start`` * total, 1 after ``end`` * total, linear in between (the L1 ramp)."""
    lo, hi = start * total_steps, end * total_steps
    if step <= lo:
        return 0.0
    if step >= hi or hi <= lo:
        return 1.0
    return (step - lo) / (hi - lo)


def sigmoid_l1(scores: list[torch.Tensor]) -> torch.Tensor:
    """Mean of sigmoid(scores) over every block: the L1 penalty that pushes scores down."""
    total = sum(s.numel() for s in scores)
    return sum(torch.sigmoid(s).sum() for s in scores) / max(1, total)


__all__ = [
    "TopKBinarizer", "ThresholdBinarizer", "block_mask", "expand_blocks", "cubic_schedule",
    "linear_ramp", "sigmoid_l1", "kept_count",
]
