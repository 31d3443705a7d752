"""Block movement fine-pruning (Lagunas et al. 2021) and compaction, in plain PyTorch."""
