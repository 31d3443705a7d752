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


def test_hidden_loss_values_on_real_tokens():
    student, teacher = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    real = mask.bool()
    mse = (student[real] - teacher[real]).pow(2).mean(-1).mean()
    cosine = (1 - torch.nn.functional.cosine_similarity(student[real], teacher[real], dim=-1)).mean()
    assert math.isclose(hidden_state_loss(student, teacher, mask, "mse").item(), mse.item(), rel_tol=1e-5)
    assert math.isclose(hidden_state_loss(student, teacher, mask, "cosine").item(), cosine.item(), rel_tol=1e-5)


def test_hidden_loss_projects_a_narrower_student_and_trains_the_projection():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4), torch.randn(2, 3, 8)  # student width 4, teacher width 8
    mask = torch.ones(2, 3, dtype=torch.long)
    projection = torch.nn.Linear(4, 8)
    loss = hidden_state_loss(student, teacher, mask, "mse", projection)
    assert math.isclose(loss.item(), (projection(student) - teacher).pow(2).mean().item(), rel_tol=1e-5)
    loss.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def test_distillation_pairs_each_student_block_with_its_source_teacher_block(tiny_teacher, batch):
    """A student copied from teacher layers [0, 1] computes exactly what those layers compute, so its
    hidden-state loss against the teacher's blocks 1 and 2 (hidden_states[src + 1]) is zero; a
    student of layers [0, 2] matches block 1 only (its second block sees block 0's output, not 1's)."""
    from distilprune.config import load_recipe
    from distilprune.students import student_from_teacher
    from distilprune.train.modules import DistillationModule

    recipe = load_recipe(["recipe=quickstart", "distill.hidden_loss=mse", "distill.hidden_weight=1.0",
                          "pruning.enabled=false"])
    input_ids, attention_mask = batch
    losses = {}
    for layers in ([0, 1], [0, 2]):
        student = student_from_teacher(tiny_teacher, 2, layers).eval()
        module = DistillationModule(student, tiny_teacher, recipe.distill, recipe.train, 2, recipe.pruning)
        assert module.hidden_projection is None  # same width: nothing to learn between them
        _, teacher_hidden = module.teacher_outputs({"input_ids": input_ids, "attention_mask": attention_mask})
        with torch.no_grad():
            _, student_hidden = student(input_ids, attention_mask, output_hidden_states=True)
        losses[tuple(layers)] = [hidden_state_loss(student_hidden[i + 1], teacher_hidden[i], attention_mask, "mse").item()
                                 for i in range(2)]
    assert max(losses[(0, 1)]) < 1e-8
    assert losses[(0, 2)][0] < 1e-8 < losses[(0, 2)][1]
