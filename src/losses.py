"""Distillation losses as pure functions.

Shapes: logits (batch, num_labels); hidden states (batch, seq, hidden); mask (batch, seq).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2, averaged over the batch (Hinton et al. 2015).

    The T^2 factor keeps the gradient scale of the soft term independent of T.
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    kind: str,
    projection: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Match student block outputs to teacher block outputs on real (unpadded) tokens.

    Args:
        kind: "cosine" (1 - cosine similarity per token) or "mse".
        projection: maps the student width to the teacher width when they differ.
    """
    if projection is not None:
        student_hidden = projection(student_hidden)
    mask = attention_mask.to(student_hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
    tokens = mask.sum().clamp_min(1.0)
    if kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
        return (per_token * mask.squeeze(-1)).sum() / tokens
    if kind == "mse":
        per_token = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(dim=-1)
        return (per_token * mask.squeeze(-1)).sum() / tokens
    raise ValueError(f"unknown hidden loss {kind!r}")
