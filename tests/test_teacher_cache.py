"""Teacher output cache: stored outputs equal the live teacher, reuse, invalidation, damage."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import VOCAB, tiny_bert
from distilprune.data import Split
from distilprune.tasks.sequence_classification import TokenizedSentences
from distilprune.errors import DataError
from distilprune.tasks import default_task
from distilprune.teacher_cache import (
    build_teacher_outputs,
    load_teacher_outputs,
    teacher_cache_key,
    teacher_outputs_root,
    tokenizer_fingerprint,
)


class WordTokenizer:
    """Maps the tiny VOCAB's words to ids ([CLS] w... [SEP]); truncates like a HF tokenizer."""

    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=None):
        ids = [[2] + [VOCAB.index(w) for w in t.split()] + [3] for t in texts]
        return {"input_ids": [i[:max_length] for i in ids]}


def make_split(n: int = 37, max_seq_len: int = 24, seed: int = 0) -> TokenizedSentences:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(VOCAB[5:]) for _ in range(rng.randint(1, 30))) for _ in range(n)]
    return TokenizedSentences(Split(texts, [i % 2 for i in range(n)]), WordTokenizer(), max_seq_len)


class CountingTeacher(torch.nn.Module):
    """The tiny BERT, counting forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_bert(num_layers=3)
        self.config = self.model.config
        self.calls = 0
        self.eval()  # a new Module is in train mode (dropout on); the teacher is frozen

    def forward(self, **kwargs):
        self.calls += 1
        return self.model(**kwargs)


def live(teacher, split: TokenizedSentences, index: int):
    ids = torch.tensor([split.input_ids[index]])
    with torch.no_grad():
        return teacher(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)


def key_for(split_rows: int, max_seq_len: int, layers=(1, 3)) -> str:
    return teacher_cache_key("tiny", {"rows": split_rows}, "tok", max_seq_len, "32-true", list(layers))


def test_cached_outputs_equal_the_live_teacher(tmp_path):
    teacher, split = CountingTeacher(), make_split()
    outputs = build_teacher_outputs(teacher, split, tmp_path, key_for(37, 24), batch_size=8, autocast_dtype=None,
                                    hidden_layers=[1, 3], shard_size=16, progress=False)
    assert len(outputs) == 37 and outputs.num_labels == 2 and outputs.hidden_layers == [1, 3]
    assert len(outputs.meta["shards"]) == 3
    assert teacher.calls == 5  # 16 + 16 + 5 examples in batches of 8
    for i in range(len(split)):
        ref = live(teacher.model, split, i)
        assert outputs.logits(i).dtype == torch.float32
        torch.testing.assert_close(outputs.logits(i), ref.logits, atol=1e-5, rtol=0)  # (1 scored row, labels)
        hidden = outputs.hidden(i)
        assert [h.shape for h in hidden] == [(len(split.input_ids[i]), 64)] * 2
        for stored, layer in zip(hidden, (1, 3)):  # fp16 storage: relative error ~5e-4
            torch.testing.assert_close(stored, ref.hidden_states[layer][0], atol=1e-2, rtol=1e-3)
    rows = [4, 30, 17]
    torch.testing.assert_close(outputs.batch_logits(rows), torch.cat([outputs.logits(i) for i in rows]))
    padded = outputs.batch_hidden(rows, pad_to=30)
    assert padded[1].shape == (3, 30, 64)
    for row, i in enumerate(rows):
        n = len(split.input_ids[i])
        assert torch.equal(padded[1][row, :n], outputs.hidden(i)[1]) and not padded[1][row, n:].any()


def test_second_build_loads_without_the_teacher(tmp_path):
    teacher, split = CountingTeacher(), make_split()
    key = key_for(37, 24)
    first = build_teacher_outputs(teacher, split, tmp_path, key, 16, None, [2], progress=False)
    calls = teacher.calls
    assert calls > 0
    second = build_teacher_outputs(teacher, split, tmp_path, key, 16, None, [2], progress=False)
    assert teacher.calls == calls
    assert torch.equal(first.batch_logits(range(37)), second.batch_logits(range(37)))
    assert [p.name for p in tmp_path.iterdir()] == [key]  # no staging directory left behind


def test_a_key_change_rebuilds_into_a_new_directory(tmp_path):
    teacher = CountingTeacher()
    base = build_teacher_outputs(teacher, make_split(), tmp_path, key_for(37, 24), 16, None, None, progress=False)
    calls = teacher.calls
    shorter = make_split(max_seq_len=8)
    other_len = build_teacher_outputs(teacher, shorter, tmp_path, key_for(37, 8), 16, None, None, progress=False)
    assert teacher.calls > calls and other_len.directory != base.directory
    calls = teacher.calls
    other_data = build_teacher_outputs(teacher, make_split(n=20), tmp_path, key_for(20, 24), 16, None, None,
                                       progress=False)
    assert teacher.calls > calls and len(other_data) == 20
    assert len({base.directory, other_len.directory, other_data.directory}) == 3
    assert {p.name for p in tmp_path.iterdir()} == {key_for(37, 24), key_for(37, 8), key_for(20, 24)}
    # keys: every input counts, and the key is stable
    keys = {key_for(37, 24), key_for(37, 8), key_for(20, 24), key_for(37, 24, layers=(2,)),
            teacher_cache_key("other", {"rows": 37}, "tok", 24, "32-true", [1, 3]),
            teacher_cache_key("tiny", {"rows": 37}, "tok", 24, "bf16-mixed", [1, 3]),
            teacher_cache_key("tiny", {"rows": 37}, "tok2", 24, "32-true", [1, 3])}
    assert len(keys) == 7 and all(len(k) == 20 for k in keys)
    assert key_for(37, 24) == teacher_cache_key("tiny", {"rows": 37}, "tok", 24, "32-true", [1, 3])


def test_same_key_but_other_tokens_is_refused(tmp_path):
    teacher = CountingTeacher()
    build_teacher_outputs(teacher, make_split(seed=0), tmp_path, "k", 16, None, None, progress=False)
    with pytest.raises(DataError, match="other token ids"):
        build_teacher_outputs(teacher, make_split(seed=1), tmp_path, "k", 16, None, None, progress=False)


def test_truncated_shard_is_a_clear_data_error(tmp_path):
    teacher, split = CountingTeacher(), make_split()
    outputs = build_teacher_outputs(teacher, split, tmp_path, "k", 16, None, [1], shard_size=16, progress=False)
    shard = outputs.directory / outputs.meta["shards"][1]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as error:
        build_teacher_outputs(teacher, split, tmp_path, "k", 16, None, [1], shard_size=16, progress=False)
    message = str(error.value)
    assert str(outputs.directory) in message and "shard-00001" in message and "Delete" in message
    (outputs.directory / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json is missing"):
        load_teacher_outputs(outputs.directory)


def test_bf16_autocast_stores_bf16_states(tmp_path):
    teacher, split = CountingTeacher(), make_split(n=10)
    outputs = build_teacher_outputs(teacher, split, tmp_path, "k", 4, torch.bfloat16, [3], progress=False)
    assert outputs.meta["hidden_dtype"] == "bfloat16" and outputs.meta["autocast_dtype"] == "bfloat16"
    ids = torch.tensor([split.input_ids[0]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = teacher.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    # same computation up to batch padding; bf16 has ~3 significant digits
    torch.testing.assert_close(outputs.logits(0), ref.logits.float(), atol=3e-2, rtol=0)
    torch.testing.assert_close(outputs.hidden(0)[0], ref.hidden_states[3][0].float(), atol=6e-2, rtol=2e-2)


def test_cache_is_readable_through_pickle_and_datamodule_collate(tmp_path):
    import pickle

    from distilprune.batching import PaddingCollator

    split = make_split()
    outputs = build_teacher_outputs(CountingTeacher(), split, tmp_path, "k", 16, None, [1, 2], progress=False)
    outputs.hidden(0)  # opens a shard handle; pickling must still work (DataLoader workers)
    copy = pickle.loads(pickle.dumps(outputs))
    batch = PaddingCollator(default_task().collate, 0, None, copy)([split[i] for i in (3, 9)])
    assert torch.equal(batch["teacher_logits"], outputs.batch_logits([3, 9]))
    assert [h.shape for h in batch["teacher_hidden"]] == [(2, batch["input_ids"].shape[1], 64)] * 2


def test_tokenizer_fingerprint_and_root(tmp_path, monkeypatch):
    from transformers import BertTokenizer

    vocab = {word: i for i, word in enumerate(VOCAB)}
    lower = tokenizer_fingerprint(BertTokenizer(vocab=dict(vocab), do_lower_case=True))
    assert lower == tokenizer_fingerprint(BertTokenizer(vocab=dict(vocab), do_lower_case=True))
    assert lower != tokenizer_fingerprint(BertTokenizer(vocab=dict(vocab), do_lower_case=False))
    assert lower != tokenizer_fingerprint(BertTokenizer(vocab={**vocab, "extra": len(vocab)}, do_lower_case=True))
    monkeypatch.setenv("DISTILPRUNE_CACHE", str(tmp_path / "cache"))
    assert teacher_outputs_root() == tmp_path / "cache" / "teacher_outputs"
