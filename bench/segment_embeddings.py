"""Sentence pairs: a student without segment embeddings (the fold) vs one that keeps them, measured.

    python bench/segment_embeddings.py                              # 2 variants x seeds 42 7, ~50 min on 2 busy cores
    python bench/segment_embeddings.py --seeds 42 --out runs/segments-smoke teacher.epochs=1 train.epochs=1
    python bench/segment_embeddings.py --summarize runs/segments/<time>    # table of finished runs only

The pair task is built from real text with real labels that ship offline: the built-in ``trec``
asset's questions and coarse classes. Each question A of a split is paired with one other question of
the *same split* and the *same* coarse class (label ``same``) and one of a different class (label
``different``), drawn with a fixed seed: a QQP-like task where both segments are questions, so the
model must tell which tokens belong to which question to compare them. The TREC carving of
:func:`distilprune.data.load_data` (train / validation / test share no question) is kept, so no
question of a test pair occurs in any training pair.

The pairs are written as ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` (question1,
question2, label) into ``<out>/pairs``; then the real pipeline, ``train/distill.py`` with
``data.train_file=... data.text_pair_column=question2``, runs once per variant
(``student.segment_embeddings=false|true``) and seed. Both variants of one seed fine-tune the same
teacher (its cache key holds the data and the seed, not the student), so they differ only in the student.

For every run the script reads ``report.json`` (teacher accuracy, the student's PyTorch fp32 and ONNX
INT8 test accuracy with the report's 95% bootstrap intervals), checks the bundle's ``input_spec.json``
(``token_type_ids`` an input exactly for the segment variant) and runs ``verify_bundle.py <bundle>
--no-grid``. It then reruns each bundle's INT8 model on the test pairs one pair per call (as the report
measures INT8 accuracy), checks that it reproduces the report's accuracy, and gives the paired bootstrap
interval of segment minus fold on the same test pairs, per seed. Everything is written to
``<out>/summary.json`` and ``<out>/summary.md`` and printed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"fold": "false", "segment": "true"}
PAIR_SEED = 0
# A small budget (1,500 of the 8,610 training pairs, 3 + 3 epochs): pairs of two questions are at most
# ~85 MiniLM tokens (longest TREC question: 41), so max_seq_len 128 truncates nothing; pruning is off
# (the variants differ in the embeddings only); latency is timed briefly, since only accuracy is compared.
BUDGET = [
    "recipe=trec/minilm6_to_distil4", "teacher.epochs=3", "train.epochs=3", "data.max_seq_len=128",
    "data.train_examples=1500",
    "pruning.enabled=false", "tracking.wandb=false", "export.gpu=off",
    "export.latency_runs=5", "export.latency_warmup=2", "export.latency_rounds=1",
    "export.grid_batch_sizes=[1]", "export.grid_seq_lens=[128]",
]


def build_pairs(out: Path, seed: int = PAIR_SEED) -> dict[str, dict[str, int]]:
    """Write ``<out>/{train,validation,test}.jsonl`` of TREC question pairs; returns counts per split.

    Per question A of a split: one partner of its coarse class (``same``) and one of another class
    (``different``), both drawn from that split only, so splits share no question.
    """
    from distilprune.config.schema import DataConfig
    from distilprune.data import load_data

    data = load_data(DataConfig(dataset="trec", label_granularity="coarse"))
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts = {}
    for split_name in ("train", "validation", "test"):
        split = getattr(data, split_name)
        by_class: dict[int, list[int]] = {}
        for i, label in enumerate(split.labels):
            by_class.setdefault(label, []).append(i)
        rows = []
        for i, (text, label) in enumerate(zip(split.texts, split.labels)):
            same = [j for j in by_class[label] if j != i]
            other = [j for c, members in by_class.items() if c != label for j in members]
            if same:  # a class with one question in this split has no positive partner
                rows.append({"question1": text, "question2": split.texts[rng.choice(same)], "label": "same"})
            rows.append({"question1": text, "question2": split.texts[rng.choice(other)], "label": "different"})
        with open(out / f"{split_name}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[split_name] = {"questions": len(split), "pairs": len(rows),
                              "same": sum(r["label"] == "same" for r in rows)}
    return counts


def run_variant(variant: str, seed: int, pairs: Path, runs: Path, overrides: list[str]) -> Path:
    """One real pipeline run; returns its run directory (``<runs>/<variant>-seed<seed>/<time>``)."""
    name = f"{variant}-seed{seed}"
    command = [sys.executable, str(ROOT / "train" / "distill.py"), *BUDGET,
               f"data.train_file={pairs / 'train.jsonl'}", f"data.validation_file={pairs / 'validation.jsonl'}",
               f"data.test_file={pairs / 'test.jsonl'}", "data.text_column=question1",
               "data.text_pair_column=question2", "data.label_column=label",
               f"student.segment_embeddings={VARIANTS[variant]}", f"seed={seed}",
               f"name={name}", f"output_dir={runs}", *overrides]
    print(f"\n== {name}: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the {name} run failed (exit {done.returncode}); see its output above.")
    return _single_run_dir(runs / name)


def _single_run_dir(parent: Path) -> Path:
    found = sorted(p.parent for p in parent.glob("*/report.json"))
    if not found:
        raise SystemExit(f"no report.json under {parent}/*/ (export disabled, or the run did not finish).")
    return found[-1]


def verify_bundle(bundle: Path, variant: str) -> dict:
    """The bundle's declared inputs and ``verify_bundle.py --no-grid``'s exit status and last line."""
    inputs = [i["name"] for i in json.loads((bundle / "input_spec.json").read_text())["inputs"]]
    expects_segments = variant == "segment"
    done = subprocess.run([sys.executable, str(bundle / "verify_bundle.py"), str(bundle), "--no-grid"],
                          capture_output=True, text=True)
    tail = (done.stdout + done.stderr).strip().splitlines()
    return {"inputs": inputs, "inputs_as_expected": ("token_type_ids" in inputs) == expects_segments,
            "verify_rc": done.returncode, "verify_last_line": tail[-1] if tail else ""}


def int8_correct(bundle: Path, pairs: Path, count: int) -> np.ndarray:
    """(count,) 1.0 where the bundle's INT8 model, one pair per call, predicts the gold label of the
    first ``count`` test pairs (the report's test rows)."""
    from transformers import AutoTokenizer

    from distilprune.export import runtime

    spec = json.loads((bundle / "input_spec.json").read_text())
    label_ids = {name: int(i) for i, name in spec["id2label"].items()}
    tokenizer = AutoTokenizer.from_pretrained(str(bundle))
    session = runtime.make_session(bundle / "model.int8.onnx", threads=2)
    rows = [json.loads(line) for line in (pairs / "test.jsonl").read_text(encoding="utf-8").splitlines()][:count]
    max_seq_len = spec["max_seq_len"]
    correct = np.zeros(len(rows))
    for k, row in enumerate(rows):
        enc = tokenizer(row["question1"], row["question2"], truncation=True, max_length=max_seq_len, return_tensors="np")
        feed = runtime.session_feed(session, enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64),
                                    enc["token_type_ids"].astype(np.int64))
        logits = session.run(["logits"], feed)[0]  # (1, labels) float32
        correct[k] = float(logits[0].argmax() == label_ids[row["label"]])
    return correct


