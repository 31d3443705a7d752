"""A run's task metric at initialization and after distillation, on its test split.

    python bench/init_vs_distilled.py runs/<recipe>/<time> [--checkpoint final]

The student at initialization is what the run started from: the recipe's teacher layers copied
into the 4-layer student (``build_student``), from the run's own (fine-tuned, cached) teacher. It is
scored exactly as the export scores a checkpoint (PyTorch fp32; for question answering the "no
answer" threshold chosen on validation for each model), beside the teacher and the kept checkpoint,
so "the student learned" is a measured difference, not a reading of the training loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="final", help="kept checkpoint to compare (default: final)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer

    from distilprune.config import load_recipe
    from distilprune.export import measure
    from distilprune.students import DistilBertStudent
    from distilprune.tasks import task_for
    from distilprune.teacher import load_teacher
    from distilprune.train.distill_stage import build_student

    torch.set_num_threads(args.threads)
    recipe = load_recipe([f"recipe={args.run_dir / 'recipe.yaml'}"])
    task = task_for(recipe)
    data = task.load()
    tokenizer = AutoTokenizer.from_pretrained(str(args.run_dir / "tokenizer"))
    source = json.loads((args.run_dir / "run_info.json").read_text())["teacher"]["source"]
    teacher = load_teacher(source, source, num_labels=None, auto_class=task.hf_auto_class).eval()
    torch.manual_seed(recipe.seed)
    models = {
        "teacher (PyTorch fp32)": (teacher, True),
        "student at initialization (PyTorch fp32)": (build_student(recipe, teacher, task).eval(), False),
        f"student {args.checkpoint} (PyTorch fp32)": (
            DistilBertStudent.load(args.run_dir / "checkpoints" / args.checkpoint), False),
    }
    collate = partial(task.collate, pad_token_id=tokenizer.pad_token_id or 0)
    max_len = recipe.data.max_seq_len
    test = DataLoader(task.tokenize(data.test, tokenizer, max_len), batch_size=recipe.data.eval_batch_size,
                      collate_fn=collate)
    validation = DataLoader(task.tokenize(data.validation, tokenizer, max_len), batch_size=recipe.data.eval_batch_size,
                            collate_fn=collate)
    print(f"{recipe.name}: {task.metric_label} on {len(data.test)} test examples ({args.run_dir})")
    print(f"{'model':<48} {task.metric_label:>10}  details")
    for name, (model, hf) in models.items():
        calibration = (task.calibrate(measure.rows_pytorch(model, validation, task, hf=hf), data.validation)
                       if task.calibrates else None)
        scored = task.score(measure.rows_pytorch(model, test, task, hf=hf), data.test, calibration)
        extra = {k: round(v, 4) for k, v in scored.details.items() if isinstance(v, float)}
        print(f"{name:<48} {100 * scored.value:>9.2f}%  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
