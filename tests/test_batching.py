"""Fast batches: the seeded, resumable, shard-aware batch sampler and the datamodule built on it."""

from __future__ import annotations

import random

import pytest
import torch

from distilprune.batching import PaddingCollator, ShuffledBatchSampler, padded_tokens
from distilprune.data import Split, TextClassificationData
from distilprune.errors import ConfigError
from distilprune.train.datamodule import TextDataModule

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(3, 60) for _ in range(1000)]


def epoch(sampler: ShuffledBatchSampler, number: int) -> list[list[int]]:
    sampler.set_epoch(number)
    return list(sampler)


@pytest.mark.parametrize("bucketing", [False, True])
def test_every_index_exactly_once_per_epoch(bucketing):
    sampler = ShuffledBatchSampler(LENGTHS, 32, seed=3, bucketing=bucketing)
    batches = epoch(sampler, 0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert len(batches) == len(sampler) == 32  # 1000 = 31 x 32 + 8
    assert sorted(len(b) for b in batches) == [8] + [32] * 31


@pytest.mark.parametrize("bucketing", [False, True])
def test_two_ranks_split_each_global_batch(bucketing):
    one = epoch(ShuffledBatchSampler(LENGTHS[:960], 32, seed=5, bucketing=bucketing), 2)
    ranks = [epoch(ShuffledBatchSampler(LENGTHS[:960], 32, seed=5, world_size=2, rank=r, bucketing=bucketing), 2)
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 30
    for step, global_batch in enumerate(one):
        assert len(ranks[0][step]) == len(ranks[1][step]) == 16
        # rank 0 takes the first half, rank 1 the second: concatenated they are the 1-process batch
        assert ranks[0][step] + ranks[1][step] == global_batch


def test_partial_last_batch_with_two_ranks():
    # 1000 % 32 = 8: shares of 4 and 4; 33 % 32 = 1 < 2 ranks: the lone example is dropped
    shares = [epoch(ShuffledBatchSampler(LENGTHS, 32, seed=0, world_size=2, rank=r), 0)[-1] for r in (0, 1)]
    assert [len(s) for s in shares] == [4, 4]
    for rank in (0, 1):
        sampler = ShuffledBatchSampler(LENGTHS[:33], 32, seed=0, world_size=2, rank=rank)
        assert len(sampler) == 1 and len(epoch(sampler, 0)) == 1
    three = [epoch(ShuffledBatchSampler(LENGTHS[:37], 32, seed=0, world_size=3, rank=r), 0)[-1] for r in range(3)]
    assert [len(s) for s in three] == [2, 2, 1]  # 5 examples over 3 ranks: as equal as possible


def test_order_is_a_function_of_seed_and_epoch():
    a = ShuffledBatchSampler(LENGTHS, 32, seed=1)
    b = ShuffledBatchSampler(LENGTHS, 32, seed=1)
    assert epoch(a, 0) == epoch(b, 0)
    assert epoch(a, 1) == epoch(b, 1)
    assert epoch(a, 0) != epoch(a, 1)
    assert epoch(a, 0) != epoch(ShuffledBatchSampler(LENGTHS, 32, seed=2), 0)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    epoch(a, 3)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is not touched


@pytest.mark.parametrize("bucketing", [False, True])
def test_skip_next_yields_the_tail(bucketing):
    sampler = ShuffledBatchSampler(LENGTHS, 32, seed=7, world_size=2, rank=1, bucketing=bucketing)
    full = epoch(sampler, 4)
    sampler.skip_next(11)
    assert len(sampler) == len(full)
    assert list(sampler) == full[11:]
    assert list(sampler) == full  # the skip applies to one iteration only
    sampler.skip_next(len(full))
    assert list(sampler) == []
    with pytest.raises(ValueError):
        sampler.skip_next(len(full) + 1)


def test_bucketing_reduces_padding_and_covers_every_index():
    plain = epoch(ShuffledBatchSampler(LENGTHS, 32, seed=0), 0)
    bucketed = epoch(ShuffledBatchSampler(LENGTHS, 32, seed=0, bucketing=True), 0)
    assert sorted(i for b in bucketed for i in b) == list(range(len(LENGTHS)))
    real = sum(LENGTHS)
    waste_plain = padded_tokens(plain, LENGTHS) - real
    waste_bucketed = padded_tokens(bucketed, LENGTHS) - real
    assert waste_bucketed < 0.3 * waste_plain, (waste_plain, waste_bucketed)
    # batch order is still shuffled: batch lengths do not simply increase through the epoch
    means = [sum(LENGTHS[i] for i in b) / len(b) for b in bucketed]
    assert means != sorted(means)


def test_drop_last():
    sampler = ShuffledBatchSampler(LENGTHS, 32, seed=0, drop_last=True)
    batches = epoch(sampler, 0)
    assert len(sampler) == len(batches) == 31 and all(len(b) == 32 for b in batches)


def test_lightning_set_epoch_reaches_the_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch

    sampler = ShuffledBatchSampler(LENGTHS, 32, seed=0)
    loader = torch.utils.data.DataLoader(list(range(len(LENGTHS))), batch_sampler=sampler)
    _set_sampler_epoch(loader, 5)
    assert sampler.epoch == 5


# -- datamodule ---------------------------------------------------------------------------------------
class FakeTokenizer:
    """Whitespace tokens -> ids; enough for TokenizedSentences (truncation and max_length honoured)."""

    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=None):
        ids = [[2] + [5 + len(w) for w in t.split()] for t in texts]
        return {"input_ids": [i[:max_length] for i in ids]}


def make_data(n: int = 40) -> TextClassificationData:
    rng = random.Random(1)
    texts = [" ".join("w" * rng.randint(1, 5) for _ in range(rng.randint(1, 20))) for _ in range(n)]
    split = Split(texts, [i % 2 for i in range(n)])
    return TextClassificationData(split, split.head(8), split.head(8), ["neg", "pos"], "test")


class StoredOutputs:
    """A stand-in for TeacherOutputs with known values (the real one is tested in test_teacher_cache)."""

    def __init__(self, lengths: list[int], hidden_size: int = 6) -> None:
        gen = torch.Generator().manual_seed(0)
        self.hidden_layers = [2, 4]
        self.table = torch.randn(len(lengths), 3, generator=gen)
        self.states = [[torch.randn(n, hidden_size, generator=gen) for _ in self.hidden_layers] for n in lengths]

    def __len__(self) -> int:
        return self.table.shape[0]

    def logits(self, i):
        return self.table[i : i + 1]  # (scored rows of example i = 1, labels)

    def batch_hidden(self, indices, pad_to):
        out = [torch.zeros(len(indices), pad_to, 6) for _ in self.hidden_layers]
        for row, i in enumerate(indices):
            for k, states in enumerate(self.states[i]):
                out[k][row, :states.shape[0]] = states
        return out


def test_max_length_padding_pads_to_max_seq_len():
    dm = TextDataModule(make_data(), FakeTokenizer(), 16, 8, 8, seed=0, padding="max_length")
    batches = list(dm.train_dataloader())
    assert all(b["input_ids"].shape == (len(b["labels"]), 16) for b in batches)
    dynamic = next(iter(TextDataModule(make_data(), FakeTokenizer(), 16, 8, 8, seed=0).train_dataloader()))
    assert dynamic["input_ids"].shape[1] == dynamic["attention_mask"].sum(1).max()
    with pytest.raises(ConfigError):
        TextDataModule(make_data(), FakeTokenizer(), 16, 8, 8, seed=0, padding="longest")


def test_datamodule_batches_carry_stored_teacher_outputs():
    dm = TextDataModule(make_data(), FakeTokenizer(), 16, 8, 8, seed=0)
    stored = StoredOutputs(dm.train_lengths())
    dm.set_teacher_outputs(stored)
    seen = []
    for batch in dm.train_dataloader():
        index = batch["index"].tolist()
        seen += index
        assert batch["teacher_logits"].dtype == torch.float32
        assert torch.equal(batch["teacher_logits"], stored.table[index])
        assert len(batch["teacher_hidden"]) == 2
        for k, layer in enumerate(batch["teacher_hidden"]):
            assert layer.shape[:2] == batch["input_ids"].shape
            for row, i in enumerate(index):
                n = int(batch["attention_mask"][row].sum())
                assert torch.equal(layer[row, :n], stored.states[i][k])
                assert not layer[row, n:].any()
    assert sorted(seen) == list(range(len(dm.train_split)))
    with pytest.raises(ConfigError):
        dm.set_teacher_outputs(StoredOutputs([3, 4]))


def test_datamodule_resume_skip_and_rng():
    dm = TextDataModule(make_data(), FakeTokenizer(), 16, 8, 8, seed=3, length_bucketing=True)
    full = [b["index"].tolist() for b in dm.train_dataloader()]
    dm.resume_skip = 2
    torch.manual_seed(0)
    state = torch.get_rng_state()
    tail = [b["index"].tolist() for b in dm.train_dataloader()]
    assert torch.equal(state, torch.get_rng_state())  # iterating does not consume the global RNG
    assert tail == full[2:] and dm.resume_skip == 0
    assert len(dm.train_dataloader()) == len(full) == 5


def test_collator_without_teacher_is_the_tasks_collate():
    from distilprune.tasks import default_task

    task = default_task()
    examples = [{"input_ids": [2, 7, 8], "label": 1, "index": 0}, {"input_ids": [2, 9], "label": 0, "index": 1}]
    ours, plain = PaddingCollator(task.collate, 0)(examples), task.collate(examples, 0)
    assert ours.keys() == plain.keys() and all(torch.equal(ours[k], plain[k]) for k in ours)
    assert ours["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]] and ours["labels"].tolist() == [1, 0]


def test_lightning_fit_sets_the_epoch_and_reads_the_global_batch():
    """Two epochs under a real Trainer: each epoch covers every example once, in a different order."""
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[list[int]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch["index"].tolist())
            return (self.weight * batch["input_ids"].float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    dm = TextDataModule(make_data(), FakeTokenizer(), 16, 8, 8, seed=0)
    module = Recorder()
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        use_distributed_sampler=False)
    trainer.fit(module, dm)
    first, second = module.seen[:5], module.seen[5:]
    assert len(second) == 5 and dm.train_sampler.epoch == 1
    assert sorted(i for b in first for i in b) == sorted(i for b in second for i in b) == list(range(40))
    assert first == [b.tolist() for b in dm.train_sampler.global_batches(0)]
    assert second == [b.tolist() for b in dm.train_sampler.global_batches(1)] != first
