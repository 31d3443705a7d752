"""INT8 bundles of several runs and a run's teacher, timed side by side in one process.

    python bench/same_process_latency.py --teacher-run runs/<recipe>/<time> BUNDLE [BUNDLE ...] [--rounds 3 --runs 100]

Run reports are measured in separate processes, and on a shared machine a process's latency can move
by tens of percent; ratios between runs ("pruned vs unpruned", "student vs teacher") are therefore
measured here, in alternating rounds (batch 1, sequence 128 by default): the teacher in PyTorch fp32
with SDPA attention (its fastest form), each bundle's model.int8.onnx in ONNX Runtime. The first
bundle is the baseline of the "vs first" column.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--teacher-run", type=Path, required=True, help="run directory whose teacher to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from distilprune.export.measure import latency_inputs, latency_onnx, latency_pytorch, machine_info
    from distilprune.export.onnx_export import ort_session
    from distilprune.teacher import load_teacher

    from distilprune.config import load_recipe
    from distilprune.tasks import TASKS

    torch.set_num_threads(args.threads)
    source = json.loads((args.teacher_run / "run_info.json").read_text())["teacher"]["source"]
    task = load_recipe([f"recipe={args.teacher_run / 'recipe.yaml'}"]).task  # the teacher's model class
    teacher = load_teacher(source, source, num_labels=None, auto_class=TASKS[task].hf_auto_class).eval()
    teacher.set_attn_implementation("sdpa")
    inputs = latency_inputs(args.batch_size, args.seq_len, teacher.config.vocab_size)
    names = ["teacher (PyTorch fp32, SDPA)"] + [str(b) for b in args.bundles]
    sessions = [ort_session(b / "model.int8.onnx", args.threads) for b in args.bundles]
    p50s: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        p50s[names[0]].append(latency_pytorch(teacher, inputs, args.threads, args.warmup, args.runs, hf=True)["p50"])
        for name, session in zip(names[1:], sessions):
            p50s[name].append(latency_onnx(session, inputs, args.warmup, args.runs)["p50"])

    machine = machine_info(args.threads)
    print(f"{machine['cpu']} ({', '.join(machine['instruction_sets'])}), {args.threads} threads; batch "
          f"{args.batch_size}, sequence {args.seq_len}; {args.rounds} alternating rounds x ({args.warmup} warmup + {args.runs} runs)")
    median = {name: sorted(v)[len(v) // 2] for name, v in p50s.items()}
    first = median[names[1]]
    print(f"{'model':<90} {'p50 ms':>8} {'vs teacher':>11} {'vs first':>9}  rounds")
    for name in names:
        rounds = ", ".join(f"{v:.2f}" for v in p50s[name])
        print(f"{name:<90} {median[name]:>8.2f} {median[names[0]] / median[name]:>10.2f}x "
              f"{first / median[name]:>8.2f}x  {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
