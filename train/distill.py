"""Distil a frozen teacher into a DistilBERT student, export it and report accuracy vs latency.

    python train/distill.py recipe=quickstart [key=value ...]
    python train/distill.py recipe=rotten_tomatoes/minilm6_to_distil4 train.epochs=2
    python train/distill.py recipe=runs/<name>/<time>/recipe.yaml      # replay a run
    python train/distill.py resume=runs/<name>/<time>                  # continue an interrupted run
    python train/distill.py --help                                      # recipes and every key

The logic lives in distilprune.train; this file only hands it the command line.
"""

import sys

from distilprune.train.cli import train

if __name__ == "__main__":
    sys.exit(train(sys.argv[1:]))
