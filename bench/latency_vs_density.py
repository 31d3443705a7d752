"""ONNX INT8 latency against structured density, measured side by side in one process.

    python bench/latency_vs_density.py [--threads 2] [--seq-len 128] [--runs 50]

Students are built with random weights and structure already pruned to the given head counts and
FFN widths (latency does not depend on the weight values), exported through the same path as the
training runs (ONNX export -> fused graph -> dynamic INT8), and timed at batch 1. Baselines in the
same process: the unpruned student in INT8, and BERT-base (12 layers, hidden 768) in PyTorch fp32
as Hugging Face ships it. Students run their last block for the [CLS] row only (what the training
runs export; exact for the logits); the "every row" column times the same student with its last
block over every token, so the share of the speedup that comes from that is visible.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from distilprune.export.measure import latency_inputs, latency_onnx, latency_pytorch, machine_info
from distilprune.export.onnx_export import export_student, ort_session
from distilprune.students import DistilBertStudent, StudentConfig

# (name, hidden, head_dim, full heads, full FFN width)
GEOMETRIES = {
    "minilm-width (hidden 384, heads of 32)": (384, 32, 12, 1536),
    "bert-base-width (hidden 768, heads of 64)": (768, 64, 12, 3072),
}
# Kept fraction of heads and of FFN rows. (0.5, 0.33) is the hybrid density of Lagunas et al. 2021
# (roughly half the heads and a third of the FFN kept).
DENSITIES = [(1.0, 1.0), (1.0, 0.33), (0.5, 0.5), (0.5, 0.33), (0.33, 0.25), (0.25, 0.15)]


def student(hidden: int, head_dim: int, heads: int, ffn: int, layers: int = 4) -> DistilBertStudent:
    config = StudentConfig(vocab_size=30522, hidden_size=hidden, head_dim=head_dim,
                           heads_per_layer=[heads] * layers, ffn_width_per_layer=[ffn] * layers)
    return DistilBertStudent(config).eval()


class EveryRowLastBlock(nn.Module):
    """``student`` with its last block computed for every token (same logits, more work)."""

    def __init__(self, student: DistilBertStudent) -> None:
        super().__init__()
        self.student, self.config = student, student.config
        self.distilbert = student.distilbert  # export_student reads the vocabulary size from here

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.student(input_ids, attention_mask, output_hidden_states=True)[0]


def int8_p50(model: nn.Module, directory: Path, inputs, args) -> float:
    exported = export_student(model, directory)
    return latency_onnx(ort_session(exported.int8_path, args.threads), inputs, args.warmup, args.runs)["p50"]


def bert_base():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(num_labels=2, attn_implementation="sdpa")).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    inputs = latency_inputs(1, args.seq_len, 30522)
    machine = machine_info(args.threads)
    print(f"Machine: {machine['cpu']} ({', '.join(machine['instruction_sets'])}), {args.threads} threads; "
          f"batch 1, sequence {args.seq_len}, {args.warmup} warmup + {args.runs} timed runs; p50 in ms.")
    print("Random weights: latency depends on shapes, not values. Students have 4 layers.\n")

    base = latency_pytorch(bert_base(), inputs, args.threads, args.warmup, args.runs, hf=True)["p50"]
    print(f"BERT-base (12 layers, hidden 768), PyTorch fp32 (SDPA): p50 {base:.2f} ms\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (hidden, head_dim, heads, ffn) in GEOMETRIES.items():
            print(f"{name}")
            print(f"{'heads kept':>10} {'FFN kept':>9} {'heads/layer':>11} {'FFN/layer':>9} {'INT8 p50 ms':>11} "
                  f"{'vs unpruned INT8':>16} {'vs BERT-base fp32':>17} {'every row: ms':>13} {'vs BERT-base':>12}")
            unpruned = None
            for head_frac, ffn_frac in DENSITIES:
                kept_heads, kept_ffn = max(1, round(heads * head_frac)), max(1, round(ffn * ffn_frac))
                directory = Path(tmp) / f"{hidden}-{kept_heads}-{kept_ffn}"
                model = student(hidden, head_dim, kept_heads, kept_ffn)
                p50 = int8_p50(model, directory / "cls", inputs, args)
                every_row = int8_p50(EveryRowLastBlock(model), directory / "every-row", inputs, args)
                unpruned = unpruned or p50
                print(f"{head_frac:>10.2f} {ffn_frac:>9.2f} {kept_heads:>11} {kept_ffn:>9} {p50:>11.2f} "
                      f"{unpruned / p50:>15.2f}x {base / p50:>16.1f}x {every_row:>13.2f} {base / every_row:>11.1f}x")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