def run_row(run_dir: Path, variant: str, seed: int, pairs: Path) -> tuple[dict, np.ndarray]:
    """One table row from a run's report, with its bundle checked and its INT8 test predictions."""
    report = json.loads((run_dir / "report.json").read_text())
    ckpt = report["checkpoints"][-1]
    bundle = ROOT / ckpt["bundle"] if not Path(ckpt["bundle"]).is_absolute() else Path(ckpt["bundle"])
    if not bundle.is_dir():
        bundle = run_dir / "bundles" / ckpt["name"]
    correct = int8_correct(bundle, pairs, report["data"]["rows"]["test"])
    row = {"variant": variant, "seed": seed, "run": str(run_dir), "bundle": str(bundle),
           "teacher": report["teacher"]["accuracy"], "teacher_ci": report["teacher"]["accuracy_ci"],
           "pytorch_fp32": ckpt["accuracy"]["pytorch_fp32"], "pytorch_fp32_ci": ckpt["accuracy_ci"]["pytorch_fp32"],
           "onnx_int8": ckpt["accuracy"]["onnx_int8"], "onnx_int8_ci": ckpt["accuracy_ci"]["onnx_int8"],
           "int8_rerun": float(correct.mean()), "test_pairs": len(correct),
           **verify_bundle(bundle, variant)}
    return row, correct


