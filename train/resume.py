"""Resuming an interrupted run: ``resume=<run dir>`` on the command line, reading its resume
checkpoint safely, and where in the interrupted epoch training continues."""

from __future__ import annotations

from pathlib import Path

import torch

from distilprune.errors import ConfigError, ModelError

RESUME_DIR = "resume"
RESUME_FILE = "last.ckpt"


def resume_checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / RESUME_DIR / RESUME_FILE


def split_resume(argv: list[str]) -> tuple[Path | None, list[str]]:
    """``resume=<run dir>`` (alone: the run's saved recipe is reused as it is)."""
    resume = [a for a in argv if a.lstrip("-").startswith("resume=")]
    rest = [a for a in argv if a not in resume]
    if not resume:
        return None, argv
    if len(resume) > 1 or rest:
        raise ConfigError(
            "resume=<run dir> continues a run with the recipe saved in that run; it takes no other "
            f"arguments (got {' '.join(rest or resume[1:])}). Start a new run to change settings."
        )
    run_dir = Path(resume[0].split("=", 1)[1]).expanduser()
    if not (run_dir / "recipe.yaml").is_file():
        raise ConfigError(
            f"{run_dir} is not a distilprune run directory (no recipe.yaml). Give resume=runs/<recipe>/<time>."
        )
    if (run_dir / "run_info.json").is_file():
        raise ConfigError(
            f"The run in {run_dir} already finished training (run_info.json exists); there is nothing to "
            f"resume. Re-export it with distilprune export {run_dir}."
        )
    return run_dir, []


def read_resume_checkpoint(path: Path) -> dict:
    """Load and check a resume checkpoint with ``weights_only=True`` (tensors and plain types only)."""
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(
            f"There is no resume checkpoint at {path}: the run stopped before its first checkpoint "
            f"(train.checkpoint_every_steps) was written. Start it again instead of resuming."
        ) from None
    except Exception as error:  # truncated zip, pickle with foreign classes, not a torch file
        raise ModelError(
            f"The resume checkpoint {path} cannot be read safely ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). It is truncated or was not written by distilprune. "
            f"Delete it and start the run again, or resume a different run directory."
        ) from None
    if not isinstance(checkpoint, dict) or "distilprune" not in checkpoint or "state_dict" not in checkpoint:
        raise ModelError(
            f"{path} is a PyTorch file but not a distilprune resume checkpoint (no 'distilprune' and "
            f"'state_dict' entries). Resume only runs written by train/distill.py."
        )
    return checkpoint


def batches_done_in_epoch(checkpoint: dict, train_examples: int, global_batch: int) -> int:
    """Global batches of the interrupted epoch that the checkpoint already trained on.

    A checkpoint written at an epoch's end (its epoch is processed but not yet counted complete)
    resumes at the start of the next epoch: 0. One written after step k of an epoch resumes at k.
    """
    epoch = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
    if epoch["processed"] > epoch["completed"]:
        return 0
    steps_per_epoch = -(-train_examples // global_batch)
    return int(checkpoint["global_step"]) - int(checkpoint["epoch"]) * steps_per_epoch
