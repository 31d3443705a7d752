"""LightningDataModule over the fixed splits of :mod:`distilprune.data`."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader

from distilprune.data import TextClassificationData, TokenizedSplit, collate


class TextDataModule(L.LightningDataModule):
    """Tokenizes once; batches are padded to their own longest example (dynamic padding)."""

    def __init__(
        self,
        data: TextClassificationData,
        tokenizer,
        max_seq_len: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.collate = partial(collate, pad_token_id=tokenizer.pad_token_id or 0)
        self.splits = {
            name: TokenizedSplit(getattr(data, name), tokenizer, max_seq_len)
            for name in ("train", "validation", "test")
        }

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)  # the shuffling order is part of the seed
        return DataLoader(
            self.splits["train"], batch_size=self.batch_size, shuffle=True, generator=generator,
            collate_fn=self.collate, drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.eval_batch_size, collate_fn=self.collate)
