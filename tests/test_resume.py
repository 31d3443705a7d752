"""Exact resume, divergence guard and checkpoint hygiene.

The kill-and-resume test runs the real entry point with the same seed on a tiny local teacher:
once uninterrupted, and SIGKILLed in the middle of pruning (while the density is still falling; the
kill is injected by tests/kill_after_step.py, which wraps the same entry point) then resumed with ``resume=<run dir>`` -- once right after step 13 (the last resume checkpoint is the
end-of-epoch one at step 12) and once after step 19 (resumes mid-epoch from step 15). On CPU the two runs must end
bit-identical: same final student weights (torch.equal), same kept heads / FFN widths, same density
and validation accuracy. Tolerance: none.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import KILL_AFTER_STEP, save_tiny_teacher, write_sentiment_csv


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    teacher = save_tiny_teacher(root / "teacher")
    data = write_sentiment_csv(root / "data.csv", rows=120)
    return root, teacher, data


def _args(teacher: Path, data: Path, out: Path) -> list[str]:
    # 96 train examples / batch 8 = 12 steps per epoch, 3 epochs = 36 steps; pruning runs from
    # step 3 (warmup 0.1) to step 28 (cooldown 0.2); dropout is on (the tiny teacher's 0.1).
    return [
        "recipe=quickstart", f"output_dir={out}", f"teacher.model={teacher}", "teacher.finetuned=true",
        f"data.dataset={data}", "data.text_column=sentence", "data.max_seq_len=16",
        "student.num_layers=2", "student.init_layers=[0,2]", "train.epochs=3", "train.batch_size=8",
        "train.precision=32-true", "train.progress_bar=false", "train.checkpoint_every_steps=5",
        "tracking.wandb=false", "export.enabled=false", "pruning.keep_at_densities=[0.8]",
        "distill.teacher_cache=false",
    ]


def _run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in (out / "quickstart").iterdir()]
    return run_dir


def _final_state(run_dir: Path) -> tuple[dict, dict]:
    final = run_dir / "checkpoints" / "final"
    return load_file(str(final / "model.safetensors")), json.loads((final / "checkpoint_info.json").read_text())


@pytest.fixture(scope="module")
def straight_runs(tiny_setup, launch):
    """Uninterrupted runs, made once per variant: {extra args: run dir}."""
    root, teacher, data = tiny_setup
    made: dict[tuple, Path] = {}

    def get(extra: tuple[str, ...]) -> Path:
        if extra not in made:
            out = root / f"straight-{len(made)}"
            straight = launch(*_args(teacher, data, out), *extra)
            assert straight.returncode == 0, straight.stderr[-3000:]
            made[extra] = _run_dir(out)
        return made[extra]

    return get


@pytest.mark.parametrize(
    "kill_after, resumes_from, extra",
    [(13, 12, ()), (13, 12, ("train.checkpoint_every_steps=6",)), (19, 15, ()), (31, 30, ("pruning.fill=true",))],
    ids=["epoch-end", "step-save-due-at-epoch-end", "mid-epoch", "after-fill"],
)
def test_sigkill_mid_pruning_then_resume_ends_identical(tiny_setup, straight_runs, launch, kill_after, resumes_from, extra):
    root, teacher, data = tiny_setup
    # the checkpoint interval changes no weight: those runs compare with the default straight run
    straight_run = straight_runs(tuple(e for e in extra if not e.startswith("train.checkpoint_every_steps")))
    out = root / f"killed-{kill_after}-{len(extra)}-{'-'.join(extra)}"
    killed = launch(str(kill_after), *_args(teacher, data, out), *extra, entry=KILL_AFTER_STEP)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = _run_dir(out)
    assert not (run_dir / "checkpoints" / "final").exists()
    last = torch.load(run_dir / "resume" / "last.ckpt", weights_only=True)
    # resume checkpoints every 5 steps and at each epoch end (12 steps per epoch)
    assert last["global_step"] == resumes_from
    scores = {k: v for k, v in last["state_dict"].items() if k.startswith("pruner.scores.")}
    assert scores and not any(k.startswith("teacher") for k in last["state_dict"])
    assert ("filled_masks" in last["distilprune"]) == ("pruning.fill=true" in extra)  # the fill: step 29 of 36

    resumed = launch(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights_a, info_a = _final_state(straight_run)
    weights_b, info_b = _final_state(run_dir)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    for key in ("density", "val_acc", "step", "densities"):
        assert info_a[key] == info_b[key], key
    config_a = json.loads((straight_run / "checkpoints" / "final" / "student_config.json").read_text())
    config_b = json.loads((run_dir / "checkpoints" / "final" / "student_config.json").read_text())
    assert config_a["heads_per_layer"] == config_b["heads_per_layer"]
    assert config_a["ffn_width_per_layer"] == config_b["ffn_width_per_layer"]
    # the resumed run wrote its metrics under a new name; nothing from the first attempt was overwritten
    assert (run_dir / "metrics" / "distill").is_dir()
    assert any(p.name.startswith("distill-resumed-") for p in (run_dir / "metrics").iterdir())

    if kill_after == 13 and not extra:  # once is enough: a finished run cannot be resumed over
        again = launch(f"resume={run_dir}")
        assert again.returncode == 2 and "already finished" in again.stderr and "Traceback" not in again.stderr


def test_truncated_or_foreign_resume_checkpoint_is_a_clear_error(tiny_setup, tmp_path):
    root, _, _ = tiny_setup
    from distilprune.errors import ModelError
    from distilprune.train.resume import read_resume_checkpoint

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "distilprune": {"format": 1}, "global_step": 1}, good)
    assert read_resume_checkpoint(good)["global_step"] == 1
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ModelError, match="truncated or was not written by distilprune"):
        read_resume_checkpoint(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": {"w": torch.ones(3)}}, foreign)
    with pytest.raises(ModelError, match="not a distilprune resume checkpoint"):
        read_resume_checkpoint(foreign)

    class Evil:  # a pickle that would run code: weights_only refuses it
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Evil(), "distilprune": {}}, evil)
    with pytest.raises(ModelError, match="cannot be read safely"):
        read_resume_checkpoint(evil)


def test_nan_loss_stops_with_step_and_cause_and_keeps_last_good_checkpoint(tiny_setup, monkeypatch, capsys):
    root, teacher, data = tiny_setup
    import distilprune.train.modules as modules
    from distilprune.train.cli import train

    real_kd = modules.kd_kl_loss
    calls = {"n": 0}

    def kd_that_blows_up(student_logits, teacher_logits, temperature):
        calls["n"] += 1
        loss = real_kd(student_logits, teacher_logits, temperature)
        return loss * float("nan") if calls["n"] > 7 else loss  # step index 7 (the 8th step) diverges

    monkeypatch.setattr(modules, "kd_kl_loss", kd_that_blows_up)
    out = root / "diverged"
    code = train([*_args(teacher, data, out), "train.checkpoint_every_steps=2"])
    assert code == 3
    err = capsys.readouterr().err
    assert "at step 7" in err and "learning rate" in err and "precision" in err
    run_dir = _run_dir(out)
    last = torch.load(run_dir / "resume" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6  # the last checkpoint before the bad step, untouched
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (run_dir / "checkpoints" / "final").exists()


def test_student_checkpoints_hold_no_teacher_and_teacher_stays_frozen(tiny_teacher, tmp_path):
    from distilprune.config import load_recipe
    from distilprune.students import DistilBertStudent, student_from_teacher
    from distilprune.train.modules import DistillationModule

    recipe = load_recipe(["recipe=quickstart"])
    student = student_from_teacher(tiny_teacher, 2, [0, 2])
    module = DistillationModule(student, tiny_teacher, recipe.distill, recipe.train, 2, recipe.pruning)
    module.train()
    assert not tiny_teacher.training and all(not p.requires_grad for p in tiny_teacher.parameters())
    assert not any(k.startswith("teacher") for k in module.state_dict())
    teacher_tensors = {id(p) for p in tiny_teacher.parameters()}
    assert not any(id(p) in teacher_tensors for p in module.parameters())

    kept, _ = module.kept_student()  # what KeepStudentCheckpoint writes: masks folded, scores dropped
    saved = kept.save(tmp_path / "student")
    weights = load_file(str(saved / "model.safetensors"))
    assert all(k.startswith(("distilbert.", "pre_classifier.", "classifier.")) for k in weights)
    assert not any("teacher" in k or "scores" in k or "parametrizations" in k for k in weights)
    student_bytes = sum(t.numel() * t.element_size() for t in kept.state_dict().values())
    teacher_bytes = sum(t.numel() * t.element_size() for t in tiny_teacher.state_dict().values())
    size = (saved / "model.safetensors").stat().st_size
    assert student_bytes <= size < student_bytes + 65536 < student_bytes + teacher_bytes  # header only on top
    assert DistilBertStudent.load(saved).num_parameters() == kept.num_parameters()
