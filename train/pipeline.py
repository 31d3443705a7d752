"""The distillation pipeline: run directory -> data -> teacher -> student -> fit -> export -> report.

The steps live in their own modules (ranks, teacher_stage, distill_stage, resume, trainer); this
module puts them in order. Everything that can be wrong with the input is found before the run
directory exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from rich.console import Console

from distilprune.config import Recipe, load_recipe, save_recipe
from distilprune.tasks import task_for
from distilprune.precision import resolve_precision
from distilprune.train.distill_stage import build_student, check_student_plan, distill
from distilprune.train.ranks import is_rank_zero, make_run_dir, seed_everything, share_run_dir
from distilprune.train.resume import read_resume_checkpoint, resume_checkpoint_path, split_resume
from distilprune.train.teacher_stage import finetune_teacher, load_teacher_for_run
from distilprune.train.trainer import finish_wandb, log_report_to_wandb, quiet_libraries

# Lightning is imported where training starts, not here: a recipe or data mistake is reported in
# about two seconds instead of after the Lightning import.
console = Console(stderr=True)


def load_and_run(argv: list[str]) -> Path:
    """``recipe=NAME key=value ...`` or ``resume=<run dir>``: load the recipe and run it."""
    resume_dir, argv = split_resume(argv)
    if resume_dir is not None:
        return run(load_recipe([f"recipe={resume_dir / 'recipe.yaml'}"]), resume_dir)
    return run(load_recipe(argv))


def run(recipe: Recipe, resume_dir: Path | None = None) -> Path:
    """The whole pipeline. Returns the path of report.json (or the run directory without export)."""
    quiet_libraries()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    resume = None
    if resume_dir is not None:
        path = resume_checkpoint_path(resume_dir)
        resume = {"path": path, "checkpoint": read_resume_checkpoint(path)}
    seed_everything(recipe.seed)
    task = task_for(recipe)
    data = task.load()
    loaded = load_teacher_for_run(recipe, data, task)
    task.check_inputs(data, loaded.tokenizer, recipe.data.max_seq_len)
    # The student is copied from the teacher it distils: after fine-tuning, when there is one.
    student = None
    if loaded.finetune is not None and not recipe.student.init_from:
        check_student_plan(recipe, loaded.teacher)
    else:
        student = build_student(recipe, loaded.teacher, task)

    run_dir = _open_run_dir(recipe, resume_dir)
    if is_rank_zero():
        console.print(f"[bold]Data[/bold]: {data.source}: {data.info['rows']}")
    if loaded.finetune is not None:
        finetune_teacher(recipe, data, task, run_dir, loaded)
    if student is None:
        student = build_student(recipe, loaded.teacher, task)
    if is_rank_zero():
        loaded.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    start = time.perf_counter()
    trainer = distill(recipe, run_dir, loaded.teacher, loaded.tokenizer, data, task, student,
                      loaded.info.get("identity", ""), resume)
    if not trainer.is_global_zero:
        return run_dir  # only rank 0 exports, reports and logs
    run_info = {"teacher": loaded.info, "train_seconds": round(time.perf_counter() - start, 1),
                "train_steps": int(trainer.global_step),
                "precision": resolve_precision(recipe.train.precision, recipe.train.accelerator),
                "processes": trainer.world_size, "strategy": recipe.train.strategy,
                "teacher_cache": bool(recipe.distill.teacher_cache), "resumed": resume is not None}
    _write_json_atomic(run_dir / "run_info.json", run_info)
    if not recipe.export.enabled:
        console.print(f"Export disabled; checkpoints are in {run_dir / 'checkpoints'}")
        finish_wandb(trainer)
        return run_dir
    return _export(recipe, run_dir, loaded, data, task, run_info, trainer)


def _open_run_dir(recipe: Recipe, resume_dir: Path | None) -> Path:
    """A new run directory (the resolved recipe saved in it), or the resumed run's own."""
    if resume_dir is not None:
        share_run_dir(resume_dir)
        run_dir = resume_dir
    else:
        run_dir = make_run_dir(recipe)
    if is_rank_zero():
        if resume_dir is None:
            save_recipe(recipe, run_dir / "recipe.yaml")
        console.print(f"[bold]Run[/bold] {recipe.name} -> {run_dir}" + (" (resumed)" if resume_dir else ""))
    return run_dir


def _export(recipe: Recipe, run_dir: Path, loaded, data, task, run_info: dict, trainer) -> Path:
    """Export, quantize and verify every kept checkpoint; report into the run directory and W&B."""
    from distilprune.export.report import print_report
    from distilprune.export.run_export import export_run

    result = export_run(run_dir, run_dir, recipe, loaded.teacher, loaded.tokenizer, data, extra={"training": run_info},
                        task=task)
    log_report_to_wandb(trainer, result.report, result.images, result.bundles)
    print_report(result.report, result.json_path, pareto_md=result.pareto_md)
    result.raise_if_failed()
    return result.json_path


def _write_json_atomic(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)
