"""Training step time of distillation with and without block pruning, side by side in one process.

    python bench/pruning_step_cost.py [--steps 30] [--threads 2] [--precision bf16|fp32]

Real assets: the MiniLM-L6 teacher (live, frozen) and the 4-layer student built from it, on real
Rotten Tomatoes batches of 32 padded to their longest example. Each configuration runs the same
batches: teacher forward, student forward with KD + CE loss, backward, AdamW step. With pruning,
the hybrid masks (32x32 blocks in Q/K/V/O, FFN rows) are recomputed every step at a fixed 50%
density (the cost of the masks does not depend on the density). Alternating rounds, median step time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from distilprune.config import DataConfig
from distilprune.data import load_data
from distilprune.tasks import default_task
from distilprune.losses import kd_kl_loss
from distilprune.pruning import HYBRID_BLOCKS, BlockPruner
from distilprune.students import student_from_teacher
from distilprune.teacher import load_teacher, load_tokenizer, resolve_teacher


def make_step(student, teacher, pruner):
    params = [{"params": list(student.parameters()), "lr": 1e-4}]
    if pruner is not None:
        params.append({"params": list(pruner.parameters()), "lr": 1e-2})
    optimizer = torch.optim.AdamW(params)

    def step(batch, autocast: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = student(batch["input_ids"], batch["attention_mask"])
            loss = 0.9 * kd_kl_loss(logits, teacher_logits, 2.0) + 0.1 * F.cross_entropy(logits.float(), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    source, _ = resolve_teacher("minilm-l6")
    tokenizer = load_tokenizer(source, "minilm-l6")
    teacher = load_teacher(source, "minilm-l6", num_labels=2).eval().requires_grad_(False)
    data = load_data(DataConfig(train_examples=32 * args.steps))
    task = default_task()
    loader = DataLoader(task.tokenize(data.train, tokenizer, 128), batch_size=32, shuffle=False,
                        collate_fn=partial(task.collate, pad_token_id=tokenizer.pad_token_id))
    batches = list(loader)

    configs = {}
    for name in ("distillation", "distillation + hybrid pruning"):
        student = student_from_teacher(teacher, 4, [0, 2, 4, 5]).train()
        pruner = None
        if "pruning" in name:
            pruner = BlockPruner(student, "topk", HYBRID_BLOCKS, prune_ffn=True)
            pruner.values = {"attention": 0.5, "ffn": 0.5}
        configs[name] = make_step(student, teacher, pruner)

    autocast = args.precision == "bf16"
    times: dict[str, list[float]] = {name: [] for name in configs}
    for name, step in configs.items():  # warmup
        for batch in batches[:3]:
            step(batch, autocast)
    for _ in range(args.rounds):
        for name, step in configs.items():
            for batch in batches:
                start = time.perf_counter()
                step(batch, autocast)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["distillation"])
    print(f"{args.threads} threads, precision {args.precision}, batch 32 (real data, dynamic padding), "
          f"{args.rounds} x {len(batches)} steps per configuration, median step time:")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:<32} {median * 1e3:8.1f} ms/step   {median / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
