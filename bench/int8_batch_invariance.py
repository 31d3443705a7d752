"""Three INT8 models of one trained student, side by side: does a sentence's prediction depend on its batch?

    python bench/int8_batch_invariance.py BUNDLE_OR_RUN_DIR [--sentences 600 --threads 2 --rounds 5]

BUNDLE_OR_RUN_DIR is a bundle (a directory with ``model.onnx``, the graph-optimized fp32 student, and its
tokenizer) or a run directory (its ``bundles/*/`` are searched; ``--bundle NAME`` picks one, default
``final``). From that fp32 model the script builds, in a temporary directory:

- ``dynamic``: per-channel dynamic INT8 (``quantize_int8(per_channel=True)``, the pipeline's default),
- ``static``: static INT8 calibrated on the first ``--calibration`` training sentences
  (``quantize.quantize_static_int8``),
- ``per_token``: per-token INT8 (``batch_invariant.quantize_per_token``, keys padded to ``--key-length``,
  default max_seq_len),

and measures on the Rotten Tomatoes test split (fixed seed-42 split; the student never trained on it):
accuracy one sentence per call on the whole split; on the first ``--sentences``, labels flipped and the
largest logit change when the same sentences run in consecutive batches of 32 padded to each batch's
longest; p50/p95 latency at batch 1 and 32, sequence 128 (all tokens real), and at batch 32 of real
sentences padded to the batch's longest, in alternating rounds in one process; file size.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("fp32", "dynamic", "static", "per_token")


def _find_model(path: Path, bundle: str) -> Path:
    if (path / "model.onnx").is_file():
        return path
    candidates = sorted(path.glob("bundles/*/model.onnx"))
    for candidate in candidates:
        if candidate.parent.name == bundle:
            return candidate.parent
    names = [c.parent.name for c in candidates]
    sys.exit(
        f"{path} holds no model.onnx and no bundles/{bundle}/model.onnx (bundles found: {names or 'none'}). "
        f"Pass a bundle directory, or a run directory with --bundle NAME."
    )


def _encode(tokenizer, texts: list[str], max_len: int, pad_to: int | None = None) -> dict[str, np.ndarray]:
    padding = "max_length" if pad_to else "longest"
    enc = tokenizer(texts, truncation=True, max_length=max_len, padding=padding, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def _build(fp32: Path, work: Path, calibration: list[dict], key_length: int) -> dict[str, Path]:
    from distilprune.export.batch_invariant import quantize_per_token
    from distilprune.export.onnx_export import quantize_int8
    from distilprune.export.quantize import quantize_static_int8

    paths = {"fp32": fp32}
    paths["dynamic"] = work / "dynamic.onnx"
    quantize_int8(fp32, paths["dynamic"], per_channel=True)
    paths["static"] = work / "static.onnx"
    quantize_static_int8(fp32, paths["static"], calibration)
    paths["per_token"] = work / "per_token.onnx"
    quantize_per_token(fp32, paths["per_token"], key_length=key_length)
    return paths


def _alone_logits(session, tokenizer, texts: list[str], max_len: int) -> np.ndarray:
    return np.concatenate([session.run(None, _encode(tokenizer, [t], max_len))[0] for t in texts])


def _batched_logits(session, tokenizer, texts: list[str], max_len: int, batch: int = 32) -> np.ndarray:
    return np.concatenate([
        session.run(None, _encode(tokenizer, texts[i:i + batch], max_len))[0] for i in range(0, len(texts), batch)
    ])


def _timing(sessions: dict, feeds: dict[str, dict], rounds: int, runs: dict[str, int]) -> dict:
    """{feed: {method: [p50 of each round]}} and pooled samples, methods alternating inside every round."""
    per_round = {f: {m: [] for m in sessions} for f in feeds}
    pooled = {f: {m: [] for m in sessions} for f in feeds}
    for name, feed in feeds.items():
        for session in sessions.values():
            session.run(None, feed)  # warmup
    for _ in range(rounds):
        for name, feed in feeds.items():
            for method, session in sessions.items():
                samples = []
                for _ in range(runs[name]):
                    start = time.perf_counter()
                    session.run(None, feed)
                    samples.append(1e3 * (time.perf_counter() - start))
                per_round[name][method].append(float(np.median(samples)))
                pooled[name][method].extend(samples)
    return {"per_round": per_round, "pooled": pooled}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="bundle directory or run directory")
    parser.add_argument("--bundle", default="final", help="bundle name inside a run directory")
    parser.add_argument("--sentences", type=int, default=600, help="test sentences for the batch check")
    parser.add_argument("--calibration", type=int, default=256, help="training sentences for static INT8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs-b1", type=int, default=20)
    parser.add_argument("--runs-b32", type=int, default=3)
    parser.add_argument("--key-length", type=int, default=None,
                        help="per_token's fixed attention key count (default: max_seq_len, 128)")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from distilprune.config import DataConfig
    from distilprune.data import load_data
    from distilprune.export.measure import machine_info
    from distilprune.export.onnx_export import file_mb, ort_session

    bundle = _find_model(args.path, args.bundle)
    tokenizer = AutoTokenizer.from_pretrained(str(bundle))
    data = load_data(DataConfig())
    max_len = DataConfig().max_seq_len
    test_texts, test_labels = list(data.test.texts), np.array(data.test.labels)
    calibration = [
        _encode(tokenizer, list(data.train.texts[i:i + 16]), max_len)
        for i in range(0, min(args.calibration, len(data.train)), 16)
    ]
    with tempfile.TemporaryDirectory(prefix="int8-invariance-") as work:
        paths = _build(bundle / "model.onnx", Path(work), calibration, args.key_length or max_len)
        sessions = {m: ort_session(p, args.threads) for m, p in paths.items()}
        rows = {m: {"size_mb": file_mb(p)} for m, p in paths.items()}
        for method, session in sessions.items():
            alone = _alone_logits(session, tokenizer, test_texts, max_len)
            batched = _batched_logits(session, tokenizer, test_texts[: args.sentences], max_len)
            head = alone[: args.sentences]
            rows[method].update(
                accuracy=float((alone.argmax(-1) == test_labels).mean()),
                flips=int((head.argmax(-1) != batched.argmax(-1)).sum()),
                max_change=float(np.abs(head - batched).max()),
            )
        rng = np.random.default_rng(0)
        picks = [test_texts[i] for i in rng.choice(len(test_texts), 32, replace=False)]
        feeds = {
            "b1": _encode(tokenizer, [test_texts[0]], max_len, pad_to=max_len),
            "b32": _encode(tokenizer, picks, max_len, pad_to=max_len),
            "b32_real": _encode(tokenizer, picks, max_len),
        }
        feeds["b1"]["attention_mask"][:] = 1  # all 128 positions real: the sequence-128 case
        feeds["b32"]["attention_mask"][:] = 1
        runs = {"b1": args.runs_b1, "b32": args.runs_b32, "b32_real": args.runs_b32}
        timing = _timing(sessions, feeds, args.rounds, runs)
    _print(args, rows, timing, machine_info(args.threads), len(test_texts), feeds["b32_real"]["input_ids"].shape[1])
    return 0


def _print(args, rows: dict, timing: dict, machine: dict, test_count: int, real_len: int) -> None:
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"date {datetime.date.today()}; {machine['cpu']} ({', '.join(machine['instruction_sets'])}), "
          f"{machine['logical_cores']} logical cores, {args.threads} threads, onnxruntime {machine['onnxruntime']}")
    print(f"command: {command}")
    print(f"accuracy: {test_count} test sentences, one per call; batch check: first {args.sentences}, consecutive "
          f"batches of 32 padded to their longest vs alone; latency: {args.rounds} alternating rounds, b1 "
          f"{args.runs_b1} runs, b32 {args.runs_b32} runs per round; b32 real = 32 test sentences padded to {real_len}")
    pooled = timing["pooled"]
    pct = lambda f, m, q: float(np.percentile(pooled[f][m], q))  # noqa: E731
    print(f"{'method':<10} {'acc %':>6} {'flips':>6} {'max chg':>9} {'b1 p50':>7} {'b1 p95':>7} {'b32 p50':>8} "
          f"{'b32 p95':>8} {'b32real p50':>11} {'MB':>6}")
    for method, row in rows.items():
        print(f"{method:<10} {100 * row['accuracy']:>6.2f} {row['flips']:>6d} {row['max_change']:>9.2e} "
              f"{pct('b1', method, 50):>7.2f} {pct('b1', method, 95):>7.2f} {pct('b32', method, 50):>8.1f} "
              f"{pct('b32', method, 95):>8.1f} {pct('b32_real', method, 50):>11.1f} {row['size_mb']:>6.1f}")
    print("per-round p50 ratio to dynamic (min / median / max over rounds; spread = timing noise):")
    for feed, per_method in timing["per_round"].items():
        base = np.array(per_method["dynamic"])
        parts = []
        for method, values in per_method.items():
            if method != "dynamic":
                ratio = np.array(values) / base
                parts.append(f"{method} {ratio.min():.2f}/{np.median(ratio):.2f}/{ratio.max():.2f}")
        print(f"  {feed:<9} " + "; ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
