"""One INT8 model timed in a fresh process, with and without PyTorch imported and another session run first.

    python bench/process_state_probe.py BUNDLE none|torch no|fp32

Prints five medians of 30 runs (batch 1, sequence 128, 2 threads). Used to show that the process
around an ONNX Runtime session changes its latency (docs/results.md).
"""
import sys, statistics
if sys.argv[2] == "torch":
    import torch; torch.set_num_threads(2)
from distilprune.export.runtime import make_session, random_inputs, time_samples
m = sys.argv[1]
s = make_session(m + "/model.int8.onnx", 2)
extra = make_session(m + "/model.onnx", 2) if sys.argv[3] == "fp32" else None
ids, mask = random_inputs(1, 128, 30522)
f = {"input_ids": ids, "attention_mask": mask}
if extra: [extra.run(None, f) for _ in range(20)]
print(sys.argv[2:], [round(statistics.median(time_samples(lambda: s.run(None, f), 10, 30)), 2) for _ in range(5)])
