"""Distributed data parallel on CPU: 2 processes over gloo against 1 process, same global batch.

train.batch_size is the global batch; each of the 2 ranks takes one contiguous half of every global
batch (distilprune.batching.ShuffledBatchSampler), DDP averages the gradients, so with dropout off both
runs take the same optimizer steps up to float summation order. Tolerance: final student weights within
1e-4 (absolute), identical kept head counts and FFN widths, validation accuracy equal.
"""

from __future__ import annotations

import json

from safetensors.torch import load_file

from conftest import save_tiny_teacher, write_sentiment_csv


def test_two_process_ddp_matches_one_process(tmp_path, launch):
    teacher = save_tiny_teacher(tmp_path / "teacher")
    config = json.loads((teacher / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # no dropout: comparable runs
    (teacher / "config.json").write_text(json.dumps(config))
    data = write_sentiment_csv(tmp_path / "data.csv", rows=120)  # 96 train = 6 global batches of 16
    common = [
        "recipe=quickstart", f"teacher.model={teacher}", "teacher.finetuned=true", f"data.dataset={data}",
        "data.text_column=sentence", "data.max_seq_len=16", "student.num_layers=2", "student.init_layers=[0,2]",
        "train.epochs=2", "train.batch_size=16", "train.precision=32-true", "train.accelerator=cpu",
        "train.progress_bar=false", "tracking.wandb=false", "export.enabled=false", "pruning.keep_at_densities=[]",
    ]
    single = launch(*common, f"output_dir={tmp_path / 'one'}", "train.devices=1")
    assert single.returncode == 0, single.stderr[-3000:]
    double = launch(*common, f"output_dir={tmp_path / 'two'}", "train.devices=2", "train.strategy=ddp")
    assert double.returncode == 0, double.stderr[-3000:]

    runs = {}
    for name in ("one", "two"):
        dirs = list((tmp_path / name / "quickstart").iterdir())
        assert len(dirs) == 1, f"{name}: every rank must share one run directory, found {dirs}"
        final = dirs[0] / "checkpoints" / "final"
        runs[name] = (load_file(str(final / "model.safetensors")),
                      json.loads((final / "checkpoint_info.json").read_text()),
                      json.loads((final / "student_config.json").read_text()),
                      json.loads((dirs[0] / "run_info.json").read_text()))
    (w1, info1, cfg1, run1), (w2, info2, cfg2, run2) = runs["one"], runs["two"]
    assert run1["processes"] == 1 and run2["processes"] == 2
    assert run1["train_steps"] == run2["train_steps"] == 12
    assert cfg1["heads_per_layer"] == cfg2["heads_per_layer"]
    assert cfg1["ffn_width_per_layer"] == cfg2["ffn_width_per_layer"]
    assert info1["val_acc"] == info2["val_acc"]
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert worst < 1e-4, f"largest weight difference between 1 and 2 processes: {worst:.2e}"
