"""Facts about block pruning and compaction on tiny students (hidden 64, heads of 32)."""

import numpy as np
import pytest
import torch

from distilprune.errors import ConfigError, ModelError
from distilprune.export.onnx_export import export_student, ort_logits, ort_session
from distilprune.pruning import BlockPruner, compact, cubic_schedule
from distilprune.pruning.masks import TopKBinarizer, kept_count
from distilprune.students import DistilBertStudent, StudentConfig

BLOCKS = {"query": [32, 32], "key": [32, 32], "value": [32, 32], "attn_out": [32, 32]}


def tiny_student(layers=3, heads=2, ffn=16, seed=0) -> DistilBertStudent:
    torch.manual_seed(seed)
    config = StudentConfig(vocab_size=72, hidden_size=64, head_dim=32, heads_per_layer=[heads] * layers,
                           ffn_width_per_layer=[ffn] * layers, max_position_embeddings=64)
    return DistilBertStudent(config).eval()


def test_topk_keeps_exactly_the_requested_fraction():
    scores = torch.randn(12, 12)
    for fraction in (1.0, 0.5, 0.33, 0.1, 0.01):
        mask = TopKBinarizer.apply(scores, fraction)
        assert int(mask.sum()) == kept_count(144, fraction) == max(1, round(fraction * 144))
        assert mask[scores >= scores.flatten().topk(int(mask.sum())).values.min()].all()


def test_cubic_schedule_hits_its_endpoints_and_is_monotonic():
    values = [cubic_schedule(step, 1000, 1.0, 0.25, warmup=0.1, cooldown=0.2) for step in range(1001)]
    assert values[0] == 1.0 and values[100] == 1.0
    assert values[800] == 0.25 and values[1000] == 0.25
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_gradients_reach_the_scores(batch):
    student = tiny_student().train()
    pruner = BlockPruner(student, "topk", BLOCKS, prune_ffn=True)
    pruner.values = {"attention": 0.5, "ffn": 0.5}
    student(*batch).sum().backward()
    for key, scores in pruner.scores.items():
        assert scores.grad is not None and scores.grad.abs().sum() > 0, key


