"""Shared fixtures: tiny random BERT teachers (hidden 64, heads of 32) that build in milliseconds,
and the launcher that runs the real entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DISTILL = REPO / "train" / "distill.py"
# The same entry, SIGKILLed right after a given optimizer step (see kill_after_step.py).
KILL_AFTER_STEP = REPO / "tests" / "kill_after_step.py"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)] + [
    "good", "bad", "movie", "great", "awful", "fun", "dull", "plot",
]


def tiny_bert(num_layers: int = 3, num_labels: int = 2, hidden: int = 64, heads: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=num_labels,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # non-trivial token-type and LayerNorm params, so the parity test means something
        for name, param in model.named_parameters():
            if "LayerNorm" in name or "token_type" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def save_tiny_teacher(directory: Path, num_layers: int = 3, num_labels: int = 2) -> Path:
    """A local model directory (config, weights, WordPiece tokenizer) like a hub checkpoint."""
    from transformers import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    # transformers 5: BertTokenizer(vocab_file=...) keeps only the special tokens; vocab= reads the file.
    BertTokenizer(vocab=str(vocab), do_lower_case=True).save_pretrained(str(directory))
    tiny_bert(num_layers, num_labels).save_pretrained(str(directory))
    return directory


def write_sentiment_csv(path: Path, rows: int = 96, label_offset: int = 0) -> Path:
    """A small labelled csv with a learnable signal (good/great/fun vs bad/awful/dull).

    Every sentence is distinct (two filler words w0..w58 number the row), so no text occurs in two
    splits and the loader's cross-split dedupe leaves the carved splits whole.
    """
    import random

    rng = random.Random(0)
    lines = ["sentence,label"]
    for i in range(rows):
        label = i % 2
        words = rng.sample(["good", "great", "fun"] if label else ["bad", "awful", "dull"], 2)
        lines.append(f"{words[0]} movie {words[1]} plot w{i % 59} w{i // 59 % 59},{label + label_offset}")
    path.write_text("\n".join(lines) + "\n")
    return path


NER_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # labels_from_data order for write_conll files


def save_tiny_tagger(directory: Path, num_layers: int = 3) -> Path:
    """A local token-classification checkpoint (BertForTokenClassification over NER_LABELS, dropout off)
    with the tiny WordPiece tokenizer, as a hub NER model would be laid out."""
    from transformers import BertForTokenClassification

    save_tiny_teacher(directory, num_layers)
    config = tiny_bert(num_layers).config
    config.num_labels = len(NER_LABELS)
    config.id2label = dict(enumerate(NER_LABELS))
    config.label2id = {label: i for i, label in enumerate(NER_LABELS)}
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    BertForTokenClassification(config).eval().save_pretrained(str(directory))
    return directory


def write_conll(path: Path, sentences: int = 120, seed: int = 0) -> Path:
    """A small CoNLL-2003-style file with a learnable signal: w0-w9 are person names (B-PER, and
    I-PER for a second name), w10-w19 places (B-LOC), the other words O; -DOCSTART- and blank lines
    as in the original files."""
    import random

    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(sentences):
        words: list[tuple[str, str]] = []
        for _ in range(rng.randint(3, 8)):
            kind = rng.random()
            if kind < 0.2:
                words.append((f"w{rng.randint(0, 9)}", "B-PER"))
                if rng.random() < 0.5:
                    words.append((f"w{rng.randint(0, 9)}", "I-PER"))
            elif kind < 0.35:
                words.append((f"w{rng.randint(10, 19)}", "B-LOC"))
            else:
                words.append((rng.choice(["movie", "plot", "good", "fun"] + [f"w{i}" for i in range(20, 59)]), "O"))
        lines += [f"{word} NN O {tag}" for word, tag in words] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def save_tiny_qa_teacher(directory: Path, num_layers: int = 3) -> Path:
    """A local question-answering checkpoint (BertForQuestionAnswering, dropout off) with the tiny
    WordPiece tokenizer, as a hub SQuAD model would be laid out."""
    from transformers import BertForQuestionAnswering

    save_tiny_teacher(directory, num_layers)
    config = tiny_bert(num_layers).config
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    BertForQuestionAnswering(config).eval().save_pretrained(str(directory))
    return directory


def write_squad(path: Path, contexts: int = 120, seed: int = 0, unanswerable_every: int = 3,
                context_words: tuple[int, int] = (6, 30)) -> Path:
    """A small SQuAD v2.0 JSON file with a learnable signal: each context is filler words (w20-w58,
    movie, plot) with one name (w0-w9) in it; the question "good w<k> ?" asks for the name, whose
    answer is that word. Every ``unanswerable_every``-th context has no name: its question is
    unanswerable. Contexts up to ``context_words`` long need several windows at small max_seq_len."""
    import json
    import random

    rng = random.Random(seed)
    articles = []
    for index in range(contexts):
        words = [rng.choice(["movie", "plot"] + [f"w{i}" for i in range(20, 59)])
                 for _ in range(rng.randint(*context_words))]
        answerable = index % unanswerable_every != 0
        answers = []
        if answerable:
            position = rng.randrange(len(words))
            words[position] = f"w{rng.randint(0, 9)}"
            start = len(" ".join(words[:position])) + (1 if position else 0)
            answers = [{"text": words[position], "answer_start": start}]
        context = " ".join(words)
        qa = {"id": f"q{index}", "question": f"good w{index % 59} ?", "answers": answers,
              "is_impossible": not answerable}
        articles.append({"title": f"t{index}", "paragraphs": [{"context": context, "qas": [qa]}]})
    path.write_text(json.dumps({"version": "v2.0", "data": articles}))
    return path


def randomly_pruned(student, losing: tuple[int, int], attention: float = 0.5, ffn: float = 0.25, seed: int = 1):
    """(masked, compacted): ``student`` with seeded random 32x32 block scores kept at ``attention`` /
    ``ffn`` density, layer ``losing[0]`` losing head ``losing[1]`` entirely (its value blocks scored
    -100), folded into masks and then compacted (empty heads and FFN rows removed)."""
    from distilprune.pruning import BlockPruner, compact

    pruner = BlockPruner(student, "topk", {"query": [32, 32], "key": [32, 32], "value": [32, 32], "attn_out": [32, 32]},
                         prune_ffn=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for scores in pruner.scores.values():
            scores.copy_(torch.randn(scores.shape, generator=generator))
        layer, head = losing
        pruner.scores[f"layer{layer}_value"][head] = -100
    pruner.values = {"attention": attention, "ffn": ffn}
    masked = pruner.fold(student)
    return masked, compact(masked)


@pytest.fixture
def tiny_teacher():
    return tiny_bert()


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, len(VOCAB), (3, 12), generator=generator)
    input_ids[:, 0] = 2  # [CLS]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    attention_mask[2, 4:] = 0
    return input_ids, attention_mask


def run_entry(*args: str, env: dict | None = None, entry: Path = DISTILL, cwd: Path = REPO,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """``python <entry> ARGS`` as a user runs it (offline W&B, unbuffered, 160 columns), with ``env``
    on top of this process's environment; stdout and stderr are captured as text."""
    full_env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", COLUMNS="160")
    full_env.pop("DISTILPRUNE_RUN_DIR", None)  # set by in-process runs; a new run must not inherit it
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(entry), *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def launch():
    """The launcher of the real entry point: ``launch(*args, env=..., entry=..., timeout=...)``."""
    return run_entry
