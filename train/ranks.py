"""Which process this is, and the run directory every process of one run shares."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from distilprune.config import Recipe
from distilprune.errors import ConfigError

RUN_DIR_ENV = "DISTILPRUNE_RUN_DIR"


def process_rank() -> int:
    """Global rank of this process before Lightning sets up (0 when not distributed).

    Lightning's DDP launcher re-runs this script for ranks 1..N-1 with LOCAL_RANK/NODE_RANK set;
    SLURM and torchrun set RANK / SLURM_PROCID themselves.
    """
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable])
    local = int(os.environ.get("LOCAL_RANK", 0))
    return local if int(os.environ.get("NODE_RANK", 0)) == 0 else -1  # other nodes: not rank 0


def is_rank_zero() -> bool:
    return process_rank() == 0


def make_run_dir(recipe: Recipe) -> Path:
    """A new directory runs/<name>/<YYYYmmdd-HHMMSS>[-N]; an existing one is never reused.

    Distributed runs share one directory: rank 0 creates it and hands it to the processes Lightning
    launches through the environment; under SLURM / torchrun (processes started outside) its name is
    the job id, so every rank computes the same path on the shared filesystem.
    """
    shared = os.environ.get(RUN_DIR_ENV)
    if shared and not is_rank_zero():
        return Path(shared)
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    if job and recipe.train.devices * recipe.train.num_nodes > 1 and job != "none":
        path = Path(recipe.output_dir) / recipe.name / f"job-{job}"
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = Path(recipe.output_dir) / recipe.name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            candidate = root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                candidate.mkdir()
                os.environ[RUN_DIR_ENV] = str(candidate.resolve())
                return candidate
            except FileExistsError:
                continue
    except (PermissionError, NotADirectoryError, FileExistsError, OSError) as error:
        raise ConfigError(
            f"The output directory {root} cannot be created or written ({error.strerror or error}). "
            f"Set output_dir=<a writable directory> (e.g. output_dir=$HOME/distilprune-runs)."
        ) from None
    raise ConfigError(f"Could not create a new run directory under {root}.")


def share_run_dir(run_dir: Path) -> None:
    """Hand ``run_dir`` to the processes Lightning launches (a resumed run's directory)."""
    os.environ[RUN_DIR_ENV] = str(Path(run_dir).resolve())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (what Lightning's seed_everything does, without importing it),
    and export PL_GLOBAL_SEED so processes Lightning launches seed the same way."""
    import random

    import numpy as np

    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
