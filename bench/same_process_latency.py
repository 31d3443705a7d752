"""INT8 bundles of several runs and a run's teacher, timed side by side in alternating rounds.

    python bench/same_process_latency.py --teacher-run runs/<recipe>/<time> BUNDLE [BUNDLE ...]
                                         [--rounds 5 --runs 100] [--onnx-process own|same]

Run reports are measured per run, and on a shared machine a process's latency can move by tens of
percent between minutes; ratios between runs ("pruned vs unpruned", "student vs teacher") are
therefore measured here, in alternating rounds (batch 1, sequence 128 by default): the teacher in
PyTorch fp32 with SDPA attention (its fastest form) in this process, and each bundle's
model.int8.onnx in ONNX Runtime. With ``--onnx-process own`` (the default) the ONNX models run in a
child process that imports only numpy and onnxruntime, as a serving process does; each round asks
it for every bundle right after the teacher's turn, and the process not timing waits blocked.
``--onnx-process same`` times them in this process, the one that has imported and run PyTorch.
The first bundle is the baseline of the "vs first" column. Ratios are the median of the per-round
ratios; each p50 is the median of the round medians, with every round's median listed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# The ONNX worker: reads one JSON request per line ({"model", "runs", "warmup"}), answers the p50 (ms)
# of that many timed calls. Imports numpy and onnxruntime only (through export/runtime.py).
ONNX_WORKER = r"""
import json, statistics, sys
sys.path.insert(0, sys.argv[1])
from runtime import make_session, random_inputs, session_feed, time_samples
threads, batch, seq, vocab = (int(v) for v in sys.argv[2:6])
ids, mask = random_inputs(batch, seq, vocab)
sessions = {}
for line in sys.stdin:
    request = json.loads(line)
    session = sessions.get(request["model"]) or sessions.setdefault(request["model"], make_session(request["model"], threads))
    feed = session_feed(session, ids, mask)
    samples = time_samples(lambda: session.run(None, feed), request["warmup"], request["runs"])
    print(json.dumps({"p50": statistics.median(samples), "modules": sorted(m for m in ("torch", "transformers") if m in sys.modules)}), flush=True)
"""


class OnnxWorker:
    """A child process that times ONNX models on request (its own process: no PyTorch in it)."""

    def __init__(self, threads: int, batch_size: int, seq_len: int, vocab_size: int):
        self.process = subprocess.Popen(
            [sys.executable, "-c", ONNX_WORKER, str(ROOT / "export"), str(threads), str(batch_size), str(seq_len),
             str(vocab_size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def p50(self, model: Path, warmup: int, runs: int) -> float:
        self.process.stdin.write(json.dumps({"model": str(model), "warmup": warmup, "runs": runs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the ONNX worker exited with {self.process.wait()} while timing {model}")
        answer = json.loads(line)
        assert not answer["modules"], f"the ONNX worker imported {answer['modules']}"
        return answer["p50"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--teacher-run", type=Path, required=True, help="run directory whose teacher to time")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as export.threads)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--onnx-process", choices=("own", "same"), default="own",
                        help="time the ONNX models in an onnxruntime-only child (own) or in this PyTorch process (same)")
    args = parser.parse_args(argv)

    from distilprune.config import load_recipe
    from distilprune.export.measure import latency_inputs, latency_onnx, latency_pytorch, machine_info
    from distilprune.export.runtime import threads_text
    from distilprune.export.onnx_export import ort_session
    from distilprune.tasks import TASKS
    from distilprune.teacher import load_teacher

    torch.set_num_threads(args.threads)
    source = json.loads((args.teacher_run / "run_info.json").read_text())["teacher"]["source"]
    task = load_recipe([f"recipe={args.teacher_run / 'recipe.yaml'}"]).task  # the teacher's model class
    teacher = load_teacher(source, source, num_labels=None, auto_class=TASKS[task].hf_auto_class).eval()
    teacher.set_attn_implementation("sdpa")
    vocab_size = teacher.config.vocab_size
    inputs = latency_inputs(args.batch_size, args.seq_len, vocab_size)
    names = ["teacher (PyTorch fp32, SDPA)"] + [str(b) for b in args.bundles]
    models = [b / "model.int8.onnx" for b in args.bundles]
    if args.onnx_process == "own":
        worker = OnnxWorker(args.threads, args.batch_size, args.seq_len, vocab_size)
        time_onnx = lambda model: worker.p50(model, args.warmup, args.runs)  # noqa: E731
    else:
        sessions = {model: ort_session(model, args.threads) for model in models}
        time_onnx = lambda model: latency_onnx(sessions[model], inputs, args.warmup, args.runs)["p50"]  # noqa: E731
    p50s: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        p50s[names[0]].append(latency_pytorch(teacher, inputs, args.threads, args.warmup, args.runs, hf=True)["p50"])
        for name, model in zip(names[1:], models):
            p50s[name].append(time_onnx(model))
    if args.onnx_process == "own":
        worker.close()

    machine = machine_info(args.threads)
    where = "an onnxruntime-only child process" if args.onnx_process == "own" else "this PyTorch process"
    print(f"{machine['cpu']} ({', '.join(machine['instruction_sets'])}), {threads_text(args.threads)}; batch "
          f"{args.batch_size}, sequence {args.seq_len}; {args.rounds} alternating rounds x ({args.warmup} warmup + "
          f"{args.runs} runs); ONNX models timed in {where}")
    median = {name: statistics.median(v) for name, v in p50s.items()}
    vs_teacher = {name: statistics.median(t / s for t, s in zip(p50s[names[0]], p50s[name])) for name in names}
    vs_first = {name: statistics.median(f / s for f, s in zip(p50s[names[1]], p50s[name])) for name in names}
    print(f"{'model':<90} {'p50 ms':>8} {'vs teacher':>11} {'vs first':>9}  round p50s")
    for name in names:
        rounds = ", ".join(f"{v:.2f}" for v in p50s[name])
        print(f"{name:<90} {median[name]:>8.2f} {vs_teacher[name]:>10.2f}x {vs_first[name]:>8.2f}x  {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
