"""distilprune: distill a frozen BERT-family teacher into a small DistilBERT student, prune it,
compact it, export it to ONNX/INT8 and write down what it costs in accuracy and what it buys in
latency.

``src/`` is plain PyTorch; only ``train/`` knows Lightning.
"""

__version__ = "0.1.0"
