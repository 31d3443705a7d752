"""Fault injection for the kill-and-resume test: ``python tests/kill_after_step.py STEP ARGS...``
runs ``python train/distill.py ARGS...`` and SIGKILLs the process right after optimizer step STEP,
once that step's resume checkpoint (if one is due) is written, as a power cut or the OOM killer would.
"""

import os
import signal
import sys

from distilprune.train.callbacks import ResumeCheckpoint
from distilprune.train.cli import train


def kill_after(step: int) -> None:
    """Make every ResumeCheckpoint SIGKILL this process once optimizer step ``step`` is done."""
    write_if_due = ResumeCheckpoint.on_train_batch_end

    def write_then_kill(self, trainer, module, outputs, batch, batch_idx) -> None:
        write_if_due(self, trainer, module, outputs, batch, batch_idx)
        if trainer.global_step >= step:
            os.kill(os.getpid(), signal.SIGKILL)

    ResumeCheckpoint.on_train_batch_end = write_then_kill


if __name__ == "__main__":
    kill_after(int(sys.argv[1]))
    sys.exit(train(sys.argv[2:]))
