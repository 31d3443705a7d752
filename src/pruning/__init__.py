"""Block movement fine-pruning (Lagunas et al. 2021) and compaction, in plain PyTorch.

nn_pruning, the reference implementation, no longer imports on Python 3.11 and relies on
``prune_heads``, which transformers 5 removed; this package re-implements the method on the
student of :mod:`distilprune.students` through the architecture table.
"""

from distilprune.pruning.compaction import compact, kept_heads_and_rows
from distilprune.pruning.masks import cubic_schedule, linear_ramp
from distilprune.pruning.pruner import BlockPruner

__all__ = ["BlockPruner", "compact", "cubic_schedule", "kept_heads_and_rows", "linear_ramp"]
