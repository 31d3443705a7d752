"""The bundle's INT8 model against the plain recipe, on the same checkpoint, side by side in one process.

    python bench/bundle_vs_plain.py runs/<recipe>/<time> [--checkpoint final] [--runs 100] [--rounds 3]

plain  = torch.onnx.export + onnxruntime.quantization.quantize_dynamic with its defaults, no offline
         graph optimization (what most tutorials do);
bundle = the run's bundles/<checkpoint>/model.int8.onnx (transformer-fused graph, INT8 accuracy gate).

Both run in ONNX Runtime sessions with identical settings (threads, ORT_ENABLE_ALL), timed at batch 1,
sequence 128 in alternating rounds so drift on the machine hits both alike; accuracy is on the run's
whole test split. Prints both, the speed ratio and the accuracy difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="final")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from onnxruntime.quantization import quantize_dynamic

    from distilprune.config import load_recipe
    from distilprune.export.measure import latency_inputs, latency_onnx, machine_info, rows_onnx
    from distilprune.export.onnx_export import _quiet, export_onnx, file_mb, ort_session
    from distilprune.export.run_export import _test_loader
    from distilprune.students import DistilBertStudent
    from distilprune.tasks import task_for
    from distilprune.teacher import load_tokenizer

    run_dir = args.run_dir
    bundle_int8 = run_dir / "bundles" / args.checkpoint / "model.int8.onnx"
    checkpoint = run_dir / "checkpoints" / args.checkpoint
    if not bundle_int8.is_file() or not checkpoint.is_dir():
        print(f"error: {run_dir} has no exported checkpoint {args.checkpoint!r} (need checkpoints/{args.checkpoint}/ "
              f"and bundles/{args.checkpoint}/model.int8.onnx).", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    recipe = load_recipe([f"recipe={run_dir / 'recipe.yaml'}"])
    tokenizer = load_tokenizer(str(run_dir / "tokenizer"), str(run_dir / "tokenizer"))
    task = task_for(recipe)
    data = task.load()
    loader = _test_loader(task, task.tokenize(data.test, tokenizer, recipe.data.max_seq_len), tokenizer,
                          recipe.data.eval_batch_size)
    student = DistilBertStudent.load(checkpoint)

    with tempfile.TemporaryDirectory() as tmp:
        raw = export_onnx(student, Path(tmp) / "plain.onnx", recipe.export.opset)
        plain_int8 = Path(tmp) / "plain.int8.onnx"
        with _quiet():
            quantize_dynamic(str(raw), str(plain_int8))  # the library defaults, nothing tuned
        sessions = {"plain": ort_session(plain_int8, args.threads), "bundle": ort_session(bundle_int8, args.threads)}
        sizes = {"plain": file_mb(plain_int8), "bundle": file_mb(bundle_int8)}
        accuracy = {name: task.score(rows_onnx(session, loader, task), data.test).value for name, session in sessions.items()}
        inputs = latency_inputs(1, 128, tokenizer.vocab_size)
        p50s: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.rounds):
            for name, session in sessions.items():
                p50s[name].append(latency_onnx(session, inputs, args.warmup, args.runs)["p50"])

    machine = machine_info(args.threads)
    print(f"{machine['cpu']} ({', '.join(machine['instruction_sets'])}), {args.threads} threads, "
          f"onnxruntime {machine['onnxruntime']}; checkpoint {checkpoint}")
    print(f"batch 1, sequence 128, {args.rounds} alternating rounds x ({args.warmup} warmup + {args.runs} runs); "
          f"accuracy on {len(data.test)} test examples")
    print(f"{'model':<8} {'p50 ms (median of rounds)':>26} {'rounds':>28} {'test acc %':>11} {'size MB':>8}")
    med = {}
    for name in sessions:
        med[name] = sorted(p50s[name])[len(p50s[name]) // 2]
        rounds = ", ".join(f"{v:.2f}" for v in p50s[name])
        print(f"{name:<8} {med[name]:>26.2f} {rounds:>28} {100 * accuracy[name]:>11.2f} {sizes[name]:>8.1f}")
    speed = med["plain"] / med["bundle"]
    print(f"bundle vs plain: {speed:.2f}x as fast (p50); accuracy {100 * (accuracy['bundle'] - accuracy['plain']):+.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