def _prune_to(student, attention=0.5, ffn=0.25, seed=1, method="topk"):
    pruner = BlockPruner(student, method, BLOCKS, prune_ffn=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for scores in pruner.scores.values():
            scores.copy_(torch.randn(scores.shape, generator=generator))
        # Force structure: layer 0 loses head 1 entirely (both value blocks of its 32 rows).
        pruner.scores["layer0_value"][1] = -100
        if method == "sigmoid_threshold":  # thresholds can empty a whole matrix: layer 2 loses every head
            pruner.scores["layer2_value"][:] = -100
            pruner.scores["layer2_attn_out"][:] = -100
    pruner.values = {"attention": attention, "ffn": ffn}
    return pruner


def test_compacted_logits_equal_masked_logits_with_expected_widths(batch):
    student = tiny_student()
    pruner = _prune_to(student, attention=0.5, ffn=0.25)
    masked = pruner.fold(student)
    small = compact(masked)
    with torch.no_grad():
        diff = (small(*batch) - student(*batch)).abs().max().item()
    assert diff < 1e-4
    assert small.config.heads_per_layer[0] == 1
    assert small.config.ffn_width_per_layer == [4, 4, 4]  # 25% of 16 rows kept by topk in every layer
    assert small.num_parameters() < student.num_parameters()


def test_sigmoid_threshold_can_remove_every_head_of_a_layer(batch):
    student = tiny_student()
    pruner = _prune_to(student, attention=0.3, ffn=0.3, method="sigmoid_threshold")
    small = compact(pruner.fold(student))
    with torch.no_grad():
        assert (small(*batch) - student(*batch)).abs().max().item() < 1e-4
    assert small.config.heads_per_layer[2] == 0 and small.config.heads_per_layer[0] <= 1


def test_compacted_model_saves_loads_and_exports(tmp_path, batch):
    student = tiny_student()
    small = compact(_prune_to(student, method="sigmoid_threshold", attention=0.3, ffn=0.3).fold(student))
    small.save(tmp_path / "ckpt")
    loaded = DistilBertStudent.load(tmp_path / "ckpt")
    with torch.no_grad():
        expected = small(*batch)
        assert torch.equal(loaded(*batch), expected)
    exported = export_student(loaded, tmp_path / "bundle")
    got = ort_logits(ort_session(exported.fp32_path, 1), *batch)
    assert np.abs(got - expected.numpy()).max() < 1e-4
    # Layers 0 and 1 keep heads (different counts); layer 2 has none: two fused Attention nodes.
    assert exported.fused_ops["Attention"] == 2


def test_unknown_target_and_bad_block_shape_are_explained():
    with pytest.raises(ConfigError, match="Unknown pruning target 'querry'"):
        BlockPruner(tiny_student(), "topk", {"querry": [32, 32]}, prune_ffn=False)
    with pytest.raises(ConfigError, match=r"Block shape \[24, 32\] does not divide the query weight"):
        BlockPruner(tiny_student(), "topk", {"query": [24, 32]}, prune_ffn=False)


def test_architecture_outside_the_table_is_refused():
    with pytest.raises(ModelError, match="not in distilprune's architecture table"):
        BlockPruner(torch.nn.Linear(4, 4), "topk", BLOCKS, prune_ffn=True)


def test_densities_follow_the_keep_fraction():
    student = tiny_student()
    pruner = BlockPruner(student, "topk", BLOCKS, prune_ffn=True)
    assert pruner.densities()["overall"] == 1.0
    pruner.values = {"attention": 0.5, "ffn": 0.25}
    densities = pruner.densities()
    assert densities["attention"] == 0.5 and densities["ffn"] == 0.25
    assert 0.25 < densities["overall"] < 0.5


def test_layers_left_out_stay_dense_and_count_as_kept(batch):
    student = tiny_student(layers=3)
    pruner = BlockPruner(student, "topk", BLOCKS, prune_ffn=True, layers=[0, 1])
    assert sorted({key.split("_")[0] for key in pruner.scores}) == ["layer0", "layer1"]
    last = student.distilbert.transformer.layer[2]
    assert not hasattr(last.attention.q_lin, "parametrizations") and not hasattr(last.ffn.lin1, "parametrizations")
    pruner.values = {"attention": 0.5, "ffn": 0.25}
    densities = pruner.densities()
    # Per-target keys cover the pruned layers; the groups count layer 2's weights as kept:
    # attention (2 x 0.5 + 1) / 3, FFN (2 x 0.25 + 1) / 3 (every layer has the same shapes).
    assert densities["layer0_query"] == 0.5 and "layer2_query" not in densities
    assert densities["attention"] == pytest.approx(2 / 3) and densities["ffn"] == pytest.approx(0.5)
    small = compact(pruner.fold(student))
    assert small.config.heads_per_layer[2] == 2 and small.config.ffn_width_per_layer[2] == 16
    with torch.no_grad():
        assert (small(*batch) - student(*batch)).abs().max().item() < 1e-4


def test_layer_outside_the_student_is_explained():
    with pytest.raises(ConfigError, match=r"pruning.layers has \[3\], outside the student's layers 0..2"):
        BlockPruner(tiny_student(layers=3), "topk", BLOCKS, prune_ffn=True, layers=[0, 3])


def test_fill_keeps_the_function_and_structure_and_fills_the_kept_heads(batch):
    student = tiny_student().train()
    pruner = _prune_to(student, attention=0.5, ffn=0.25)
    student.eval()
    with torch.no_grad():
        before = student(*batch)
    heads_before = compact(pruner.fold(student)).config
    frozen = pruner.fill()
    with torch.no_grad():
        after = student(*batch)
    # Released blocks restart at zero: the function is exactly the pruned one at the moment of the fill.
    assert (after - before).abs().max().item() < 1e-6
    small = compact(pruner.fold(student))
    assert small.config.heads_per_layer == heads_before.heads_per_layer
    assert small.config.ffn_width_per_layer == heads_before.ffn_width_per_layer == [4, 4, 4]
    # Layer 0 lost head 1 (value rows 32..63 masked); head 0 is now whole in Q, K, V and O.
    assert frozen["layer0_query"][:32].all() and frozen["layer0_value"][:32].all()
    assert frozen["layer0_attn_out"][:, :32].all() and not frozen["layer0_value"][32:].any()
    densities = pruner.densities()
    assert densities["layer0_value"] == 0.5 and densities["ffn"] == 0.25
    # Released weights train; the scores no longer get gradients (masks are frozen).
    student.train()
    student(*batch).sum().backward()
    q = student.distilbert.transformer.layer[0].attention.q_lin.parametrizations.weight.original
    assert q.grad[:32].abs().gt(0).float().mean() > 0.9
    assert all(scores.grad is None for scores in pruner.scores.values())


def test_fill_state_restores_without_touching_weights(batch):
    student = tiny_student()
    pruner = _prune_to(student)
    frozen = {k: v.clone() for k, v in pruner.fill().items()}
    with torch.no_grad():  # training after the fill moves the released weights away from zero
        for p in student.parameters():
            p.add_(0.01)
        expected = student(*batch)
    pruner.frozen = None  # as in a freshly built pruner of a resumed run
    pruner.restore_fill(frozen)
    with torch.no_grad():
        assert torch.equal(student(*batch), expected)
    with pytest.raises(ValueError, match="lacks masks"):
        pruner.restore_fill({})
