"""Training-set augmentation for distillation (Tang et al. 2019, "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks", section 3.2).

A small labelled set gives the student few examples of the teacher's behaviour. Each augmented copy
of a training sentence is a perturbed version of it, word by word:

- with probability ``mask_prob`` a word becomes the tokenizer's mask token;
- else with probability ``swap_prob`` it becomes a random word of the training vocabulary (the paper
  picks a word of the same part of speech; no tagger ships offline, so any training word is used);
- then, with probability ``ngram_prob``, only a random window of 1 to ``ngram_max`` words is kept.

The copies carry no gold label (:data:`NO_LABEL`, PyTorch's cross-entropy ``ignore_index``): a
perturbation can change the sentiment, so the student learns them from the teacher's logits alone.
The copies are a pure function of the split and ``seed``, so a run, its resume and its teacher
output cache all see the same sentences.
"""

from __future__ import annotations

import random

from distilprune.data import Split

NO_LABEL = -100  # torch.nn.functional.cross_entropy's default ignore_index


def augment_split(
    split: Split,
    copies: int,
    mask_prob: float,
    swap_prob: float,
    ngram_prob: float,
    mask_token: str,
    seed: int,
    ngram_max: int = 5,
) -> Split:
    """``split`` followed by ``copies`` perturbed copies of every sentence (labels: NO_LABEL)."""
    if copies <= 0:
        return split
    rng = random.Random(seed)
    vocabulary = sorted({word for text in split.texts for word in text.split()})
    texts, labels = list(split.texts), list(split.labels)
    for _ in range(copies):
        for text in split.texts:
            words = []
            for word in text.split():
                draw = rng.random()
                if draw < mask_prob:
                    words.append(mask_token)
                elif draw < mask_prob + swap_prob and vocabulary:
                    words.append(rng.choice(vocabulary))
                else:
                    words.append(word)
            if len(words) > 1 and rng.random() < ngram_prob:
                width = rng.randint(1, min(ngram_max, len(words)))
                start = rng.randrange(len(words) - width + 1)
                words = words[start:start + width]
            texts.append(" ".join(words) or mask_token)
            labels.append(NO_LABEL)
    return Split(texts, labels)
