import math

import torch

from distilprune.losses import hidden_state_loss, kd_kl_loss


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(4, 3)
    assert kd_kl_loss(logits, logits, 2.0).item() < 1e-6
    assert kd_kl_loss(logits, logits.flip(-1) + 1, 2.0).item() > 0


def test_kd_loss_equals_explicit_kl_times_t_squared():
    student, teacher, temperature = torch.randn(5, 2), torch.randn(5, 2), 3.0
    p = torch.softmax(teacher / temperature, -1)
    q = torch.softmax(student / temperature, -1)
    explicit = (p * (p.log() - q.log())).sum(-1).mean() * temperature**2
    assert math.isclose(kd_kl_loss(student, teacher, temperature).item(), explicit.item(), rel_tol=1e-5)


def test_hidden_loss_ignores_padding():
    hidden = torch.randn(2, 5, 8)
    other = hidden.clone()
    other[:, 3:] = torch.randn(2, 2, 8)  # differs only on padded positions
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    assert hidden_state_loss(hidden, other, mask, "mse").item() < 1e-9
    assert hidden_state_loss(hidden, other, mask, "cosine").item() < 1e-6
