"""Facts about the DistilBERT student built from a BERT teacher."""

import pytest
import torch

from distilprune.architectures import ARCHITECTURES, LAYER_PARTS, layer_part
from distilprune.errors import ModelError
from distilprune.students import DistilBertStudent, StudentConfig, student_from_teacher
from distilprune.students.from_teacher import default_init_layers


def test_student_keeping_all_layers_reproduces_teacher_logits(tiny_teacher, batch):
    student = student_from_teacher(tiny_teacher, num_layers=3).eval()
    input_ids, attention_mask = batch
    with torch.no_grad():
        expected = tiny_teacher(input_ids=input_ids, attention_mask=attention_mask).logits
        actual = student(input_ids, attention_mask)
    assert (actual - expected).abs().max().item() < 1e-4


def test_student_copies_the_chosen_teacher_layers(tiny_teacher):
    student = student_from_teacher(tiny_teacher, num_layers=2, init_layers=[0, 2])
    assert student.config.source_layers == [0, 2]
    for student_index, teacher_index in enumerate([0, 2]):
        for part in LAYER_PARTS:
            mine, theirs = layer_part(student, student_index, part), layer_part(tiny_teacher, teacher_index, part)
            assert torch.equal(mine.weight, theirs.weight), part


def test_student_parameter_names_follow_distilbert():
    names = set(DistilBertStudent(StudentConfig(50, 64, 32, [2], [128])).state_dict())
    table = ARCHITECTURES["distilbert"]
    for part in ("query", "ffn_in", "ffn_out", "attn_norm"):
        assert f"{table.layers}.0.{table.layer[part]}.weight" in names
    assert not any("token_type" in name for name in names)


def test_default_init_layers_include_first_and_last():
    assert default_init_layers(6, 4) == [0, 2, 3, 5]
    assert default_init_layers(12, 1) == [11]


@pytest.mark.parametrize(
    "num_layers, init_layers, fragment",
    [(4, None, "cannot be deeper"), (2, [0, 3], "outside the teacher's layers"), (2, [0], "exactly one")],
)
def test_bad_layer_choices_are_explained(tiny_teacher, num_layers, init_layers, fragment):
    with pytest.raises(ModelError, match=fragment):
        student_from_teacher(tiny_teacher, num_layers=num_layers, init_layers=init_layers)


def test_save_then_load_gives_identical_logits(tmp_path, tiny_teacher, batch):
    student = student_from_teacher(tiny_teacher, num_layers=2).eval()
    student.save(tmp_path)
    loaded = DistilBertStudent.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(student(*batch), loaded(*batch))
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_checkpoint_gives_a_clear_error(tmp_path, tiny_teacher):
    student_from_teacher(tiny_teacher, num_layers=2).save(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match="truncated or were not written by distilprune"):
        DistilBertStudent.load(tmp_path)


def test_layers_with_no_heads_or_no_ffn_still_run(batch):
    config = StudentConfig(vocab_size=80, hidden_size=64, head_dim=32, heads_per_layer=[2, 0, 1], ffn_width_per_layer=[128, 0, 7])
    student = DistilBertStudent(config).eval()
    with torch.no_grad():
        logits = student(*batch)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_hidden_states_are_embeddings_plus_one_per_layer(tiny_teacher, batch):
    student = student_from_teacher(tiny_teacher, num_layers=2).eval()
    logits, hidden = student(*batch, output_hidden_states=True)
    assert len(hidden) == 3 and hidden[-1].shape == (3, 12, 64)


@pytest.mark.parametrize("heads, widths", [([2, 2], [128, 128]), ([2, 1], [128, 40]), ([2, 0], [128, 0])])
def test_cls_only_last_layer_gives_the_full_logits_and_gradients(batch, heads, widths):
    """Logits-only forward runs the last block for [CLS] alone; with hidden states every row runs.
    Both must give the same logits and the same gradients. Dropout is off (eval): in training the
    two forms draw dropout masks of different sizes, so they agree in distribution, not bitwise."""
    torch.manual_seed(0)
    student = DistilBertStudent(StudentConfig(int(batch[0].max()) + 1, 64, 32, heads, widths)).eval()
    results = []
    for full in (False, True):
        student.zero_grad()
        out = student(*batch, output_hidden_states=full)
        logits = out[0] if full else out
        logits.square().sum().backward()
        grads = {name: p.grad.clone() for name, p in student.named_parameters() if p.grad is not None}
        results.append((logits.detach(), grads))
    (cls_logits, cls_grads), (full_logits, full_grads) = results
    assert (cls_logits - full_logits).abs().max().item() < 1e-5
    assert cls_grads.keys() == full_grads.keys()
    for name in cls_grads:
        assert torch.allclose(cls_grads[name], full_grads[name], atol=1e-5), name


def test_init_from_a_kept_checkpoint_is_checked_against_recipe_and_teacher(tmp_path, tiny_teacher, batch):
    from distilprune.config import load_recipe
    from distilprune.errors import ConfigError
    from distilprune.tasks import default_task
    from distilprune.train.distill_stage import build_student

    task = default_task()
    saved = student_from_teacher(tiny_teacher, num_layers=2, init_layers=[0, 2]).eval()
    saved.save(tmp_path / "final")
    recipe = load_recipe(["recipe=quickstart", f"student.init_from={tmp_path / 'final'}", "student.num_layers=2"])
    student = build_student(recipe, tiny_teacher, task).eval()
    with torch.no_grad():
        assert torch.equal(student(*batch), saved(*batch))  # the checkpoint, not fresh teacher layers
    deeper = load_recipe(["recipe=quickstart", f"student.init_from={tmp_path / 'final'}", "student.num_layers=3"])
    with pytest.raises(ConfigError, match=r"it has 2 layers but student.num_layers is 3 \(set student.num_layers=2\)"):
        build_student(deeper, tiny_teacher, task)
    other_labels = load_recipe(["recipe=quickstart", f"student.init_from={tmp_path / 'final'}", "student.num_layers=2"])
    from conftest import tiny_bert
    with pytest.raises(ConfigError, match="it predicts 2 labels, the teacher 3"):
        build_student(other_labels, tiny_bert(num_labels=3), task)
