"""One INT8 model timed in a fresh process of a given kind.

    python bench/process_state_probe.py BUNDLE none|torch|torch_run|daz

Kinds: ``none`` imports only numpy and onnxruntime; ``torch`` also imports PyTorch (2 threads);
``torch_run`` also runs PyTorch matrix products for 1 s first; ``daz`` is ``none`` with ONNX Runtime
treating denormals as zero. Prints five medians of 30 runs (batch 1, sequence 128, 2 threads).
Run the kinds alternately, several times, within a minute: the machine itself changes speed between
minutes (bench/machine_speed_trace.py), and kinds probed minutes apart differ for that reason alone
(docs/results.md).
"""
import statistics
import sys
import time
from pathlib import Path

bundle, kind = Path(sys.argv[1]), sys.argv[2]
if kind not in ("none", "torch", "torch_run", "daz"):
    sys.exit(f"unknown kind {kind!r}: none, torch, torch_run or daz")
if kind in ("torch", "torch_run"):
    import torch

    torch.set_num_threads(2)
    if kind == "torch_run":
        a, started = torch.randn(512, 512), time.time()
        while time.time() - started < 1.0:
            a @ a
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from runtime import import_onnxruntime, make_session, random_inputs, session_feed, time_samples  # noqa: E402

if kind == "daz":
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(str(bundle / "model.int8.onnx"), options, providers=["CPUExecutionProvider"])
else:
    session = make_session(bundle / "model.int8.onnx", 2)
feed = session_feed(session, *random_inputs(1, 128, 30522))
print(kind, [round(statistics.median(time_samples(lambda: session.run(None, feed), 10, 30)), 2) for _ in range(5)])
