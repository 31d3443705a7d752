"""Re-export and re-measure every kept checkpoint of a finished run.

    distilprune export runs/<recipe>/<time> [--checkpoint final] [--threads N] [--runs 50] [--rounds 10] [export.KEY=VALUE ...]
    python -m distilprune.export.cli runs/<recipe>/<time> ...      # the same

Writes into ``<run>/reexports/<time>/`` (a new directory each time): nothing the training run wrote
is overwritten. Uses the run's saved recipe, tokenizer and the teacher recorded in run_info.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from distilprune.config import ConfigError, load_recipe
from distilprune.errors import DistilpruneError


def reexport(run_dir: Path, threads: int | None = None, runs: int | None = None, checkpoints: list[str] | None = None,
             rounds: int | None = None, export_overrides: list[str] | None = None) -> Path:
    from distilprune.tasks import task_for
    from distilprune.export.report import print_report
    from distilprune.export.run_export import export_run
    from distilprune.teacher import load_teacher, load_tokenizer

    recipe_path, info_path = run_dir / "recipe.yaml", run_dir / "run_info.json"
    if not recipe_path.is_file() or not info_path.is_file():
        raise ConfigError(
            f"{run_dir} is not a finished distilprune run: it needs recipe.yaml and run_info.json. "
            f"Give a directory like runs/<recipe>/<time>/."
        )
    overrides = [f"export.threads={threads}"] if threads else []
    overrides += [f"export.latency_runs={runs}"] if runs else []
    for override in export_overrides or []:  # the export section only: training already happened
        if not override.startswith("export.") or "=" not in override:
            raise ConfigError(f"{override!r}: a re-export takes export.KEY=VALUE overrides only (the run is trained "
                              f"already), e.g. export.int8_max_drop=0.02 or export.grid_seq_lens=[128,384].")
    recipe = load_recipe([f"recipe={recipe_path}", *overrides, *(export_overrides or [])])
    run_info = json.loads(info_path.read_text())
    task = task_for(recipe)
    data = task.load()
    tokenizer = load_tokenizer(str(run_dir / "tokenizer"), str(run_dir / "tokenizer"))
    teacher_source = run_info["teacher"]["source"]
    teacher = load_teacher(teacher_source, teacher_source, num_labels=None, auto_class=task.hf_auto_class)
    out_dir = run_dir / "reexports" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=False)
    result = export_run(run_dir, out_dir, recipe, teacher, tokenizer, data, extra={"training": run_info}, only=checkpoints,
                        rounds=rounds, task=task)
    print_report(result.report, result.json_path, pareto_md=result.pareto_md)
    result.raise_if_failed()
    return result.json_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="threads for every latency measurement")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per latency measurement")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating timing rounds over all models (default 5); more rounds: steadier numbers on a busy machine")
    parser.add_argument("--checkpoint", action="append", default=None, metavar="NAME",
                        help="re-export only this kept checkpoint (repeatable); default: all")
    parser.add_argument("overrides", nargs="*", metavar="export.KEY=VALUE",
                        help="export settings that differ from the run's recipe, e.g. export.int8_fallbacks=[per_token]")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if any(v is not None and v < 1 for v in (args.threads, args.runs, args.rounds)):
        Console(stderr=True).print("[bold red]error:[/bold red] --threads, --runs and --rounds must be at least 1.")
        return 2
    try:
        reexport(args.run_dir, args.threads, args.runs, args.checkpoint, args.rounds, args.overrides)
    except DistilpruneError as error:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
