"""Fast training batches: a seeded, resumable, shard-aware batch sampler and a padding collator.

Plain PyTorch (no Lightning). :class:`ShuffledBatchSampler` decides which examples form each *global*
batch of an epoch; every process of a distributed run takes its own contiguous share of that batch,
so 2 processes x 16 examples see exactly the 32 examples 1 process sees in the same step. The order
is a pure function of ``(seed, epoch)``, and :meth:`ShuffledBatchSampler.skip_next` starts the next
pass at any global batch, which is what an exact mid-epoch resume needs.

:class:`PaddingCollator` pads a batch (to its longest example, or to a fixed length) and, when the
teacher's outputs are cached, attaches them to the batch as ``teacher_logits`` / ``teacher_hidden``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Sampler

# A bucket spans this many global batches: long enough that sorting inside it groups similar
# lengths (less padding), short enough that the epoch's order stays close to a uniform shuffle.
BUCKET_BATCHES = 50


class _EpochRelay:
    """Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler``
    (not on the batch sampler itself); this object sits at ``batch_sampler.sampler`` and forwards."""

    def __init__(self, owner: ShuffledBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class ShuffledBatchSampler(Sampler[list[int]]):
    """Yields this process's share (a list of example indices) of each global batch of an epoch.

    Args:
        lengths: token count of every example (index i = example i); used only for bucketing.
        batch_size: the GLOBAL batch size (all processes together).
        seed: with the epoch, fixes the order: same (seed, epoch) -> same batches on every machine.
        world_size, rank: this process's place among the data-parallel processes.
        bucketing: sort by length inside buckets of ``BUCKET_BATCHES`` global batches of a seeded
            permutation, cut the buckets into batches, then shuffle the batch order (seeded). Batches
            hold similar lengths (less padding) and still come in random order.
        drop_last: drop the last, smaller global batch of the epoch.

    The last partial global batch (``len(lengths) % batch_size`` examples, when not dropped) is split
    into shares as equal as possible: rank r gets a contiguous slice, the first ``size % world_size``
    ranks one example more than the others (``numpy.array_split``). A process must never get an empty
    batch (every rank has to take the same number of steps), so when the partial batch has fewer
    examples than ``world_size`` it is dropped. With bucketing the partial batch sits at a random
    position of the epoch, not at its end. Distributed runs should use sizes where batch_size
    divides by world_size; then every full global batch splits exactly.

    ``set_epoch(epoch)`` must be called before iterating a new epoch (Lightning does it through
    ``self.sampler``, see :class:`_EpochRelay`); ``len()`` is always the full number of batches of an
    epoch, even right after ``skip_next``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        world_size: int = 1,
        rank: int = 0,
        bucketing: bool = False,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if batch_size < world_size:
            raise ValueError(
                f"the global batch ({batch_size}) is smaller than the number of processes ({world_size}): "
                f"some process would get no examples"
            )
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.seed = batch_size, seed
        self.world_size, self.rank = world_size, rank
        self.bucketing, self.drop_last = bucketing, drop_last
        self.epoch = 0
        self._skip = 0
        self.sampler = _EpochRelay(self)

    # -- control ----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_next(self, n: int) -> None:
        """The next iteration starts at global batch ``n`` of this epoch's order (then resets to 0)."""
        if not 0 <= n <= len(self):
            raise ValueError(f"cannot skip {n} batches of an epoch of {len(self)}")
        self._skip = int(n)

    # -- order ------------------------------------------------------------------------------------
    def _keep_partial(self, size: int) -> bool:
        return size > 0 and not self.drop_last and size >= self.world_size

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + int(self._keep_partial(rest))

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every global batch of ``epoch`` (default: the current one), in order; index arrays."""
        epoch = self.epoch if epoch is None else epoch
        # SeedSequence over (seed, epoch): independent streams per epoch, no arithmetic collisions.
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        size = self.batch_size
        if not self.bucketing:
            batches = [order[i:i + size] for i in range(0, len(order), size)]
        else:
            batches = []
            span = BUCKET_BATCHES * size  # examples per bucket; a multiple of size, so only the
            for start in range(0, len(order), span):  # very last bucket can leave a partial batch
                bucket = order[start:start + span]
                bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]  # ties stay random
                batches.extend(bucket[i:i + size] for i in range(0, len(bucket), size))
        if batches and len(batches[-1]) < size and not self._keep_partial(len(batches[-1])):
            batches.pop()
        if self.bucketing:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def share(self, global_batch: np.ndarray) -> list[int]:
        """This rank's contiguous share of one global batch (sizes differ by at most one)."""
        return np.array_split(global_batch, self.world_size)[self.rank].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        # The order is computed here, at the first next(), not when the DataLoader iterator is made,
        # so a set_epoch() that comes between the two still applies.
        skip, self._skip = self._skip, 0
        for global_batch in self.global_batches()[skip:]:
            yield self.share(global_batch)


def padded_tokens(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> int:
    """Total tokens after dynamic padding: sum over batches of batch size x longest example."""
    return int(sum(len(b) * max(lengths[i] for i in b) for b in batches if len(b)))


class CachedTeacher(Protocol):
    """What :class:`PaddingCollator` needs from :class:`distilprune.teacher_cache.TeacherOutputs`."""

    hidden_layers: list[int]

    def logits(self, i: int) -> torch.Tensor: ...  # example i's cached rows (task.example_rows)

    def batch_hidden(self, indices: Sequence[int], pad_to: int) -> list[torch.Tensor]: ...


class PaddingCollator:
    """Collate a list of a task's tokenized items into a padded batch, with cached teacher outputs.

    Args:
        collate: the task's ``collate(examples, pad_token_id, pad_to)`` (pads and stacks labels).
        pad_token_id: id written into padded positions (attention_mask is 0 there).
        pad_to: None = pad to the longest example of the batch (dynamic padding); an int = pad
            every batch to exactly that many tokens (examples are already truncated to it).
        rows_from_cache: the task's ``rows_from_cache(cached rows per example, batch)``; None = the
            cached rows concatenated (for tasks whose cached rows are their scored rows).
        teacher_outputs: cached teacher outputs for the split being batched, or None. When given,
            the batch also carries ``teacher_logits`` float32 (scored rows, labels): the rows
            ``task.scored_logits`` picks from a model's logits, in the same order; and, when hidden states
            are stored, ``teacher_hidden``: a list (one per stored layer, in stored order) of float32
            (batch, seq, hidden) tensors padded with zeros like input_ids.

    A module-level class (not a closure), so DataLoader worker processes can pickle it.
    """

    def __init__(self, collate: Callable[..., dict], pad_token_id: int = 0, pad_to: int | None = None,
                 teacher_outputs: CachedTeacher | None = None,
                 rows_from_cache: Callable[[list, dict], Any] | None = None) -> None:
        self.collate = collate
        self.pad_token_id, self.pad_to, self.teacher_outputs = pad_token_id, pad_to, teacher_outputs
        self.rows_from_cache = rows_from_cache

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = self.collate(examples, pad_token_id=self.pad_token_id, pad_to=self.pad_to)
        if self.teacher_outputs is not None:
            indices = batch["index"].tolist()
            cached = [self.teacher_outputs.logits(i) for i in indices]
            # the task turns them into this batch's scored rows (question answering pads them to the batch)
            batch["teacher_logits"] = (torch.cat(cached) if self.rows_from_cache is None
                                       else self.rows_from_cache(cached, batch))
            if self.teacher_outputs.hidden_layers:
                batch["teacher_hidden"] = self.teacher_outputs.batch_hidden(indices, batch["input_ids"].shape[1])
        return batch
