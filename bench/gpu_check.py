"""Every CUDA path of distilprune in one script: set up, test, train, export, verify, benchmark.

    python bench/gpu_check.py [--python PATH] [--out gpu_check.json] [--skip-tests] [--workdir DIR]
    make gpu-check                                  # the same, with the defaults

Steps, each reported as ok, failed or skipped (with the reason), in one table and one JSON file:

  setup        a fresh venv (.venv-gpu) with `pip install -c constraints.txt -e .[gpu,dev]`: torch's
               CUDA build and onnxruntime-gpu; skipped with --python (use that interpreter as it is)
  environment  torch and its CUDA build, the GPUs and their compute capability, the precision that
               train.precision=auto resolves to, ONNX Runtime and its execution providers
  quickstart   `train/distill.py recipe=quickstart train.precision=auto` on CUDA: the precision chosen,
               accuracies, wall time (the export inside verifies every bundle on CUDA too)
  ddp          the quickstart on 2 GPUs with DDP over NCCL (needs 2 GPUs)
  fp16_cuda    the quickstart's final bundle verified in a fresh process: fp16 graph on the CUDA
               execution provider through IOBinding, parity against the fp32 logits and the latency
               grid, its batch-1 sequence-128 p50 beside the CPU INT8 p50 of the same verification
  throughput   bench/train_throughput.py on CUDA (fine-tune vs distil vs cached vs pruning, ms/step)
  tests        the test suite (`make test`'s command) in that environment

On a machine without CUDA every GPU step is reported as skipped, not failed, and the script exits 0
when nothing failed. It uses only the standard library itself; the steps run in the chosen Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-gpu"
QUICKSTART = ["recipe=quickstart", "train.precision=auto", "train.progress_bar=false"]
DDP_BUDGET = ["data.train_examples=512", "data.eval_examples=128", "teacher.epochs=1", "train.epochs=1",
              "pruning.enabled=false", "train.devices=2", "train.strategy=ddp", "train.accelerator=gpu"]

ENVIRONMENT_PROBE = r"""
import json, torch
from distilprune.precision import resolve_precision
info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "gpus": [], "auto_precision": resolve_precision("auto", "auto")}
for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
    info["gpus"].append({"name": torch.cuda.get_device_name(index),
                         "capability": list(torch.cuda.get_device_capability(index)),
                         "memory_gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)})
try:
    import onnxruntime
    info["onnxruntime"] = onnxruntime.__version__
    info["onnxruntime_providers"] = onnxruntime.get_available_providers()
except ImportError as error:
    info["onnxruntime"] = f"not importable: {error}"
    info["onnxruntime_providers"] = []
print("ENV " + json.dumps(info))
"""


def _step(name: str, status: str, seconds: float = 0.0, **details) -> dict:
    return {"step": name, "status": status, "seconds": round(seconds, 1), **details}


# time.monotonic() after which no step may run (--deadline-s); every step's limit is cut to fit it
DEADLINE: float | None = None


def _run(command: list[str], log: Path, timeout: int, env: dict | None = None) -> tuple[int, str, float]:
    """Run ``command`` in the repository, output to ``log`` (and returned), with a wall-clock limit in s."""
    if DEADLINE is not None:
        timeout = max(1, min(timeout, int(DEADLINE - time.monotonic())))
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
        code, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as error:
        code = 124
        partial = error.stdout or b""  # bytes even with text=True (subprocess keeps the raw pipe data)
        partial = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        output = f"{partial}\n[gpu_check] timed out after {timeout} s"
    log.write_text(output)
    return code, output, time.perf_counter() - start


def setup(args, workdir: Path) -> tuple[dict, str]:
    if args.python:
        return _step("setup", f"skipped: --python {args.python} used as it is"), args.python
    python = VENV / "bin" / "python"
    commands = [[sys.executable, "-m", "venv", str(VENV)],
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "-c", "constraints.txt", "-e", ".[gpu,dev]"]]
    total = 0.0
    for command in commands:
        code, output, seconds = _run(command, workdir / "setup.log", 1800)
        total += seconds
        if code != 0:
            return _step("setup", f"failed: exit {code}: {output.strip()[-300:]}", total), str(python)
    return _step("setup", "ok", total, venv=str(VENV)), str(python)


def environment(python: str, workdir: Path) -> tuple[dict, dict]:
    code, output, seconds = _run([python, "-c", ENVIRONMENT_PROBE], workdir / "environment.log", 300)
    line = next((l for l in output.splitlines() if l.startswith("ENV ")), None)
    if code != 0 or line is None:
        return _step("environment", f"failed: exit {code}: {output.strip()[-300:]}", seconds), {}
    info = json.loads(line[4:])
    return _step("environment", "ok", seconds, **info), info


def tests(python: str, workdir: Path, skip: bool) -> dict:
    if skip:
        return _step("tests", "skipped: --skip-tests")
    code, output, seconds = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], workdir / "tests.log", 5400)
    summary = next((l.strip("= ") for l in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed)", l)), "")
    failed = re.findall(r"^FAILED (\S+)", output, flags=re.M)
    return _step("tests", "ok" if code == 0 else f"failed: exit {code}", seconds, summary=summary, failed=failed)


def _report_of(output: str) -> dict | None:
    line = next((l for l in reversed(output.splitlines()) if l.startswith("Report: ")), None)
    return json.loads(Path(line.removeprefix("Report: ")).read_text()) if line else None


def quickstart(python: str, workdir: Path, cuda: bool) -> dict:
    if not cuda:
        return _step("quickstart", "skipped: no CUDA device (torch.cuda.is_available() is False)")
    command = [python, "train/distill.py", *QUICKSTART, "train.accelerator=gpu", f"output_dir={workdir / 'runs'}"]
    code, output, seconds = _run(command, workdir / "quickstart.log", 1800, env={"WANDB_MODE": "offline"})
    report = _report_of(output) if code == 0 else None
    if report is None:
        return _step("quickstart", f"failed: exit {code}: {output.strip()[-400:]}", seconds)
    final = report["checkpoints"][-1]
    return _step("quickstart", "ok", seconds, precision=report.get("training", {}).get("precision"),
                 teacher_accuracy=report["teacher"]["accuracy"], final_int8_accuracy=final["accuracy"]["onnx_int8"],
                 in_run_gpu_verification=final.get("gpu", {}).get("status"), bundle=final["bundle"])


def ddp(python: str, workdir: Path, gpus: int) -> dict:
    if gpus < 2:
        return _step("ddp", f"skipped: {gpus} CUDA device(s); a 2-process DDP run needs 2")
    command = [python, "train/distill.py", *QUICKSTART, *DDP_BUDGET, f"output_dir={workdir / 'runs-ddp'}"]
    code, output, seconds = _run(command, workdir / "ddp.log", 1800, env={"WANDB_MODE": "offline"})
    report = _report_of(output) if code == 0 else None
    if report is None:
        return _step("ddp", f"failed: exit {code}: {output.strip()[-400:]}", seconds)
    return _step("ddp", "ok", seconds, processes=2, final_int8_accuracy=report["checkpoints"][-1]["accuracy"]["onnx_int8"])


def _cell(grid: list[dict], batch: int, seq: int) -> dict | None:
    return next((c for c in grid if c["batch_size"] == batch and c["seq_len"] == seq), None)


def fp16_cuda(python: str, workdir: Path, info: dict, bundle: str | None) -> dict:
    if "CUDAExecutionProvider" not in info.get("onnxruntime_providers", []):
        return _step("fp16_cuda", "skipped: ONNX Runtime has no CUDA execution provider here (install onnxruntime-gpu: "
                                  f"make setup-gpu); providers: {info.get('onnxruntime_providers')}")
    if bundle is None:
        return _step("fp16_cuda", "skipped: no bundle (the quickstart step did not produce one)")
    out = workdir / "verify.json"
    command = [python, "-m", "distilprune.export.verify", bundle, "--json", str(out)]
    code, output, seconds = _run(command, workdir / "verify.log", 1200)
    if not out.is_file():
        return _step("fp16_cuda", f"failed: exit {code}: {output.strip()[-400:]}", seconds)
    result = json.loads(out.read_text())
    gpu = result.get("gpu", {})
    fp16 = _cell(gpu.get("latency_grid", {}).get("onnx_fp16_cuda", []), 1, 128)
    int8 = _cell(result.get("latency_grid", {}).get("onnx_int8", []), 1, 128)
    ok = code == 0 and gpu.get("status") == "measured"
    return _step("fp16_cuda", "ok" if ok else f"failed: exit {code}, gpu status: {gpu.get('status')}", seconds,
                 provider=gpu.get("provider"), parity_max_abs_diff=gpu.get("parity_max_abs_diff"),
                 parity_atol=gpu.get("parity_atol"), fp16_cuda_b1_s128=fp16, cpu_int8_b1_s128=int8,
                 failed_checks=[c for c in result.get("checks", []) if not c.get("ok")])


def throughput(python: str, workdir: Path, cuda: bool) -> dict:
    if not cuda:
        return _step("throughput", "skipped: no CUDA device (torch.cuda.is_available() is False)")
    command = [python, "bench/train_throughput.py", "--steps", "20", "--warmup-steps", "5", "--rounds", "1"]
    code, output, seconds = _run(command, workdir / "throughput.log", 1200)
    rows = [l for l in output.splitlines() if re.match(r"\(\d\)", l)]
    return _step("throughput", "ok" if code == 0 and rows else f"failed: exit {code}: {output.strip()[-300:]}",
                 seconds, table=rows)


def _guarded(name: str, step, *args) -> dict:
    """Run one step; an unexpected error (say, a report without a key) fails that step, not the script."""
    try:
        return step(*args)
    except Exception as error:
        return _step(name, f"failed: {type(error).__name__}: {error}")


def summary_lines(steps: list[dict]) -> list[str]:
    lines = [f"{'step':<12} {'status':<8} {'seconds':>8}  details", "-" * 100]
    for step in steps:
        status = step["status"].split(":")[0]
        details = {k: v for k, v in step.items() if k not in ("step", "status", "seconds", "table")}
        reason = step["status"][len(status) + 2:] if ":" in step["status"] else ""
        text = "; ".join(filter(None, [reason, ", ".join(f"{k}={v}" for k, v in details.items()
                                                          if v not in (None, [], {}))]))
        lines.append(f"{step['step']:<12} {status:<8} {step['seconds']:>8.1f}  {text[:400]}")
        lines += [f"{'':<31}{row}" for row in step.get("table", [])]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="use this interpreter as it is instead of setting up .venv-gpu")
    parser.add_argument("--out", default="gpu_check.json", help="the summary as JSON (default: gpu_check.json)")
    parser.add_argument("--workdir", default="runs/gpu_check", help="logs and runs (default: runs/gpu_check)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the test suite")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="stop every step this many seconds after the start (a step cut short fails with exit 124)")
    args = parser.parse_args(argv)
    global DEADLINE
    DEADLINE = None if args.deadline_s is None else time.monotonic() + args.deadline_s
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    steps: list[dict] = []
    step, python = setup(args, workdir)
    steps.append(step)
    if not step["status"].startswith("failed"):
        step, info = environment(python, workdir)
        steps.append(step)
        cuda = bool(info.get("cuda_available"))
        step = _guarded("quickstart", quickstart, python, workdir, cuda)
        steps.append(step)
        steps.append(_guarded("ddp", ddp, python, workdir, len(info.get("gpus", []))))
        steps.append(_guarded("fp16_cuda", fp16_cuda, python, workdir, info, step.get("bundle")))
        steps.append(_guarded("throughput", throughput, python, workdir, cuda))
        steps.append(_guarded("tests", tests, python, workdir, args.skip_tests))  # last: the longest step

    lines = summary_lines(steps)
    print("\n".join(["", "distilprune GPU check", *lines]))
    Path(args.out).write_text(json.dumps({"steps": steps, "logs": str(workdir),
                                          "date": time.strftime("%Y-%m-%d %H:%M %Z")}, indent=2) + "\n")
    print(f"\nSummary: {args.out}; logs: {workdir}")
    return 1 if any(s["status"].startswith("failed") for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