def _pct(value: float, ci: dict | None = None) -> str:
    return f"{100 * value:.2f}" + (f" [{100 * ci['low']:.2f}, {100 * ci['high']:.2f}]" if ci else "")


def summarize(rows: list[dict], correct: dict[tuple[str, int], np.ndarray]) -> tuple[str, dict]:
    """Markdown table (per run, means per variant, segment - fold) and the same numbers as a dict."""
    from distilprune.export import bootstrap

    lines = ["| variant | seed | teacher | student PyTorch fp32 | student ONNX INT8 | INT8 rerun | inputs | verify |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {_pct(r['teacher'], r['teacher_ci'])} | "
                     f"{_pct(r['pytorch_fp32'], r['pytorch_fp32_ci'])} | {_pct(r['onnx_int8'], r['onnx_int8_ci'])} | "
                     f"{_pct(r['int8_rerun'])} | {', '.join(r['inputs'])} | "
                     f"{'pass' if r['verify_rc'] == 0 else 'FAIL rc=' + str(r['verify_rc'])} |")
    means = {}
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if mine:
            means[variant] = {k: statistics.fmean(r[k] for r in mine) for k in ("teacher", "pytorch_fp32", "onnx_int8")}
            means[variant]["seeds"] = len(mine)
            lines.append(f"| **{variant} mean** | {len(mine)} seeds | {_pct(means[variant]['teacher'])} | "
                         f"{_pct(means[variant]['pytorch_fp32'])} | {_pct(means[variant]['onnx_int8'])} | | | |")
    summary = {"rows": rows, "means": means, "paired": {}}
    if len(means) == 2:
        diff = {k: means["segment"][k] - means["fold"][k] for k in ("teacher", "pytorch_fp32", "onnx_int8")}
        summary["difference"] = diff
        lines.append(f"| **segment - fold** | | {100 * diff['teacher']:+.2f} | {100 * diff['pytorch_fp32']:+.2f} | "
                     f"{100 * diff['onnx_int8']:+.2f} | | | |")
        lines += ["", "Segment minus fold, ONNX INT8, paired bootstrap over the same test pairs (95%, points):"]
        for seed in sorted({r["seed"] for r in rows}):
            if ("fold", seed) in correct and ("segment", seed) in correct:
                d = bootstrap.paired_difference_interval(correct[("segment", seed)], correct[("fold", seed)])
                summary["paired"][seed] = d
                lines.append(f"- seed {seed}: {100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]")
    return "\n".join(lines) + "\n", summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides passed to every run (after the budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    parser.add_argument("--out", type=Path, default=None, help="output directory (default runs/segments/<time>)")
    parser.add_argument("--summarize", type=Path, default=None, help="only summarize the finished runs in this directory")
    args = parser.parse_args(argv)
    out = (args.summarize or args.out or ROOT / "runs" / "segments" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    pairs, runs = out / "pairs", out / "runs"
    started = time.time()
    if args.summarize is None:
        counts = build_pairs(pairs)
        print("pairs:", json.dumps(counts), flush=True)
        for seed in args.seeds:
            for variant in VARIANTS:
                run_variant(variant, seed, pairs, runs, args.overrides)
    rows, correct = [], {}
    for run_parent in sorted(runs.glob("*-seed*")):
        variant, seed = run_parent.name.rsplit("-seed", 1)
        row, units = run_row(_single_run_dir(run_parent), variant, int(seed), pairs)
        rows.append(row)
        correct[(variant, int(seed))] = units
    rows.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))
    table, summary = summarize(rows, correct)
    command = "python bench/segment_embeddings.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"# Segment embeddings on TREC question pairs (same coarse class?)\n\nCommand: `{command}`  \n"
              f"Date: {time.strftime('%Y-%m-%d')}  \nWall time: {(time.time() - started) / 60:.1f} min  \n"
              f"Budget: `{' '.join(BUDGET)}`\n\n")
    (out / "summary.md").write_text(header + table)
    (out / "summary.json").write_text(json.dumps({"command": command, "budget": BUDGET, **summary}, indent=2, default=str))
    print("\n" + header + table)
    bad = [r for r in rows if r["verify_rc"] != 0 or not r["inputs_as_expected"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
