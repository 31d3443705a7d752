"""Which process is rank 0, and which run directory each process uses, under the launchers a run
meets: none, Lightning's own DDP launcher, torchrun and SLURM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distilprune.config import load_recipe
from distilprune.train.ranks import RUN_DIR_ENV, make_run_dir, process_rank

LAUNCHER_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID",
                      RUN_DIR_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    for variable in LAUNCHER_VARIABLES:
        monkeypatch.setenv(variable, "")  # records the original value (or its absence) for teardown
        monkeypatch.delenv(variable)  # make_run_dir sets RUN_DIR_ENV itself; it is undone too
    return monkeypatch


@pytest.mark.parametrize("env, rank", [
    ({}, 0),
    ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun: the global rank wins over the local one
    ({"SLURM_PROCID": "5", "LOCAL_RANK": "1"}, 5),  # SLURM
    ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, 1),  # Lightning's launcher on the first node
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, -1),  # another node: never rank 0
], ids=["single", "torchrun", "slurm", "lightning-node0", "lightning-node1"])
def test_process_rank(clean_env, env, rank):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert process_rank() == rank


def _recipe(tmp_path: Path, devices: int = 2):
    return load_recipe(["recipe=quickstart", f"output_dir={tmp_path}", f"train.devices={devices}",
                        "train.strategy=ddp", "train.batch_size=32"])


@pytest.mark.parametrize("job_variable", ["SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"])
def test_every_rank_of_a_job_computes_the_same_run_directory(clean_env, tmp_path, job_variable):
    clean_env.setenv(job_variable, "4242")
    rank_variable = "SLURM_PROCID" if job_variable == "SLURM_JOB_ID" else "RANK"
    paths = []
    for rank in ("0", "1"):
        clean_env.setenv(rank_variable, rank)
        paths.append(make_run_dir(_recipe(tmp_path)))
    assert paths[0] == paths[1] == tmp_path / "quickstart" / "job-4242"
    assert paths[0].is_dir()


def test_a_job_id_does_not_name_a_single_process_run(clean_env, tmp_path):
    clean_env.setenv("SLURM_JOB_ID", "4242")  # one process inside an allocation: a fresh timestamped run
    run_dir = make_run_dir(_recipe(tmp_path, devices=1))
    assert run_dir.parent == tmp_path / "quickstart" and not run_dir.name.startswith("job-")
    clean_env.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's placeholder when no id is given
    clean_env.delenv("SLURM_JOB_ID")
    assert not make_run_dir(_recipe(tmp_path)).name.startswith("job-")


def test_lightning_launched_ranks_join_the_directory_rank_zero_made(clean_env, tmp_path):
    first = make_run_dir(_recipe(tmp_path))  # rank 0: creates it and hands it on
    assert Path(os.environ[RUN_DIR_ENV]) == first.resolve()
    clean_env.setenv("LOCAL_RANK", "1")  # a process Lightning started, which inherits the environment
    assert make_run_dir(_recipe(tmp_path)) == first.resolve()
    assert len(list((tmp_path / "quickstart").iterdir())) == 1


def test_run_directories_are_never_reused(clean_env, tmp_path):
    made = {make_run_dir(_recipe(tmp_path, devices=1)) for _ in range(3)}  # within the same second
    assert len(made) == 3 and all(path.is_dir() for path in made)

