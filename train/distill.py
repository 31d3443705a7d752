"""Distil a frozen teacher into a DistilBERT student, export it and report accuracy vs latency.

    python train/distill.py recipe=quickstart [key=value ...]
    python train/distill.py recipe=rotten_tomatoes/minilm6_to_distil4 train.epochs=2
    python train/distill.py recipe=runs/<name>/<time>/recipe.yaml      # replay a run

The logic lives in distilprune.train.pipeline; this file only hands it the command line.
"""

import sys

from distilprune.train.pipeline import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
